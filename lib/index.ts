export * from './optimizers'
export { AdamWScheduleFree, SGDScheduleFree } from './schedule-free'
export { Lion } from './lion'
export { EMA, SWA, type Averageable, type AveragedStateDict, type EMAOptions } from './averaging'
export {
  algorithms,
  Optimizer,
  type AlgorithmInfo,
  type FloatArray,
  type GradKind,
  type OptionsInput,
  type Parameter,
  type ParamGroup,
  type Params,
  type SparseGrad,
  type StateDtype,
  type StateDtypeOptions,
  type StateRounding,
  type StepOptions,
} from './optimizer'
export type { ErrorCode } from './errors'
export { getNumThreads, setNumThreads } from './threads'
export { type ParamState, type StateDict } from './optimizer'
export { decodeSafetensors, encodeSafetensors, loadStateDict, saveStateDict, type CheckpointDict } from './checkpoint'
export {
  ChainedScheduler,
  ConstantLR,
  CosineAnnealingLR,
  CosineAnnealingWarmRestarts,
  CyclicLR,
  ExponentialLR,
  LambdaLR,
  LinearLR,
  LRScheduler,
  MultiplicativeLR,
  MultiStepLR,
  OneCycleLR,
  PolynomialLR,
  ReduceLROnPlateau,
  SequentialLR,
  StepLR,
  SWALR,
  type ConstantLROptions,
  type CosineAnnealingLROptions,
  type CosineAnnealingWarmRestartsOptions,
  type CyclicLROptions,
  type ExponentialLROptions,
  type LambdaLROptions,
  type LinearLROptions,
  type LrLambda,
  type LRSchedulerOptions,
  type MultiplicativeLROptions,
  type MultiStepLROptions,
  type OneCycleLROptions,
  type PolynomialLROptions,
  type ReduceLROnPlateauOptions,
  type SchedulableOptimizer,
  type SequentialLROptions,
  type StepLROptions,
  type SWALROptions,
} from './schedulers'
export {
  cubicInterpolate,
  LBFGS,
  type LBFGSGroup,
  type LBFGSOptions,
  type LBFGSState,
  type LBFGSStateDict,
} from './lbfgs'
export {
  Adam8bit,
  AdamW8bit,
  EightBitOptimizer,
  Lion8bit,
  type Adam8bitOptions,
  type EightBitGroup,
  type EightBitGroupOptions,
  type EightBitParams,
  type EightBitSpec,
  type EightBitState,
  type EightBitStateDict,
  type Lion8bitOptions,
} from './eightbit'
export { clipGradNorm, clipGradValue, type ClipGradNormOptions } from './clip'
