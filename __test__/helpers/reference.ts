// Plain double-precision references of every optimizer, written from PyTorch's update equations
// (torch/optim/*.py, the single-tensor code paths) one element at a time, with no care for speed
// or for PyTorch's rounding order. The property tests compare the native kernels against them.
//
// One quirk is kept because it changes numbers beyond rounding: NAdam's running product of the
// momentum schedule lives in a float32 tensor in PyTorch whatever the parameter's dtype, so it is
// rounded to float32 at every step here too.
//
// Optimizers are named as the registry names them (`algorithms()`); the property tests fail,
// naming it, for an optimizer of the registry that has no reference here.

/** An optimizer's name in the registry. */
export type Algorithm = string

/** A group's options, every one present (the native defaults filled in). */
export type Options = Record<string, number | boolean | number[] | string | null>

/** One parameter: its values and, for this step, its gradient (null: skipped, as PyTorch skips grad=None). */
export interface RefParam {
  data: number[]
  grad: number[] | null
  /** PyTorch's `p.shape` (absent: flat); only optimizers that treat matrices apart read it. */
  shape?: readonly number[]
}

/** Per-parameter state, by PyTorch's names in camelCase. */
export interface RefState {
  step: number
  buffers: Record<string, number[]>
  muProduct?: number
  /** ASGD's step size and averaging weight for the next step (float32, as PyTorch keeps them). */
  eta?: number
  mu?: number
}

/** What an update knows besides the options: the parameters' element type (PyTorch's `finfo(dtype).eps`). */
interface Context {
  dtype: 'float32' | 'float64'
  /** What the group's own step computed, for an optimizer with per-group state (GROUP_STEPS). */
  group?: Record<string, number>
}

type Update = (o: Options, p: RefParam & { grad: number[] }, s: RefState, context: Context) => void

const num = (o: Options, key: string) => o[key] as number
const flag = (o: Options, key: string) => o[key] as boolean
const betas = (o: Options) => o.betas as number[]
const buffer = (s: RefState, name: string, n: number, initial = 0) =>
  (s.buffers[name] ??= new Array<number>(n).fill(initial))

/** g, negated when maximizing, with the L2 penalty λ·p added unless `decoupled`. */
function gradient(o: Options, p: RefParam & { grad: number[] }, i: number, decoupled: boolean): number {
  let g = flag(o, 'maximize') ? -p.grad[i] : p.grad[i]
  if (!decoupled) g += num(o, 'weightDecay') * p.data[i]
  return g
}

const sgd: Update = (o, p, s) => {
  const [lr, momentum, dampening] = [num(o, 'lr'), num(o, 'momentum'), num(o, 'dampening')]
  const first = s.buffers.momentumBuffer === undefined
  for (let i = 0; i < p.data.length; i++) {
    let g = gradient(o, p, i, false)
    if (momentum !== 0) {
      const b = buffer(s, 'momentumBuffer', p.data.length)
      b[i] = first ? g : momentum * b[i] + (1 - dampening) * g
      g = flag(o, 'nesterov') ? g + momentum * b[i] : b[i]
    }
    p.data[i] -= lr * g
  }
}

function adamLike(decoupledAlways: boolean): Update {
  return (o, p, s) => {
    const [lr, [beta1, beta2], eps, wd] = [num(o, 'lr'), betas(o), num(o, 'eps'), num(o, 'weightDecay')]
    const decoupled = decoupledAlways || flag(o, 'decoupledWeightDecay')
    const t = s.step
    const [m, v] = [buffer(s, 'expAvg', p.data.length), buffer(s, 'expAvgSq', p.data.length)]
    const vMax = flag(o, 'amsgrad') ? buffer(s, 'maxExpAvgSq', p.data.length) : undefined
    const [bc1, bc2] = [1 - beta1 ** t, 1 - beta2 ** t]
    for (let i = 0; i < p.data.length; i++) {
      const g = gradient(o, p, i, decoupled)
      if (decoupled) p.data[i] *= 1 - lr * wd
      m[i] = beta1 * m[i] + (1 - beta1) * g
      v[i] = beta2 * v[i] + (1 - beta2) * g * g
      let second = v[i]
      if (vMax) second = vMax[i] = Math.max(vMax[i], v[i])
      p.data[i] -= ((lr / bc1) * m[i]) / (Math.sqrt(second) / Math.sqrt(bc2) + eps)
    }
  }
}

