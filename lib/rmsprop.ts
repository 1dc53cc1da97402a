import { Optimizer, Schema, type Params } from './optimizer'

/** RMSprop's options, PyTorch's `torch.optim.RMSprop` in camelCase. */
export interface RMSpropOptions {
  /**
   * Learning rate γ.
   * @default 0.01
   */
  lr: number
  /**
   * Smoothing constant α of the square average (PyTorch only requires α ≥ 0).
   * @default 0.99
   */
  alpha: number
  /**
   * ε, added to the square root of the (centered) square average.
   * @default 1e-8
   */
  eps: number
  /**
   * Weight decay λ, an L2 penalty added to the gradient.
   * @default 0
   */
  weightDecay: number
  /**
   * Momentum μ of the buffer that accumulates the scaled gradients; 0 for none.
   * @default 0
   */
  momentum: number
  /**
   * Divide by an estimate of the variance, v − a², with a the average gradient, instead of by v.
   * @default false
   */
  centered: boolean
  /**
   * Maximize the objective: step along the gradient instead of against it.
   * @default false
   */
  maximize: boolean
}

/**
 * RMSprop (Tieleman & Hinton, 2012; centered: Graves, 2013), as `torch.optim.RMSprop`: per
 * element, v ← αv + (1 − α)g², d = √v + ε (centered: a ← αa + (1 − α)g and d = √(v − a²) + ε),
 * then p ← p − γg/d, or with momentum b ← μb + g/d and p ← p − γb.
 */
export class RMSprop extends Optimizer<RMSpropOptions> {
  static readonly schema = new Schema<RMSpropOptions>('RMSprop')
  /** PyTorch's defaults, read from the native core. */
  static readonly defaults = RMSprop.schema.defaults

  constructor(params: Params<RMSpropOptions>, options?: Partial<RMSpropOptions>) {
    super(RMSprop.schema, params, options)
  }
}
