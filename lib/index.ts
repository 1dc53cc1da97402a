export { Adam, AdamW, type AdamOptions, type AdamWOptions } from './adam'
export { Optimizer, type FloatArray, type Parameter, type ParamGroup, type Params } from './optimizer'
export type { ErrorCode } from './errors'
