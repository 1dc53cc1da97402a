// Weight averaging, as PyTorch's torch.optim.swa_utils.AveragedModel keeps it over a list of
// parameters: an exponential moving average (EMA) or stochastic weight averaging's running mean
// (SWA). The averages live natively; each update is one pass over every average and its
// parameter on the step pool (crate/src/averaging.rs has the equations and PyTorch's rounding).
import { readFileSync, writeFileSync } from 'node:fs'

import { describe, invalidState, invalidType, invalidValue, outOfRange } from './errors'
import { native } from './native'
import type { FloatArray } from './optimizer'

/** What can be averaged: a float array, or a parameter holding one (`{ data, shape? }`). */
export type Averageable = FloatArray | { readonly data: FloatArray; readonly shape?: readonly number[] }

/** EMA's options. */
export interface EMAOptions {
  /**
   * The decay, in [0, 1]: each update moves the average to decay·average + (1 − decay)·parameter.
   * @default 0.999
   */
  decay?: number
}

/**
 * What `stateDict()` gives and `loadStateDict()` takes: PyTorch's `AveragedModel.state_dict()`,
 * whose `n_averaged` is `nAveraged` here and whose `module.<i>` are `averaged[i]`.
 */
export interface AveragedStateDict {
  /** The updates averaged so far; 0 before the first (which copies the parameters). */
  nAveraged: number
  /** Each parameter's average, in the order the parameters were given. */
  averaged: FloatArray[]
}

/** PyTorch's default (`get_ema_multi_avg_fn`). */
const DEFAULT_DECAY = 0.999

const isFloatArray = (x: unknown): x is FloatArray => x instanceof Float32Array || x instanceof Float64Array

/** A parameter's shape (its `shape`, or flat), for checkpoints. */
function shapeOf(param: Averageable, array: FloatArray): number[] {
  const shape = isFloatArray(param) ? undefined : param.shape
  return shape === undefined ? [array.length] : [...shape]
}

/** The parameters' arrays, read now (a parameter's `data` may have been replaced since). */
function arraysOf(params: readonly Averageable[], where: string, name: string): FloatArray[] {
  if (!Array.isArray(params))
    throw invalidType(`${name}: ${where} must be an array of parameters, got ${describe(params)}`)
  return params.map((param, i) => {
    const array = isFloatArray(param) ? param : (param as { data?: unknown } | null)?.data
    if (!isFloatArray(array)) {
      throw invalidType(
        `${name}: ${where}[${i}] must be a Float32Array, a Float64Array or an object whose data is one, ` +
          `got ${describe(isFloatArray(param) || typeof param !== 'object' || param === null ? param : array)}`,
      )
    }
    return array
  })
}

/**
 * What EMA and SWA share: the averages of a fixed list of parameters, updated with `update()`,
 * put to use with `swap()`, `withAveraged()` or `copyTo()`, and saved and restored with
 * `stateDict()`, `loadStateDict()`, `save()` and `load()`.
 */
abstract class AveragedWeights {
  readonly #name: string
  readonly #params: readonly Averageable[]
  readonly #shapes: number[][]
  readonly #native: InstanceType<typeof native.NativeAverager>
  #swapped = false

  protected constructor(name: string, params: readonly Averageable[], decay: number | null) {
    const arrays = arraysOf(params, 'params', name)
    params.forEach((param, i) => {
      const shape = isFloatArray(param) ? undefined : param.shape
      if (shape === undefined) return
      const dims = Array.isArray(shape) && shape.every((d) => Number.isSafeInteger(d) && d >= 0)
      if (!dims || shape.reduce((a, b) => a * b, 1) !== arrays[i].length) {
        throw outOfRange(
          `${name}: params[${i}].shape ${JSON.stringify(shape)} does not hold ${arrays[i].length} elements ` +
            '(expected whole numbers >= 0 whose product is the length)',
        )
      }
    })
    this.#name = name
    this.#params = [...params]
    this.#shapes = this.#params.map((param, i) => shapeOf(param, arrays[i]))
    this.#native = new native.NativeAverager(decay, arrays)
  }

  /** PyTorch's `n_averaged`: how many updates the averages hold. */
  get nAveraged(): number {
    return this.#native.nAveraged
  }

  /** Whether `swap()` has put the averages into the parameters (and the parameters here). */
  get swapped(): boolean {
    return this.#swapped
  }

