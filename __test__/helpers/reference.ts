// Plain double-precision references of every optimizer, written from PyTorch's update equations
// (torch/optim/*.py, the single-tensor code paths) one element at a time, with no care for speed
// or for PyTorch's rounding order. The property tests compare the native kernels against them.
//
// One quirk is kept because it changes numbers beyond rounding: NAdam's running product of the
// momentum schedule lives in a float32 tensor in PyTorch whatever the parameter's dtype, so it is
// rounded to float32 at every step here too.

export type Algorithm = 'Adam' | 'AdamW' | 'SGD' | 'RMSprop' | 'Adagrad' | 'Adamax' | 'NAdam' | 'RAdam'

/** A group's options, every one present (the native defaults filled in). */
export type Options = Record<string, number | boolean | number[]>

/** One parameter: its values and, for this step, its gradient (null: skipped, as PyTorch skips grad=None). */
export interface RefParam {
  data: number[]
  grad: number[] | null
}

/** Per-parameter state, by PyTorch's names in camelCase. */
export interface RefState {
  step: number
  buffers: Record<string, number[]>
  muProduct?: number
}

type Update = (o: Options, p: RefParam & { grad: number[] }, s: RefState) => void

const num = (o: Options, key: string) => o[key] as number
const flag = (o: Options, key: string) => o[key] as boolean
const betas = (o: Options) => o.betas as number[]
const buffer = (s: RefState, name: string, n: number, initial = 0) => (s.buffers[name] ??= new Array<number>(n).fill(initial))

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
  const [lr, [beta1, beta2], eps, wd, psi] = [num(o, 'lr'), betas(o), num(o, 'eps'), num(o, 'weightDecay'), num(o, 'momentumDecay')]
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
    p.data[i] -= rect === undefined ? lr * corrected : ((lr * corrected * Math.sqrt(bc2)) / (Math.sqrt(v[i]) + eps)) * rect
  }
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
}

/** A reference optimizer over groups of parameters, each group with all its options. */
export class Reference {
  readonly states = new Map<RefParam, RefState>()

  constructor(
    readonly algorithm: Algorithm,
    readonly groups: Array<{ options: Options; params: RefParam[] }>,
  ) {}

  /** One step: every parameter whose grad is not null is updated, with its group's options. */
  step(): void {
    for (const { options, params } of this.groups) {
      for (const p of params) {
        if (p.grad === null) continue
        let state = this.states.get(p)
        if (!state) this.states.set(p, (state = { step: 0, buffers: {} }))
        state.step += 1
        UPDATES[this.algorithm](options, p as RefParam & { grad: number[] }, state)
      }
    }
  }
}

