// The thread pool: setNumThreads/getNumThreads and FASTOPTIM_NUM_THREADS, results that do not
// depend on the thread count by a single bit (for every optimizer of the registry), one pool shared
// by worker threads, and steady-state steps that allocate nothing.
import { execFileSync } from 'node:child_process'
import { availableParallelism } from 'node:os'
import { join } from 'node:path'
import { Worker } from 'node:worker_threads'

import test from 'ava'

import * as fastoptim from '../lib'
import { Adam, getNumThreads, setNumThreads, type FloatArray, type Optimizer, type Parameter } from '../lib'
import { gradFor } from './helpers/sparse'
import { fillValues } from './helpers/values'

type AnyOptimizer = Optimizer<object>
type Ctor = new (params: never, options?: never) => AnyOptimizer

const root = join(__dirname, '..')
const internal = require(join(root, 'native', 'index.js')) as { __allocations(): { count: number; bytes: number } }

function values(n: number, seed: number, Type: typeof Float32Array | typeof Float64Array): FloatArray {
  return fillValues(new Type(n), seed, { zeroAt: (i) => i % 5 === 2 })
}

/**
 * A model the engine must cut inside tensors and across them: one large flat tensor, many small
 * ones, and matrices (a [300, 700] one large enough to span many units, a 3-D [4, 90, 100] one
 * whose leading dimension is a batch), so that an optimizer that treats matrices apart (Adafactor
 * factors their second moment over rows and columns) runs that path on several threads too.
 */
const SHAPES: Array<readonly number[]> = [
  [3_000_001],
  ...Array.from({ length: 150 }, (_, i) => [1000 + 37 * i]),
  [300, 700],
  [4, 90, 100],
  [0],
  [1],
]

/**
 * The model of an optimizer of matrices only (Muon): tall, wide and square matrices of many sizes,
 * two of them large, and an empty one; a step of them is over the parallel threshold.
 */
const MATRIX_SHAPES: Array<readonly number[]> = [
  [120, 250],
  [250, 120],
  ...Array.from({ length: 40 }, (_, i) => [3 + 2 * i, 83 - 2 * i]),
  [1, 1],
  [0, 5],
]

function model(Type: typeof Float32Array | typeof Float64Array, matrices: boolean): Parameter[] {
  return (matrices ? MATRIX_SHAPES : SHAPES).map((shape, i) => {
    const n = shape.reduce((a, b) => a * b, 1)
    return { data: values(n, 2 * i + 1, Type), grad: values(n, 2 * i + 2, Type), shape }
  })
}

/**
 * Options that reach more of an optimizer's kernel than its defaults do (momentum, AMSGrad's
 * maximum, the centered average); an optimizer of the registry not listed runs with its defaults.
 */
const OPTIONS: Record<string, object> = {
  SGD: { momentum: 0.9, nesterov: true, weightDecay: 0.01 },
  Adam: { amsgrad: true, weightDecay: 0.01 },
  RMSprop: { centered: true, momentum: 0.5 },
  Adagrad: { lrDecay: 0.01 },
  AdamWScheduleFree: { trainMode: true, weightDecay: 0.01, warmupSteps: 3 },
  SGDScheduleFree: { trainMode: true, weightDecay: 0.01, warmupSteps: 3 },
}

const classes = fastoptim as unknown as Record<string, Ctor | undefined>
const optimizers = fastoptim
  .algorithms()
  .map(({ name, sparse, matrices }): [string, Ctor | undefined, object, boolean, boolean] => [
    name,
    classes[name],
    OPTIONS[name] ?? {},
    sparse,
    matrices,
  ])

test('the options table names only optimizers of the registry', (t) => {
  const names = new Set(optimizers.map(([name]) => name))
  t.deepEqual(
    Object.keys(OPTIONS).filter((name) => !names.has(name)),
    [],
  )
})

function trajectory(
  Opt: Ctor,
  options: object,
  Type: typeof Float32Array | typeof Float64Array,
  threads: number,
  sparse: boolean,
  matrices: boolean,
): Parameter[] {
  setNumThreads(threads)
  const params = model(Type, matrices)
  // An optimizer of sparse gradients gets the rows of each gradient that are not all 0.
  const opt = new Opt(
    (sparse ? params.map((p) => ({ ...p, grad: gradFor(true, p.grad!, p.shape) })) : params) as never,
    options as never,
  )
  for (let i = 0; i < 7; i++) opt.step()
  return params
}