const rmsprop: Update = (o, p, s) => {
  const [lr, alpha, eps, momentum] = [num(o, 'lr'), num(o, 'alpha'), num(o, 'eps'), num(o, 'momentum')]
  const n = p.data.length
  const v = buffer(s, 'squareAvg', n)
  const b = momentum > 0 ? buffer(s, 'momentumBuffer', n) : undefined
  const a = flag(o, 'centered') ? buffer(s, 'gradAvg', n) : undefined
  for (let i = 0; i < n; i++) {
    const g = gradient(o, p, i, false)
    v[i] = alpha * v[i] + (1 - alpha) * g * g
    let variance = v[i]
    if (a) {
      a[i] = alpha * a[i] + (1 - alpha) * g
      variance -= a[i] * a[i]
    }
    const denom = Math.sqrt(variance) + eps
    if (b) {
      b[i] = momentum * b[i] + g / denom
      p.data[i] -= lr * b[i]
    } else {
      p.data[i] -= (lr * g) / denom
    }
  }
}

const adagrad: Update = (o, p, s) => {
  const clr = num(o, 'lr') / (1 + (s.step - 1) * num(o, 'lrDecay'))
  const sum = buffer(s, 'sum', p.data.length, num(o, 'initialAccumulatorValue'))
  for (let i = 0; i < p.data.length; i++) {
    const g = gradient(o, p, i, false)
    sum[i] += g * g
    p.data[i] -= (clr * g) / (Math.sqrt(sum[i]) + num(o, 'eps'))
  }
}

const adamax: Update = (o, p, s) => {
  const [lr, [beta1, beta2], eps] = [num(o, 'lr'), betas(o), num(o, 'eps')]
  const [m, u] = [buffer(s, 'expAvg', p.data.length), buffer(s, 'expInf', p.data.length)]
  const clr = lr / (1 - beta1 ** s.step)
  for (let i = 0; i < p.data.length; i++) {
    const g = gradient(o, p, i, false)
    m[i] = beta1 * m[i] + (1 - beta1) * g
    u[i] = Math.max(beta2 * u[i], Math.abs(g) + eps)
    p.data[i] -= (clr * m[i]) / u[i]
  }
}

const nadam: Update = (o, p, s) => {
  const [lr, [beta1, beta2], eps, wd, psi] = [
    num(o, 'lr'),
    betas(o),
    num(o, 'eps'),
    num(o, 'weightDecay'),
    num(o, 'momentumDecay'),
  ]
  const decoupled = flag(o, 'decoupledWeightDecay')
  const t = s.step
  const mu = beta1 * (1 - 0.5 * 0.96 ** (t * psi))
  const muNext = beta1 * (1 - 0.5 * 0.96 ** ((t + 1) * psi))
  // float32, as PyTorch keeps it
  s.muProduct = Math.fround((s.muProduct ?? 1) * Math.fround(mu))
  const product = s.muProduct
  const [m, v] = [buffer(s, 'expAvg', p.data.length), buffer(s, 'expAvgSq', p.data.length)]
  const bc2 = 1 - beta2 ** t
  for (let i = 0; i < p.data.length; i++) {
    const g = gradient(o, p, i, decoupled)
    if (decoupled) p.data[i] *= 1 - lr * wd
    m[i] = beta1 * m[i] + (1 - beta1) * g
    v[i] = beta2 * v[i] + (1 - beta2) * g * g
    const denom = Math.sqrt(v[i] / bc2) + eps
    p.data[i] -= ((lr * (1 - mu)) / (1 - product)) * (g / denom)
    p.data[i] -= ((lr * muNext) / (1 - product * muNext)) * (m[i] / denom)
  }
}

const radam: Update = (o, p, s) => {
  const [lr, [beta1, beta2], eps, wd] = [num(o, 'lr'), betas(o), num(o, 'eps'), num(o, 'weightDecay')]
  const decoupled = flag(o, 'decoupledWeightDecay')
  const t = s.step
  const [m, v] = [buffer(s, 'expAvg', p.data.length), buffer(s, 'expAvgSq', p.data.length)]
  const [bc1, bc2] = [1 - beta1 ** t, 1 - beta2 ** t]
  const rhoInf = 2 / (1 - beta2) - 1
  const rho = rhoInf - (2 * t * beta2 ** t) / bc2
  const rect = rho > 5 ? Math.sqrt(((rho - 4) * (rho - 2) * rhoInf) / ((rhoInf - 4) * (rhoInf - 2) * rho)) : undefined
  for (let i = 0; i < p.data.length; i++) {
    const g = gradient(o, p, i, decoupled)
    if (decoupled) p.data[i] *= 1 - lr * wd
    m[i] = beta1 * m[i] + (1 - beta1) * g
    v[i] = beta2 * v[i] + (1 - beta2) * g * g
    const corrected = m[i] / bc1
    p.data[i] -=
      rect === undefined ? lr * corrected : ((lr * corrected * Math.sqrt(bc2)) / (Math.sqrt(v[i]) + eps)) * rect
  }
}

