// fastoptim/tfjs against tfjs's own Adam, at 1M parameters, on tfjs's cpu and wasm backends.
//
// 1. applyGradients: one Adam update of a [1024, 1024] variable (1,048,576 parameters) from a
//    gradient tensor made beforehand, by `tf.train.adam` and by fastoptim/tfjs's `adam`, plus the
//    parts of the bridge on their own: fastoptim's bare step over Float32Arrays, and the copies
//    each backend makes (the gradient out with dataSync(), the update back in with tf.tensor and
//    assign).
// 2. A whole training step (`model.trainOnBatch`, forward, backward and update) of an MLP
//    784-1024-256-10 (1,068,810 parameters) on a batch of 32, with each optimizer.
//
// Each figure is the median of timed steps after warm-up steps. Run with
//   node --expose-gc --import tsx benchmark/tfjs.ts
// Results: benchmark/results/tfjs.json.
import { writeFileSync } from 'node:fs'
import { join } from 'node:path'

import * as tf from '@tensorflow/tfjs'
import '@tensorflow/tfjs-backend-wasm'

import { Adam, getNumThreads } from '../lib'
import { adam } from '../lib/tfjs'
import { machine, QUICK as quick, RESULTS, values } from './common'

const SHAPE = [1024, 1024]
const N = SHAPE[0] * SHAPE[1]
const gc = () => (globalThis as { gc?: () => void }).gc?.()

/** The median time in ms of `samples` calls of `run`, after `warmup` calls. */
async function time(run: () => unknown, samples: number, warmup = 2): Promise<number> {
  for (let i = 0; i < warmup; i++) await run()
  const times: number[] = []
  for (let i = 0; i < samples; i++) {
    const start = performance.now()
    await run()
    times.push(performance.now() - start)
  }
  times.sort((a, b) => a - b)
  return times[times.length >> 1]
}

const round = (ms: number) => Math.round(ms * 1000) / 1000

interface ApplyRow {
  backend: string
  tfjsAdamMs: number
  fastoptimMs: number
  ratio: number
  /** What the bridge does besides fastoptim's step, each on its own. */
  parts: { gradientOutMs: number; updateInMs: number }
}

/** applyGradients at 1M parameters on `backend`, by tfjs's Adam and by fastoptim/tfjs's. */
async function applyGradients(backend: 'cpu' | 'wasm'): Promise<ApplyRow> {
  await tf.setBackend(backend)
  const grad = tf.tensor(values(N, 2), SHAPE)
  const make = (label: string) => tf.variable(tf.tensor(values(N, 1), SHAPE), true, `${backend}-${label}`)

  const theirs = make('tfjs')
  const tfjsAdam = tf.train.adam(1e-3, 0.9, 0.999, 1e-8)
  const tfjsAdamMs = await time(() => tfjsAdam.applyGradients([{ name: theirs.name, tensor: grad }]), quick ? 3 : 10)
  tfjsAdam.dispose()
  theirs.dispose()
  gc()

  const ours = make('fastoptim')
  const fastAdam = adam({ lr: 1e-3 })
  const fastoptimMs = await time(() => fastAdam.applyGradients([{ name: ours.name, tensor: grad }]), quick ? 10 : 50)
  fastAdam.dispose()
  gc()

  // The copies, alone: the gradient read out (cpu: the backend's own array, returned as is), and
  // the update written back (cpu: a copy of the mirror, which tf.tensor and assign then adopt;
  // wasm: tf.tensor's copy into its heap).
  const gradientOutMs = await time(() => grad.dataSync(), 20)
  const mirror = values(N, 3)
  const updateInMs = await time(
    () => tf.tidy(() => ours.assign(tf.tensor(backend === 'wasm' ? mirror : mirror.slice(), SHAPE))),
    20,
  )
  ours.dispose()
  grad.dispose()
  gc()
  return { backend, tfjsAdamMs, fastoptimMs, ratio: tfjsAdamMs / fastoptimMs, parts: { gradientOutMs, updateInMs } }
}

/** fastoptim's own Adam step over Float32Arrays at 1M: the bridge's floor. */
async function bareStep(): Promise<number> {
  const p = { data: values(N, 1), grad: values(N, 2), shape: SHAPE }
  const opt = new Adam([p], { lr: 1e-3 })
  return time(() => opt.step(), quick ? 10 : 50)
}

