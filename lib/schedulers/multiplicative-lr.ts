import { type SchedulableOptimizer } from './fields'
import { LAMBDA_LR, lambdaFactor, type LrLambda } from './lambda-lr'
import { LRScheduler, type LRSchedulerOptions } from './lr-scheduler'

/** MultiplicativeLR's arguments. */
export interface MultiplicativeLROptions extends LRSchedulerOptions {
  /** The factor each group's current learning rate is multiplied by at an epoch: one function, or one per group. */
  lrLambda: LrLambda | LrLambda[]
}

/**
 * Multiplies each group's learning rate by `lrLambda(epoch)` at every epoch but the first, as
 * PyTorch's `MultiplicativeLR`: lr_t = lr_{t−1}·λ(t). It scales the current lr, so it chains with
 * changes made from outside. The functions are not part of `stateDict()`, as in PyTorch: build
 * the scheduler with the same functions before loading one.
 */
export class MultiplicativeLR extends LRScheduler<typeof LAMBDA_LR> {
  constructor(optimizer: SchedulableOptimizer, options: MultiplicativeLROptions) {
    super('MultiplicativeLR', LAMBDA_LR, optimizer, options, true)
    this.start()
  }

  protected override getLr(): number[] {
    if (this.isInitial) return this.currentLrs()
    const epoch = this.progress.lastEpoch
    return this.currentLrs().map((lr, i) => lr * lambdaFactor('MultiplicativeLR', this.args.lrLambda, i, epoch))
  }
}