/** √(Σ x²), in double. */
const norm = (xs: ArrayLike<number>) => {
  let sum = 0
  for (let i = 0; i < xs.length; i++) sum += xs[i] * xs[i]
  return Math.sqrt(sum)
}

/** PyTorch's lerp: x + w·(y − x). */
const lerp = (x: number, y: number, w: number) => x + w * (y - x)

/**
 * torch.optim.Adafactor (`_single_tensor_adafactor`). A tensor of 2 or more dimensions keeps row
 * and column means of g² over its last two dimensions (the leading ones are a batch), shaped as
 * PyTorch's `row_var` [..., m, 1] and `col_var` [..., 1, k], here flat in row-major order; one of
 * 0 or 1 dimensions keeps `variance` whole. ε₁ = null is the machine epsilon of the parameter's
 * dtype (PyTorch takes it from the group's first parameter with a grad; the groups here have one
 * dtype). ρ = min(γ, 1/√t) and α = max(ε₂, RMS(p))·ρ with p before its weight decay.
 */
const adafactor: Update = (o, p, s, { dtype }) => {
  const [lr, beta2Decay, d, wd] = [num(o, 'lr'), num(o, 'beta2Decay'), num(o, 'd'), num(o, 'weightDecay')]
  const [eps1Given, eps2] = o.eps as unknown as [number | null, number]
  const eps1 = eps1Given ?? (dtype === 'float32' ? 2 ** -23 : 2 ** -52)
  const n = p.data.length
  const dims = p.shape ?? [n]
  const t = s.step
  const w = t ** beta2Decay
  const rho = Math.min(lr, 1 / Math.sqrt(t))
  // Python's max(ε₂, x) keeps ε₂ when x is NaN (a parameter of no elements).
  const rms = norm(p.data) / Math.sqrt(n)
  const alpha = (rms > eps2 ? rms : eps2) * rho
  if (wd !== 0) for (let i = 0; i < n; i++) p.data[i] *= 1 - lr * wd
  const g = p.grad.map((x) => (flag(o, 'maximize') ? -x : x))
  const v = new Array<number>(n)
  if (dims.length >= 2) {
    const [m, k] = dims.slice(-2)
    const batches = dims.slice(0, -2).reduce((a, b) => a * b, 1)
    const rows = buffer(s, 'rowVar', batches * m)
    const cols = buffer(s, 'colVar', batches * k)
    for (let b = 0; b < batches; b++) {
      const at = (i: number, j: number) => b * m * k + i * k + j
      for (let i = 0; i < m; i++) {
        let sum = 0
        for (let j = 0; j < k; j++) sum += g[at(i, j)] ** 2
        rows[b * m + i] = lerp(rows[b * m + i], sum / k, w)
      }
      for (let j = 0; j < k; j++) {
        let sum = 0
        for (let i = 0; i < m; i++) sum += g[at(i, j)] ** 2
        cols[b * k + j] = lerp(cols[b * k + j], sum / m, w)
      }
      let mean = 0
      for (let i = 0; i < m; i++) mean += rows[b * m + i]
      mean = Math.max(mean / m, eps1)
      for (let i = 0; i < m; i++) for (let j = 0; j < k; j++) v[at(i, j)] = (rows[b * m + i] * cols[b * k + j]) / mean
    }
  } else {
    const variance = buffer(s, 'variance', n)
    for (let i = 0; i < n; i++) v[i] = variance[i] = lerp(variance[i], g[i] * g[i], w)
  }
  const u = g.map((x, i) => x / Math.sqrt(Math.max(v[i], eps1 * eps1)))
  const denom = Math.max(1, norm(u) / (Math.sqrt(n) * d))
  for (let i = 0; i < n; i++) p.data[i] -= (alpha / denom) * u[i]
}