function mlp(optimizer: tf.Optimizer): tf.Sequential {
  const model = tf.sequential({
    layers: [
      tf.layers.dense({
        inputShape: [784],
        units: 1024,
        activation: 'relu',
        kernelInitializer: tf.initializers.glorotUniform({ seed: 1 }),
      }),
      tf.layers.dense({
        units: 256,
        activation: 'relu',
        kernelInitializer: tf.initializers.glorotUniform({ seed: 2 }),
      }),
      tf.layers.dense({
        units: 10,
        activation: 'softmax',
        kernelInitializer: tf.initializers.glorotUniform({ seed: 3 }),
      }),
    ],
  })
  model.compile({ optimizer, loss: 'categoricalCrossentropy' })
  return model
}

interface TrainRow {
  backend: string
  params: number
  tfjsAdamMs: number
  fastoptimMs: number
  ratio: number
}

/** One trainOnBatch of the MLP on `backend`, with tfjs's Adam and with fastoptim/tfjs's. */
async function trainingStep(backend: 'cpu' | 'wasm'): Promise<TrainRow> {
  await tf.setBackend(backend)
  const x = tf.tensor(values(32 * 784, 4), [32, 784])
  const y = tf.oneHot(
    tf.tensor1d(
      Array.from({ length: 32 }, (_, i) => (i * 7) % 10),
      'int32',
    ),
    10,
  )
  const run = async (optimizer: tf.Optimizer) => {
    const model = mlp(optimizer)
    const ms = await time(() => model.trainOnBatch(x, y), quick ? 3 : 10)
    const params = model.countParams()
    model.dispose()
    optimizer.dispose()
    gc()
    return { ms, params }
  }
  const theirs = await run(tf.train.adam(1e-3, 0.9, 0.999, 1e-8))
  const ours = await run(adam({ lr: 1e-3 }))
  tf.dispose([x, y])
  return { backend, params: ours.params, tfjsAdamMs: theirs.ms, fastoptimMs: ours.ms, ratio: theirs.ms / ours.ms }
}

async function main() {
  tf.enableProdMode()
  // Both backends initialized before anything is timed.
  await tf.setBackend('wasm')
  await tf.ready()
  await tf.setBackend('cpu')
  await tf.ready()

  const bareStepMs = await bareStep()
  console.log(
    `fastoptim Adam, bare step over Float32Arrays, ${N.toLocaleString('en')} params (${getNumThreads()} threads): ${bareStepMs.toFixed(2)} ms`,
  )
  const apply: ApplyRow[] = []
  for (const backend of ['cpu', 'wasm'] as const) {
    const row = await applyGradients(backend)
    apply.push(row)
    console.log(
      `applyGradients, ${N.toLocaleString('en')} params, ${backend}: tf.train.adam ${row.tfjsAdamMs.toFixed(2)} ms, fastoptim/tfjs adam ${row.fastoptimMs.toFixed(2)} ms: ${row.ratio.toFixed(1)}x` +
        ` (gradient out ${row.parts.gradientOutMs.toFixed(2)} ms, update in ${row.parts.updateInMs.toFixed(2)} ms)`,
    )
  }
  const train: TrainRow[] = []
  for (const backend of ['cpu', 'wasm'] as const) {
    const row = await trainingStep(backend)
    train.push(row)
    console.log(
      `trainOnBatch, MLP of ${row.params.toLocaleString('en')} params, batch 32, ${backend}: tf.train.adam ${row.tfjsAdamMs.toFixed(1)} ms, fastoptim/tfjs adam ${row.fastoptimMs.toFixed(1)} ms: ${row.ratio.toFixed(2)}x`,
    )
  }
  const results = {
    date: new Date().toISOString(),
    machine: machine(),
    tfjs: tf.version.tfjs,
    threads: getNumThreads(),
    params: N,
    bareStepMs: round(bareStepMs),
    applyGradients: apply.map((row) => ({
      ...row,
      tfjsAdamMs: round(row.tfjsAdamMs),
      fastoptimMs: round(row.fastoptimMs),
      ratio: Math.round(row.ratio * 10) / 10,
      parts: { gradientOutMs: round(row.parts.gradientOutMs), updateInMs: round(row.parts.updateInMs) },
    })),
    trainingStep: train.map((row) => ({
      ...row,
      tfjsAdamMs: round(row.tfjsAdamMs),
      fastoptimMs: round(row.fastoptimMs),
      ratio: Math.round(row.ratio * 100) / 100,
    })),
  }
  writeFileSync(join(RESULTS, 'tfjs.json'), `${JSON.stringify(results, null, 2)}\n`)
}

main().catch((error) => {
  console.error(error)
  process.exit(1)
})
