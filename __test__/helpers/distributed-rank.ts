// One rank of the distributed tests: a worker thread started by runWorkers (shared-memory
// communicator), or a process started by mpirun (MPI communicator), running the scenario named
// in workerData or argv[2], and reporting its result to the parent thread or to a JSON file
// (argv[3] + `.<rank>.json`). The scenarios' parameters and gradients are functions of the step
// and the rank only, so the test can run the same training in one process as the reference.
import { writeFileSync } from 'node:fs'
import { parentPort, workerData } from 'node:worker_threads'

import { Adam, SGD, StepLR, type FloatArray, type Parameter } from '../../lib'
import {
  isWorkerRank,
  mpiCommunicator,
  ShardedOptimizer,
  workerCommunicator,
  type Communicator,
  type OptimizerClass,
} from '../../lib/distributed'

/** Parameter lengths and dtypes: cut across blocks for 2 and 4 ranks, with a one-element and an empty one. */
export const SHAPES: ReadonlyArray<{ length: number; dtype: 'float32' | 'float64'; group: number }> = [
  { length: 37, dtype: 'float32', group: 0 },
  { length: 1, dtype: 'float32', group: 0 },
  { length: 0, dtype: 'float32', group: 1 },
  { length: 50, dtype: 'float32', group: 1 },
  { length: 13, dtype: 'float64', group: 0 },
  { length: 6, dtype: 'float64', group: 1 },
]
export const STEPS = 6
export const GROUP_OPTIONS = [{ lr: 0.01 }, { lr: 0.003, weightDecay: 0.1 }]

/** The starting values: parameter k, element i. */
export function makeParams(): Parameter[] {
  return SHAPES.map(({ length, dtype }, k) => {
    return { data: filled(dtype, length, (i) => Math.sin(1 + 3 * k + i)), grad: null }
  })
}

/**
 * Rank r's gradient of parameter k at step s: multiples of 1/64 below 1, so their sum over the
 * ranks and its mean (a power of two ranks) are exact in any order. Null where the step leaves
 * the parameter out: parameter 1 has no gradient on any rank at step 2, parameter 3 none on
 * rank 0 at step 3 (it counts as zeros).
 */
export function gradOf(s: number, r: number, k: number): FloatArray | null {
  if (k === 1 && s === 2) return null
  if (k === 3 && s === 3 && r === 0) return null
  const { length, dtype } = SHAPES[k]
  return filled(dtype, length, (i) => (((i * 7 + s * 3 + r * 5 + k * 11) % 29) - 14) / 64)
}

export type Scenario = 'collectives' | 'adam' | 'clip' | 'sgd-momentum' | 'peer-exits' | 'peer-killed' | 'peer-hangs'

export interface RankResult {
  rank: number
  size: number
  params?: number[][]
  stateBytes?: number
  finite?: boolean[]
  norms?: number[]
  collectives?: Record<string, number[]>
}

/** Rank r's input to the collectives: element i of a vector of `n`, exact in any summation order. */
export function collectiveInput(r: number, n: number, Type: Float32ArrayConstructor | Float64ArrayConstructor) {
  return filled(Type === Float32Array ? 'float32' : 'float64', n, (i) => ((i % 13) - 6) / 8 + r * 0.25)
}

/** An array of `dtype` whose element i is `value(i)`. */
function filled(dtype: 'float32' | 'float64', length: number, value: (i: number) => number): FloatArray {
  const array = dtype === 'float32' ? new Float32Array(length) : new Float64Array(length)
  for (let i = 0; i < length; i++) array[i] = value(i)
  return array
}