/**
 * lion-pytorch's Lion (lion_pytorch/lion_pytorch.py; PyTorch has none): the weights decay by
 * 1 − γλ, step by γ along the sign of β₁·m + (1 − β₁)·g (0 where that is 0 or NaN, as PyTorch's
 * sign gives it), then m takes its own average with β₂. With decoupledWeightDecay lion-pytorch
 * divides λ by its constructor's lr, the group's initLr here (null: the group's lr, so that the
 * weights decay by 1 − λ per step, and not at lr = 0).
 */
const lion: Update = (o, p, s) => {
  const [lr, [beta1, beta2], wd] = [num(o, 'lr'), betas(o), num(o, 'weightDecay')]
  const initLr = typeof o.initLr === 'number' ? o.initLr : lr
  const decay = flag(o, 'decoupledWeightDecay') && initLr !== 0 ? wd / initLr : wd
  const m = buffer(s, 'expAvg', p.data.length)
  for (let i = 0; i < p.data.length; i++) {
    const g = p.grad[i]
    p.data[i] *= 1 - lr * decay
    const direction = beta1 * m[i] + (1 - beta1) * g
    p.data[i] -= lr * (direction > 0 ? 1 : direction < 0 ? -1 : 0)
    m[i] = beta2 * m[i] + (1 - beta2) * g
  }
}

/** torch.optim.Adadelta: running averages of g² and of the updates Δ², with ε inside both roots. */
const adadelta: Update = (o, p, s) => {
  const [lr, rho, eps] = [num(o, 'lr'), num(o, 'rho'), num(o, 'eps')]
  const n = p.data.length
  const [v, u] = [buffer(s, 'squareAvg', n), buffer(s, 'accDelta', n)]
  for (let i = 0; i < n; i++) {
    const g = gradient(o, p, i, false)
    v[i] = rho * v[i] + (1 - rho) * g * g
    const delta = (Math.sqrt(u[i] + eps) / Math.sqrt(v[i] + eps)) * g
    u[i] = rho * u[i] + (1 - rho) * delta * delta
    p.data[i] -= lr * delta
  }
}

/**
 * torch.optim.ASGD. The step size η and the averaging weight μ are each parameter's state (γ and 1
 * before its first step), set at the end of a step for the next from that step's γ; PyTorch keeps
 * them in float32 tensors whatever the parameter's dtype, so they are rounded to float32 here too.
 */
const asgd: Update = (o, p, s) => {
  const [lr, lambd, alpha, t0] = [num(o, 'lr'), num(o, 'lambd'), num(o, 'alpha'), num(o, 't0')]
  const eta = s.eta ?? Math.fround(lr)
  const mu = s.mu ?? 1
  const ax = buffer(s, 'ax', p.data.length)
  for (let i = 0; i < p.data.length; i++) {
    const g = gradient(o, p, i, false)
    p.data[i] = p.data[i] * (1 - lambd * eta) - eta * g
    ax[i] = mu === 1 ? p.data[i] : ax[i] + mu * (p.data[i] - ax[i])
  }
  s.eta = Math.fround(lr / (1 + lambd * lr * s.step) ** alpha)
  s.mu = Math.fround(1 / Math.max(1, s.step - t0))
}

/** torch.optim.Rprop (iRprop⁻): step sizes that start at lr, grow while g keeps its sign and shrink when it flips. */
const rprop: Update = (o, p, s) => {
  const [[etaminus, etaplus], [sizeMin, sizeMax]] = [o.etas as number[], o.stepSizes as number[]]
  const n = p.data.length
  const [prev, size] = [buffer(s, 'prev', n), buffer(s, 'stepSize', n, num(o, 'lr'))]
  for (let i = 0; i < n; i++) {
    let g = flag(o, 'maximize') ? -p.grad[i] : p.grad[i]
    const product = g * prev[i]
    size[i] = Math.min(Math.max(size[i] * (product > 0 ? etaplus : product < 0 ? etaminus : 1), sizeMin), sizeMax)
    // A change of sign: no step now, and no change of the step size at the next.
    if (product < 0) g = 0
    p.data[i] -= Math.sign(g) * size[i]
    prev[i] = g
  }
}

/**
 * torch.optim.SparseAdam (`_functional.sparse_adam`): Adam's moments and step on the rows the
 * gradient names, nothing elsewhere, with ε after the root of the uncorrected second moment and
 * the bias corrections in the step size. The gradient here is dense: the rows it names are those
 * holding an element other than 0, which is what the suites give SparseAdam (helpers/sparse.ts).
 */
