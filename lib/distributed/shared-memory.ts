// The communicator for one machine without MPI: `size` worker threads, one a rank, that exchange
// arrays through one SharedArrayBuffer and meet at a barrier made of Atomics. Reductions run in a
// fixed order (rank 0, 1, ..., size − 1, in float64, rounded once to the array's type) whatever
// the timing, so results are the same bits on every run; every rank reduces its own block of the
// vector, so a reduction costs each rank about one pass over the data whatever `size` is.
import { fileURLToPath } from 'node:url'
import { Worker, isMainThread, workerData as threadData } from 'node:worker_threads'

import { describe, invalidState, invalidType, outOfRange } from '../errors'
import type { FloatArray } from '../optimizer'
import { CheckedCommunicator, distributedError, type ReduceOp } from './communicator'

/** Where the shared state of a group of worker ranks is handed to each worker (in `workerData`). */
const KEY = '__fastoptimSharedMemory'

/** Control words: arrivals at the barrier, its generation, and 1 + the rank that failed (0: none). */
const ARRIVED = 0
const GENERATION = 1
const FAILED = 2

interface SharedSetup {
  rank: number
  size: number
  control: SharedArrayBuffer
  scratch: SharedArrayBuffer
  timeoutMs: number
}

/** Options of `runWorkers`. */
export interface RunWorkersOptions {
  /** Given to every worker as `workerData` (structured-cloned; SharedArrayBuffers are shared). */
  workerData?: unknown
  /**
   * How long a rank waits at a collective for the others before it fails with
   * `ERR_FASTOPTIM_TIMEOUT`, in milliseconds.
   * @default 60000
   */
  timeoutMs?: number
  /**
   * Bytes of shared memory for the exchange; larger arrays go through it in pieces.
   * @default 67108864 (64 MiB)
   */
  scratchBytes?: number
  /** Node options of the workers (`execArgv`). @default process.execArgv */
  execArgv?: string[]
  /**
   * Modules each worker requires before `script`, as a require hook that compiles TypeScript
   * (`['tsx/cjs']`): Node's `--import` hooks do not reach worker threads.
   * @default []
   */
  preload?: string[]
}

/**
 * Runs `script` on `size` worker threads, each a rank of one shared-memory communicator (which
 * `workerCommunicator()` returns inside the worker), and resolves to the last message each rank
 * posted to `parentPort`, by rank. If a rank throws or exits with a non-zero code, the others fail
 * at their next collective with `ERR_FASTOPTIM_PEER_FAILED` (none waits for it), and the promise
 * rejects with the first rank's error.
 */
export function runWorkers<T = unknown>(
  size: number,
  script: string | URL,
  options: RunWorkersOptions = {},
): Promise<T[]> {
  if (!Number.isSafeInteger(size) || size < 1)
    throw outOfRange(`runWorkers: size must be a whole number >= 1, got ${String(size)}`)
  const { workerData, timeoutMs = 60_000, scratchBytes = 64 << 20, execArgv = process.execArgv, preload = [] } = options
  if (!Array.isArray(preload) || !preload.every((m) => typeof m === 'string'))
    throw invalidType(`runWorkers: options.preload must be an array of module names, got ${describe(preload)}`)
  const path = script instanceof URL ? fileURLToPath(script) : script
  const source = [...preload, path].map((m) => `require(${JSON.stringify(m)})`).join(';')
  if (typeof timeoutMs !== 'number' || !(timeoutMs > 0))
    throw outOfRange(`runWorkers: options.timeoutMs must be a number > 0, got ${String(timeoutMs)}`)
  if (!Number.isSafeInteger(scratchBytes) || scratchBytes < 16 * size)
    throw outOfRange(
      `runWorkers: options.scratchBytes must be a whole number >= ${16 * size}, got ${String(scratchBytes)}`,
    )
  const control = new SharedArrayBuffer(4 * Int32Array.BYTES_PER_ELEMENT)
  const scratch = new SharedArrayBuffer(scratchBytes - (scratchBytes % (8 * size)))
  const flags = new Int32Array(control)
  return new Promise<T[]>((resolve, reject) => {
    const results: T[] = new Array(size)
    let running = size
    let firstError: unknown
    const workers: Worker[] = []
    const fail = (rank: number, error: unknown) => {
      if (firstError !== undefined) return
      firstError = asError(error)
      // The rank may have set the flag itself (a timeout); else the others learn of it here.
      Atomics.compareExchange(flags, FAILED, 0, rank + 1)
      Atomics.notify(flags, GENERATION)
      // A rank that is not at a collective (computing, or stuck) does not see the flag: it is
      // stopped once the others have had the time to.
      setTimeout(() => workers.forEach((worker) => void worker.terminate()), GRACE_MS).unref()
    }
    for (let rank = 0; rank < size; rank++) {
      const setup: SharedSetup = { rank, size, control, scratch, timeoutMs }
      const data = { ...(workerData as object), [KEY]: setup }
      const worker =
        preload.length > 0
          ? new Worker(source, { eval: true, workerData: data, execArgv })
          : new Worker(script, { workerData: data, execArgv })
      workers.push(worker)
      worker.on('message', (message: T) => (results[rank] = message))
      worker.on('error', (error) => fail(rank, error))
      worker.on('exit', (code) => {
        if (code !== 0)
          fail(rank, distributedError('ERR_FASTOPTIM_PEER_FAILED', `rank ${rank} exited with code ${code}`))
        if (--running > 0) return
        if (firstError !== undefined) reject(firstError)
        else resolve(results)
      })
    }
  })
}

