import { integer, number, withDefault, type SchedulableOptimizer } from './fields'
import { LRScheduler, type LRSchedulerOptions } from './lr-scheduler'

const CONSTANT_LR = {
  // PyTorch takes 0 too, then divides by it at epoch totalIters.
  factor: withDefault(
    number((x) => x > 0 && x <= 1, '0 < factor <= 1'),
    1 / 3,
  ),
  totalIters: withDefault(integer(0), 5),
}

/** ConstantLR's arguments, PyTorch's in camelCase. */
export interface ConstantLROptions extends LRSchedulerOptions {
  /**
   * The factor of the learning rate until epoch `totalIters`, in (0, 1].
   * @default 1/3
   */
  factor?: number
  /**
   * The epoch at which the factor is taken off (with 0, PyTorch's never takes it off).
   * @default 5
   */
  totalIters?: number
}

/**
 * Multiplies each group's learning rate by `factor` from epoch 0 until epoch `totalIters`, when it
 * divides it back, as PyTorch's `ConstantLR` (a constant warm-up): lr ← lr·factor at epoch 0,
 * lr ← lr·(1/factor) at epoch `totalIters`. It scales the current lr, so it chains with changes
 * made from outside; its closed form is lr = base·factor before `totalIters`, base from there.
 */
export class ConstantLR extends LRScheduler<typeof CONSTANT_LR> {
  constructor(optimizer: SchedulableOptimizer, options?: ConstantLROptions) {
    super('ConstantLR', CONSTANT_LR, optimizer, options, false)
    this.start()
  }

  protected override getLr(): number[] {
    const { factor, totalIters } = this.args
    const t = this.progress.lastEpoch
    if (t === 0) return this.currentLrs().map((lr) => lr * factor)
    if (t !== totalIters) return this.currentLrs()
    return this.currentLrs().map((lr) => lr * (1.0 / factor))
  }

  protected override closedFormLr(): number[] {
    const { factor, totalIters } = this.args
    const off = this.progress.lastEpoch >= totalIters ? 1 - factor : 0
    return this.progress.baseLrs.map((base) => base * (factor + off))
  }
}
