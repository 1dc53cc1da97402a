import { Optimizer, Schema, type Params } from './optimizer'

/** Adam's options, PyTorch's `torch.optim.Adam` in camelCase. */
export interface AdamOptions {
  /**
   * Learning rate γ.
   * @default 0.001
   */
  lr: number
  /**
   * Decay rates (β₁, β₂) of the first- and second-moment averages, each in [0, 1).
   * @default [0.9, 0.999]
   */
  betas: [number, number]
  /**
   * ε, added to the root of the bias-corrected second moment.
   * @default 1e-8
   */
  eps: number
  /**
   * Weight decay λ: an L2 penalty added to the gradient, or, with `decoupledWeightDecay`,
   * AdamW's decay of the weights.
   * @default 0
   */
  weightDecay: number
  /**
   * Use the running maximum of the second moment (AMSGrad).
   * @default false
   */
  amsgrad: boolean
  /**
   * Maximize the objective: step along the gradient instead of against it.
   * @default false
   */
  maximize: boolean
  /**
   * Decay the weights directly, as AdamW does, instead of adding λ·p to the gradient.
   * @default false
   */
  decoupledWeightDecay: boolean
}

/** AdamW's options: Adam's, with decoupled weight decay always on and a default of 0.01. */
export interface AdamWOptions extends Omit<AdamOptions, 'decoupledWeightDecay' | 'weightDecay'> {
  /**
   * Decoupled weight decay λ: each step first scales the weights by 1 − γλ.
   * @default 0.01
   */
  weightDecay: number
}

/**
 * Adam (Kingma & Ba, 2015), as `torch.optim.Adam`: per element, with step t,
 * m ← β₁m + (1 − β₁)g, v ← β₂v + (1 − β₂)g², and
 * p ← p − γ · (m / (1 − β₁ᵗ)) / (√(v / (1 − β₂ᵗ)) + ε).
 *
 * @example
 * const w = { data: new Float32Array(n), grad: new Float32Array(n) }
 * const opt = new Adam([w], { lr: 1e-3 })
 * opt.step()
 */
export class Adam extends Optimizer<AdamOptions> {
  static readonly schema = new Schema<AdamOptions>('Adam')
  /** PyTorch's defaults, read from the native core. */
  static readonly defaults = Adam.schema.defaults

  constructor(params: Params<AdamOptions>, options?: Partial<AdamOptions>) {
    super(Adam.schema, params, options)
  }
}

/**
 * AdamW (Loshchilov & Hutter, 2019), as `torch.optim.AdamW`: Adam whose weight decay scales
 * the weights by 1 − γλ before the update instead of entering the gradient.
 */
export class AdamW extends Optimizer<AdamWOptions> {
  static readonly schema = new Schema<AdamWOptions>('AdamW')
  /** PyTorch's defaults, read from the native core. */
  static readonly defaults = AdamW.schema.defaults

  constructor(params: Params<AdamWOptions>, options?: Partial<AdamWOptions>) {
    super(AdamW.schema, params, options)
  }
}
