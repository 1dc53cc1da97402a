import { integer, nonNegative, withDefault, type SchedulableOptimizer } from './fields'
import { LRScheduler, type LRSchedulerOptions } from './lr-scheduler'

const COSINE_ANNEALING_LR = { tMax: integer(1), etaMin: withDefault(nonNegative, 0) }

/** CosineAnnealingLR's arguments: PyTorch's `T_max` and `eta_min`. */
export interface CosineAnnealingLROptions extends LRSchedulerOptions {
  /** Half the period: epochs from the initial learning rate down to `etaMin`. */
  tMax: number
  /**
   * The lowest learning rate.
   * @default 0
   */
  etaMin?: number
}

/**
 * Cosine annealing without restarts (Loshchilov & Hutter, "SGDR", ICLR 2017), in PyTorch's
 * recursive form, so the numbers are PyTorch's rather than the closed form's:
 *
 *     η ← η_min + (η − η_min)·(1 + cos(π·t/T))/(1 + cos(π·(t − 1)/T))
 *
 * which follows η_t = η_min + (η₀ − η_min)·(1 + cos(π·t/T))/2 and, past T, comes back up.
 * Where the denominator would vanish (t − 1 − T a multiple of 2T) it adds
 * (η₀ − η_min)·(1 − cos(π/T))/2 instead.
 */
export class CosineAnnealingLR extends LRScheduler<typeof COSINE_ANNEALING_LR> {
  constructor(optimizer: SchedulableOptimizer, options: CosineAnnealingLROptions) {
    super('CosineAnnealingLR', COSINE_ANNEALING_LR, optimizer, options, true)
    this.start()
  }

  protected override getLr(): number[] {
    const { tMax, etaMin } = this.args
    const { lastEpoch: t, stepCount, baseLrs } = this.progress
    const lrs = this.currentLrs()
    if (this.isInitial) return lrs
    if (stepCount === 1 && t > 0) {
      return baseLrs.map((base) => etaMin + ((base - etaMin) * (1 + Math.cos((t * Math.PI) / tMax))) / 2)
    }
    if ((t - 1 - tMax) % (2 * tMax) === 0) {
      return lrs.map((lr, i) => lr + ((baseLrs[i] - etaMin) * (1 - Math.cos(Math.PI / tMax))) / 2)
    }
    return lrs.map(
      (lr) =>
        ((1 + Math.cos((Math.PI * t) / tMax)) / (1 + Math.cos((Math.PI * (t - 1)) / tMax))) * (lr - etaMin) + etaMin,
    )
  }

  protected override closedFormLr(): number[] {
    const { tMax, etaMin } = this.args
    const t = this.progress.lastEpoch
    return this.progress.baseLrs.map((base) => etaMin + ((base - etaMin) * (1 + Math.cos((Math.PI * t) / tMax))) / 2)
  }
}
