import {
  aFunction,
  broadcast,
  choice,
  finiteNumber,
  flag,
  integer,
  momentumSetter,
  nonNegative,
  nullable,
  numberFrom,
  unsaved,
  withDefault,
  type MomentumSetter,
  type SchedulableOptimizer,
} from './fields'
import { initialLrs, LRScheduler, type LRSchedulerOptions } from './lr-scheduler'

const CYCLIC_LR = {
  // Saved as the progress's baseLrs, as PyTorch saves base_lrs.
  baseLr: unsaved(broadcast(nonNegative)),
  maxLr: broadcast(nonNegative),
  // PyTorch divides by zero at each cycle's start with no steps up; none down is a sawtooth.
  stepSizeUp: withDefault(integer(1), 2000),
  stepSizeDown: withDefault(nullable(integer(0)), null),
  mode: withDefault(choice('triangular', 'triangular2', 'exp_range'), 'triangular'),
  gamma: withDefault(nonNegative, 1),
  scaleFn: unsaved(withDefault(nullable(aFunction), null)),
  scaleMode: withDefault(choice('cycle', 'iterations'), 'cycle'),
  cycleMomentum: withDefault(flag, true),
  baseMomentum: withDefault(broadcast(finiteNumber), 0.8),
  maxMomentum: withDefault(broadcast(finiteNumber), 0.9),
}

/** CyclicLR's arguments, PyTorch's in camelCase. */
export interface CyclicLROptions extends LRSchedulerOptions {
  /** The lower learning rate of the cycle: one for every group, or one per group. */
  baseLr: number | number[]
  /** The upper learning rate of the cycle: one for every group, or one per group. */
  maxLr: number | number[]
  /**
   * Steps from the lower learning rate to the upper one.
   * @default 2000
   */
  stepSizeUp?: number
  /**
   * Steps from the upper learning rate back to the lower one (null: `stepSizeUp`).
   * @default null
   */
  stepSizeDown?: number | null
  /**
   * The amplitude's scale: `'triangular'`, 1; `'triangular2'`, halved every cycle, 1/2^(cycle − 1);
   * `'exp_range'`, `gamma` to the power of the steps taken. Ignored when `scaleFn` is given.
   * @default 'triangular'
   */
  mode?: 'triangular' | 'triangular2' | 'exp_range'
  /**
   * The base of `'exp_range'`'s scale.
   * @default 1
   */
  gamma?: number
  /**
   * A scale of your own, in place of `mode`'s: a function of the cycle (from 1) or of the steps
   * taken, as `scaleMode` says, called once per step. It is not part of `stateDict()`, as in PyTorch.
   * @default null
   */
  scaleFn?: ((x: number) => number) | null
  /**
   * What `scaleFn` is a function of: `'cycle'` or `'iterations'` (the steps taken).
   * @default 'cycle'
   */
  scaleMode?: 'cycle' | 'iterations'
  /**
   * Cycle the momentum (SGD, RMSprop) or `betas[0]` (Adam and kin) inversely to the learning rate.
   * @default true
   */
  cycleMomentum?: boolean
  /**
   * The momentum at the upper learning rate: one for every group, or one per group.
   * @default 0.8
   */
  baseMomentum?: number | number[]
  /**
   * The momentum at the lower learning rate: one for every group, or one per group.
   * @default 0.9
   */
  maxMomentum?: number | number[]
}

/**
 * Cyclical learning rates (Smith, "Cyclical Learning Rates for Training Neural Networks", 2017),
 * as PyTorch's `CyclicLR`: each group's learning rate goes from `baseLr` up to `maxLr` over
 * `stepSizeUp` steps and back over `stepSizeDown`, its amplitude scaled by `mode` or `scaleFn`.
 * With T = stepSizeUp + stepSizeDown, r = stepSizeUp/T and t the steps taken,
 *
 *     cycle = ⌊1 + t/T⌋,  x = 1 + t/T − cycle,  s = x/r if x ≤ r, else (x − 1)/(r − 1)
 *     lr = baseLr + (maxLr − baseLr)·s·scale,  momentum = maxMomentum − (maxMomentum − baseMomentum)·s·scale
 *
 * With `cycleMomentum`, the momentum (or `betas[0]`) moves the opposite way to the learning rate.
 * It is meant to be stepped after every batch. Its `baseLrs` are `baseLr`; as in PyTorch, step 0
 * (and the first step after resuming with `lastEpoch`) starts from the groups' initial learning
 * rates instead, which are `baseLr` unless a scheduler was attached to the optimizer before.
 */
export class CyclicLR extends LRScheduler<typeof CYCLIC_LR> {
  /** Writes `momentum` or `betas[0]`, whichever the optimizer has. */
  readonly #setMomentum: MomentumSetter

  constructor(optimizer: SchedulableOptimizer, options: CyclicLROptions) {
    super('CyclicLR', CYCLIC_LR, optimizer, options, true)
    const { baseLr, cycleMomentum } = this.args
    this.#setMomentum = momentumSetter('CyclicLR', optimizer, cycleMomentum)
    // PyTorch sets each group's lr to baseLr (and its momentum to maxMomentum) and records the
    // initial lr if there is none yet; step 0 overwrites both.
    this.start(this.groups().map((group, i) => initialLrs.get(group) ?? baseLr[i]))
    this.progress.baseLrs = [...baseLr]
  }

  /** Computes every group's lr and momentum before writing any momentum, so a failed step changes nothing. */
  protected override getLr(): number[] {
    const { maxLr, stepSizeUp, stepSizeDown, cycleMomentum, baseMomentum, maxMomentum } = this.args
    const t = this.progress.lastEpoch
    const totalSize = stepSizeUp + (stepSizeDown ?? stepSizeUp)
    const stepRatio = stepSizeUp / totalSize
    const cycle = Math.floor(1 + t / totalSize)
    const x = 1.0 + t / totalSize - cycle
    const scaleFactor = x <= stepRatio ? x / stepRatio : (x - 1) / (stepRatio - 1)
    const scale = this.#scale(cycle, t)
    const lrs = this.progress.baseLrs.map((base, i) => base + (maxLr[i] - base) * scaleFactor * scale)
    if (cycleMomentum) {
      const momentums = maxMomentum.map((max, i) => max - (max - baseMomentum[i]) * scaleFactor * scale)
      this.groups().forEach((group, i) => this.#setMomentum(group, momentums[i]))
    }
    return lrs
  }

  #scale(cycle: number, t: number): number {
    const { scaleFn, scaleMode, mode, gamma } = this.args
    if (scaleFn !== null) return numberFrom(scaleFn, scaleMode === 'cycle' ? cycle : t, 'scaleFn', 'CyclicLR')
    if (mode === 'triangular') return 1.0
    if (mode === 'triangular2') return 1 / 2.0 ** (cycle - 1)
    return gamma ** t
  }
}