/** How long the ranks of a failed run have to stop on their own before they are terminated. */
const GRACE_MS = 1000

/** An error thrown in a worker as the parent receives it (a plain object when it had extra fields). */
function asError(error: unknown): Error {
  // Rebuilt in this thread, so that it is an Error of this realm with its fields (code) kept.
  const { message, stack, ...fields } = (
    typeof error === 'object' && error !== null ? error : { message: String(error) }
  ) as { message?: unknown; stack?: unknown }
  return Object.assign(new Error(String(message)), fields, typeof stack === 'string' ? { stack } : {})
}

/** Whether this thread is a rank started by `runWorkers`. */
export function isWorkerRank(): boolean {
  return !isMainThread && typeof threadData === 'object' && threadData !== null && KEY in threadData
}

/** This worker's communicator (call it inside a script started by `runWorkers`). */
export function workerCommunicator(): SharedMemoryCommunicator {
  if (!isWorkerRank())
    throw invalidState(
      'workerCommunicator: this thread was not started by runWorkers(), so it has no shared-memory communicator',
    )
  return new SharedMemoryCommunicator((threadData as Record<string, SharedSetup>)[KEY])
}

/** `Communicator` over shared memory between the worker threads of one process. */
export class SharedMemoryCommunicator extends CheckedCommunicator {
  readonly rank: number
  readonly size: number
  readonly #flags: Int32Array
  readonly #scratch: SharedArrayBuffer
  readonly #timeoutMs: number
  /** Bytes of the scratch each rank owns. */
  readonly #region: number

  constructor(setup: SharedSetup) {
    super()
    this.rank = setup.rank
    this.size = setup.size
    this.#flags = new Int32Array(setup.control)
    this.#scratch = setup.scratch
    this.#timeoutMs = setup.timeoutMs
    this.#region = setup.scratch.byteLength / setup.size
  }

  barrier(): void {
    this.#meet('barrier')
  }

  protected allReduceChecked(buffer: FloatArray, op: ReduceOp): void {
    const Type = buffer.constructor as Float32ArrayConstructor | Float64ArrayConstructor
    const piece = this.#region / Type.BYTES_PER_ELEMENT
    for (let from = 0; from < buffer.length; from += piece) {
      const count = Math.min(piece, buffer.length - from)
      const regions = this.#regions(Type, count)
      regions[this.rank].set(buffer.subarray(from, from + count))
      this.#meet('allReduce')
      // Each rank reduces its share of the piece into its own region, then every rank reads them.
      const share = Math.ceil(count / this.size)
      const start = Math.min(this.rank * share, count)
      reduceInto(regions, regions[this.rank], start, Math.min(start + share, count), 0, op, this.size)
      this.#meet('allReduce')
      for (let r = 0; r < this.size; r++) {
        const s = Math.min(r * share, count)
        buffer.set(regions[r].subarray(s, Math.min(s + share, count)), from + s)
      }
      this.#meet('allReduce')
    }
  }

