// One rank of the sharded-checkpoint tests: a worker thread started by runWorkers, or a process
// started by mpirun (the job in argv[2] as JSON, the result to argv[3] + `.<rank>.json`). Jobs:
// train and save; load and report the whole state; load PyTorch's fixture and continue its
// training; and save while rank 1 crashes at its k-th collective of the save.
import { readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { parentPort, workerData } from 'node:worker_threads'

import { Adam, type FloatArray, type Parameter } from '../../lib'
import {
  isWorkerRank,
  loadShardedCheckpoint,
  mpiCommunicator,
  saveShardedCheckpoint,
  ShardedOptimizer,
  workerCommunicator,
  type Communicator,
} from '../../lib/distributed'

/** The parameters: matrices and vectors cut across blocks for 2 and 4 ranks, one 3-D float64 tensor. */
export const MODEL: ReadonlyArray<{ name: string; shape: number[]; dtype: 'float32' | 'float64' }> = [
  { name: 'fc1.weight', shape: [7, 5], dtype: 'float32' },
  { name: 'fc1.bias', shape: [7], dtype: 'float32' },
  { name: 'fc2.weight', shape: [3, 7], dtype: 'float32' },
  { name: 'fc2.bias', shape: [3], dtype: 'float32' },
  { name: 'conv.weight', shape: [2, 3, 4], dtype: 'float64' },
  { name: 'scale', shape: [5], dtype: 'float64' },
]
export const NAMES = MODEL.map((m) => m.name)

export type Job =
  | { kind: 'save'; dir: string; steps: number; names: boolean }
  | { kind: 'load'; dir: string; names: boolean }
  | { kind: 'load-dict'; state: NonNullable<RankResult['state']>; groups: NonNullable<RankResult['groups']> }
  | { kind: 'torch'; dir: string; fixture: string }
  | { kind: 'crash'; dir: string; crashAt: number; first: boolean; kill?: boolean }

export interface RankResult {
  rank: number
  /** The whole state, as `stateDict()` gives it, arrays as number arrays. */
  state?: Record<string, Record<string, number[] | number>>
  groups?: Array<Record<string, unknown>>
  /** getState of the first parameter. */
  first?: Record<string, number[] | number>
  /** Parameters after the fixture's continued steps. */
  params?: number[][]
  /** The error a load threw (the state reported is the one after it). */
  error?: string
}

function makeParams(values?: number[][]): Parameter[] {
  return MODEL.map(({ shape, dtype }, k) => {
    const length = shape.reduce((a, b) => a * b, 1)
    const data = dtype === 'float32' ? new Float32Array(length) : new Float64Array(length)
    for (let i = 0; i < length; i++) data[i] = values ? values[k][i] : Math.cos(1 + 2 * k + i)
    return { data, grad: null, shape }
  })
}

/** Rank r's gradient at step s: multiples of 1/64, whose mean over 1, 2 or 4 ranks is exact. */
function gradOf(s: number, r: number, param: Parameter, k: number): FloatArray {
  const grad = new (param.data.constructor as Float32ArrayConstructor)(param.data.length)
  for (let i = 0; i < grad.length; i++) grad[i] = (((i * 5 + s * 7 + r * 3 + k * 13) % 31) - 15) / 64
  return grad
}

/** Two groups, so that the checkpoint's groups and the positions across them are exercised. */
function build(comm: Communicator, params: Parameter[]): ShardedOptimizer<{ lr: number }> {
  const groups = [
    { params: params.slice(0, 4), lr: 0.01 },
    { params: params.slice(4), lr: 0.005, weightDecay: 0.1 },
  ]
  return new ShardedOptimizer(Adam, groups, { amsgrad: true }, { comm }) as unknown as ShardedOptimizer<{ lr: number }>
}

function train(opt: ShardedOptimizer<{ lr: number }>, params: Parameter[], comm: Communicator, steps: number[]) {
  for (const s of steps) {
    params.forEach((p, k) => (p.grad = gradOf(s, comm.rank, p, k)))
    opt.step()
  }
}

const plain = (value: FloatArray | number) => (typeof value === 'number' ? value : Array.from(value))

function report(opt: ShardedOptimizer<{ lr: number }>, params: Parameter[], rank: number): RankResult {
  const dict = opt.stateDict()
  const state: RankResult['state'] = {}
  for (const [id, entry] of Object.entries(dict.state))
    state[id] = Object.fromEntries(Object.entries(entry).map(([k, v]) => [k, plain(v)]))
  const first = opt.getState(params[0])
  return {
    rank,
    state,
    groups: dict.paramGroups.map(({ params: ids, ...options }) => ({ ...options, params: ids })),
    first: first && Object.fromEntries(Object.entries(first).map(([k, v]) => [k, plain(v)])),
  }
}

/**
 * `comm`, but rank 1 dies at its `crashAt`-th collective once `armed` (a rank dying mid-save):
 * it throws, or with `kill` (an MPI rank) is killed by SIGKILL.
 */
function crashing(comm: Communicator, crashAt: number, kill: boolean): Communicator & { armed: boolean } {
  let count = 0
  const wrap = <A extends unknown[]>(call: (...args: A) => void) =>
    function (this: { armed: boolean }, ...args: A) {
      if (this.armed && comm.rank === 1 && ++count === crashAt) {
        if (kill) process.kill(process.pid, 'SIGKILL')
        throw new Error(`rank 1 crashes at collective ${crashAt}`)
      }
      call(...args)
    }
  return {
    armed: false,
    rank: comm.rank,
    size: comm.size,
    allReduce: wrap((buffer, op) => comm.allReduce(buffer, op)),
    reduceScatter: wrap((send, recv, op) => comm.reduceScatter(send, recv, op)),
    allGather: wrap((buffer) => comm.allGather(buffer)),
    broadcast: wrap((buffer, root) => comm.broadcast(buffer, root)),
    barrier: wrap(() => comm.barrier()),
  } as Communicator & { armed: boolean }
}

export function runJob(job: Job, comm: Communicator): RankResult {
  const { rank } = comm
  if (job.kind === 'save') {
    const params = makeParams()
    const opt = build(comm, params)
    train(
      opt,
      params,
      comm,
      Array.from({ length: job.steps }, (_, s) => s),
    )
    saveShardedCheckpoint(job.dir, opt, job.names ? { names: NAMES } : {})
    return report(opt, params, rank)
  }
  if (job.kind === 'load') {
    const params = makeParams()
    const opt = build(comm, params)
    opt.paramGroups[0].lr = 0.5 // replaced by the checkpoint's
    try {
      loadShardedCheckpoint(job.dir, opt, job.names ? { names: NAMES } : {})
    } catch (error) {
      return { ...report(opt, params, rank), error: (error as Error).message }
    }
    return report(opt, params, rank)
  }
  if (job.kind === 'load-dict') {
    const params = makeParams()
    const opt = build(comm, params)
    const state = Object.fromEntries(
      Object.entries(job.state).map(([id, entry]) => {
        const Type = params[Number(id)].data.constructor as Float32ArrayConstructor
        return [
          id,
          Object.fromEntries(Object.entries(entry).map(([k, v]) => [k, typeof v === 'number' ? v : Type.from(v)])),
        ]
      }),
    )
    try {
      opt.loadStateDict({ state, paramGroups: job.groups } as unknown as Parameters<typeof opt.loadStateDict>[0])
    } catch (error) {
      return { ...report(opt, params, rank), error: (error as Error).message }
    }
    return report(opt, params, rank)
  }
  if (job.kind === 'crash') {
    const wrapped = crashing(comm, job.crashAt, job.kill ?? false)
    const params = makeParams()
    const opt = build(wrapped, params)
    train(opt, params, wrapped, [0, 1])
    // The checkpoint there before, unless this is the first save.
    if (!job.first) saveShardedCheckpoint(job.dir, opt)
    train(opt, params, wrapped, [2, 3])
    wrapped.armed = true
    // Rank 1 throws out of the save, and its thread ends; the others fail at their next collective.
    saveShardedCheckpoint(job.dir, opt)
    return report(opt, params, rank)
  }
  // PyTorch's checkpoint: its model's parameters at the save, its state loaded, its steps continued.
  const fixture = JSON.parse(readFileSync(job.fixture, 'utf8')) as TorchFixture
  const params: Parameter[] = fixture.shapes.map((shape, k) => ({
    data: Float32Array.from(fixture.saved.params[k]),
    grad: null,
    shape,
  }))
  const opt = new ShardedOptimizer(Adam, params, fixture.options, { comm })
  loadShardedCheckpoint(job.dir, opt, { names: fixture.names })
  const loaded = report(opt as unknown as ShardedOptimizer<{ lr: number }>, params, rank)
  for (const step of fixture.steps) {
    // Every rank gives the whole gradient: their mean is it, exactly.
    params.forEach((p, k) => (p.grad = Float32Array.from(step.grads[k])))
    opt.step()
  }
  return { ...loaded, params: params.map((p) => Array.from(p.data)) }
}

export interface TorchFixture {
  names: string[]
  shapes: number[][]
  options: { lr: number; betas: [number, number]; eps: number; weightDecay: number }
  saved: { params: number[][]; state: Record<string, number[] | number> }
  steps: Array<{ grads: number[][]; params: number[][] }>
}

export const TORCH_FIXTURE = join(__dirname, '..', 'fixtures', 'sharded.json')
export const TORCH_CHECKPOINT = join(__dirname, '..', 'fixtures', 'sharded', 'torch-2-ranks')

if (isWorkerRank()) {
  parentPort!.postMessage(runJob((workerData as { job: Job }).job, workerCommunicator()))
} else if (require.main === module) {
  const [job, out] = process.argv.slice(2)
  const comm = mpiCommunicator()
  writeFileSync(`${out}.${comm.rank}.json`, JSON.stringify(runJob(JSON.parse(job) as Job, comm)))
}
