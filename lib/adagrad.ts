import { Optimizer, Schema, type Params } from './optimizer'

/** Adagrad's options, PyTorch's `torch.optim.Adagrad` in camelCase. */
export interface AdagradOptions {
  /**
   * Learning rate γ.
   * @default 0.01
   */
  lr: number
  /**
   * Learning-rate decay η: step t uses γ / (1 + (t − 1)η).
   * @default 0
   */
  lrDecay: number
  /**
   * Weight decay λ, an L2 penalty added to the gradient.
   * @default 0
   */
  weightDecay: number
  /**
   * What the accumulator of squared gradients holds before a parameter's first step. A group's
   * own value is honoured (PyTorch uses the constructor's for every group).
   * @default 0
   */
  initialAccumulatorValue: number
  /**
   * ε, added to the square root of the accumulator.
   * @default 1e-10
   */
  eps: number
  /**
   * Maximize the objective: step along the gradient instead of against it.
   * @default false
   */
  maximize: boolean
}

/**
 * Adagrad (Duchi, Hazan & Singer, 2011), as `torch.optim.Adagrad`: per element, with step t,
 * s ← s + g² and p ← p − γ/(1 + (t − 1)η) · g/(√s + ε).
 */
export class Adagrad extends Optimizer<AdagradOptions> {
  static readonly schema = new Schema<AdagradOptions>('Adagrad')
  /** PyTorch's defaults, read from the native core. */
  static readonly defaults = Adagrad.schema.defaults

  constructor(params: Params<AdagradOptions>, options?: Partial<AdagradOptions>) {
    super(Adagrad.schema, params, options)
  }
}
