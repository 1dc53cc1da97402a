export * from './optimizers'
export { AdamWScheduleFree, SGDScheduleFree } from './schedule-free'
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
  type StepOptions,
} from './optimizer'
export type { ErrorCode } from './errors'
export { getNumThreads, setNumThreads } from './threads'
export { type ParamState, type StateDict } from './optimizer'
export { decodeSafetensors, encodeSafetensors, loadStateDict, saveStateDict } from './checkpoint'
export {
  CosineAnnealingLR,
  ExponentialLR,
  LambdaLR,
  LinearLR,
  LRScheduler,
  MultiStepLR,
  OneCycleLR,
  ReduceLROnPlateau,
  SequentialLR,
  StepLR,
  type CosineAnnealingLROptions,
  type ExponentialLROptions,
  type LambdaLROptions,
  type LinearLROptions,
  type LrLambda,
  type LRSchedulerOptions,
  type MultiStepLROptions,
  type OneCycleLROptions,
  type ReduceLROnPlateauOptions,
  type SchedulableOptimizer,
  type SequentialLROptions,
  type StepLROptions,
} from './schedulers'
export { clipGradNorm, clipGradValue, type ClipGradNormOptions } from './clip'
