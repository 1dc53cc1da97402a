// fastoptim/tfjs on TensorFlow.js's cpu backend (and its wasm backend, whose copies differ): a
// FastoptimOptimizer trains a tfjs-layers model through model.fit and minimize with exactly the
// numbers fastoptim's own optimizer gives on the same gradients, carries its whole state through
// getWeights/setWeights and model.save({ includeOptimizer: true }) so that a reloaded model resumes
// exactly (every optimizer of the registry), leaks no tensor, and refuses bad input with
// fastoptim's errors. Every test is serial: tfjs's engine (variables, tensor counts) is global.
import * as tf from '@tensorflow/tfjs'
import '@tensorflow/tfjs-backend-wasm'
import test, { type ExecutionContext } from 'ava'

import * as fastoptim from '../lib'
import { Adam, type Optimizer, type Parameter } from '../lib'
import * as tfjs from '../lib/tfjs'
import { adam, FastoptimOptimizer, optimizer, train } from '../lib/tfjs'
import { fillValues } from './helpers/values'

type AnyOptimizer = Optimizer<object>
type Ctor = new (params: Parameter[], options?: object) => AnyOptimizer

test.before(async () => {
  // No "install tfjs-node" banner, and no per-op NaN checks.
  tf.enableProdMode()
  await tf.setBackend('cpu')
})

test.afterEach.always(() => {
  tf.disposeVariables()
})

/** Deterministic values in (−scale, scale). */
function values(n: number, seed: number, scale = 1): Float32Array {
  return fillValues(new Float32Array(n), seed, { scale })
}

const read = (variable: tf.Variable | tf.Tensor) => Array.from(variable.dataSync())

/**
 * Options that put an optimizer's state to use beyond its defaults, or that it needs to step:
 * Schedule-Free optimizers start in eval mode, where they refuse to step.
 */
const OPTIONS: Record<string, object> = {
  SGD: { lr: 1e-2, momentum: 0.9 },
  Adam: { lr: 1e-2, amsgrad: true },
  RMSprop: { momentum: 0.5, centered: true },
  AdamWScheduleFree: { trainMode: true },
  SGDScheduleFree: { lr: 0.1, trainMode: true },
}

/** fastoptim's own class for a registry name. */
function classOf(name: string): Ctor {
  return (fastoptim as unknown as Record<string, Ctor>)[name]
}

/** A small model: a [4, 8] and an [8, 1] kernel (matrices, which Adafactor factors) and their biases. */
function model(seed: number, useBias = true): tf.Sequential {
  const m = tf.sequential({
    layers: [
      tf.layers.dense({
        inputShape: [4],
        units: 8,
        activation: 'tanh',
        kernelInitializer: tf.initializers.glorotUniform({ seed }),
        biasInitializer: 'ones',
        useBias,
      }),
      tf.layers.dense({ units: 1, kernelInitializer: tf.initializers.glorotUniform({ seed: seed + 1 }), useBias }),
    ],
  })
  return m
}

/** A fixed regression batch: 32 rows of 4 inputs, targets from a fixed linear map. */
function data(): { x: tf.Tensor2D; y: tf.Tensor2D } {
  const x = tf.tensor2d(values(32 * 4, 7), [32, 4])
  const y = tf.tidy(() => x.matMul(tf.tensor2d([0.5, -1, 2, 0.25], [4, 1])).add(0.1)) as tf.Tensor2D
  return { x, y }
}

/** Records every gradient `opt` is given, by variable name, as copies. */
function recordGradients(opt: FastoptimOptimizer<object>): Array<Map<string, Float32Array>> {
  const calls: Array<Map<string, Float32Array>> = []
  const apply = opt.applyGradients.bind(opt)
  opt.applyGradients = (grads) => {
    const entries: Array<[string, tf.Tensor]> = Array.isArray(grads)
      ? grads.map(({ name, tensor }) => [name, tensor])
      : Object.entries(grads)
    calls.push(new Map(entries.map(([name, tensor]) => [name, Float32Array.from(tensor.dataSync())])))
    apply(grads)
  }
  return calls
}

