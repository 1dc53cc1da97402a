// The base of the schedulers that run others: SequentialLR (one after another) and
// ChainedScheduler (all at every step). It checks and keeps the schedulers, and saves, restores
// and undoes them with its own progress.
import { describe, invalidState, invalidType, invalidValue } from '../errors'
import { checkKeys, type Fields, type SchedulableOptimizer } from './fields'
import { initialLrs, LRScheduler, prepareLoad, undoStep } from './lr-scheduler'
import { ReduceLROnPlateau } from './reduce-lr-on-plateau'

/**
 * Checks the schedulers `name` is given at `path`: a non-empty array of epoch-based schedulers,
 * all of `optimizer` if it is given. Returns a copy.
 */
export function checkSchedulers(
  name: string,
  schedulers: unknown,
  path: string,
  optimizer?: SchedulableOptimizer,
): LRScheduler[] {
  if (!Array.isArray(schedulers)) {
    throw invalidType(`${name}: ${path} must be an array of schedulers, got ${describe(schedulers)}`)
  }
  if (schedulers.length === 0) throw invalidValue(`${name}: ${path} is empty; it needs at least one scheduler`)
  schedulers.forEach((scheduler: unknown, i) => {
    if (scheduler instanceof ReduceLROnPlateau) {
      throw invalidValue(
        `${name}: ${path}[${i}] is a ReduceLROnPlateau, which ${name} cannot run: its step needs a metric`,
      )
    }
    if (!(scheduler instanceof LRScheduler)) {
      throw invalidType(
        `${name}: ${path}[${i}] must be an epoch-based scheduler (an LRScheduler), got ${describe(scheduler)}`,
      )
    }
    if (optimizer !== undefined && scheduler.optimizer !== optimizer) {
      throw invalidValue(
        `${name}: ${path}[${i}] (${describe(scheduler)}) belongs to another optimizer; all must belong to this one`,
      )
    }
  })
  return [...schedulers]
}

/**
 * A scheduler of schedulers: its `stateDict()` holds theirs under `schedulers`, `loadStateDict()`
 * restores them all or none, and its `baseLrs` are the groups' initial learning rates.
 */
export abstract class CompositeScheduler<F extends Fields = Fields> extends LRScheduler<F> {
  /** The schedulers it runs, in order. */
  protected readonly chained: readonly LRScheduler[]

  protected constructor(
    name: string,
    fields: F,
    optimizer: SchedulableOptimizer,
    options: object | undefined,
    schedulers: unknown,
    path: string,
  ) {
    super(name, fields, optimizer, options, true)
    this.chained = checkSchedulers(name, schedulers, path, optimizer)
    const groups = this.groups()
    groups.forEach((group, i) => {
      if (!initialLrs.has(group)) {
        throw invalidState(`${name}: paramGroups[${i}] was added to the optimizer after its schedulers were built`)
      }
    })
    this.progress.baseLrs = groups.map((group) => initialLrs.get(group)!)
  }

  /** The schedulers it runs (the array is a copy). */
  get schedulers(): LRScheduler[] {
    return [...this.chained]
  }

  /** Never called: `step()` delegates to the schedulers. */
  protected override getLr(): number[] {
    return this.getLastLr()
  }

  /** Its own progress, and the state of every scheduler it runs under `schedulers`. */
  override stateDict(): Record<string, unknown> {
    return { ...super.stateDict(), schedulers: this.chained.map((s) => s.stateDict()) }
  }

  /** PyTorch's `recursive_undo`: the schedulers step back, not this one. */
  override [undoStep](): void {
    for (const scheduler of this.chained) scheduler[undoStep]()
  }

  override [prepareLoad](stateDict: unknown, where: string): () => void {
    const at = this.context()
    checkKeys(stateDict, Object.keys(this.stateDict()), where, at)
    const { schedulers, ...own } = stateDict
    if (!Array.isArray(schedulers) || schedulers.length !== this.chained.length) {
      throw invalidValue(
        `${at.name}: ${where}.schedulers must be an array of ${this.chained.length} state dicts, ` +
          `one per chained scheduler, ` +
          `got ${describe(schedulers)}${Array.isArray(schedulers) ? ` of ${schedulers.length}` : ''}`,
      )
    }
    const applyOwn = super[prepareLoad]({ ...own, schedulers: [] }, where)
    const applyEach = this.chained.map((s, i) => s[prepareLoad](schedulers[i], `${where}.schedulers[${i}]`))
    return () => {
      applyOwn()
      for (const apply of applyEach) apply()
    }
  }
}
