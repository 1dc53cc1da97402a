import { describe, invalidType, invalidValue } from './errors'
import { native } from './native'
import type { Parameter } from './optimizer'

/** Options of `clipGradNorm`, PyTorch's `clip_grad_norm_` in camelCase. */
export interface ClipGradNormOptions {
  /**
   * The p of the p-norm: any number > 0, or `Infinity` for the largest magnitude.
   * @default 2
   */
  normType?: number
  /**
   * Throw (and leave the gradients as they are) when the total norm is NaN or infinite,
   * instead of scaling by it.
   * @default false
   */
  errorIfNonfinite?: boolean
}

const CLIP_GRAD_NORM_DEFAULTS: Required<ClipGradNormOptions> = { normType: 2, errorIfNonfinite: false }

/** The parameters as an array: a list, any iterable (a group's `params`, a Set), or one parameter. */
function toArray(params: Iterable<Parameter> | Parameter, name: string): unknown[] {
  if (Array.isArray(params)) return params
  if (typeof params === 'object' && params !== null) {
    return Symbol.iterator in params ? Array.from(params as Iterable<Parameter>) : [params]
  }
  throw invalidType(
    `${name}: params must be an array of parameters, an iterable of them, or a parameter, got ${describe(params)}`,
  )
}

/**
 * Each parameter's `grad`, read once, in order, for the native side, which checks them: reading
 * a property there costs a Node-API call per parameter, several times what clipping a small
 * gradient does.
 */
function gradsOf(list: unknown[], name: string): unknown[] {
  const grads = new Array<unknown>(list.length)
  for (let i = 0; i < list.length; i++) {
    const param = list[i]
    if (typeof param !== 'object' || param === null)
      throw invalidType(`${name}: params[${i}] must be an object with a grad, got ${describe(param)}`)
    grads[i] = (param as { grad: unknown }).grad
  }
  return grads
}

function checkNumber(value: unknown, path: string): asserts value is number {
  if (typeof value !== 'number') throw invalidType(`${path} must be a number, got ${describe(value)}`)
}

/**
 * Scales the gradients of `params` in place so that their total norm is at most `maxNorm`, and
 * returns the total norm before scaling, as PyTorch's `torch.nn.utils.clip_grad_norm_`: the
 * norm of the per-parameter norms (as if all gradients were one vector), then every gradient
 * times min(1, maxNorm / (norm + 1e-6)). Parameters whose `grad` is null are skipped. The
 * reduction runs on all threads in one pass and gives the same bits whatever their number.
 *
 * The norm is a float32 value if every gradient is a Float32Array, else a float64 one (summed in
 * float64 either way, so it is within an ulp of the exact norm); a NaN norm makes every gradient
 * NaN unless `errorIfNonfinite`. Everything is checked first (types, ranges, detached or shared
 * memory): on error no gradient changes. Unlike PyTorch, a negative `maxNorm` and a `normType`
 * ≤ 0 are refused, and an empty gradient counts as 0 in the infinity-norm.
 *
 * @example
 * opt.zeroGrad(); backward(); clipGradNorm(params, 1.0); opt.step()
 */
export function clipGradNorm(
  params: Iterable<Parameter> | Parameter,
  maxNorm: number,
  options: ClipGradNormOptions = {},
): number {
  const list = toArray(params, 'clipGradNorm')
  checkNumber(maxNorm, 'clipGradNorm: maxNorm')
  if (typeof options !== 'object' || options === null)
    throw invalidType(`clipGradNorm: options must be an object, got ${describe(options)}`)
  for (const key of Object.keys(options)) {
    if (!(key in CLIP_GRAD_NORM_DEFAULTS))
      throw invalidValue(
        `clipGradNorm: options.${key} is not an option of clipGradNorm (expected normType or errorIfNonfinite)`,
      )
  }
  const normType = options.normType === undefined ? CLIP_GRAD_NORM_DEFAULTS.normType : options.normType
  const errorIfNonfinite =
    options.errorIfNonfinite === undefined ? CLIP_GRAD_NORM_DEFAULTS.errorIfNonfinite : options.errorIfNonfinite
  checkNumber(normType, 'clipGradNorm: options.normType')
  if (typeof errorIfNonfinite !== 'boolean')
    throw invalidType(`clipGradNorm: options.errorIfNonfinite must be a boolean, got ${describe(errorIfNonfinite)}`)
  return native.clipGradNorm(gradsOf(list, 'clipGradNorm'), maxNorm, normType, errorIfNonfinite)
}

/**
 * Clamps every gradient element of `params` in place to [−clipValue, clipValue], as PyTorch's
 * `torch.nn.utils.clip_grad_value_` (NaN stays NaN; `clipValue` is rounded to each gradient's
 * element type). Parameters whose `grad` is null are skipped; on error no gradient changes.
 */
export function clipGradValue(params: Iterable<Parameter> | Parameter, clipValue: number): void {
  const list = toArray(params, 'clipGradValue')
  checkNumber(clipValue, 'clipGradValue: clipValue')
  native.clipGradValue(gradsOf(list, 'clipGradValue'), clipValue)
}
