import { describe, invalidType } from '../errors'
import { broadcast, unsaved, type Field, type SchedulableOptimizer } from './fields'
import { LRScheduler, type LRSchedulerOptions } from './lr-scheduler'

/** A function of the epoch giving the factor of the initial learning rate. */
export type LrLambda = (epoch: number) => number

const aFunction: Field<LrLambda> = {
  read(value, path, at) {
    if (typeof value !== 'function') throw invalidType(`${at.name}: ${path} must be a function, got ${describe(value)}`)
    return value as LrLambda
  },
}

const LAMBDA_LR = { lrLambda: unsaved(broadcast(aFunction)) }

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
    return this.progress.baseLrs.map((base, i) => {
      const lambdas = this.args.lrLambda
      const factor = lambdas[i](epoch)
      if (typeof factor !== 'number') {
        const name = lambdas.every((f) => f === lambdas[0]) ? 'lrLambda' : `lrLambda[${i}]`
        throw invalidType(`LambdaLR: ${name}(${epoch}) must return a number, got ${describe(factor)}`)
      }
      return base * factor
    })
  }
}
