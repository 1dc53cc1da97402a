// The collective operations a data-parallel optimizer needs, as one interface with two engines:
// MPI (lib/distributed/mpi.ts, across processes and machines) and worker threads over shared
// memory (lib/distributed/shared-memory.ts, one machine, no MPI).
import { describe, invalidType, invalidValue, outOfRange } from '../errors'
import type { FloatArray } from '../optimizer'

/** How `allReduce` and `reduceScatter` combine the ranks' arrays. */
export type ReduceOp = 'sum' | 'mean'

/**
 * A group of `size` ranks that run the same program and call the same collectives in the same
 * order, as an MPI communicator. Every collective blocks until every rank has made it (as MPI's
 * blocking collectives do) and works on Float32Array or Float64Array, in place where it can.
 */
export interface Communicator {
  /** This rank, 0 to size − 1. */
  readonly rank: number
  /** How many ranks there are. */
  readonly size: number
  /** Replaces `buffer` with the element-wise sum (or mean) of every rank's `buffer`. */
  allReduce(buffer: FloatArray, op?: ReduceOp): void
  /**
   * Sums (or averages) every rank's `send` element-wise and leaves block `rank` of the result, of
   * `recv.length` elements, in `recv`: `send.length` must be `recv.length × size`, as
   * MPI_Reduce_scatter_block. `send` and `recv` must not share memory.
   */
  reduceScatter(send: FloatArray, recv: FloatArray, op?: ReduceOp): void
  /**
   * Fills every block of `buffer` (its length is `size` blocks) with the block that rank holds:
   * each rank's own block is its contribution, as MPI_Allgather with MPI_IN_PLACE.
   */
  allGather(buffer: FloatArray): void
  /** Copies `buffer` of rank `root` into `buffer` of every rank. */
  broadcast(buffer: FloatArray, root?: number): void
  /** Returns once every rank has called it. */
  barrier(): void
}

/** The code of an error no argument caused: a peer that failed or did not arrive in time, MPI absent. */
export type DistributedErrorCode =
  'ERR_FASTOPTIM_PEER_FAILED' | 'ERR_FASTOPTIM_TIMEOUT' | 'ERR_FASTOPTIM_MPI_UNAVAILABLE'

/** An error of the distributed run itself (not of an argument), with its code. */
export function distributedError(code: DistributedErrorCode, message: string, cause?: unknown) {
  return Object.assign(new Error(message, cause === undefined ? undefined : { cause }), { code })
}

function isFloatArray(value: unknown): value is FloatArray {
  return value instanceof Float32Array || value instanceof Float64Array
}

/** Checks a collective's array argument. */
function checkBuffer(value: unknown, where: string): asserts value is FloatArray {
  if (!isFloatArray(value)) throw invalidType(`${where} must be a Float32Array or Float64Array, got ${describe(value)}`)
}

function checkOp(op: unknown, where: string): asserts op is ReduceOp {
  if (op !== 'sum' && op !== 'mean')
    throw invalidValue(
      `${where}: op must be 'sum' or 'mean', got ${typeof op === 'string' ? JSON.stringify(op) : describe(op)}`,
    )
}

/** Checks `reduceScatter`'s arguments: same type, `send` = `size` blocks of `recv`, no shared memory. */
function checkReduceScatter(send: unknown, recv: unknown, size: number, op: unknown): void {
  checkBuffer(send, 'reduceScatter: send')
  checkBuffer(recv, 'reduceScatter: recv')
  checkOp(op, 'reduceScatter')
  if (send.constructor !== recv.constructor)
    throw invalidType(`reduceScatter: recv must be a ${send.constructor.name} like send, got ${recv.constructor.name}`)
  if (send.length !== recv.length * size)
    throw outOfRange(
      `reduceScatter: send has length ${send.length}, expected recv.length × size = ${recv.length} × ${size} = ${recv.length * size}`,
    )
  if (
    send.buffer === recv.buffer &&
    send.byteOffset < recv.byteOffset + recv.byteLength &&
    recv.byteOffset < send.byteOffset + send.byteLength
  )
    throw invalidValue('reduceScatter: send and recv share memory; give recv an array of its own')
}

function checkAllGather(buffer: unknown, size: number): asserts buffer is FloatArray {
  checkBuffer(buffer, 'allGather: buffer')
  if (buffer.length % size !== 0)
    throw outOfRange(`allGather: buffer has length ${buffer.length}, expected a multiple of the size ${size}`)
}

function checkRoot(root: unknown, size: number): asserts root is number {
  if (!Number.isSafeInteger(root) || (root as number) < 0 || (root as number) >= size)
    throw outOfRange(`broadcast: root must be a rank from 0 to ${size - 1}, got ${String(root)}`)
}

/**
 * The block of a vector of `length` elements that rank `rank` of `size` owns, once the vector
 * is padded to `size` equal blocks of ⌈length / size⌉ (the last blocks may hold padding only).
 */
export function blockOf(length: number, rank: number, size: number): { start: number; end: number; block: number } {
  const block = Math.ceil(length / size)
  return { start: Math.min(rank * block, length), end: Math.min((rank + 1) * block, length), block }
}

/**
 * What both communicators share: each collective checks its arguments, then hands them to the
 * engine's own implementation.
 */
export abstract class CheckedCommunicator implements Communicator {
  abstract readonly rank: number
  abstract readonly size: number

  allReduce(buffer: FloatArray, op: ReduceOp = 'sum'): void {
    checkBuffer(buffer, 'allReduce: buffer')
    checkOp(op, 'allReduce')
    this.allReduceChecked(buffer, op)
  }

  reduceScatter(send: FloatArray, recv: FloatArray, op: ReduceOp = 'sum'): void {
    checkReduceScatter(send, recv, this.size, op)
    this.reduceScatterChecked(send, recv, op)
  }

  allGather(buffer: FloatArray): void {
    checkAllGather(buffer, this.size)
    this.allGatherChecked(buffer)
  }

  broadcast(buffer: FloatArray, root = 0): void {
    checkBuffer(buffer, 'broadcast: buffer')
    checkRoot(root, this.size)
    this.broadcastChecked(buffer, root)
  }

  abstract barrier(): void
  protected abstract allReduceChecked(buffer: FloatArray, op: ReduceOp): void
  protected abstract reduceScatterChecked(send: FloatArray, recv: FloatArray, op: ReduceOp): void
  protected abstract allGatherChecked(buffer: FloatArray): void
  protected abstract broadcastChecked(buffer: FloatArray, root: number): void
}
