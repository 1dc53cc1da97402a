import { invalidState, invalidType, invalidValue, outOfRange } from '../errors'
import {
  finiteNumber,
  broadcast,
  choice,
  flag,
  integer,
  momentumSetter,
  nonNegative,
  nullable,
  number,
  positive,
  withDefault,
  type Context,
  type MomentumSetter,
  type SchedulableOptimizer,
  type Values,
} from './fields'
import { LRScheduler, type LRSchedulerOptions } from './lr-scheduler'

const ONE_CYCLE_LR = {
  maxLr: broadcast(nonNegative),
  totalSteps: withDefault(nullable(integer(1)), null),
  epochs: withDefault(nullable(integer(1)), null),
  stepsPerEpoch: withDefault(nullable(integer(1)), null),
  pctStart: withDefault(
    number((x) => x >= 0 && x <= 1, '0 <= pctStart <= 1'),
    0.3,
  ),
  annealStrategy: withDefault(choice('cos', 'linear'), 'cos'),
  cycleMomentum: withDefault(flag, true),
  baseMomentum: withDefault(broadcast(finiteNumber), 0.85),
  maxMomentum: withDefault(broadcast(finiteNumber), 0.95),
  divFactor: withDefault(positive, 25),
  finalDivFactor: withDefault(positive, 1e4),
  threePhase: withDefault(flag, false),
}

/** OneCycleLR's arguments, PyTorch's in camelCase. */
export interface OneCycleLROptions extends LRSchedulerOptions {
  /** The peak learning rate: one for every group, or one per group. */
  maxLr: number | number[]
  /** Steps in the cycle; or give `epochs` and `stepsPerEpoch`. */
  totalSteps?: number | null
  /** With `stepsPerEpoch`, gives `totalSteps = epochs·stepsPerEpoch` when `totalSteps` is not given. */
  epochs?: number | null
  /** See `epochs`. */
  stepsPerEpoch?: number | null
  /**
   * The fraction of the cycle spent raising the learning rate.
   * @default 0.3
   */
  pctStart?: number
  /**
   * How to go from one phase's start to its end: `'cos'` or `'linear'`.
   * @default 'cos'
   */
  annealStrategy?: 'cos' | 'linear'
  /**
   * Cycle the momentum (SGD, RMSprop) or `betas[0]` (Adam and kin) inversely to the learning rate.
   * @default true
   */
  cycleMomentum?: boolean
  /**
   * The momentum at the peak learning rate: one for every group, or one per group.
   * @default 0.85
   */
  baseMomentum?: number | number[]
  /**
   * The momentum at the start (and end) of the cycle: one for every group, or one per group.
   * @default 0.95
   */
  maxMomentum?: number | number[]
  /**
   * The initial learning rate is `maxLr / divFactor`.
   * @default 25
   */
  divFactor?: number
  /**
   * The final learning rate is the initial one divided by `finalDivFactor`.
   * @default 1e4
   */
  finalDivFactor?: number
  /**
   * Three phases (up, down to the initial lr, then down to the final lr), as in the paper,
   * instead of fastai's two.
   * @default false
   */
  threePhase?: boolean
}

interface Phase {
  endStep: number
  startLr: 'initial' | 'max' | 'min'
  endLr: 'initial' | 'max' | 'min'
  startMomentum: 'base' | 'max'
  endMomentum: 'base' | 'max'
}

/**
 * The 1cycle policy (Smith & Topin, "Super-Convergence", 2017), as PyTorch's `OneCycleLR`:
 * the learning rate rises from `maxLr/divFactor` to `maxLr` over the first `pctStart` of the
 * steps, then falls to `maxLr/divFactor/finalDivFactor` (with `threePhase`, first back to the
 * initial lr), each phase annealed by cosine, end + (start − end)·(1 + cos(π·pct))/2, or
 * linearly. With `cycleMomentum`, the momentum (or `betas[0]`) moves the opposite way between
 * `maxMomentum` and `baseMomentum`. It is meant to be stepped after every batch, `totalSteps`
 * times at most.
 */
export class OneCycleLR extends LRScheduler<typeof ONE_CYCLE_LR> {
  /** Writes `momentum` or `betas[0]`, whichever the optimizer has. */
  readonly #setMomentum: MomentumSetter