const sparseAdam: Update = (o, p, s) => {
  const [lr, [beta1, beta2], eps] = [num(o, 'lr'), betas(o), num(o, 'eps')]
  const n = p.data.length
  const [rows, rowLength] =
    p.shape === undefined ? [n, 1] : p.shape.length === 0 ? [1, 1] : [p.shape[0], n / p.shape[0]]
  const [m, v] = [buffer(s, 'expAvg', n), buffer(s, 'expAvgSq', n)]
  const stepSize = (lr * Math.sqrt(1 - beta2 ** s.step)) / (1 - beta1 ** s.step)
  for (let r = 0; r < rows; r++) {
    const from = r * rowLength
    if (!p.grad.slice(from, from + rowLength).some((g) => g !== 0)) continue
    for (let i = from; i < from + rowLength; i++) {
      const g = flag(o, 'maximize') ? -p.grad[i] : p.grad[i]
      m[i] += (g - m[i]) * (1 - beta1)
      v[i] += (g * g - v[i]) * (1 - beta2)
      p.data[i] -= (stepSize * m[i]) / (Math.sqrt(v[i]) + eps)
    }
  }
}

/**
 * The schedulefree package's per-group schedule (schedulefree/adamw_schedulefree.py and
 * sgd_schedulefree.py): the step counter k, the largest warmed-up rate and the sum of the averaging
 * weights live among the group's options, as in the package's param_groups, and advance once per
 * step for the whole group, whichever of its parameters have gradients. Returns what the step uses.
 */
function scheduleFreeGroup(o: Options): Record<string, number> {
  const [k, warmup] = [num(o, 'k'), num(o, 'warmupSteps')]
  const lr = num(o, 'lr') * (k < warmup ? (k + 1) / warmup : 1)
  const lrMax = Math.max(lr, num(o, 'lrMax'))
  const weight = (k + 1) ** num(o, 'r') * lrMax ** num(o, 'weightLrPower')
  const weightSum = num(o, 'weightSum') + weight
  Object.assign(o, { k: k + 1, lrMax, weightSum, scheduledLr: lr })
  // The package catches the ZeroDivisionError of 0/0 and takes 0.
  return { k, lr, ckp1: weightSum === 0 ? 0 : weight / weightSum }
}

/**
 * Schedule-free AdamW and SGD (the package's plain classes): z starts as a copy of the parameter
 * y; ĝ is Adam's normalized gradient (no first moment) or the gradient, plus λ·y; then
 * y ← lerp(y, z, c) + γ(β(1 − c) − 1)·ĝ and z ← z − γ·ĝ, with β = β₁ or the momentum.
 */
function scheduleFree(adam: boolean): Update {
  return (o, p, s, { group }) => {
    const { k, lr, ckp1 } = group!
    const [beta, beta2] = adam ? betas(o) : [num(o, 'momentum'), 0]
    const z = (s.buffers.z ??= [...p.data])
    const v = adam ? buffer(s, 'expAvgSq', p.data.length) : undefined
    const bc2 = 1 - beta2 ** (k + 1)
    for (let i = 0; i < p.data.length; i++) {
      let g = p.grad[i]
      if (v) {
        v[i] = beta2 * v[i] + (1 - beta2) * g * g
        g /= Math.sqrt(v[i] / bc2) + num(o, 'eps')
      }
      g += num(o, 'weightDecay') * p.data[i]
      p.data[i] = lerp(p.data[i], z[i], ckp1) + lr * (beta * (1 - ckp1) - 1) * g
      z[i] -= lr * g
    }
  }
}

/** `a·b` for row-major `a` (m×k) and `b` (k×n), or `a·bᵀ` for `b` given as n×k. */
function matmul(a: number[], b: number[], m: number, k: number, n: number, bTransposed = false): number[] {
  const c = new Array<number>(m * n).fill(0)
  for (let i = 0; i < m; i++)
    for (let j = 0; j < n; j++) {
      let sum = 0
      for (let p = 0; p < k; p++) sum += a[i * k + p] * (bTransposed ? b[j * k + p] : b[p * n + j])
      c[i * n + j] = sum
    }
  return c
}

