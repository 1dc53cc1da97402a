// The base of the epoch-based schedulers (every one but ReduceLROnPlateau).
//
// PyTorch records `initial_lr` in each param group the first time a scheduler is attached;
// this optimizer seals its groups, so the same record lives here, in a WeakMap keyed by the
// group object. Every scheduler also keeps its own copy as `baseLrs`, which is what its
// `stateDict()` saves and `loadStateDict()` restores.
import { invalidState, invalidValue } from '../errors'
import {
  anyNumber,
  checkKeys,
  checkOptimizer,
  copy,
  integer,
  perGroup,
  readFields,
  withDefault,
  type Context,
  type Fields,
  type Group,
  type SchedulableOptimizer,
  type Values,
} from './fields'

/**
 * PyTorch's `group["initial_lr"]`, for groups that cannot hold it themselves (SequentialLR and
 * ChainedScheduler read it too).
 */
export const initialLrs = new WeakMap<object, number>()

// Hooks SequentialLR and ChainedScheduler call on the schedulers they hold (PyTorch's
// `_initial_step`, `_update_lr(epoch)` and `recursive_undo`). Exported only because declarations
// must name them and composite.ts and sequential-lr.ts call them; `lib/index.ts` does not export
// them, and the package exports nothing else.
/** @internal */
export const initialStep = Symbol('initialStep')
/** @internal */
export const updateLr = Symbol('updateLr')
/** @internal */
export const undoStep = Symbol('undoStep')
/** @internal Checks a state dict completely and returns what applies it, so that loading is all or nothing. */
export const prepareLoad = Symbol('prepareLoad')

const PROGRESS = {
  lastEpoch: integer(-1),
  stepCount: integer(0),
  baseLrs: perGroup(anyNumber),
  lastLr: perGroup(anyNumber),
}
type Progress = Values<typeof PROGRESS>

/** Options every epoch-based scheduler takes besides its own. */
export interface LRSchedulerOptions {
  /**
   * The index of the last epoch when resuming: the optimizer's groups must already have an
   * initial learning rate (a scheduler was attached to this optimizer before), and building the
   * scheduler computes epoch `lastEpoch + 1` at once, as PyTorch does. To resume from a
   * checkpoint, prefer a fresh scheduler and `loadStateDict`.
   * @default -1
   */
  lastEpoch?: number
}

/**
 * The base of the epoch-based schedulers, PyTorch's `LRScheduler`: each `step()` advances
 * `lastEpoch` and writes the learning rates `getLr()` computes into the optimizer's groups.
 * Building one records each group's initial learning rate (`baseLrs`) and takes step 0.
 */
export abstract class LRScheduler<F extends Fields = Fields> {
  /** The optimizer whose `paramGroups` this scheduler writes. */
  readonly optimizer: SchedulableOptimizer
  /** The scheduler's arguments, as checked and normalized by its constructor. */
  protected readonly args: Values<F>
  /** Progress through the schedule: PyTorch's `last_epoch`, `_step_count`, `base_lrs`, `_last_lr`. */
  protected progress: Progress
  /** True while the constructor takes step 0 (PyTorch's `_is_initial`). */
  protected isInitial = false
  readonly #fields: F
  readonly #name: string

  protected constructor(
    name: string,
    fields: F,
    optimizer: SchedulableOptimizer,
    options: object | undefined,
    required: boolean,
  ) {
    checkOptimizer(optimizer, name)
    const at = { name, groups: optimizer.paramGroups.length }
    const source = options ?? (required ? options : {})
    checkKeys(source, [...Object.keys(fields), 'lastEpoch'], 'options', at)
    const { lastEpoch } = readFields({ lastEpoch: withDefault(integer(-1), -1) }, source, 'options', at, true)
    this.optimizer = optimizer
    this.args = readFields(fields, source, 'options', at, true)
    this.progress = { lastEpoch, stepCount: 0, baseLrs: [], lastLr: [] }
    this.#fields = fields
    this.#name = name
  }

  /**
   * Takes step 0 from the groups' initial learning rates, and records them if it succeeds.
   * Subclasses call it last in their constructor, once every argument is checked: before it,
   * nothing has been written. `initial` replaces what is recorded (OneCycleLR's `maxLr/divFactor`).
   */
  protected start(initial?: number[]): void {
    const groups = this.groups()
    const fresh = this.progress.lastEpoch === -1
    this.progress.baseLrs = groups.map((group, i) => {
      const recorded = initialLrs.get(group)
      if (!fresh && recorded === undefined) {
        throw invalidValue(
          `${this.#name}: paramGroups[${i}] has no initial learning rate, ` +
            `which resuming with lastEpoch ${this.progress.lastEpoch} needs: ` +
            `no scheduler was attached to this optimizer before ` +
            `(to resume from a checkpoint, build the scheduler without lastEpoch and call loadStateDict)`,
        )
      }
      return fresh ? (initial?.[i] ?? recorded ?? group.lr) : recorded!
    })
    this[initialStep]()
    if (fresh) groups.forEach((group, i) => initialLrs.set(group, this.progress.baseLrs[i]))
  }