function collectives(comm: Communicator): Record<string, number[]> {
  const { rank, size } = comm
  const out: Record<string, number[]> = {}
  for (const Type of [Float32Array, Float64Array]) {
    const name = Type.name
    const sum = collectiveInput(rank, 23, Type)
    comm.allReduce(sum, 'sum')
    const mean = collectiveInput(rank, 23, Type)
    comm.allReduce(mean, 'mean')
    const recv = new Type(5)
    comm.reduceScatter(collectiveInput(rank, 5 * size, Type), recv, 'mean')
    const gathered = new Type(3 * size)
    gathered.subarray(3 * rank, 3 * rank + 3).set([rank, rank + 0.5, -rank - 0.25])
    comm.allGather(gathered)
    const broadcast = rank === size - 1 ? collectiveInput(99, 9, Type) : new Type(9)
    comm.broadcast(broadcast, size - 1)
    comm.barrier()
    Object.assign(out, {
      [`${name}.allReduce.sum`]: [...sum],
      [`${name}.allReduce.mean`]: [...mean],
      [`${name}.reduceScatter.mean`]: [...recv],
      [`${name}.allGather`]: [...gathered],
      [`${name}.broadcast`]: [...broadcast],
    })
  }
  return out
}

/** The scenario's optimizer and its options. */
export function optimizerOf(scenario: Scenario): { Algorithm: OptimizerClass<{ lr: number }>; options: object } {
  return scenario === 'sgd-momentum'
    ? { Algorithm: SGD as OptimizerClass<{ lr: number }>, options: { momentum: 0.9, nesterov: true } }
    : { Algorithm: Adam as OptimizerClass<{ lr: number }>, options: { amsgrad: scenario === 'clip' } }
}

/** The parameters in their two groups. */
export function groupsOf(params: Parameter[]) {
  return GROUP_OPTIONS.map((options, g) => ({ ...options, params: params.filter((_, k) => SHAPES[k].group === g) }))
}

/** Trains the scenario's parameters on `comm`'s ranks, each giving its own gradients. */
export function trainSharded(comm: Communicator, scenario: Scenario): RankResult {
  const params = makeParams()
  const { Algorithm, options } = optimizerOf(scenario)
  const opt = new ShardedOptimizer(Algorithm, groupsOf(params), options, { comm })
  const scheduler = new StepLR(opt, { stepSize: 2, gamma: 0.5 })
  const finite: boolean[] = []
  const norms: number[] = []
  for (let s = 0; s < STEPS; s++) {
    params.forEach((p, k) => {
      const grad = gradOf(s, comm.rank, k)
      // Half the time the gradient is written into the optimizer's own view, half given as a new array.
      if (grad && p.grad && s % 2 === 0) p.grad.set(grad)
      else p.grad = grad
    })
    if (scenario === 'peer-exits' && s === 2 && comm.rank === comm.size - 1) process.exit(3)
    if (scenario === 'peer-killed' && s === 2 && comm.rank === comm.size - 1) process.kill(process.pid, 'SIGKILL')
    // A rank stuck in its own computation: the others must not wait for it forever.
    if (scenario === 'peer-hangs' && s === 2 && comm.rank === comm.size - 1) for (;;);
    if (scenario === 'clip') norms.push(opt.clipGradNorm(0.05))
    finite.push(opt.step())
    scheduler.step()
  }
  return {
    rank: comm.rank,
    size: comm.size,
    params: params.map((p) => [...p.data]),
    stateBytes: opt.stateBytes(),
    finite,
    norms,
  }
}

function run(scenario: Scenario, comm: Communicator): RankResult {
  if (scenario === 'collectives') return { rank: comm.rank, size: comm.size, collectives: collectives(comm) }
  return trainSharded(comm, scenario)
}

if (isWorkerRank()) {
  parentPort!.postMessage(run((workerData as { scenario: Scenario }).scenario, workerCommunicator()))
} else if (require.main === module) {
  const [scenario, out] = process.argv.slice(2) as [Scenario, string]
  const comm = mpiCommunicator()
  const result = run(scenario, comm)
  writeFileSync(`${out}.${comm.rank}.json`, JSON.stringify(result))
}