  /**
   * Averages the parameters' current values in, as PyTorch's `update_parameters`: the first
   * update copies them, later ones move each average toward its parameter. One native pass over
   * all of them, multithreaded, with the same bits on any number of threads. Refused while
   * swapped; on any error nothing changes.
   */
  update(): void {
    this.#refuseSwapped('update()')
    this.#native.update(this.#arrays())
  }

  /**
   * Exchanges the parameters' values with their averages: call it once to evaluate (or save the
   * model) with the averaged weights, and again to go back to training where it left off. While
   * swapped, `update()`, `copyTo()` and `loadStateDict()` are refused; `stateDict()` still gives
   * the averages.
   */
  swap(): void {
    this.#native.swap(this.#arrays())
    this.#swapped = !this.#swapped
  }

  /**
   * Runs `evaluate` with the averaged weights in the parameters, then puts the training weights
   * back (also when it throws, or when the promise it returns rejects), and returns what it returns.
   */
  withAveraged<R>(evaluate: () => R): R {
    if (typeof evaluate !== 'function') {
      throw invalidType(`${this.#name}: withAveraged() takes a function, got ${describe(evaluate)}`)
    }
    this.swap()
    let result: R
    try {
      result = evaluate()
    } catch (error) {
      this.swap()
      throw error
    }
    if (result instanceof Promise) {
      return result.finally(() => this.swap()) as R
    }
    this.swap()
    return result
  }

  /**
   * Copies the averages into `targets` (arrays or parameters of the same dtypes and lengths, in
   * the same order; none may share memory with another), for example a separate model to
   * evaluate or export. Without `targets`, into the averaged parameters themselves, which then
   * lose their training values. Refused while swapped.
   */
  copyTo(targets?: readonly Averageable[]): void {
    this.#refuseSwapped('copyTo()')
    this.#native.copyTo(targets === undefined ? this.#arrays() : arraysOf(targets, 'targets', this.#name))
  }

  /** Copies of the averages, in the parameters' order (the parameters' own values while swapped). */
  averaged(): FloatArray[] {
    const arrays = this.#swapped ? this.#arrays() : undefined
    return this.#shapes.map((_, i) => (arrays ? arrays[i].slice() : this.#native.average(i)))
  }

  /** The averages and their count, copied: PyTorch's `AveragedModel.state_dict()`. */
  stateDict(): AveragedStateDict {
    return { nAveraged: this.nAveraged, averaged: this.averaged() }
  }

  /**
   * Restores a `stateDict()` (or one `load()` read): `nAveraged` a whole number, `averaged` one
   * array per parameter of its dtype and length. Everything is checked first; on error nothing
   * changes. Refused while swapped.
   */
  loadStateDict(stateDict: AveragedStateDict): void {
    this.#refuseSwapped('loadStateDict()')
    if (typeof stateDict !== 'object' || stateDict === null) {
      throw invalidType(`${this.#name}: stateDict must be an object, got ${describe(stateDict)}`)
    }
    for (const key of Object.keys(stateDict)) {
      if (key !== 'nAveraged' && key !== 'averaged') {
        throw invalidValue(
          `${this.#name}: stateDict.${key} is not saved by ${this.#name} (expected nAveraged, averaged)`,
        )
      }
    }
    const { nAveraged, averaged } = stateDict
    if (typeof nAveraged !== 'number') {
      throw invalidType(`${this.#name}: stateDict.nAveraged must be a number, got ${describe(nAveraged)}`)
    }
    if (!Array.isArray(averaged) || !averaged.every(isFloatArray)) {
      throw invalidType(
        `${this.#name}: stateDict.averaged must be an array of Float32Array or Float64Array, got ${describe(averaged)}`,
      )
    }
    this.#native.load(nAveraged, averaged)
  }

  /**
   * The state as safetensors bytes that PyTorch's `AveragedModel.load_state_dict` takes (for a
   * model whose parameters are these, e.g. an `nn.ParameterList`): `n_averaged` (I64) and
   * `module.<i>` in each parameter's shape.
   */
  toSafetensors(): Uint8Array {
    const tensors: Parameters<typeof native.encodeTensors>[2] = [
      {
        name: 'n_averaged',
        dtype: 'I64',
        shape: [],
        data: new Uint8Array(BigInt64Array.of(BigInt(this.nAveraged)).buffer),
      },
    ]
    this.averaged().forEach((values, i) => {
      tensors.push({
        name: `module.${i}`,
        dtype: values instanceof Float32Array ? 'F32' : 'F64',
        shape: this.#shapes[i],
        data: new Uint8Array(values.buffer, values.byteOffset, values.byteLength),
      })
    })
    // Written by the binding's safetensors codec (crate/src/checkpoint.rs), as optimizer checkpoints are.
    return native.encodeTensors('averaged', { format: 'pt' }, tensors)
  }