/** fastoptim's own optimizer run from `start` over the recorded gradients: the reference. */
function replay(
  name: string,
  options: object,
  start: Map<string, { data: Float32Array; shape: number[] }>,
  calls: Array<Map<string, Float32Array>>,
) {
  const params = new Map(
    [...start].map(([key, { data, shape }]) => [key, { data: data.slice(), grad: null as Float32Array | null, shape }]),
  )
  const Class = classOf(name)
  const opt = new Class([...params.values()], options)
  for (const grads of calls) {
    for (const [key, param] of params) param.grad = grads.get(key) ?? null
    opt.step()
  }
  return params
}

function snapshot(variables: readonly tf.Variable[]): Map<string, { data: Float32Array; shape: number[] }> {
  return new Map(variables.map((v) => [v.name, { data: Float32Array.from(v.dataSync()), shape: [...v.shape] }]))
}

const trainable = (m: tf.LayersModel) => m.trainableWeights.map((w) => tf.engine().registeredVariables[w.name])

test.serial(
  'model.fit trains with fastoptim’s Adam: the loss falls, and the weights are exactly what fastoptim gives on the same gradients',
  async (t) => {
    const m = model(1)
    const opt = adam({ lr: 0.01 })
    m.compile({ optimizer: opt, loss: 'meanSquaredError' })
    const start = snapshot(trainable(m))
    const calls = recordGradients(opt)
    const { x, y } = data()
    const history = await m.fit(x, y, { epochs: 10, batchSize: 8, shuffle: false, verbose: 0 })
    const loss = history.history.loss as number[]
    t.is(calls.length, 40)
    t.true(loss[loss.length - 1] < loss[0] / 2, `loss ${loss[0]} → ${loss[loss.length - 1]}`)
    t.is(opt.iterations, 40)
    const reference = replay('Adam', { lr: 0.01 }, start, calls)
    for (const variable of trainable(m))
      t.deepEqual(read(variable), Array.from(reference.get(variable.name)!.data), variable.name)
    tf.dispose([x, y])
    m.dispose()
  },
)

test.serial(
  'minimize on a quadratic gives exactly fastoptim’s Adam on the same gradients, with a var list and without',
  (t) => {
    for (const withList of [true, false]) {
      const start = values(12, 3, 2)
      const c = values(12, 4)
      const x = tf.variable(tf.tensor(start, [3, 4]), true, `quadratic-${withList}`)
      const target = tf.tensor(c, [3, 4])
      const opt = adam({ lr: 0.05, betas: [0.8, 0.99] })
      const param = { data: start.slice(), grad: new Float32Array(12), shape: [3, 4] }
      const reference = new Adam([param], { lr: 0.05, betas: [0.8, 0.99] })
      for (let step = 0; step < 25; step++) {
        // d/dx Σ (x − c)² in float32, as tfjs computes it: 2 · (x − c), each rounded.
        for (let i = 0; i < 12; i++) param.grad[i] = Math.fround(2 * Math.fround(param.data[i] - c[i]))
        const f = () => x.sub(target).square().sum() as tf.Scalar
        const cost = withList ? opt.minimize(f, true, [x]) : opt.minimize(f, true)
        let want = 0
        for (let i = 0; i < 12; i++) want += (param.data[i] - c[i]) ** 2
        t.true(Math.abs(cost!.dataSync()[0] - want) <= 1e-5 * want, `cost ${cost!.dataSync()[0]}, expected ${want}`)
        cost!.dispose()
        reference.step()
        t.deepEqual(read(x), Array.from(param.data), `step ${step + 1}`)
      }
      target.dispose()
    }
  },
)

