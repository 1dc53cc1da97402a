import { Optimizer, Schema, type Params } from './optimizer'

/** Adamax's options, PyTorch's `torch.optim.Adamax` in camelCase. */
export interface AdamaxOptions {
  /**
   * Learning rate γ.
   * @default 0.002
   */
  lr: number
  /**
   * Decay rates (β₁, β₂) of the first moment and of the infinity norm, each in [0, 1).
   * @default [0.9, 0.999]
   */
  betas: [number, number]
  /**
   * ε, added to |g| inside the maximum.
   * @default 1e-8
   */
  eps: number
  /**
   * Weight decay λ, an L2 penalty added to the gradient.
   * @default 0
   */
  weightDecay: number
  /**
   * Maximize the objective: step along the gradient instead of against it.
   * @default false
   */
  maximize: boolean
}

/**
 * Adamax (Kingma & Ba, 2015, section 7.1), as `torch.optim.Adamax`: per element, with step t,
 * m ← β₁m + (1 − β₁)g, u ← max(β₂u, |g| + ε) and p ← p − γ/(1 − β₁ᵗ) · m/u.
 */
export class Adamax extends Optimizer<AdamaxOptions> {
  static readonly schema = new Schema<AdamaxOptions>('Adamax')
  /** PyTorch's defaults, read from the native core. */
  static readonly defaults = Adamax.schema.defaults

  constructor(params: Params<AdamaxOptions>, options?: Partial<AdamaxOptions>) {
    super(Adamax.schema, params, options)
  }
}
