import { Optimizer, Schema, type Params } from './optimizer'

/** NAdam's options, PyTorch's `torch.optim.NAdam` in camelCase. */
export interface NAdamOptions {
  /**
   * Learning rate γ.
   * @default 0.002
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
   * a decay of the weights by 1 − γλ.
   * @default 0
   */
  weightDecay: number
  /**
   * ψ in the momentum schedule μₜ = β₁(1 − ½·0.96^(tψ)).
   * @default 0.004
   */
  momentumDecay: number
  /**
   * Decay the weights directly (NAdamW) instead of adding λ·p to the gradient.
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
 * NAdam (Dozat, 2016), as `torch.optim.NAdam`: Adam with Nesterov momentum. Per element, with
 * step t, μₜ = β₁(1 − ½·0.96^(tψ)), Πₜ = μ₁⋯μₜ (kept per parameter as `muProduct`),
 * m ← β₁m + (1 − β₁)g, v ← β₂v + (1 − β₂)g², d = √(v/(1 − β₂ᵗ)) + ε and
 * p ← p − γ(1 − μₜ)/(1 − Πₜ) · g/d − γμₜ₊₁/(1 − Πₜμₜ₊₁) · m/d.
 */
export class NAdam extends Optimizer<NAdamOptions> {
  static readonly schema = new Schema<NAdamOptions>('NAdam')
  /** PyTorch's defaults, read from the native core. */
  static readonly defaults = NAdam.schema.defaults

  constructor(params: Params<NAdamOptions>, options?: Partial<NAdamOptions>) {
    super(NAdam.schema, params, options)
  }
}