test.serial(
  'Schedule-Free through train() and eval(): the variables are what fastoptim’s own class gives, at the training point and at the average',
  (t) => {
    type Modal = AnyOptimizer & { train(): void; eval(): void }
    for (const name of ['AdamWScheduleFree', 'SGDScheduleFree']) {
      const start = values(12, 21, 2)
      const c = values(12, 22)
      const x = tf.variable(tf.tensor(start, [3, 4]), true, `modes-${name}`)
      const target = tf.tensor(c, [3, 4])
      const f = () => x.sub(target).square().sum() as tf.Scalar
      // Made in eval mode (the default): train() before the first step reaches the optimizer made then.
      const opt = optimizer(name, { lr: 0.05 })
      const param = { data: start.slice(), grad: new Float32Array(12), shape: [3, 4] }
      const reference = new (classOf(name) as unknown as new (p: Parameter[], o: object) => Modal)([param], {
        lr: 0.05,
      })
      const steps = (n: number) => {
        for (let step = 0; step < n; step++) {
          for (let i = 0; i < 12; i++) param.grad[i] = Math.fround(2 * Math.fround(param.data[i] - c[i]))
          tf.dispose(opt.minimize(f, true) ?? [])
          reference.step()
          t.deepEqual(read(x), Array.from(param.data), `${name} step ${step + 1}`)
        }
      }
      opt.train()
      reference.train()
      steps(8)
      opt.eval()
      reference.eval()
      t.deepEqual(read(x), Array.from(param.data), `${name} at the average`)
      t.notDeepEqual(read(x), Array.from(start))
      const before = read(x)
      t.throws(() => opt.minimize(f), { code: 'ERR_INVALID_STATE', message: /eval mode/ }, name)
      t.deepEqual(read(x), before, `${name}: a step refused in eval mode changes nothing`)
      opt.train()
      reference.train()
      t.deepEqual(read(x), Array.from(param.data), `${name} back at the training point`)
      steps(3)
      target.dispose()
    }
    t.throws(() => adam().train(), {
      code: 'ERR_INVALID_STATE',
      message: /^train\(\): Adam has no training and evaluation modes/,
    })
    t.throws(() => train.sgd().eval(), { code: 'ERR_INVALID_STATE', message: /^eval\(\): SGD has no training/ })
  },
)

test.serial(
  'a variable assigned between steps is read again: the next step starts from its new value, with the state kept',
  (t) => {
    const x = tf.variable(tf.tensor(values(6, 9), [6]), true, 'reassigned')
    const opt = adam({ lr: 0.1 })
    const param = { data: values(6, 9), grad: null as Float32Array | null }
    const reference = new Adam([param], { lr: 0.1 })
    const grad = values(6, 10)
    const step = () => {
      opt.applyGradients([{ name: x.name, tensor: tf.tensor(grad) }])
      param.grad = grad
      reference.step()
    }
    step()
    step()
    const fresh = values(6, 11)
    x.assign(tf.tensor(fresh))
    param.data.set(fresh)
    step()
    t.deepEqual(read(x), Array.from(param.data))
  },
)

test.serial('a step changes no tensor or array tfjs gave out before it (tfjs’s values do not change)', (t) => {
  const x = tf.variable(tf.tensor(values(8, 12), [2, 4]), true, 'immutable')
  const opt = adam({ lr: 0.1 })
  const grads = () => [{ name: x.name, tensor: tf.tensor(values(8, 13), [2, 4]) }]
  opt.applyGradients(grads())
  // On the cpu backend these are the variable's own storage: the next step must not write it.
  const array = x.dataSync()
  const clone = x.clone()
  const copy = Array.from(array)
  opt.applyGradients(grads())
  t.deepEqual(Array.from(array), copy)
  t.deepEqual(read(clone), copy)
  t.notDeepEqual(read(x), copy)
  clone.dispose()
})

test.serial('on the wasm backend (which copies in and out) the numbers are the same', async (t) => {
  await tf.setBackend('wasm')
  try {
    const start = values(10, 14)
    const x = tf.variable(tf.tensor(start, [2, 5]), true, 'on-wasm')
    const opt = adam({ lr: 0.1 })
    const param = { data: start.slice(), grad: null as Float32Array | null, shape: [2, 5] }
    const reference = new Adam([param], { lr: 0.1 })
    const before = x.clone()
    for (let step = 0; step < 5; step++) {
      const grad = values(10, 20 + step)
      opt.applyGradients({ [x.name]: tf.tensor(grad, [2, 5]) })
      param.grad = grad
      reference.step()
    }
    t.deepEqual(read(x), Array.from(param.data))
    t.deepEqual(read(before), Array.from(start))
    before.dispose()
  } finally {
    await tf.setBackend('cpu')
  }
})

