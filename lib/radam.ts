import { Optimizer, Schema, type Params } from './optimizer'

/** RAdam's options, PyTorch's `torch.optim.RAdam` in camelCase. */
export interface RAdamOptions {
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
   * ε, added to the root of the second moment.
   * @default 1e-8
   */
  eps: number
  /**
   * Weight decay λ: an L2 penalty added to the gradient, or, with `decoupledWeightDecay`,
   * a decay of the weights by 1 − γλ.
   * @default 0
   */
  weightDecay: number
  /**
   * Decay the weights directly, as AdamW does, instead of adding λ·p to the gradient.
   * @default false
   */
  decoupledWeightDecay: boolean
  /**
   * Maximize the objective: step along the gradient instead of against it.
   * @default false
   */
  maximize: boolean
}

/**
 * RAdam (Liu et al., 2020), as `torch.optim.RAdam`: Adam whose adaptive rate is switched on only
 * once its variance is tractable. Per element, with step t, m ← β₁m + (1 − β₁)g,
 * v ← β₂v + (1 − β₂)g², m̂ = m/(1 − β₁ᵗ); with ρ∞ = 2/(1 − β₂) − 1 and
 * ρₜ = ρ∞ − 2tβ₂ᵗ/(1 − β₂ᵗ), p ← p − γm̂ · rₜ√(1 − β₂ᵗ)/(√v + ε) when ρₜ > 5, where
 * rₜ = √((ρₜ − 4)(ρₜ − 2)ρ∞ / ((ρ∞ − 4)(ρ∞ − 2)ρₜ)), and p ← p − γm̂ before.
 */
export class RAdam extends Optimizer<RAdamOptions> {
  static readonly schema = new Schema<RAdamOptions>('RAdam')
  /** PyTorch's defaults, read from the native core. */
  static readonly defaults = RAdam.schema.defaults

  constructor(params: Params<RAdamOptions>, options?: Partial<RAdamOptions>) {
    super(RAdam.schema, params, options)
  }
}
