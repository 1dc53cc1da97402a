import { integer, nonNegative, withDefault, type SchedulableOptimizer } from './fields'
import { LRScheduler, type LRSchedulerOptions } from './lr-scheduler'

const POLYNOMIAL_LR = {
  totalIters: withDefault(integer(1), 5),
  // A negative power would divide by zero at epoch totalIters, in PyTorch as here.
  power: withDefault(nonNegative, 1),
}

/** PolynomialLR's arguments, PyTorch's in camelCase. */
export interface PolynomialLROptions extends LRSchedulerOptions {
  /**
   * Epochs over which the learning rate decays to 0.
   * @default 5
   */
  totalIters?: number
  /**
   * The power of the polynomial (1: a linear decay).
   * @default 1
   */
  power?: number
}

/**
 * Decays each group's learning rate to 0 over `totalIters` epochs along a polynomial, as PyTorch's
 * `PolynomialLR`: lr_t = base·(1 − t/T)^power, reached in PyTorch's recursive form,
 * lr ← lr·((1 − t/T)/(1 − (t − 1)/T))^power, so the numbers are PyTorch's; past T the lr stays 0.
 */
export class PolynomialLR extends LRScheduler<typeof POLYNOMIAL_LR> {
  constructor(optimizer: SchedulableOptimizer, options?: PolynomialLROptions) {
    super('PolynomialLR', POLYNOMIAL_LR, optimizer, options, false)
    this.start()
  }

  protected override getLr(): number[] {
    const { totalIters, power } = this.args
    const t = this.progress.lastEpoch
    if (this.isInitial || t > totalIters) return this.currentLrs()
    const decay = ((1.0 - t / totalIters) / (1.0 - (t - 1) / totalIters)) ** power
    return this.currentLrs().map((lr) => lr * decay)
  }

  protected override closedFormLr(): number[] {
    const { totalIters, power } = this.args
    const t = this.progress.lastEpoch
    return this.progress.baseLrs.map((base) => base * (1.0 - Math.min(totalIters, t) / totalIters) ** power)
  }
}