test.serial(
  'getWeights: iter, then each variable’s step and buffers in its shape; setWeights into a new optimizer resumes exactly',
  async (t) => {
    const grad = (step: number) => tf.tensor(values(12, 30 + step), [3, 4])
    const a = tf.variable(tf.tensor(values(12, 15), [3, 4]), true, 'round-trip-a')
    const b = tf.variable(tf.tensor(values(12, 15), [3, 4]), true, 'round-trip-b')
    const first = adam({ lr: 0.1, amsgrad: true })
    for (let step = 0; step < 3; step++) first.applyGradients({ [a.name]: grad(step) })
    const weights = await first.getWeights()
    t.deepEqual(
      weights.map(({ name, tensor }) => [name, tensor.dtype, tensor.shape]),
      [
        ['iter', 'int32', []],
        ['round-trip-a/step', 'int32', []],
        ['round-trip-a/expAvg', 'float32', [3, 4]],
        ['round-trip-a/expAvgSq', 'float32', [3, 4]],
        ['round-trip-a/maxExpAvgSq', 'float32', [3, 4]],
      ],
    )
    t.deepEqual(read(weights[0].tensor), [3])
    t.deepEqual(read(weights[1].tensor), [3])

    // A second optimizer that has stepped another way: setWeights replaces all of it.
    const second = adam({ lr: 0.1, amsgrad: true })
    b.assign(a)
    second.applyGradients({ [b.name]: grad(99) })
    b.assign(a)
    await second.setWeights(weights)
    t.is(second.iterations, 3)
    for (let step = 3; step < 6; step++) {
      first.applyGradients({ [a.name]: grad(step) })
      second.applyGradients({ [b.name]: grad(step) })
    }
    t.deepEqual(read(b), read(a))
    const [wa, wb] = [await first.getWeights(), await second.getWeights()]
    t.deepEqual(
      wb.map(({ tensor }) => read(tensor)),
      wa.map(({ tensor }) => read(tensor)),
    )
  },
)

test.serial('state restored before a variable is seen waits for the variable first seen at its position', async (t) => {
  const grad = (step: number) => tf.tensor(values(5, 40 + step))
  const a = tf.variable(tf.tensor(values(5, 16)), true, 'early-a')
  const first = optimizer('NAdam', { lr: 0.1 })
  for (let step = 0; step < 4; step++) first.applyGradients({ [a.name]: grad(step) })
  const b = tf.variable(tf.tensor(a.dataSync().slice()), true, 'early-b')
  const second = optimizer('nadam', { lr: 0.1 })
  await second.setWeights(await first.getWeights())
  // Before its variable is seen, the restored state is what getWeights returns (NAdam's muProduct as its float64 bits).
  t.deepEqual(
    (await second.getWeights()).map(({ name, tensor }) => [name, read(tensor)]),
    (await first.getWeights()).map(({ name, tensor }) => [name, read(tensor)]),
  )
  for (let step = 4; step < 8; step++) {
    first.applyGradients({ [a.name]: grad(step) })
    second.applyGradients({ [b.name]: grad(step) })
  }
  t.deepEqual(read(b), read(a))
})

/** A memory IOHandler's save: the artifacts, through JSON where a file would put them. */
async function saveToMemory(m: tf.LayersModel): Promise<tf.io.ModelArtifacts> {
  let saved: tf.io.ModelArtifacts | undefined
  await m.save(
    tf.io.withSaveHandler(async (artifacts) => {
      saved = artifacts
      return { modelArtifactsInfo: { dateSaved: new Date(), modelTopologyType: 'JSON' } }
    }),
    { includeOptimizer: true },
  )
  const json = JSON.parse(JSON.stringify({ ...saved!, weightData: undefined }))
  return { ...json, weightData: saved!.weightData }
}

