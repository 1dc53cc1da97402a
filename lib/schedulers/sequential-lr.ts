import { describe, invalidState, invalidType, invalidValue } from '../errors'
import { checkKeys, increasing, type SchedulableOptimizer } from './fields'
import {
  initialLrs,
  initialStep,
  LRScheduler,
  prepareLoad,
  undoStep,
  updateLr,
  type LRSchedulerOptions,
} from './lr-scheduler'
import { ReduceLROnPlateau } from './reduce-lr-on-plateau'

const SEQUENTIAL_LR = { milestones: increasing(0) }

/** SequentialLR's arguments. */
export interface SequentialLROptions extends LRSchedulerOptions {
  /** The schedulers to run one after the other, all built on the same optimizer. */
  schedulers: LRScheduler[]
  /** The epochs at which to switch to the next scheduler: one fewer than `schedulers`, increasing. */
  milestones: number[]
}

/**
 * Runs `schedulers` one after another, switching at each milestone, as PyTorch's `SequentialLR`:
 * building it resets each group's learning rate to its initial one and restarts the first
 * scheduler; at a milestone the next scheduler starts at its epoch 0 (by its closed form, if
 * it has one). Build the chained schedulers first, on the same optimizer.
 */
export class SequentialLR extends LRScheduler<typeof SEQUENTIAL_LR> {
  readonly #schedulers: LRScheduler[]

  constructor(optimizer: SchedulableOptimizer, options: SequentialLROptions) {
    const isObject = typeof options === 'object' && options !== null
    const { schedulers, ...rest }: Partial<SequentialLROptions> = isObject ? options : {}
    super('SequentialLR', SEQUENTIAL_LR, optimizer, isObject ? rest : options, true)
    if (!Array.isArray(schedulers)) {
      throw invalidType(`SequentialLR: options.schedulers must be an array of schedulers, got ${describe(schedulers)}`)
    }
    if (schedulers.length === 0) {
      throw invalidValue('SequentialLR: options.schedulers is empty; it needs at least one scheduler')
    }
    schedulers.forEach((scheduler: unknown, i) => {
      if (scheduler instanceof ReduceLROnPlateau) {
        throw invalidValue(
          `SequentialLR: options.schedulers[${i}] is a ReduceLROnPlateau, ` +
            `which SequentialLR cannot run: its step needs a metric`,
        )
      }
      if (scheduler instanceof SequentialLR || !(scheduler instanceof LRScheduler)) {
        throw invalidType(
          `SequentialLR: options.schedulers[${i}] must be a StepLR, MultiStepLR, ExponentialLR, ` +
            `CosineAnnealingLR, LinearLR, LambdaLR or OneCycleLR, got ${describe(scheduler)}`,
        )
      }
      if (scheduler.optimizer !== optimizer) {
        throw invalidValue(
          `SequentialLR: options.schedulers[${i}] (${describe(scheduler)}) belongs to another optimizer; ` +
            `all must belong to this one`,
        )
      }
    })
    const { milestones } = this.args
    if (milestones.length !== schedulers.length - 1) {
      throw invalidValue(
        `SequentialLR: options.milestones has ${milestones.length} values for ${schedulers.length} schedulers; ` +
          `it needs one fewer than the schedulers`,
      )
    }
    const groups = this.groups()
    groups.forEach((group, i) => {
      if (!initialLrs.has(group)) {
        throw invalidState(`SequentialLR: paramGroups[${i}] was added to the optimizer after its schedulers were built`)
      }
    })
    this.#schedulers = [...schedulers]
    this.progress.lastEpoch += 1
    this.progress.baseLrs = groups.map((group) => initialLrs.get(group)!)
    groups.forEach((group, i) => (group.lr = this.progress.baseLrs[i]))
    this[undoStep]()
    const first = this.#schedulers[this.#current()]
    first[initialStep]()
    this.progress.lastLr = first.getLastLr()
  }

  /** The chained schedulers (the array is a copy). */
  get schedulers(): LRScheduler[] {
    return [...this.#schedulers]
  }

  /** The index of the scheduler that runs at `lastEpoch` (PyTorch's `bisect_right`). */
  #current(): number {
    const index = this.args.milestones.findIndex((m) => m > this.progress.lastEpoch)
    return index === -1 ? this.args.milestones.length : index
  }

  override step(): void {
    this.progress.lastEpoch += 1
    const index = this.#current()
    const scheduler = this.#schedulers[index]
    try {
      if (index > 0 && this.args.milestones[index - 1] === this.progress.lastEpoch) scheduler[updateLr](0)
      else scheduler.step()
    } catch (error) {
      this.progress.lastEpoch -= 1
      throw error
    }
    this.progress.lastLr = scheduler.getLastLr()
  }

  /** Never called: `step()` delegates to the chained schedulers. */
  protected override getLr(): number[] {
    return this.getLastLr()
  }

  /** Its own progress and milestones, and the state of every chained scheduler under `schedulers`. */
  override stateDict(): Record<string, unknown> {
    return { ...super.stateDict(), schedulers: this.#schedulers.map((s) => s.stateDict()) }
  }

  override [undoStep](): void {
    for (const scheduler of this.#schedulers) scheduler[undoStep]()
  }

  override [prepareLoad](stateDict: unknown, where: string): () => void {
    const at = { name: 'SequentialLR', groups: this.optimizer.paramGroups.length }
    checkKeys(stateDict, Object.keys(this.stateDict()), where, at)
    const { schedulers, ...own } = stateDict
    if (!Array.isArray(schedulers) || schedulers.length !== this.#schedulers.length) {
      throw invalidValue(
        `SequentialLR: ${where}.schedulers must be an array of ${this.#schedulers.length} state dicts, ` +
          `one per chained scheduler, ` +
          `got ${describe(schedulers)}${Array.isArray(schedulers) ? ` of ${schedulers.length}` : ''}`,
      )
    }
    const applyOwn = super[prepareLoad]({ ...own, schedulers: [] }, where)
    const applyEach = this.#schedulers.map((s, i) => s[prepareLoad](schedulers[i], `${where}.schedulers[${i}]`))
    return () => {
      applyOwn()
      for (const apply of applyEach) apply()
    }
  }
}