  /** The index of the last epoch: 0 after construction, then one more at every `step()`. */
  get lastEpoch(): number {
    return this.progress.lastEpoch
  }

  /** Each group's learning rate when the first scheduler was attached (PyTorch's `base_lrs`). */
  get baseLrs(): number[] {
    return [...this.progress.baseLrs]
  }

  /** The learning rates this scheduler last wrote, one per param group. */
  getLastLr(): number[] {
    return [...this.progress.lastLr]
  }

  /** Advances the schedule by one epoch (or batch) and writes the new learning rates. */
  step(): void {
    this.advance()
  }

  /**
   * The scheduler's state as a plain object, as PyTorch's `state_dict()`: its arguments and its
   * progress (`lastEpoch`, `stepCount`, `baseLrs`, `lastLr`), with every array copied.
   */
  stateDict(): Record<string, unknown> {
    const out: Record<string, unknown> = {}
    for (const [key, field] of Object.entries(this.#fields)) if (field.saved !== false) out[key] = copy(this.args[key])
    for (const [key, value] of Object.entries(this.progress)) out[key] = copy(value)
    return out
  }

  /**
   * Restores a `stateDict()`: every key is checked first (names, types, ranges, one value per
   * param group), and on error nothing changes. Load the optimizer's own state dict too: the
   * scheduler restores only its own progress, not the groups' current learning rates.
   */
  loadStateDict(stateDict: Record<string, unknown>): void {
    this[prepareLoad](stateDict, 'stateDict')()
  }

  /** The learning rates of the epoch `lastEpoch` now names, one per group (PyTorch's `get_lr`). */
  protected abstract getLr(): number[]

  /** The learning rates of epoch `lastEpoch` from `baseLrs` alone, for schedulers that have one. */
  protected closedFormLr?(): number[]

  /** The groups, typed for reading and writing any option; there must be one per base lr. */
  protected groups(): Group[] {
    return this.optimizer.paramGroups as unknown as Group[]
  }

  /** The groups, refused if the optimizer has gained some since this scheduler was built. */
  protected checkedGroups(): Group[] {
    const groups = this.groups()
    if (groups.length !== this.progress.baseLrs.length) {
      throw invalidState(
        `${this.#name}: the optimizer has ${groups.length} param groups, ` +
          `but the scheduler was built for ${this.progress.baseLrs.length}`,
      )
    }
    return groups
  }

  /** Who is reading, for messages and for the length of per-group values. */
  protected context(): Context {
    return { name: this.#name, groups: this.optimizer.paramGroups.length }
  }

  /**
   * A step: to the next epoch, or to `epoch` (PyTorch's `step(epoch)`, which only
   * CosineAnnealingWarmRestarts offers here). On error nothing changes.
   */
  protected advance(epoch?: number): void {
    this.progress.stepCount += 1
    try {
      this[updateLr](epoch)
    } catch (error) {
      this.progress.stepCount -= 1
      throw error
    }
  }

  /** Each group's current learning rate. */
  protected currentLrs(): number[] {
    return this.groups().map((group) => group.lr)
  }

  [initialStep](): void {
    this.progress.stepCount = 0
    this.isInitial = true
    try {
      this.step()
    } finally {
      this.isInitial = false
    }
  }

  /** PyTorch's `_update_lr`: the next epoch, or the given one by the closed form if there is one. */
  [updateLr](epoch?: number): void {
    const groups = this.checkedGroups()
    const previous = this.progress.lastEpoch
    this.progress.lastEpoch = epoch ?? previous + 1
    let lrs: number[]
    try {
      lrs = epoch !== undefined && this.closedFormLr ? this.closedFormLr() : this.getLr()
    } catch (error) {
      this.progress.lastEpoch = previous
      throw error
    }
    groups.forEach((group, i) => (group.lr = lrs[i]))
    this.progress.lastLr = this.currentLrs()
  }

  [undoStep](): void {
    this.progress.lastEpoch -= 1
  }

  [prepareLoad](stateDict: unknown, where: string): () => void {
    const at = this.context()
    const saved = Object.keys(this.stateDict())
    checkKeys(stateDict, saved, where, at)
    for (const key of saved) if (!(key in stateDict)) throw invalidValue(`${this.#name}: ${where}.${key} is missing`)
    const args = readFields(this.#fields, stateDict, where, at, false)
    const progress = readFields(PROGRESS, stateDict, where, at, false)
    this.checkLoaded(args, where, at)
    return () => {
      Object.assign(this.args, args)
      this.progress = progress
    }
  }

  /** Cross-field checks of a state dict being loaded, beyond each field's own. */
  protected checkLoaded(_args: Values<F>, _where: string, _at: Context): void {}
}
