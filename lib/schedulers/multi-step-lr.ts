import { integer, list, nonNegative, withDefault, type SchedulableOptimizer } from './fields'
import { LRScheduler, type LRSchedulerOptions } from './lr-scheduler'

const MULTI_STEP_LR = { milestones: list(integer(0)), gamma: withDefault(nonNegative, 0.1) }

/** MultiStepLR's arguments, PyTorch's in camelCase. */
export interface MultiStepLROptions extends LRSchedulerOptions {
  /** The epochs at which to decay; a milestone listed n times decays by γⁿ there. */
  milestones: number[]
  /**
   * The factor the learning rate is multiplied by at each milestone.
   * @default 0.1
   */
  gamma?: number
}

/**
 * Multiplies each group's learning rate by `gamma` at each milestone epoch, as PyTorch's
 * `MultiStepLR` (milestones in any order; a repeated one decays by γ once per repetition).
 */
export class MultiStepLR extends LRScheduler<typeof MULTI_STEP_LR> {
  constructor(optimizer: SchedulableOptimizer, options: MultiStepLROptions) {
    super('MultiStepLR', MULTI_STEP_LR, optimizer, options, true)
    this.start()
  }

  protected override getLr(): number[] {
    const times = this.args.milestones.filter((m) => m === this.progress.lastEpoch).length
    if (times === 0) return this.currentLrs()
    return this.currentLrs().map((lr) => lr * this.args.gamma ** times)
  }

  protected override closedFormLr(): number[] {
    const passed = this.args.milestones.filter((m) => m <= this.progress.lastEpoch).length
    return this.progress.baseLrs.map((base) => base * this.args.gamma ** passed)
  }
}