/**
 * torch.optim.Muon (`_single_tensor_muon` and `_zeropower_via_newtonschulz`), for matrices, with
 * the Newton–Schulz iteration in double precision where PyTorch's runs in bfloat16. The momentum
 * buffer is a lerp towards g; the update is orthogonalised with the matrix transposed to be wide.
 */
const muon: Update = (o, p, s) => {
  const [rows, cols] = p.shape as number[]
  const [mu, n] = [num(o, 'momentum'), p.data.length]
  const m = buffer(s, 'momentumBuffer', n)
  const transposed = rows > cols
  const [short, long] = transposed ? [cols, rows] : [rows, cols]
  const at = (i: number, j: number) => (transposed ? j * long + i : i * cols + j)
  let x = new Array<number>(n)
  for (let i = 0; i < rows; i++)
    for (let j = 0; j < cols; j++) {
      const k = i * cols + j
      m[k] += (1 - mu) * (p.grad[k] - m[k])
      x[at(i, j)] = flag(o, 'nesterov') ? p.grad[k] + mu * (m[k] - p.grad[k]) : m[k]
    }
  const norm = Math.max(Math.sqrt(x.reduce((sum, v) => sum + v * v, 0)), num(o, 'eps'))
  x = x.map((v) => v / norm)
  const [a, b, c] = o.nsCoefficients as number[]
  for (let step = 0; step < num(o, 'nsSteps'); step++) {
    const gram = matmul(x, x, short, long, short, true)
    const square = matmul(gram, gram, short, short, short)
    const poly = gram.map((v, k) => b * v + c * square[k])
    const product = matmul(poly, x, short, short, long)
    x = x.map((v, k) => a * v + product[k])
  }
  const lr = num(o, 'lr')
  const ratio =
    {
      match_rms_adamw: 0.2 * Math.sqrt(Math.max(rows, cols)),
      spectral_unclamped: Math.sqrt(rows / cols),
    }[o.adjustLrFn as string] ?? Math.sqrt(Math.max(1, rows / cols))
  for (let i = 0; i < rows; i++)
    for (let j = 0; j < cols; j++) {
      const k = i * cols + j
      p.data[k] = p.data[k] * (1 - lr * num(o, 'weightDecay')) - lr * ratio * x[at(i, j)]
    }
}

/** Per-group steps, run once per step for every group before its parameters' updates. */
const GROUP_STEPS: Record<Algorithm, (o: Options) => Record<string, number>> = {
  AdamWScheduleFree: scheduleFreeGroup,
  SGDScheduleFree: scheduleFreeGroup,
}

const UPDATES: Record<Algorithm, Update> = {
  Adam: adamLike(false),
  AdamW: adamLike(true),
  SGD: sgd,
  RMSprop: rmsprop,
  Adagrad: adagrad,
  Adamax: adamax,
  NAdam: nadam,
  RAdam: radam,
  Adafactor: adafactor,
  Lion: lion,
  Adadelta: adadelta,
  ASGD: asgd,
  Rprop: rprop,
  SparseAdam: sparseAdam,
  AdamWScheduleFree: scheduleFree(true),
  SGDScheduleFree: scheduleFree(false),
  Muon: muon,
}

/** The optimizers this file has a reference of. */
export const REFERENCES: readonly Algorithm[] = Object.keys(UPDATES)

/** A reference optimizer over groups of parameters, each group with all its options. */
export class Reference {
  readonly states = new Map<RefParam, RefState>()

  readonly #update: Update

  constructor(
    readonly algorithm: Algorithm,
    readonly groups: Array<{ options: Options; params: RefParam[] }>,
    /** The element type the optimizer under test runs in, for what depends on it (ε₁ = null). */
    readonly dtype: 'float32' | 'float64' = 'float64',
  ) {
    const update = UPDATES[algorithm]
    if (!update)
      throw new Error(
        `__test__/helpers/reference.ts has no reference of ${algorithm}: write one from PyTorch's equations`,
      )
    this.#update = update
  }

  /** One step: every parameter whose grad is not null is updated, with its group's options. */
  step(): void {
    for (const { options, params } of this.groups) {
      const group = GROUP_STEPS[this.algorithm]?.(options)
      for (const p of params) {
        if (p.grad === null) continue
        let state = this.states.get(p)
        if (!state) this.states.set(p, (state = { step: 0, buffers: {} }))
        state.step += 1
        this.#update(options, p as RefParam & { grad: number[] }, state, { dtype: this.dtype, group })
      }
    }
  }
}
