import { aFunction, broadcast, numberFrom, unsaved, type SchedulableOptimizer } from './fields'
import { LRScheduler, type LRSchedulerOptions } from './lr-scheduler'

/**
 * A function of the epoch giving a factor: of the initial learning rate (LambdaLR), or of the
 * current one (MultiplicativeLR).
 */
export type LrLambda = (epoch: number) => number

/** One function for every group, or one per group; left out of `stateDict()`, as in PyTorch. */
export const LAMBDA_LR = { lrLambda: unsaved(broadcast(aFunction)) }

/** Group `i`'s `lrLambda` at `epoch`, which must return a number. */
export function lambdaFactor(name: string, lambdas: LrLambda[], i: number, epoch: number): number {
  const call = lambdas.every((f) => f === lambdas[0]) ? 'lrLambda' : `lrLambda[${i}]`
  return numberFrom(lambdas[i], epoch, call, name)
}

/** LambdaLR's arguments. */
export interface LambdaLROptions extends LRSchedulerOptions {
  /** The factor of each group's initial learning rate at an epoch: one function, or one per group. */
  lrLambda: LrLambda | LrLambda[]
}

/**
 * Sets each group's learning rate to its initial learning rate times `lrLambda(epoch)`, as
 * PyTorch's `LambdaLR`. The functions are not part of `stateDict()`, as in PyTorch: build the
 * scheduler with the same functions before loading one.
 */
export class LambdaLR extends LRScheduler<typeof LAMBDA_LR> {
  constructor(optimizer: SchedulableOptimizer, options: LambdaLROptions) {
    super('LambdaLR', LAMBDA_LR, optimizer, options, true)
    this.start()
  }

  protected override getLr(): number[] {
    const epoch = this.progress.lastEpoch
    return this.progress.baseLrs.map((base, i) => base * lambdaFactor('LambdaLR', this.args.lrLambda, i, epoch))
  }
}