function assertSameWeights(t: ExecutionContext, got: tf.LayersModel, want: tf.LayersModel, label: string) {
  const [g, w] = [got.getWeights(), want.getWeights()]
  t.is(g.length, w.length)
  g.forEach((tensor, i) => t.deepEqual(read(tensor), read(w[i]), `${label}: weight ${i}`))
}

for (const { name, matrices } of fastoptim.algorithms()) {
  test.serial(
    `${name}: model.save({ includeOptimizer: true }), reload, continue — exactly the uninterrupted run`,
    async (t) => {
      const options = OPTIONS[name] ?? {}
      const { x, y } = data()
      const make = () => {
        // An optimizer of matrices only (Muon) gets a model of matrices only: no biases.
        const m = model(5, !matrices)
        m.compile({ optimizer: optimizer(name, options), loss: 'meanSquaredError' })
        return m
      }
      const straight = make()
      for (let step = 0; step < 6; step++) await straight.trainOnBatch(x, y)

      const first = make()
      for (let step = 0; step < 3; step++) await first.trainOnBatch(x, y)
      const artifacts = await saveToMemory(first)
      t.is(
        (artifacts.trainingConfig as unknown as { optimizer_config: { class_name: string } }).optimizer_config
          .class_name,
        'Fastoptim',
      )
      const loaded = await tf.loadLayersModel(tf.io.fromMemory(artifacts))
      t.true(loaded.optimizer instanceof FastoptimOptimizer)
      t.is((loaded.optimizer as FastoptimOptimizer).algorithm, name)
      t.is(loaded.optimizer.iterations, 3)
      assertSameWeights(t, loaded, first, 'as saved')
      const counts: number[] = []
      for (let step = 3; step < 6; step++) {
        await loaded.trainOnBatch(x, y)
        counts.push(tf.memory().numTensors)
      }
      assertSameWeights(t, loaded, straight, 'resumed')
      t.deepEqual(counts, [counts[0], counts[0], counts[0]], 'no tensor leaks across steps')
      // The same state, under the loaded model's variable names (which tfjs suffixes: kernel_1).
      const state = async (m: tf.LayersModel) =>
        (await m.optimizer.getWeights()).map(({ name: weight, tensor }) => [
          weight.slice(weight.lastIndexOf('/') + 1),
          read(tensor),
        ])
      t.deepEqual(await state(loaded), await state(straight), 'the same optimizer state')
      for (const m of [straight, first, loaded]) m.dispose()
      tf.dispose([x, y])
    },
  )
}

test.serial('Adafactor’s state has PyTorch’s shapes: a matrix’s second moment as a row and a column', async (t) => {
  const x = tf.variable(tf.tensor(values(12, 17), [3, 4]), true, 'factored')
  const v = tf.variable(tf.tensor(values(4, 18)), true, 'vector')
  const opt = train.adafactor()
  opt.applyGradients({ [x.name]: tf.tensor(values(12, 19), [3, 4]), [v.name]: tf.tensor(values(4, 20)) })
  t.deepEqual(
    (await opt.getWeights()).map(({ name, tensor }) => [name, tensor.shape]),
    [
      ['iter', []],
      ['factored/step', []],
      ['factored/rowVar', [3, 1]],
      ['factored/colVar', [1, 4]],
      ['vector/step', []],
      ['vector/variance', [4]],
    ],
  )
})

