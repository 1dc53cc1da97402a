// fastoptim/distributed on one machine without MPI: the shared-memory communicator's collectives
// on 2 and 4 worker-thread ranks, and ShardedOptimizer on them against one process training on
// the mean gradient. The gradients are multiples of 1/64, so their mean is exact in any order
// and the sharded run must match the single process bit for bit; only clipGradNorm, whose norm
// is summed in another order, is compared within rounding.
import { join } from 'node:path'

import test from 'ava'

import { Adafactor, Adam, SparseAdam } from '../lib'
import { blockOf, runWorkers, ShardedOptimizer, type Communicator } from '../lib/distributed'
import { SHAPES, type RankResult, type Scenario } from './helpers/distributed-rank'
import { expectedCollectives, trainAlone } from './helpers/distributed-reference'

const RANK_SCRIPT = join(__dirname, 'helpers', 'distributed-rank.ts')

function onWorkers(size: number, scenario: Scenario, timeoutMs?: number): Promise<RankResult[]> {
  return runWorkers<RankResult>(size, RANK_SCRIPT, { workerData: { scenario }, preload: ['tsx/cjs'], timeoutMs })
}

/** The bits of a number as float64 (float32 values are exact in it), for comparisons that see −0 and NaN. */
const bits = (values: number[]) => values.map((v) => (Object.is(v, -0) ? '-0' : v.toString()))

for (const size of [2, 4]) {
  test.serial(`shared memory, ${size} ranks: every collective gives the single-process result`, async (t) => {
    const results = await onWorkers(size, 'collectives')
    for (const { rank, collectives } of results)
      t.deepEqual(collectives, expectedCollectives(rank, size), `rank ${rank}`)
  })

  for (const scenario of ['adam', 'sgd-momentum'] as const) {
    test.serial(
      `shared memory, ${size} ranks: ShardedOptimizer(${scenario}) ends with the single process's parameters, bit for bit`,
      async (t) => {
        const alone = trainAlone(scenario, size)
        const results = await onWorkers(size, scenario)
        for (const result of results) {
          t.deepEqual(result.params!.map(bits), alone.params!.map(bits), `rank ${result.rank}`)
          t.deepEqual(result.finite, alone.finite)
        }
        // State: every element's state is on exactly one rank, and a rank holds one block of each dtype.
        const perRank = results.map((r) => r.stateBytes!)
        t.is(
          perRank.reduce((a, b) => a + b, 0),
          alone.stateBytes,
        )
        const lengths = { float32: 0, float64: 0 }
        for (const { length, dtype } of SHAPES) lengths[dtype] += length
        const buffers = alone.stateBytes / (lengths.float32 * 4 + lengths.float64 * 8)
        results.forEach(({ rank, stateBytes }) => {
          const f32 = blockOf(lengths.float32, rank, size)
          const f64 = blockOf(lengths.float64, rank, size)
          t.is(stateBytes, buffers * ((f32.end - f32.start) * 4 + (f64.end - f64.start) * 8), `rank ${rank}`)
        })
        t.log(`state bytes per rank: ${perRank.join(', ')} of ${alone.stateBytes} in one process`)
      },
    )
  }

  test.serial(`shared memory, ${size} ranks: clipGradNorm clips by the global norm`, async (t) => {
    const alone = trainAlone('clip', size)
    const results = await onWorkers(size, 'clip')
    for (const result of results) {
      result.norms!.forEach((norm, s) =>
        t.true(Math.abs(norm - alone.norms![s]) <= 1e-6 * alone.norms![s], `step ${s}`),
      )
      // Every rank reduced the same partial sums: the norms agree across ranks exactly.
      t.deepEqual(result.norms, results[0].norms)
      result.params!.forEach((values, k) =>
        values.forEach((v, i) => t.true(Math.abs(v - alone.params![k][i]) <= 1e-5, `params[${k}][${i}]`)),
      )
    }
    t.true(
      alone.norms!.some((n) => n > 0.05),
      'the gradients were clipped',
    )
  })
}

