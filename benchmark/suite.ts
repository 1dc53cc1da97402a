// `npm run bench`, part 1: step throughput, with benny.
//
// For each size (1K, 16K, 256K, 4M, 64M fp32 parameters) one benny suite times one Adam step by:
// a plain JavaScript loop; tfjs's Adam on its cpu and wasm backends; fastoptim on 1 thread and on
// every thread; and the memory-traffic baseline (`__memoryTraffic`: a native kernel that reads
// the same four arrays and writes the same three as Adam, with trivial arithmetic, through the
// same engine) on 1 thread and on every thread, so that each fastoptim row can be read as a
// fraction of what memory allows in the same run (benchmark/references.ts times the other
// optimizers, and the C and PyTorch references). A last suite compares a model of 200 tensors of 1K with
// one tensor of 200K, and the same model given new gradient arrays at every step (as a training loop
// that makes them anew, or fastoptim/tfjs, hands them over: two sets in turn). Fixtures are built on a case's first call, outside the timed loop (benny
// calls a case's setup several times while preparing, so building them there would multiply the
// memory), and shared by the cases of a size. Results: benchmark/results/<suite>.json and
// .chart.html (benny), and results/throughput.json (every case, for report.ts).

import * as tf from '@tensorflow/tfjs-core'
import '@tensorflow/tfjs-backend-cpu'
import '@tensorflow/tfjs-backend-wasm'
import b from 'benny'

import { Adam, setNumThreads } from '../lib'
import { native } from '../lib/native'
import { ALL_THREADS, jsAdam, label, machine, QUICK, RESULTS, save, SECONDS, SIZES, values } from './common'

const internal = native as unknown as {
  __memoryTraffic(p: Float32Array, g: Float32Array, m: Float32Array, v: Float32Array): void
}

/** Every case's result, for report.ts. */
interface Row {
  suite: string
  case: string
  params: number
  tensors: number
  threads: number | null
  opsPerSecond: number
  marginPercent: number
  samples: number
  /** Why a contender has no figure at this size. */
  error?: string
}

/**
 * From this size tfjs is timed by hand, outside benny: its cpu backend takes about 16 s a step at
 * 64M (benny would want minutes), and its wasm backend cannot hold Adam's tensors and temporaries
 * in its 32-bit heap ("memory access out of bounds", then an abort that ends the process).
 */
const TFJS_BY_HAND = 1 << 26
const rows: Row[] = []

const options = { minSamples: QUICK ? 2 : 5, maxTime: SECONDS }

function lazy<T>(make: () => T): () => T {
  let value: T | undefined
  return () => (value ??= make())
}

let threadsNow = -1
function threads(n: number) {
  if (n !== threadsNow) setNumThreads((threadsNow = n))
}

/**
 * Switches tfjs's backend. Both are initialized before anything is timed, and switching to an
 * initialized backend happens synchronously inside `setBackend` (its promise only reports it).
 */
function backend(name: 'cpu' | 'wasm') {
  if (tf.getBackend() !== name) void tf.setBackend(name)
  if (tf.getBackend() !== name) throw new Error(`tfjs did not switch to ${name}`)
}

/** tfjs's Adam over `sizes` (one variable each) on `name`'s backend, with its step. */
function tfjsAdam(name: 'cpu' | 'wasm', sizes: number[]) {
  return lazy(() => {
    if (tf.getBackend() !== name) throw new Error(`tfjs backend ${name} is not active`)
    const vars = sizes.map((n, i) =>
      tf.variable(tf.tensor1d(values(n, 2 * i + 1)), true, `${name}-${n}-${i}-${Math.random()}`),
    )
    const grads = sizes.map((n, i) => tf.tensor1d(values(n, 2 * i + 2)))
    const opt = tf.train.adam(1e-3, 0.9, 0.999, 1e-8)
    const named = vars.map((v, i) => ({ name: v.name, tensor: grads[i] }))
    return {
      step: () => opt.applyGradients(named),
      dispose: () => {
        opt.dispose()
        vars.forEach((v) => v.dispose())
        grads.forEach((g) => g.dispose())
      },
    }
  })
}

function record(suite: string, params: number, tensors: number, threadsOf: (name: string) => number | null) {
  return b.cycle((result: { name: string; ops: number; margin: number; samples: number }) => {
    rows.push({
      suite,
      case: result.name,
      params,
      tensors,
      threads: threadsOf(result.name),
      opsPerSecond: result.ops,
      marginPercent: result.margin,
      samples: result.samples,
    })
    return `  ${result.name}: ${result.ops.toLocaleString('en')} steps/s ±${result.margin}% (${((result.ops * params) / 1e9).toFixed(3)} Gparam/s)`
  })
}

const threadsIn = (name: string) => {
  const match = name.match(/(\d+) threads?\)?$/)
  return match ? Number(match[1]) : null
}