test.serial(
  'an optimizer of sparse gradients steps the rows whose gradient is not all 0, as fastoptim does given those rows',
  (t) => {
    const info = fastoptim.algorithms().find((a) => (a as { sparse?: boolean }).sparse)
    if (!info) return t.pass('the registry has no optimizer of sparse gradients')
    const start = values(15, 21)
    const x = tf.variable(tf.tensor(start, [5, 3]), true, 'embedding')
    const opt = optimizer(info.name, { lr: 0.1 })
    const param = { data: start.slice(), grad: null as unknown, shape: [5, 3] }
    const reference = new (classOf(info.name) as unknown as new (params: unknown[], options: object) => AnyOptimizer)(
      [param],
      { lr: 0.1 },
    )
    for (const rows of [[0, 3], [3], [1, 3, 4]]) {
      const dense = new Float32Array(15)
      const sparse = new Float32Array(rows.length * 3)
      rows.forEach((row, i) => {
        const g = values(3, 50 + row + 10 * i)
        dense.set(g, row * 3)
        sparse.set(g, i * 3)
      })
      opt.applyGradients({ [x.name]: tf.tensor(dense, [5, 3]) })
      param.grad = { indices: Int32Array.from(rows), values: sparse }
      reference.step()
      t.deepEqual(read(x), Array.from(param.data as Float32Array))
    }
    // Row 2 was never named: it has not moved.
    t.deepEqual(read(x).slice(6, 9), Array.from(start.slice(6, 9)))
  },
)

test.serial(
  'no tensor leaks: numTensors is the same after each step of fit, minimize, applyGradients and getWeights',
  async (t) => {
    const m = model(2)
    m.compile({ optimizer: adam(), loss: 'meanSquaredError' })
    const { x, y } = data()
    const fitCounts: number[] = []
    for (let epoch = 0; epoch < 3; epoch++) {
      await m.fit(x, y, { epochs: 1, batchSize: 8, verbose: 0 })
      fitCounts.push(tf.memory().numTensors)
    }
    t.deepEqual(fitCounts, [fitCounts[0], fitCounts[0], fitCounts[0]])

    const v = tf.variable(tf.zeros([4, 4]), true, 'leak-check')
    const opt = adam()
    const counts: number[] = []
    for (let step = 0; step < 4; step++) {
      const cost = opt.minimize(() => v.sub(1).square().sum() as tf.Scalar, false, [v])
      t.is(cost, null)
      const grad = tf.ones([4, 4])
      opt.applyGradients({ [v.name]: grad })
      grad.dispose()
      await opt.getWeights()
      counts.push(tf.memory().numTensors)
    }
    t.deepEqual(counts, [counts[0], counts[0], counts[0], counts[0]])
    opt.dispose()
    t.is(tf.memory().numTensors, counts[0] - 4, "dispose() frees the last getWeights()'s four tensors")
    m.dispose()
    tf.dispose([x, y])
  },
)

/** What `make` throws (it must). */
function errorOf(make: () => unknown): Error & { code?: string } {
  try {
    make()
  } catch (error) {
    return error as Error & { code?: string }
  }
  throw new Error('expected a throw')
}

