// It does not extend LRScheduler: its step takes a metric, not an epoch, and it records no initial learning rates.
import { describe, invalidState, invalidType } from '../errors'
import {
  anyNumber,
  checkKeys,
  checkOptimizer,
  choice,
  copy,
  integer,
  list,
  nonNegative,
  number,
  perGroup,
  readFields,
  withDefault,
  type Group,
  type SchedulableOptimizer,
  type Values,
} from './fields'

const REDUCE_LR_ON_PLATEAU = {
  mode: withDefault(choice('min', 'max'), 'min'),
  factor: withDefault(
    number((x) => x >= 0 && x < 1, '0 <= factor < 1'),
    0.1,
  ),
  patience: withDefault(integer(0), 10),
  threshold: withDefault(nonNegative, 1e-4),
  thresholdMode: withDefault(choice('rel', 'abs'), 'rel'),
  cooldown: withDefault(integer(0), 0),
  minLr: withDefault<number | number[]>(
    {
      read: (value, path, at) =>
        Array.isArray(value) ? perGroup(nonNegative).read(value, path, at) : nonNegative.read(value, path, at),
    },
    0,
  ),
  eps: withDefault(nonNegative, 1e-8),
}

const PLATEAU_PROGRESS = {
  lastEpoch: integer(0),
  lastLr: list(anyNumber),
  best: anyNumber,
  numBadEpochs: integer(0),
  cooldownCounter: integer(0),
}

/** ReduceLROnPlateau's arguments, PyTorch's in camelCase. */
export interface ReduceLROnPlateauOptions {
  /**
   * `'min'`: reduce when the metric stops decreasing; `'max'`: when it stops increasing.
   * @default 'min'
   */
  mode?: 'min' | 'max'
  /**
   * The factor the learning rate is multiplied by at each reduction, in [0, 1).
   * @default 0.1
   */
  factor?: number
  /**
   * Epochs without improvement to allow before reducing.
   * @default 10
   */
  patience?: number
  /**
   * How much better a metric must be to count as an improvement.
   * @default 1e-4
   */
  threshold?: number
  /**
   * `'rel'`: better than best·(1 ∓ threshold); `'abs'`: better than best ∓ threshold.
   * @default 'rel'
   */
  thresholdMode?: 'rel' | 'abs'
  /**
   * Epochs to wait after a reduction before counting bad epochs again.
   * @default 0
   */
  cooldown?: number
  /**
   * The lowest learning rate: one for every group, or one per group.
   * @default 0
   */
  minLr?: number | number[]
  /**
   * A reduction smaller than this is skipped.
   * @default 1e-8
   */
  eps?: number
}

/**
 * Reduces each group's learning rate by `factor` when a metric has not improved for more than
 * `patience` epochs, as PyTorch's `ReduceLROnPlateau`: `step(metric)` after each evaluation.
 */
export class ReduceLROnPlateau {
  /** The optimizer whose `paramGroups` this scheduler writes. */
  readonly optimizer: SchedulableOptimizer
  readonly #args: Values<typeof REDUCE_LR_ON_PLATEAU>
  #progress: Values<typeof PLATEAU_PROGRESS>

  constructor(optimizer: SchedulableOptimizer, options?: ReduceLROnPlateauOptions) {
    checkOptimizer(optimizer, 'ReduceLROnPlateau')
    const at = { name: 'ReduceLROnPlateau', groups: optimizer.paramGroups.length }
    const source = options ?? {}
    checkKeys(source, Object.keys(REDUCE_LR_ON_PLATEAU), 'options', at)
    this.optimizer = optimizer
    this.#args = readFields(REDUCE_LR_ON_PLATEAU, source, 'options', at, true)
    this.#progress = { lastEpoch: 0, lastLr: this.#lrs(), best: this.#worst(), numBadEpochs: 0, cooldownCounter: 0 }
  }

  /** The number of `step` calls so far. */
  get lastEpoch(): number {
    return this.#progress.lastEpoch
  }

  /** The best metric seen so far (±Infinity before the first). */
  get best(): number {
    return this.#progress.best
  }

  /** The learning rates after the last step, one per param group. */
  getLastLr(): number[] {
    return [...this.#progress.lastLr]
  }

  /** Records one epoch's metric and reduces the learning rates if it has not improved for long enough. */
  step(metric: number): void {
    if (typeof metric !== 'number') {
      throw invalidType(`ReduceLROnPlateau: metric must be a number, got ${describe(metric)}`)
    }
    const { patience, cooldown } = this.#args
    const next = { ...this.#progress, lastEpoch: this.#progress.lastEpoch + 1 }
    if (this.#isBetter(metric, next.best)) {
      next.best = metric
      next.numBadEpochs = 0
    } else {
      next.numBadEpochs += 1
    }
    if (next.cooldownCounter > 0) {
      next.cooldownCounter -= 1
      next.numBadEpochs = 0
    }
    if (next.numBadEpochs > patience) {
      this.#reduce()
      next.cooldownCounter = cooldown
      next.numBadEpochs = 0
    }
    next.lastLr = this.#lrs()
    this.#progress = next
  }

  /** Its arguments and progress (`lastEpoch`, `lastLr`, `best`, `numBadEpochs`, `cooldownCounter`). */
  stateDict(): Record<string, unknown> {
    return copy({ ...this.#args, ...this.#progress }) as Record<string, unknown>
  }

  /** Restores a `stateDict()`, checking every key first; on error nothing changes. */
  loadStateDict(stateDict: Record<string, unknown>): void {
    const at = { name: 'ReduceLROnPlateau', groups: this.optimizer.paramGroups.length }
    const keys = [...Object.keys(REDUCE_LR_ON_PLATEAU), ...Object.keys(PLATEAU_PROGRESS)]
    checkKeys(stateDict, keys, 'stateDict', at)
    const args = readFields(REDUCE_LR_ON_PLATEAU, stateDict, 'stateDict', at, false)
    const progress = readFields(PLATEAU_PROGRESS, stateDict, 'stateDict', at, false)
    Object.assign(this.#args, args)
    this.#progress = progress
  }

  #lrs(): number[] {
    return this.optimizer.paramGroups.map((group) => group.lr)
  }

  #worst(): number {
    return this.#args.mode === 'min' ? Infinity : -Infinity
  }

  #isBetter(a: number, best: number): boolean {
    const { mode, threshold, thresholdMode } = this.#args
    if (mode === 'min' && thresholdMode === 'rel') return a < best * (1.0 - threshold)
    if (mode === 'min') return a < best - threshold
    if (thresholdMode === 'rel') return a > best * (threshold + 1.0)
    return a > best + threshold
  }

  #reduce(): void {
    const { factor, minLr, eps } = this.#args
    const groups = this.optimizer.paramGroups as unknown as Group[]
    if (Array.isArray(minLr) && minLr.length !== groups.length) {
      throw invalidState(
        `ReduceLROnPlateau: the optimizer has ${groups.length} param groups, ` +
          `but minLr has ${minLr.length} values; give one per group`,
      )
    }
    groups.forEach((group, i) => {
      const old = group.lr
      const lr = Math.max(old * factor, Array.isArray(minLr) ? minLr[i] : minLr)
      if (old - lr > eps) group.lr = lr
    })
  }
}