  constructor(optimizer: SchedulableOptimizer, options: OneCycleLROptions) {
    super('OneCycleLR', ONE_CYCLE_LR, optimizer, options, true)
    const { args } = this
    if (args.totalSteps === null) {
      if (args.epochs === null || args.stepsPerEpoch === null) {
        throw invalidValue('OneCycleLR: options must give totalSteps, or epochs and stepsPerEpoch')
      }
      const total = args.epochs * args.stepsPerEpoch
      // Above 2^53 - 1 the count is not exact, and its stateDict() would not load.
      if (!Number.isSafeInteger(total)) {
        throw outOfRange(
          `OneCycleLR: invalid options.epochs × options.stepsPerEpoch: ${args.epochs} × ${args.stepsPerEpoch} = ${total} (expected at most 2^53 - 1)`,
        )
      }
      args.totalSteps = total
    }
    this.#checkPhases(args, 'options')
    this.#setMomentum = momentumSetter('OneCycleLR', optimizer, args.cycleMomentum)
    // PyTorch also sets each group's momentum to maxMomentum here; step 0 overwrites it anyway.
    this.start(args.maxLr.map((lr) => lr / args.divFactor))
  }

  #phases(args = this.args): Phase[] {
    const { pctStart, threePhase } = args
    const totalSteps = args.totalSteps!
    // One phase per line, so that the phases read as a table.
    if (threePhase) {
      // prettier-ignore
      return [
        { endStep: pctStart * totalSteps - 1, startLr: 'initial', endLr: 'max', startMomentum: 'max', endMomentum: 'base' },
        { endStep: 2 * pctStart * totalSteps - 2, startLr: 'max', endLr: 'initial', startMomentum: 'base', endMomentum: 'max' },
        { endStep: totalSteps - 1, startLr: 'initial', endLr: 'min', startMomentum: 'max', endMomentum: 'max' },
      ]
    }
    // prettier-ignore
    return [
      { endStep: pctStart * totalSteps - 1, startLr: 'initial', endLr: 'max', startMomentum: 'max', endMomentum: 'base' },
      { endStep: totalSteps - 1, startLr: 'max', endLr: 'min', startMomentum: 'base', endMomentum: 'max' },
    ]
  }

  /** PyTorch divides by zero in a phase that starts where it ends; refuse such a cycle up front. */
  #checkPhases(args: Values<typeof ONE_CYCLE_LR>, where: string): void {
    let startStep = 0.0
    this.#phases(args).forEach((phase, p, phases) => {
      // Only the first phase can be reached by a step at its start, and only the last past its end.
      if (phase.endStep === startStep && (p === 0 || p === phases.length - 1)) {
        throw outOfRange(
          `OneCycleLR: invalid ${where}.pctStart: ${args.pctStart} ` +
            `(with totalSteps ${args.totalSteps}, phase ${p + 1} of the cycle would be empty, ` +
            `and PyTorch would divide by zero in it)`,
        )
      }
      startStep = phase.endStep
    })
  }

  protected override checkLoaded(args: Values<typeof ONE_CYCLE_LR>, where: string, at: Context): void {
    if (args.totalSteps === null) throw invalidType(`${at.name}: ${where}.totalSteps must be a number, got null`)
    this.#checkPhases(args, where)
  }

  #anneal(start: number, end: number, pct: number): number {
    if (this.args.annealStrategy === 'cos') return end + ((start - end) / 2.0) * (Math.cos(Math.PI * pct) + 1)
    return (end - start) * pct + start
  }

  /** Computes every group's lr and momentum before writing any momentum, so a failed step changes nothing. */
  protected override getLr(): number[] {
    const { maxLr, finalDivFactor, cycleMomentum, baseMomentum, maxMomentum } = this.args
    const totalSteps = this.args.totalSteps!
    const step = this.progress.lastEpoch
    if (step > totalSteps) {
      throw invalidState(`OneCycleLR: tried to step ${step} times, but totalSteps is ${totalSteps}`)
    }
    const phases = this.#phases()
    const lrs: number[] = []
    const momentums: number[] = []
    this.progress.baseLrs.forEach((initial, i) => {
      const lrOf = { initial, max: maxLr[i], min: initial / finalDivFactor }
      const momentumOf = { base: baseMomentum[i], max: maxMomentum[i] }
      let startStep = 0.0
      for (const [p, phase] of phases.entries()) {
        if (step <= phase.endStep || p === phases.length - 1) {
          const pct = (step - startStep) / (phase.endStep - startStep)
          lrs.push(this.#anneal(lrOf[phase.startLr], lrOf[phase.endLr], pct))
          momentums.push(this.#anneal(momentumOf[phase.startMomentum], momentumOf[phase.endMomentum], pct))
          break
        }
        startStep = phase.endStep
      }
    })
    if (cycleMomentum) this.groups().forEach((group, i) => this.#setMomentum(group, momentums[i]))
    return lrs
  }
}
