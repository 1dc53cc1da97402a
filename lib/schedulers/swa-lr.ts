import { broadcast, choice, integer, nonNegative, withDefault, type SchedulableOptimizer } from './fields'
import { LRScheduler, type LRSchedulerOptions } from './lr-scheduler'

const SWA_LR = {
  swaLr: broadcast(nonNegative),
  annealEpochs: withDefault(integer(0), 10),
  annealStrategy: withDefault(choice('cos', 'linear'), 'cos'),
}

/** SWALR's arguments, PyTorch's in camelCase. */
export interface SWALROptions extends LRSchedulerOptions {
  /** The learning rate to anneal to and then hold: one for every group, or one per group. */
  swaLr: number | number[]
  /**
   * Epochs over which each group's learning rate moves from its value to `swaLr` (0: at once).
   * @default 10
   */
  annealEpochs?: number
  /**
   * The shape of the move: `'cos'`, α = (1 − cos(π·t))/2, or `'linear'`, α = t.
   * @default 'cos'
   */
  annealStrategy?: 'cos' | 'linear'
}

/**
 * The learning rate of stochastic weight averaging, as PyTorch's `torch.optim.swa_utils.SWALR`:
 * over `annealEpochs` epochs each group's learning rate moves from where it is to `swaLr`, then
 * stays there; use it with {@link SWA} once averaging starts. With t = min(1, epoch/annealEpochs)
 * and α the strategy's function of t, each step recovers the learning rate the anneal started
 * from at the previous epoch's α, lr₀ = (lr − α′·swaLr)/(1 − α′) (swaLr itself where α′ = 1),
 * and sets lr = swaLr·α + lr₀·(1 − α), operation for operation as PyTorch does. PyTorch keeps
 * `swa_lr` in each param group; here it is this scheduler's argument, one per group, and its
 * `stateDict()` carries it.
 *
 * @example
 * const swa = new SWA(params)
 * const scheduler = new SWALR(optimizer, { swaLr: 0.05, annealEpochs: 5 })
 * // each epoch past the start of averaging: train, then swa.update(); scheduler.step()
 */
export class SWALR extends LRScheduler<typeof SWA_LR> {
  constructor(optimizer: SchedulableOptimizer, options: SWALROptions) {
    super('SWALR', SWA_LR, optimizer, options, true)
    this.start()
  }

  protected override getLr(): number[] {
    const { swaLr, annealEpochs } = this.args
    let step = this.progress.stepCount - 1
    if (annealEpochs === 0) step = Math.max(1, step)
    const prevAlpha = this.#anneal(Math.max(0, Math.min(1, (step - 1) / Math.max(1, annealEpochs))))
    const alpha = this.#anneal(Math.max(0, Math.min(1, step / Math.max(1, annealEpochs))))
    return this.currentLrs().map((lr, i) => {
      const initial = prevAlpha === 1 ? swaLr[i] : (lr - prevAlpha * swaLr[i]) / (1 - prevAlpha)
      return swaLr[i] * alpha + initial * (1 - alpha)
    })
  }

  #anneal(t: number): number {
    return this.args.annealStrategy === 'cos' ? (1 - Math.cos(Math.PI * t)) / 2 : t
  }
}