  protected reduceScatterChecked(send: FloatArray, recv: FloatArray, op: ReduceOp): void {
    const Type = send.constructor as Float32ArrayConstructor | Float64ArrayConstructor
    const block = recv.length
    // Pieces of every rank's block at once: piece × size elements fit one region.
    const piece = Math.max(1, Math.floor(this.#region / Type.BYTES_PER_ELEMENT / this.size))
    for (let from = 0; from < block; from += piece) {
      const count = Math.min(piece, block - from)
      const regions = this.#regions(Type, count * this.size)
      for (let r = 0; r < this.size; r++)
        regions[this.rank].set(send.subarray(r * block + from, r * block + from + count), r * count)
      this.#meet('reduceScatter')
      const start = this.rank * count
      reduceInto(regions, recv, start, start + count, from - start, op, this.size)
      this.#meet('reduceScatter')
    }
  }

  protected allGatherChecked(buffer: FloatArray): void {
    const Type = buffer.constructor as Float32ArrayConstructor | Float64ArrayConstructor
    const block = buffer.length / this.size
    const piece = this.#region / Type.BYTES_PER_ELEMENT
    for (let from = 0; from < block; from += piece) {
      const count = Math.min(piece, block - from)
      const regions = this.#regions(Type, count)
      const mine = this.rank * block + from
      regions[this.rank].set(buffer.subarray(mine, mine + count))
      this.#meet('allGather')
      for (let r = 0; r < this.size; r++) if (r !== this.rank) buffer.set(regions[r], r * block + from)
      this.#meet('allGather')
    }
  }

  protected broadcastChecked(buffer: FloatArray, root: number): void {
    const Type = buffer.constructor as Float32ArrayConstructor | Float64ArrayConstructor
    // The root's message uses the whole scratch.
    const piece = this.#scratch.byteLength / Type.BYTES_PER_ELEMENT
    for (let from = 0; from < buffer.length; from += piece) {
      const count = Math.min(piece, buffer.length - from)
      const shared = view(Type, this.#scratch, 0, count)
      if (this.rank === root) shared.set(buffer.subarray(from, from + count))
      this.#meet('broadcast')
      if (this.rank !== root) buffer.set(shared, from)
      this.#meet('broadcast')
    }
  }

  /** Every rank's region, as arrays of `count` elements of `Type`. */
  #regions(Type: Float32ArrayConstructor | Float64ArrayConstructor, count: number): FloatArray[] {
    return Array.from({ length: this.size }, (_, r) => view(Type, this.#scratch, r * this.#region, count))
  }

  /**
   * The barrier: the last rank to arrive starts the next generation and wakes the others. A rank
   * that waits longer than the timeout, or learns that a peer failed, throws.
   */
  #meet(what: string): void {
    const flags = this.#flags
    this.#checkPeers(what)
    const generation = Atomics.load(flags, GENERATION)
    if (Atomics.add(flags, ARRIVED, 1) === this.size - 1) {
      Atomics.store(flags, ARRIVED, 0)
      Atomics.add(flags, GENERATION, 1)
      Atomics.notify(flags, GENERATION)
      return
    }
    const deadline = Date.now() + this.#timeoutMs
    while (Atomics.load(flags, GENERATION) === generation) {
      this.#checkPeers(what)
      const left = deadline - Date.now()
      if (left <= 0) {
        // Counted as failed so that the other ranks stop too.
        Atomics.compareExchange(flags, FAILED, 0, this.rank + 1)
        Atomics.notify(flags, GENERATION)
        throw distributedError(
          'ERR_FASTOPTIM_TIMEOUT',
          `${what}: rank ${this.rank} waited ${this.#timeoutMs} ms for the other ranks, and ${this.size - Atomics.load(flags, ARRIVED)} of ${this.size} never arrived`,
        )
      }
      Atomics.wait(flags, GENERATION, generation, left)
    }
  }

  #checkPeers(what: string): void {
    const failed = Atomics.load(this.#flags, FAILED)
    if (failed !== 0 && failed !== this.rank + 1)
      throw distributedError(
        'ERR_FASTOPTIM_PEER_FAILED',
        `${what}: rank ${failed - 1} failed, so rank ${this.rank} stops`,
      )
  }
}

/**
 * `out[i + shift] = Σ_r regions[r][i]` for i in [start, end), summed from rank 0 up in float64,
 * divided by `size` for a mean, and rounded once to the array's type.
 */
function reduceInto(
  regions: readonly FloatArray[],
  out: FloatArray,
  start: number,
  end: number,
  shift: number,
  op: ReduceOp,
  size: number,
): void {
  for (let i = start; i < end; i++) {
    let sum = 0
    for (let r = 0; r < regions.length; r++) sum += regions[r][i]
    out[i + shift] = op === 'mean' ? sum / size : sum
  }
}

/** `count` elements of `Type` at `byteOffset` of shared memory. */
function view(
  Type: Float32ArrayConstructor | Float64ArrayConstructor,
  memory: SharedArrayBuffer,
  byteOffset: number,
  count: number,
): FloatArray {
  return Type === Float32Array
    ? new Float32Array(memory, byteOffset, count)
    : new Float64Array(memory, byteOffset, count)
}