test.serial('bad options are refused when the optimizer is made, with fastoptim’s errors', (t) => {
  const param = () => ({ data: new Float32Array(1), grad: null })
  const rows: object[] = [
    { lr: -1 },
    { lr: 'fast' },
    { lr: NaN },
    { betas: [0.9] },
    { betas: [0.9, 1] },
    { eps: -1 },
    { amsgrad: 1 },
    { momentum: 0.9 },
  ]
  for (const options of rows) {
    const want = errorOf(() => new Adam([param()], options as never))
    const got = errorOf(() => adam(options as never))
    t.is(got.constructor, want.constructor, JSON.stringify(options))
    t.is(got.code, want.code, JSON.stringify(options))
    t.is(got.message, want.message, JSON.stringify(options))
  }
  t.throws(() => optimizer('Adamm'), {
    instanceOf: TypeError,
    code: 'ERR_INVALID_ARG_VALUE',
    message: /^unknown optimizer "Adamm" \(expected one of SGD, Adam, /,
  })
  t.throws(() => optimizer(3 as never), { instanceOf: TypeError, code: 'ERR_INVALID_ARG_TYPE' })
  // A live option set out of range is refused at the step, by fastoptim, and changes nothing.
  const x = tf.variable(tf.ones([2]), true, 'live-options')
  const opt = adam()
  opt.options.lr = -1
  t.throws(() => opt.applyGradients({ [x.name]: tf.ones([2]) }), {
    instanceOf: RangeError,
    code: 'ERR_OUT_OF_RANGE',
    message: /lr: -1/,
  })
  opt.options.lr = 0.5
  opt.applyGradients({ [x.name]: tf.ones([2]) })
  t.is(opt.options.lr, 0.5)
  // Adam's first step moves each element by lr (to within eps).
  for (const value of read(x)) t.true(Math.abs(value - 0.5) < 1e-6, `${value}`)
})

test.serial('bad gradients and weights are refused with fastoptim’s codes, and nothing changes', async (t) => {
  const x = tf.variable(tf.tensor([1, 2, 3, 4], [2, 2]), true, 'guarded')
  const opt = adam({ lr: 0.1 })
  opt.applyGradients({ [x.name]: tf.ones([2, 2]) })
  const before = read(x)
  const weights = (await opt.getWeights()).map(({ name, tensor }) => [name, read(tensor)])
  const unchanged = async (label: string) => {
    t.deepEqual(read(x), before, label)
    t.is(opt.iterations, 1, label)
    t.deepEqual(
      (await opt.getWeights()).map(({ name, tensor }) => [name, read(tensor)]),
      weights,
      label,
    )
  }
  t.throws(() => opt.applyGradients({ 'no-such-variable': tf.ones([2, 2]) }), {
    code: 'ERR_INVALID_ARG_VALUE',
    message: /no variable is named "no-such-variable"/,
  })
  t.throws(() => opt.applyGradients({ [x.name]: tf.ones([4]) }), {
    instanceOf: RangeError,
    code: 'ERR_OUT_OF_RANGE',
    message: /has shape \[4\], expected \[2,2\]/,
  })
  t.throws(() => opt.applyGradients({ [x.name]: tf.ones([2, 2], 'int32') }), {
    instanceOf: TypeError,
    code: 'ERR_INVALID_ARG_TYPE',
    message: /must be float32, got int32/,
  })
  await unchanged('after bad gradients')
  await t.throwsAsync(
    opt.setWeights([
      { name: 'iter', tensor: tf.scalar(5, 'int32') },
      { name: 'guarded/momentum', tensor: tf.ones([2, 2]) },
    ]),
    {
      code: 'ERR_INVALID_ARG_VALUE',
      message: /"guarded\/momentum" is not state of Adam \(expected <variable>\/step, <variable>\/expAvg, /,
    },
  )
  await t.throwsAsync(
    opt.setWeights([
      { name: 'iter', tensor: tf.scalar(5, 'int32') },
      { name: 'guarded/step', tensor: tf.scalar(1, 'int32') },
      { name: 'guarded/expAvg', tensor: tf.ones([3]) },
      { name: 'guarded/expAvgSq', tensor: tf.ones([3]) },
    ]),
    { instanceOf: RangeError, code: 'ERR_OUT_OF_RANGE', message: /expAvg has length 3, expected 4/ },
  )
  await unchanged('after bad weights')
})

test.serial(
  'it is a tf.Optimizer that tfjs serializes by its class name; every registry optimizer has its factory, by its name lower-cased',
  (t) => {
    const opt = adam()
    t.true(opt instanceof tf.Optimizer)
    t.is(opt.getClassName(), 'Fastoptim')
    t.is(tf.serialization.SerializationMap.getMap().classNameMap.Fastoptim[0], FastoptimOptimizer as never)
    const exported = tfjs as unknown as Record<string, unknown>
    for (const { name } of fastoptim.algorithms()) {
      const key = name.toLowerCase()
      t.is(typeof (train as unknown as Record<string, unknown>)[key], 'function', `train.${key}`)
      // A named export, which lib/tfjs.ts lists by hand: add the line there.
      t.is(exported[key], (train as unknown as Record<string, unknown>)[key], `export const ${key} in lib/tfjs.ts`)
      t.is((exported[key] as () => FastoptimOptimizer)().algorithm, name)
    }
    t.deepEqual(opt.getConfig(), { algorithm: 'Adam', options: { ...Adam.defaults, betas: [...Adam.defaults.betas] } })
  },
)
