import { Optimizer, Schema, type Params } from './optimizer'

/** SGD's options, PyTorch's `torch.optim.SGD` in camelCase. */
export interface SGDOptions {
  /**
   * Learning rate γ.
   * @default 0.001
   */
  lr: number
  /**
   * Momentum μ; 0 for plain SGD, which keeps no state buffer.
   * @default 0
   */
  momentum: number
  /**
   * Dampening τ: the momentum buffer takes in (1 − τ)·g (not on its first step, when it is g).
   * @default 0
   */
  dampening: number
  /**
   * Weight decay λ, an L2 penalty added to the gradient.
   * @default 0
   */
  weightDecay: number
  /**
   * Nesterov momentum: step along g + μ·b instead of b. Needs momentum > 0 and dampening 0.
   * @default false
   */
  nesterov: boolean
  /**
   * Maximize the objective: step along the gradient instead of against it.
   * @default false
   */
  maximize: boolean
}

/**
 * Stochastic gradient descent with optional (Nesterov) momentum, as `torch.optim.SGD`: per
 * element, g ← g + λp, then with μ ≠ 0 b ← μb + (1 − τ)g (b = g on the first step) and
 * g ← g + μb (Nesterov) or g ← b, and finally p ← p − γg.
 *
 * @example
 * const w = { data: new Float32Array(n), grad: new Float32Array(n) }
 * const opt = new SGD([w], { lr: 0.1, momentum: 0.9 })
 * opt.step()
 */
export class SGD extends Optimizer<SGDOptions> {
  static readonly schema = new Schema<SGDOptions>('SGD')
  /** PyTorch's defaults, read from the native core. */
  static readonly defaults = SGD.schema.defaults

  constructor(params: Params<SGDOptions>, options?: Partial<SGDOptions>) {
    super(SGD.schema, params, options)
  }
}
