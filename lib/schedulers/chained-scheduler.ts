import { type SchedulableOptimizer } from './fields'
import { checkSchedulers, CompositeScheduler } from './composite'
import { prepareLoad, undoStep, type LRScheduler } from './lr-scheduler'

/** What the schedulers write into a group, and a failed step puts back. */
const WRITTEN = ['lr', 'momentum', 'betas'] as const

/**
 * Steps several schedulers together, each on the learning rates the ones before it wrote, as
 * PyTorch's `ChainedScheduler`: with `ConstantLR` (factor 0.1 for 20 epochs) and `ExponentialLR`
 * (γ 0.9), lr_t = base·0.1·0.9ᵗ before epoch 20 and base·0.9ᵗ from there. Build the schedulers
 * first, on the same optimizer (without `optimizer`, the first scheduler's); building it changes
 * nothing. A step is all or nothing: if a scheduler refuses to step, the ones before it and the
 * groups are put back as they were (PyTorch's leaves them stepped). `lastEpoch` counts its steps.
 * It can come first in a SequentialLR, which then steps its schedulers at epoch 0 as any other
 * step (so that ExponentialLR decays there already, as in PyTorch), but not later: it has no
 * learning rate of its own to start from at a milestone.
 */
export class ChainedScheduler extends CompositeScheduler {
  constructor(schedulers: LRScheduler[], optimizer?: SchedulableOptimizer) {
    super(
      'ChainedScheduler',
      {},
      // The list is checked before its first optimizer is read, so that the error names a bad list.
      optimizer ?? checkSchedulers('ChainedScheduler', schedulers, 'schedulers')[0].optimizer,
      {},
      schedulers,
      'schedulers',
    )
    this.progress.lastEpoch = 0
    this.progress.lastLr = this.currentLrs()
  }

  override step(): void {
    const groups = this.checkedGroups()
    const restore = this[prepareLoad](this.stateDict(), 'stateDict')
    const written = groups.map((group) =>
      WRITTEN.filter((key) => key in group).map((key) => [key, group[key]] as const),
    )
    try {
      for (const scheduler of this.chained) scheduler.step()
    } catch (error) {
      restore()
      groups.forEach((group: Record<string, unknown>, i) => written[i].forEach(([key, value]) => (group[key] = value)))
      throw error
    }
    this.progress.lastEpoch += 1
    this.progress.stepCount += 1
    this.progress.lastLr = this.currentLrs()
  }

  /** Its schedulers step back, and so does its own count, which PyTorch's does not have. */
  override [undoStep](): void {
    super[undoStep]()
    this.progress.lastEpoch -= 1
  }
}
