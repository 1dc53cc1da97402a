import {
  finiteNumber,
  integer,
  nonNegative,
  number,
  positive,
  readFields,
  withDefault,
  type SchedulableOptimizer,
  type Values,
} from './fields'
import { LRScheduler, prepareLoad, type LRSchedulerOptions } from './lr-scheduler'

const COSINE_ANNEALING_WARM_RESTARTS = {
  t0: integer(1),
  tMult: withDefault(integer(1), 1),
  etaMin: withDefault(nonNegative, 0),
}

/** Where in its cycle the schedule is: PyTorch's `T_cur` (fractional after `step(epoch)`) and `T_i`. */
const POSITION = { tCur: finiteNumber, tI: positive }
type Position = Values<typeof POSITION>

// Beyond 2^53 - 1, ⌊epoch⌋ would not be an exact lastEpoch, and stateDict() would not load.
const EPOCH = number((x) => x >= 0 && x <= Number.MAX_SAFE_INTEGER, 'a number from 0 to 2^53 - 1')

/** CosineAnnealingWarmRestarts's arguments: PyTorch's `T_0`, `T_mult` and `eta_min`. */
export interface CosineAnnealingWarmRestartsOptions extends LRSchedulerOptions {
  /** Epochs until the first restart. */
  t0: number
  /**
   * The factor each cycle is longer than the one before.
   * @default 1
   */
  tMult?: number
  /**
   * The lowest learning rate.
   * @default 0
   */
  etaMin?: number
}

/**
 * Cosine annealing with warm restarts (Loshchilov & Hutter, "SGDR", ICLR 2017), as PyTorch's
 * `CosineAnnealingWarmRestarts`:
 *
 *     η = η_min + (η₀ − η_min)·(1 + cos(π·T_cur/T_i))/2
 *
 * where T_cur counts the epochs since the last restart and T_i is the length of the current
 * cycle, `t0` for the first and `tMult` times the one before for each next. Each `step()` adds one
 * to T_cur and restarts when it reaches T_i. `step(epoch)` jumps to `epoch`, which may be
 * fractional (`epoch + i/iters` after batch i, to anneal within an epoch), as PyTorch's
 * `step(epoch)`: with `tMult` > 1 the cycle is the n-th, n = ⌊log_tMult(epoch/t0·(tMult − 1) + 1)⌋,
 * T_i = t0·tMultⁿ and T_cur = epoch − t0·(tMultⁿ − 1)/(tMult − 1); `lastEpoch` becomes ⌊epoch⌋, and
 * a later `step()` goes on from there. Its `stateDict()` carries T_cur and T_i as `tCur` and `tI`.
 * Resuming with `lastEpoch` takes T_cur = `lastEpoch` and restarts at most once, as PyTorch does:
 * with `tMult` > 1 that is not where the schedule was; prefer `loadStateDict`.
 */
export class CosineAnnealingWarmRestarts extends LRScheduler<typeof COSINE_ANNEALING_WARM_RESTARTS> {
  #position: Position

  constructor(optimizer: SchedulableOptimizer, options: CosineAnnealingWarmRestartsOptions) {
    super('CosineAnnealingWarmRestarts', COSINE_ANNEALING_WARM_RESTARTS, optimizer, options, true)
    this.#position = { tCur: this.progress.lastEpoch, tI: this.args.t0 }
    this.start()
  }

  /**
   * Advances the schedule by one epoch (or batch), or with `epoch`, to that epoch (from 0 to
   * 2^53 - 1, fractional or not), and writes the new learning rates.
   */
  override step(epoch?: number): void {
    if (epoch !== undefined) EPOCH.read(epoch, 'epoch', this.context())
    // Before step 0 (or after SequentialLR undoes it) PyTorch steps to epoch 0.
    const target = epoch ?? (this.progress.lastEpoch < 0 ? 0 : undefined)
    const previous = this.#position
    this.#position = this.#next(target)
    try {
      this.advance(target === undefined ? undefined : Math.floor(target))
    } catch (error) {
      this.#position = previous
      throw error
    }
  }

  #next(epoch: number | undefined): Position {
    const { t0, tMult } = this.args
    if (epoch === undefined) {
      const tCur = this.#position.tCur + 1
      const { tI } = this.#position
      return tCur >= tI ? { tCur: tCur % tI, tI: tI * tMult } : { tCur, tI }
    }
    if (epoch < t0) return { tCur: epoch, tI: t0 }
    if (tMult === 1) return { tCur: epoch % t0, tI: this.#position.tI }
    // Python's math.log(x, base) is log(x)/log(base), and int() truncates.
    const n = Math.trunc(Math.log((epoch / t0) * (tMult - 1) + 1) / Math.log(tMult))
    return { tCur: epoch - (t0 * (tMult ** n - 1)) / (tMult - 1), tI: t0 * tMult ** n }
  }

  protected override getLr(): number[] {
    const { etaMin } = this.args
    const { tCur, tI } = this.#position
    return this.progress.baseLrs.map((base) => etaMin + ((base - etaMin) * (1 + Math.cos((Math.PI * tCur) / tI))) / 2)
  }

  /** Its arguments and progress, and `tCur` and `tI`. */
  override stateDict(): Record<string, unknown> {
    return { ...super.stateDict(), ...this.#position }
  }

  override [prepareLoad](stateDict: unknown, where: string): () => void {
    const apply = super[prepareLoad](stateDict, where)
    const position = readFields(POSITION, stateDict as Record<string, unknown>, where, this.context(), false)
    return () => {
      apply()
      this.#position = position
    }
  }
}