const bytes = (a: FloatArray) => Buffer.from(a.buffer, a.byteOffset, a.byteLength)

test.serial(
  `every optimizer gives the same bits on 1, 2 and 3 threads (both dtypes, 7 steps, ${SHAPES.length} tensors, matrices too)`,
  (t) => {
    const threads = getNumThreads()
    try {
      t.true(optimizers.length > 0)
      for (const [name, Opt, options, sparse, matrices] of optimizers) {
        if (!Opt) {
          t.fail(`the registry lists ${name}, but fastoptim exports no such class`)
          continue
        }
        for (const Type of [Float32Array, Float64Array]) {
          const one = trajectory(Opt, options, Type, 1, sparse, matrices)
          for (const n of [2, 3]) {
            const many = trajectory(Opt, options, Type, n, sparse, matrices)
            const same = one.every((p, i) => bytes(p.data).equals(bytes(many[i].data)))
            t.true(same, `${name} ${Type.name} on ${n} threads`)
          }
        }
      }
    } finally {
      setNumThreads(threads)
    }
  },
)

test.serial('getNumThreads reports what setNumThreads set; the default is the CPUs available', (t) => {
  const threads = getNumThreads()
  if (process.env.FASTOPTIM_NUM_THREADS === undefined) t.is(threads, Math.min(availableParallelism(), 256))
  try {
    for (const n of [1, 3, 256, 2]) {
      setNumThreads(n)
      t.is(getNumThreads(), n)
    }
  } finally {
    setNumThreads(threads)
  }
})

const badCounts: Array<[unknown, ErrorConstructor, string, RegExp]> = [
  [0, RangeError, 'ERR_OUT_OF_RANGE', /^invalid n: 0 \(expected a whole number from 1 to 256\)$/],
  [-1, RangeError, 'ERR_OUT_OF_RANGE', /^invalid n: -1 /],
  [1.5, RangeError, 'ERR_OUT_OF_RANGE', /^invalid n: 1\.5 /],
  [257, RangeError, 'ERR_OUT_OF_RANGE', /^invalid n: 257 /],
  [NaN, RangeError, 'ERR_OUT_OF_RANGE', /^invalid n: NaN /],
  [Infinity, RangeError, 'ERR_OUT_OF_RANGE', /^invalid n: Infinity /],
  ['2', TypeError, 'ERR_INVALID_ARG_TYPE', /^n must be a number, got a string$/],
  [undefined, TypeError, 'ERR_INVALID_ARG_TYPE', /^n must be a number, got undefined$/],
]

for (const [n, instanceOf, code, message] of badCounts) {
  test.serial(`setNumThreads(${typeof n === 'string' ? `'${n}'` : String(n)}) is refused and changes nothing`, (t) => {
    const before = getNumThreads()
    t.throws(() => setNumThreads(n as number), { instanceOf, code, message })
    t.is(getNumThreads(), before)
  })
}

/** Runs `code` in a fresh Node process with `env` added, and returns what it prints. */
function child(code: string, env: Record<string, string>): string {
  const binding = JSON.stringify(join(root, 'native', 'index.js'))
  return execFileSync(process.execPath, ['-e', `const native = require(${binding});\n${code}`], {
    env: { ...process.env, ...env },
    encoding: 'utf8',
  }).trim()
}

test('FASTOPTIM_NUM_THREADS sets the count, a bad value is an error until setNumThreads overrides it', (t) => {
  t.is(child('console.log(native.getNumThreads())', { FASTOPTIM_NUM_THREADS: '3' }), '3')
  t.is(child('console.log(native.getNumThreads())', { FASTOPTIM_NUM_THREADS: ' 1 ' }), '1')
  const bad = child(
    `try { native.getNumThreads() } catch (e) { console.log(e.code + ': ' + e.message) }
     native.setNumThreads(2); console.log(native.getNumThreads())`,
    { FASTOPTIM_NUM_THREADS: 'lots' },
  )
  t.is(
    bad,
    'ERR_INVALID_ARG_VALUE: FASTOPTIM_NUM_THREADS is "lots" (expected a whole number from 1 to 256); fix or unset it, or call setNumThreads(n)\n2',
  )
})

