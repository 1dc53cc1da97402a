import { describe, invalidValue } from '../errors'
import { increasing, type SchedulableOptimizer } from './fields'
import { CompositeScheduler } from './composite'
import { initialStep, undoStep, updateLr, type LRScheduler, type LRSchedulerOptions } from './lr-scheduler'

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
 * it has one). Build the chained schedulers first, on the same optimizer. A ChainedScheduler can
 * only come first: it has no learning rate of its own to start from at a milestone (PyTorch's
 * fails there).
 */
export class SequentialLR extends CompositeScheduler<typeof SEQUENTIAL_LR> {
  constructor(optimizer: SchedulableOptimizer, options: SequentialLROptions) {
    const isObject = typeof options === 'object' && options !== null
    const { schedulers, ...rest }: Partial<SequentialLROptions> = isObject ? options : {}
    super('SequentialLR', SEQUENTIAL_LR, optimizer, isObject ? rest : options, schedulers, 'options.schedulers')
    this.chained.forEach((scheduler, i) => {
      if (scheduler instanceof SequentialLR) {
        throw invalidValue(
          `SequentialLR: options.schedulers[${i}] is a SequentialLR, which SequentialLR cannot run: ` +
            `list its schedulers here instead`,
        )
      }
      if (scheduler instanceof CompositeScheduler && i > 0) {
        throw invalidValue(
          `SequentialLR: options.schedulers[${i}] is a ${describe(scheduler)}, which SequentialLR can only run ` +
            `first: it has no learning rate of its own to start from at a milestone`,
        )
      }
    })
    const { milestones } = this.args
    if (milestones.length !== this.chained.length - 1) {
      throw invalidValue(
        `SequentialLR: options.milestones has ${milestones.length} values for ${this.chained.length} schedulers; ` +
          `it needs one fewer than the schedulers`,
      )
    }
    this.progress.lastEpoch += 1
    this.groups().forEach((group, i) => (group.lr = this.progress.baseLrs[i]))
    this[undoStep]()
    const first = this.chained[this.#current()]
    first[initialStep]()
    this.progress.lastLr = first.getLastLr()
  }

  /** The index of the scheduler that runs at `lastEpoch` (PyTorch's `bisect_right`). */
  #current(): number {
    const index = this.args.milestones.findIndex((m) => m > this.progress.lastEpoch)
    return index === -1 ? this.args.milestones.length : index
  }

  override step(): void {
    this.progress.lastEpoch += 1
    const index = this.#current()
    const scheduler = this.chained[index]
    try {
      if (index > 0 && this.args.milestones[index - 1] === this.progress.lastEpoch) scheduler[updateLr](0)
      else scheduler.step()
    } catch (error) {
      this.progress.lastEpoch -= 1
      throw error
    }
    this.progress.lastLr = scheduler.getLastLr()
  }
}
