import { integer, nonNegative, withDefault, type SchedulableOptimizer } from './fields'
import { LRScheduler, type LRSchedulerOptions } from './lr-scheduler'

const STEP_LR = { stepSize: integer(1), gamma: withDefault(nonNegative, 0.1) }

/** StepLR's arguments, PyTorch's in camelCase. */
export interface StepLROptions extends LRSchedulerOptions {
  /** Decay every `stepSize` epochs. */
  stepSize: number
  /**
   * The factor the learning rate is multiplied by at each decay.
   * @default 0.1
   */
  gamma?: number
}

/**
 * Multiplies each group's learning rate by `gamma` every `stepSize` epochs, as PyTorch's
 * `StepLR`: lr ← lr·γ when `lastEpoch` is a non-zero multiple of `stepSize`. It scales the
 * current lr, so it chains with changes made from outside.
 */
export class StepLR extends LRScheduler<typeof STEP_LR> {
  constructor(optimizer: SchedulableOptimizer, options: StepLROptions) {
    super('StepLR', STEP_LR, optimizer, options, true)
    this.start()
  }

  protected override getLr(): number[] {
    const { lastEpoch } = this.progress
    if (lastEpoch === 0 || lastEpoch % this.args.stepSize !== 0) return this.currentLrs()
    return this.currentLrs().map((lr) => lr * this.args.gamma)
  }

  protected override closedFormLr(): number[] {
    const decays = Math.floor(this.progress.lastEpoch / this.args.stepSize)
    return this.progress.baseLrs.map((base) => base * this.args.gamma ** decays)
  }
}
