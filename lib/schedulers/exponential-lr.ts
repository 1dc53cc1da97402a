import { nonNegative, type SchedulableOptimizer } from './fields'
import { LRScheduler, type LRSchedulerOptions } from './lr-scheduler'

const EXPONENTIAL_LR = { gamma: nonNegative }

/** ExponentialLR's arguments. */
export interface ExponentialLROptions extends LRSchedulerOptions {
  /** The factor the learning rate is multiplied by every epoch. */
  gamma: number
}

/** Multiplies each group's learning rate by `gamma` every epoch, as PyTorch's `ExponentialLR`. */
export class ExponentialLR extends LRScheduler<typeof EXPONENTIAL_LR> {
  constructor(optimizer: SchedulableOptimizer, options: ExponentialLROptions) {
    super('ExponentialLR', EXPONENTIAL_LR, optimizer, options, true)
    this.start()
  }

  protected override getLr(): number[] {
    if (this.isInitial) return this.currentLrs()
    return this.currentLrs().map((lr) => lr * this.args.gamma)
  }

  protected override closedFormLr(): number[] {
    return this.progress.baseLrs.map((base) => base * this.args.gamma ** this.progress.lastEpoch)
  }
}