  /**
   * Restores `toSafetensors()` bytes, or PyTorch's `AveragedModel.state_dict()` saved with
   * `safetensors.torch.save_file`: `n_averaged` and `module.<i>` (other tensors, such as
   * buffers of the module, are refused). Checked whole first, as `loadStateDict()`.
   */
  loadSafetensors(bytes: Uint8Array): void {
    // Parsed by the binding's safetensors codec (crate/src/checkpoint.rs): header, dtypes, shapes
    // and offsets checked, names only `n_averaged` and `module.<n>` (each in one spelling).
    const { tensors } = native.decodeTensors(bytes, 'averaged')
    const corrupt = (why: string) => invalidValue(`not a valid weight-average checkpoint: ${why}`)
    let nAveraged: number | undefined
    const averaged: FloatArray[] = []
    for (const { name, dtype, shape, data, scalar } of tensors) {
      if (name === 'n_averaged') {
        if (typeof scalar !== 'number') {
          throw corrupt(`n_averaged has shape ${JSON.stringify(shape)} (expected a scalar)`)
        }
        nAveraged = scalar
        continue
      }
      if (dtype !== 'F32' && dtype !== 'F64') throw corrupt(`${name} has dtype ${dtype} (expected F32 or F64)`)
      averaged[Number(name.slice('module.'.length))] = data as FloatArray
    }
    if (nAveraged === undefined) throw corrupt('n_averaged is missing')
    for (let i = 0; i < this.#shapes.length; i++) {
      if (averaged[i] === undefined) throw corrupt(`module.${i} is missing`)
    }
    if (averaged.length > this.#shapes.length) {
      throw corrupt(`module.${averaged.length - 1} has no parameter (${this.#shapes.length} are averaged)`)
    }
    this.loadStateDict({ nAveraged, averaged })
  }

  /** Writes `toSafetensors()` to a file. */
  save(path: string): void {
    writeFileSync(path, this.toSafetensors())
  }

  /** Restores a safetensors file written by `save()` or by PyTorch (see `loadSafetensors`). */
  load(path: string): void {
    this.loadSafetensors(readFileSync(path))
  }

  #arrays(): FloatArray[] {
    return arraysOf(this.#params, 'params', this.#name)
  }

  #refuseSwapped(method: string): void {
    if (this.#swapped) {
      throw invalidState(
        `${this.#name}: ${method} was called while swapped (the parameters hold the averages): ` +
          'call swap() again first',
      )
    }
  }
}

/**
 * An exponential moving average of parameters, as PyTorch's
 * `AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay))`: the first `update()` copies
 * the parameters, each later one sets average ← decay·average + (1 − decay)·parameter (PyTorch's
 * `lerp`, rounded as its CPU kernel rounds).
 *
 * @example
 * const ema = new EMA(params, { decay: 0.999 })
 * // after each optimizer.step():
 * ema.update()
 * const loss = ema.withAveraged(() => evaluate(params)) // the averaged weights, then back
 */
export class EMA extends AveragedWeights {
  /** The decay it was made with. */
  readonly decay: number

  constructor(params: readonly Averageable[], options?: EMAOptions) {
    if (options !== undefined && (typeof options !== 'object' || options === null)) {
      throw invalidType(`EMA: options must be an object, got ${describe(options)}`)
    }
    for (const key of Object.keys(options ?? {})) {
      if (key !== 'decay') throw invalidValue(`EMA: ${key} is not an option of EMA (expected decay)`)
    }
    const decay = options?.decay === undefined ? DEFAULT_DECAY : options.decay
    if (typeof decay !== 'number') throw invalidType(`EMA: decay must be a number, got ${describe(decay)}`)
    super('EMA', params, decay)
    this.decay = decay
  }
}

/**
 * Stochastic weight averaging (Izmailov et al., "Averaging Weights Leads to Wider Optima and
 * Better Generalization", UAI 2018), as PyTorch's `AveragedModel(model)` on the CPU: each
 * `update()` adds the parameters to a running mean, average ← average + (parameter −
 * average)/(n + 1), the first copying them. Pair it with {@link SWALR}.
 *
 * @example
 * const swa = new SWA(params)
 * // once per epoch after the averaging starts:
 * swa.update()
 * // at the end: swa.copyTo() puts the mean into the parameters
 */
export class SWA extends AveragedWeights {
  constructor(params: readonly Averageable[]) {
    super('SWA', params, null)
  }
}