async function sizeSuite(n: number) {
  const name = `adam-${label(n)}`
  const js = lazy(() => ({ p: values(n, 1), g: values(n, 2), m: new Float32Array(n), v: new Float32Array(n), t: 0 }))
  const model = lazy(() => {
    const params = [{ data: values(n, 1), grad: values(n, 2) }]
    return { params, adam: new Adam(params) }
  })
  const tfCpu = tfjsAdam('cpu', [n])
  const tfWasm = tfjsAdam('wasm', [n])
  const tfjsCases =
    n >= TFJS_BY_HAND
      ? []
      : [
          b.add('tfjs cpu (1 thread)', () => () => {
            backend('cpu')
            tfCpu().step()
          }),
          b.add('tfjs wasm (1 thread)', () => () => {
            backend('wasm')
            tfWasm().step()
          }),
        ]
  const cases = [
    b.add('plain JS loop (1 thread)', () => () => {
      const f = js()
      jsAdam(f.p, f.g, f.m, f.v, ++f.t)
    }),
    ...tfjsCases,
    ...[1, ALL_THREADS].flatMap((t) => [
      b.add(`memory baseline (${t} thread${t > 1 ? 's' : ''})`, () => () => {
        threads(t)
        const f = js()
        internal.__memoryTraffic(f.p, f.g, f.m, f.v)
      }),
      b.add(`fastoptim Adam (${t} thread${t > 1 ? 's' : ''})`, () => () => {
        threads(t)
        model().adam.step()
      }),
    ]),
  ]
  await b.suite(
    `Adam step, ${label(n)} fp32 parameters`,
    b.configure({ cases: options }),
    ...cases,
    record(name, n, 1, threadsIn),
    b.complete(),
    b.save({ file: name, folder: RESULTS, format: 'json', details: false }),
    b.save({ file: name, folder: RESULTS, format: 'chart.html' }),
  )
  if (n >= TFJS_BY_HAND) {
    backend('cpu')
    const step = tfCpu()
    step.step()
    const started = process.hrtime.bigint()
    step.step()
    const seconds = Number(process.hrtime.bigint() - started) / 1e9
    step.dispose()
    const base = { suite: name, params: n, tensors: 1, threads: 1, marginPercent: NaN }
    rows.push({ ...base, case: 'tfjs cpu (1 thread)', opsPerSecond: 1 / seconds, samples: 1 })
    rows.push({
      ...base,
      case: 'tfjs wasm (1 thread)',
      opsPerSecond: NaN,
      samples: 0,
      error: 'fails: wasm heap too small',
    })
    console.log(
      `  tfjs cpu (1 thread), one step timed by hand: ${seconds.toFixed(1)} s (${(n / seconds / 1e9).toFixed(3)} Gparam/s)`,
    )
    return
  }
  backend('cpu')
  tfCpu().dispose()
  backend('wasm')
  tfWasm().dispose()
  backend('cpu')
}

async function modelSuite() {
  const name = 'adam-200x1K'
  const many = lazy(() => {
    const params = Array.from({ length: 200 }, (_, i) => ({
      data: values(1024, 2 * i + 1),
      grad: values(1024, 2 * i + 2),
    }))
    return new Adam(params)
  })
  const one = lazy(() => new Adam([{ data: values(200 * 1024, 1), grad: values(200 * 1024, 2) }]))
  // The same model whose parameters get new gradient arrays (with the same values) at every step.
  const fresh = lazy(() => {
    const params = Array.from({ length: 200 }, (_, i) => ({
      data: values(1024, 2 * i + 1),
      grad: values(1024, 2 * i + 2),
    }))
    const sets = [params.map((p) => p.grad), params.map((_, i) => values(1024, 2 * i + 2))]
    const opt = new Adam(params)
    let k = 0
    return () => {
      k ^= 1
      const set = sets[k]
      for (let i = 0; i < params.length; i++) params[i].grad = set[i]
      opt.step()
    }
  })
  const js = lazy(() =>
    Array.from({ length: 200 }, (_, i) => ({
      p: values(1024, 2 * i + 1),
      g: values(1024, 2 * i + 2),
      m: new Float32Array(1024),
      v: new Float32Array(1024),
    })),
  )
  let t = 0
  const tfCpu = tfjsAdam(
    'cpu',
    Array.from({ length: 200 }, () => 1024),
  )
  await b.suite(
    'Adam step, 200 tensors of 1K against one tensor of 200K',
    b.configure({ cases: options }),
    b.add('plain JS loop, 200 x 1K (1 thread)', () => () => {
      t++
      for (const f of js()) jsAdam(f.p, f.g, f.m, f.v, t)
    }),
    b.add('tfjs cpu, 200 x 1K (1 thread)', () => () => {
      backend('cpu')
      tfCpu().step()
    }),
    ...[1, ALL_THREADS].flatMap((n) => [
      b.add(`fastoptim Adam, 200 x 1K (${n} thread${n > 1 ? 's' : ''})`, () => () => {
        threads(n)
        many().step()
      }),
      b.add(`fastoptim Adam, 1 x 200K (${n} thread${n > 1 ? 's' : ''})`, () => () => {
        threads(n)
        one().step()
      }),
      b.add(`fastoptim Adam, 200 x 1K, new gradient arrays (${n} thread${n > 1 ? 's' : ''})`, () => () => {
        threads(n)
        fresh()()
      }),
    ]),
    record(name, 200 * 1024, 200, threadsIn),
    b.complete(),
    b.save({ file: name, folder: RESULTS, format: 'json', details: false }),
    b.save({ file: name, folder: RESULTS, format: 'chart.html' }),
  )
  backend('cpu')
  tfCpu().dispose()
}

async function main() {
  // Load the wasm backend before anything is timed.
  await tf.setBackend('wasm')
  await tf.ready()
  await tf.setBackend('cpu')
  const sizes = process.argv.slice(2).length > 0 ? process.argv.slice(2).map(Number) : SIZES
  const started = Date.now()
  for (const n of sizes) {
    await sizeSuite(n)
    ;(globalThis as { gc?: () => void }).gc?.()
  }
  await modelSuite()
  save('throughput.json', { machine: machine(), allThreads: ALL_THREADS, seconds: (Date.now() - started) / 1000, rows })
}

main().catch((error) => {
  console.error(error)
  process.exit(1)
})