test.serial(
  'worker threads share the pool and step concurrently with the main thread, with the same bits',
  async (t) => {
    const n = 1 << 21
    const shared = () => {
      const make = (seed: number) => {
        const a = new Float32Array(new SharedArrayBuffer(n * 4))
        a.set(values(n, seed, Float32Array))
        return a
      }
      return { data: make(1), grad: make(2) }
    }
    const jobs = [shared(), shared(), shared()]
    const workers = jobs.slice(0, 2).map(
      (job) =>
        new Promise<{ threads: number }>((resolve, reject) => {
          // The worker loads the TypeScript helper through tsx's require hook.
          const script = `require('tsx/cjs'); require(${JSON.stringify(join(__dirname, 'helpers', 'step-worker.ts'))})`
          const worker = new Worker(script, { eval: true, workerData: { ...job, steps: 20 } })
          worker.once('message', resolve)
          worker.once('error', reject)
        }),
    )
    const main = new Adam([jobs[2]], { lr: 1e-2 })
    for (let i = 0; i < 20; i++) main.step()
    const reports = await Promise.all(workers)
    t.deepEqual(
      reports.map((r) => r.threads),
      [getNumThreads(), getNumThreads()],
      'one count for the whole process',
    )
    t.true(bytes(jobs[0].data).equals(bytes(jobs[2].data)) && bytes(jobs[1].data).equals(bytes(jobs[2].data)))
  },
)

test.serial('a steady-state step allocates nothing on one thread, and at most a task per worker on several', (t) => {
  // A parallel step hands a small task to each worker that is not still waiting from the step
  // before (boxed by rayon, freed when the worker has run it); back to back, workers are usually
  // waiting, and everything else a step needs is reused from the step before.
  const threads = getNumThreads()
  try {
    for (const n of [1, 2]) {
      setNumThreads(n)
      // A new pool's threads allocate as they start: let them start before counting.
      const warm = new Adam([{ data: values(1 << 20, 1, Float32Array), grad: values(1 << 20, 2, Float32Array) }])
      for (let i = 0; i < 20; i++) warm.step()
      Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 50)
      for (const sizes of [[1024], [1 << 20], Array.from({ length: 200 }, () => 1024)]) {
        const params = sizes.map((size, i) => ({
          data: values(size, i, Float32Array),
          grad: values(size, i + 7, Float32Array),
        }))
        // The 8-bit optimizers step through their own class and kernel (a 1K tensor keeps float32 state).
        for (const Optimizer of [Adam, fastoptim.Adam8bit, fastoptim.Lion8bit]) {
          const opt = new Optimizer(params as Parameter<Float32Array>[])
          for (let i = 0; i < 10; i++) opt.step()
          const before = internal.__allocations()
          for (let i = 0; i < 200; i++) opt.step()
          const after = internal.__allocations()
          const total = sizes.reduce((a, b) => a + b, 0)
          const tasks = n > 1 && total >= 1 << 15 ? 200 * (n - 1) : 0
          const count = after.count - before.count
          const bytes = after.bytes - before.bytes
          const where = `${Optimizer.name}, ${sizes.length} x ${sizes[0]} on ${n} threads: ${count} allocations, ${bytes} bytes`
          // rayon's job queue also takes a new block of slots every few dozen tasks.
          t.true(count <= tasks * 1.05 + 2, where)
          t.true(bytes <= tasks * 128, where)
          t.log(where)
        }
        // New gradient arrays at every step (two sets in turn): the step takes only those.
        const other = sizes.map((size, i) => values(size, i + 11, Float32Array))
        const own = params.map((p) => p.grad)
        const opt = new Adam(params)
        let k = 0
        const step = () => {
          k ^= 1
          params.forEach((p, i) => (p.grad = k === 1 ? other[i] : own[i]))
          opt.step()
        }
        for (let i = 0; i < 10; i++) step()
        const before = internal.__allocations()
        for (let i = 0; i < 200; i++) step()
        const after = internal.__allocations()
        const total = sizes.reduce((a, b) => a + b, 0)
        const tasks = n > 1 && total >= 1 << 15 ? 200 * (n - 1) : 0
        const where = `Adam, new gradients, ${sizes.length} x ${sizes[0]} on ${n} threads: ${after.count - before.count} allocations, ${after.bytes - before.bytes} bytes`
        t.true(after.count - before.count <= tasks * 1.05 + 2, where)
        t.true(after.bytes - before.bytes <= tasks * 128, where)
        t.log(where)
      }
    }
  } finally {
    setNumThreads(threads)
  }
})
