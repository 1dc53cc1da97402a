// Learning-rate schedulers: PyTorch's `torch.optim.lr_scheduler`, value for value.
//
// A scheduler writes `lr` (and for OneCycleLR and CyclicLR `momentum` or `betas[0]`) into the live
// `paramGroups` of any optimizer. Every formula in these files is PyTorch's own, operation for
// operation and in the same order, so the doubles agree with PyTorch's Python floats (up to
// the last bit of `Math.cos`, `Math.log` and `**`, which V8 and the C library may round
// differently).
//
// One scheduler per file; their base class is in lr-scheduler.ts, the base of the schedulers
// that hold others in composite.ts, and the checks of their options and saved state in fields.ts.
export type { SchedulableOptimizer } from './fields'
export { LRScheduler, type LRSchedulerOptions } from './lr-scheduler'
export { StepLR, type StepLROptions } from './step-lr'
export { MultiStepLR, type MultiStepLROptions } from './multi-step-lr'
export { ExponentialLR, type ExponentialLROptions } from './exponential-lr'
export { CosineAnnealingLR, type CosineAnnealingLROptions } from './cosine-annealing-lr'
export { LinearLR, type LinearLROptions } from './linear-lr'
export { LambdaLR, type LambdaLROptions, type LrLambda } from './lambda-lr'
export { OneCycleLR, type OneCycleLROptions } from './one-cycle-lr'
export { SequentialLR, type SequentialLROptions } from './sequential-lr'
export { SWALR, type SWALROptions } from './swa-lr'
export { ReduceLROnPlateau, type ReduceLROnPlateauOptions } from './reduce-lr-on-plateau'
export { ConstantLR, type ConstantLROptions } from './constant-lr'
export { PolynomialLR, type PolynomialLROptions } from './polynomial-lr'
export { CosineAnnealingWarmRestarts, type CosineAnnealingWarmRestartsOptions } from './cosine-annealing-warm-restarts'
export { MultiplicativeLR, type MultiplicativeLROptions } from './multiplicative-lr'
export { CyclicLR, type CyclicLROptions } from './cyclic-lr'
export { ChainedScheduler } from './chained-scheduler'

// Internal: the hooks SequentialLR and ChainedScheduler call on the schedulers they hold.
// lib/index.ts leaves them out.
export { initialStep, prepareLoad, undoStep, updateLr } from './lr-scheduler'