test.serial(
  'shared memory: a rank that exits mid-run makes the others fail with ERR_FASTOPTIM_PEER_FAILED',
  async (t) => {
    const error = await t.throwsAsync(onWorkers(4, 'peer-exits'))
    t.regex(error!.message, /rank 3 (exited with code 3|failed)/)
    t.true(['ERR_FASTOPTIM_PEER_FAILED'].includes((error as Error & { code: string }).code))
  },
)

test.serial(
  'shared memory: a rank that does not arrive makes the others fail with ERR_FASTOPTIM_TIMEOUT',
  async (t) => {
    const error = await t.throwsAsync(onWorkers(2, 'peer-hangs', 20_000))
    t.is((error as Error & { code: string }).code, 'ERR_FASTOPTIM_TIMEOUT')
    t.regex(error!.message, /rank 0 waited 20000 ms for the other ranks, and 1 of 2 never arrived/)
  },
)

/** A communicator of one rank: every collective is the identity (a mean over one rank). */
const solo: Communicator = {
  rank: 0,
  size: 1,
  allReduce() {},
  reduceScatter(send, recv) {
    recv.set(send)
  },
  allGather() {},
  broadcast() {},
  barrier() {},
}

test.serial('ShardedOptimizer refuses optimizers whose state cannot be cut mid-tensor, and bad arguments', (t) => {
  const params = () => [{ data: new Float32Array(6), grad: new Float32Array(6), shape: [2, 3] }]
  t.throws(() => new ShardedOptimizer(Adafactor, params(), {}, { comm: solo }), {
    code: 'ERR_INVALID_ARG_VALUE',
    message: /Adafactor keeps state of whole tensors \(rowVar: rows, colVar: cols, variance: unfactored\)/,
  })
  t.throws(() => new ShardedOptimizer(SparseAdam as never, params(), {}, { comm: solo }), {
    code: 'ERR_INVALID_ARG_VALUE',
    message: /SparseAdam takes sparse gradients/,
  })
  t.throws(() => new ShardedOptimizer(Adam, params(), {}, {} as never), { code: 'ERR_INVALID_ARG_TYPE' })
  t.throws(() => new ShardedOptimizer(Adam, params(), { lr: -1 }, { comm: solo }), { message: /lr/ })
  const opt = new ShardedOptimizer(Adam, params(), {}, { comm: solo })
  t.throws(() => opt.clipGradNorm(-1), { code: 'ERR_OUT_OF_RANGE', message: /maxNorm must be a number >= 0, got -1/ })
  t.throws(() => opt.zeroGrad('yes' as never), { code: 'ERR_INVALID_ARG_TYPE' })
})

test.serial('ShardedOptimizer.step(closure) runs the closure first and steps from the grads it wrote', (t) => {
  const make = () => {
    const params = [{ data: Float32Array.from({ length: 6 }, (_, i) => i / 7), grad: null as Float32Array | null }]
    return { params, opt: new ShardedOptimizer(Adam, params, { lr: 0.1 }, { comm: solo }) }
  }
  const [a, b] = [make(), make()]
  const grad = () => Float32Array.from({ length: 6 }, (_, i) => Math.cos(i))
  t.is(
    a.opt.step(() => {
      a.params[0].grad = grad()
      return 0.5
    }),
    0.5,
  )
  b.params[0].grad = grad()
  t.true(b.opt.step())
  t.deepEqual(a.params[0].data, b.params[0].data)
  t.notDeepEqual(a.params[0].data, make().params[0].data)
  let calls = 0
  t.throws(() => a.opt.step(() => calls++, { skipNonFinite: 'no' } as never), { code: 'ERR_INVALID_ARG_TYPE' })
  t.is(calls, 0)
  t.throws(
    () =>
      a.opt.step(() => {
        throw new Error('backward failed')
      }),
    { code: 'ERR_CLOSURE_FAILED', message: 'ShardedOptimizer.step: the closure threw: backward failed' },
  )
  t.deepEqual(a.params[0].data, b.params[0].data)
})
