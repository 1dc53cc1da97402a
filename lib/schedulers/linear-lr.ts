import { integer, number, withDefault, type SchedulableOptimizer } from './fields'
import { LRScheduler, type LRSchedulerOptions } from './lr-scheduler'

const LINEAR_LR = {
  startFactor: withDefault(
    number((x) => x > 0 && x <= 1, '0 < startFactor <= 1'),
    1 / 3,
  ),
  endFactor: withDefault(
    number((x) => x >= 0 && x <= 1, '0 <= endFactor <= 1'),
    1,
  ),
  totalIters: withDefault(integer(1), 5),
}

/** LinearLR's arguments, PyTorch's in camelCase. */
export interface LinearLROptions extends LRSchedulerOptions {
  /**
   * The factor of the first epoch, in (0, 1].
   * @default 1/3
   */
  startFactor?: number
  /**
   * The factor reached after `totalIters` epochs, in [0, 1].
   * @default 1
   */
  endFactor?: number
  /**
   * Epochs over which the factor moves from `startFactor` to `endFactor`.
   * @default 5
   */
  totalIters?: number
}

/**
 * Scales each group's learning rate by a factor that moves linearly from `startFactor` to
 * `endFactor` over `totalIters` epochs, as PyTorch's `LinearLR` (a warm-up, or a linear decay),
 * in its recursive form: lr ← lr·(1 + (e − s)/(T·s + (t − 1)·(e − s))).
 */
export class LinearLR extends LRScheduler<typeof LINEAR_LR> {
  constructor(optimizer: SchedulableOptimizer, options?: LinearLROptions) {
    super('LinearLR', LINEAR_LR, optimizer, options, false)
    this.start()
  }

  protected override getLr(): number[] {
    const { startFactor: s, endFactor: e, totalIters } = this.args
    const t = this.progress.lastEpoch
    if (t === 0) return this.currentLrs().map((lr) => lr * s)
    if (this.isInitial || t > totalIters) return this.currentLrs()
    return this.currentLrs().map((lr) => lr * (1.0 + (e - s) / (totalIters * s + (t - 1) * (e - s))))
  }

  protected override closedFormLr(): number[] {
    const { startFactor: s, endFactor: e, totalIters } = this.args
    const t = this.progress.lastEpoch
    return this.progress.baseLrs.map((base) => base * (s + ((e - s) * Math.min(totalIters, t)) / totalIters))
  }
}
