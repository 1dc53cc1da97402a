// 8-bit optimizer state: bitsandbytes' Adam8bit, AdamW8bit and Lion8bit (docs/eightbit.md).
//
// The registry's optimizers keep state buffers of the parameter's float type; these keep bytes
// and per-block scales, so they have their own native class (src/eightbit.rs) and this facade,
// which keeps the shared conventions: param groups whose options stay live (schedulers set `lr`
// and the next step reads it), errors with codes naming field, value and expectation, inputs
// read once, and a step, `loadStateDict` and `zeroGrad` that check everything before writing.
import { callClosure, describe, invalidType, invalidValue, outOfRange, reentered } from './errors'
import { native } from './native'
import { stepOptions, type Parameter, type StepOptions } from './optimizer'
import { busyError, settle } from './task'
import type { StartedStep } from '../native/index'
import {
  checkUsable,
  lengthOf,
  snapshotArray,
  snapshotObject,
  snapshotValue,
  typedArrayTag,
  snapshotStateDict,
} from './snapshot'

/** Options of `Adam8bit` and `AdamW8bit`: bitsandbytes' arguments in camelCase. */
export interface Adam8bitOptions {
  /**
   * Learning rate.
   * @default 1e-3
   */
  lr?: number
  /**
   * Decay rates of the first and second moments, each in [0, 1).
   * @default [0.9, 0.999]
   */
  betas?: [number, number]
  /**
   * Added to the denominator (8-bit tensors: to √v/c₂; smaller tensors: ε·c₂ to √v, as bitsandbytes).
   * @default 1e-8
   */
  eps?: number
  /**
   * Decoupled weight decay: each step first scales the weights by 1 − lr·weightDecay (both classes, as bitsandbytes).
   * @default 0 (Adam8bit), 1e-2 (AdamW8bit)
   */
  weightDecay?: number
  /**
   * Not supported, as in bitsandbytes: only false is accepted.
   * @default false
   */
  amsgrad?: boolean
  /**
   * bitsandbytes' compatibility argument: only 32 is accepted (the state is 8-bit regardless).
   * @default 32
   */
  optimBits?: number
  /**
   * Parameters with fewer elements keep float32 state (bitsandbytes' `min_8bit_size`).
   * @default 4096
   */
  minEightBitSize?: number
  /**
   * Paged state does not exist on the CPU: only false is accepted.
   * @default false
   */
  isPaged?: boolean
}

/** Options of `Lion8bit`: bitsandbytes' arguments in camelCase. */
export interface Lion8bitOptions {
  /**
   * Learning rate: each step moves every element by lr against the sign of its interpolated momentum.
   * @default 1e-4
   */
  lr?: number
  /**
   * Weights of the momentum, in the direction and in its own average, each in [0, 1).
   * @default [0.9, 0.99]
   */
  betas?: [number, number]
  /**
   * Decoupled weight decay: each step first scales the weights by 1 − lr·weightDecay.
   * @default 0
   */
  weightDecay?: number
  /**
   * Parameters with fewer elements keep float32 state (bitsandbytes' `min_8bit_size`).
   * @default 4096
   */
  minEightBitSize?: number
  /**
   * Paged state does not exist on the CPU: only false is accepted.
   * @default false
   */
  isPaged?: boolean
}

/**
 * One parameter's state, bitsandbytes' names and dtypes: for a parameter of at least
 * `minEightBitSize` elements, `state1`/`state2` are codes (one byte per element) with one scale per
 * block of 256 (`absmax1`/`absmax2`) and the maps they index (`qmap1`/`qmap2`, 256 entries); for a
 * smaller one, `state1`/`state2` are Float32Arrays. Lion has no second moment.
 */
export type EightBitState = {
  step: number
  state1: Uint8Array | Float32Array
  state2?: Uint8Array | Float32Array
  absmax1?: Float32Array
  absmax2?: Float32Array
  qmap1?: Float32Array
  qmap2?: Float32Array
}

/** The options a group holds (live); the others are the optimizer's, as bitsandbytes' `args`. */
/** What an 8-bit optimizer takes: Float32Array parameters, or groups of them with their own options. */
export type EightBitParams =
  | readonly Parameter<Float32Array>[]
  | ReadonlyArray<{ params: readonly Parameter<Float32Array>[] } & Partial<EightBitGroupOptions>>

export type EightBitGroupOptions = { lr: number; betas: [number, number]; eps: number; weightDecay: number }

/** A param group of an 8-bit optimizer. */
export type EightBitGroup<Options> = Required<Pick<Options, keyof Options & keyof EightBitGroupOptions>> & {
  readonly params: readonly Parameter<Float32Array>[]
}

/** `stateDict()` of an 8-bit optimizer: bitsandbytes' `state_dict()` in camelCase. */
export interface EightBitStateDict<Options = Record<string, unknown>> {
  state: Record<number, EightBitState>
  paramGroups: Array<EightBitGroup<Options> & { params: number[] }>
}

/** Options bitsandbytes keeps in its groups that these optimizers ignore when they hold bitsandbytes' defaults. */
const BNB_GROUP_DEFAULTS: Readonly<Record<string, unknown>> = { alpha: 0, tAlpha: null, tBeta3: null }

/** A native step: `(hyper, data0, grad0, data1, grad1, ...)`, the arrays as arguments, so that reading them runs no JavaScript. */
type NativeStep = (...args: unknown[]) => number

/** A native `stepAsync` start: the step's arguments; returns where the update runs (src/eightbit/task.rs). */
type NativeStart = (...args: unknown[]) => StartedStep

/**
 * Registered by hand in src/eightbit.rs (so that a step allocates nothing, and reading its
 * arrays runs no JavaScript), hence not in the generated typings.
 */
const { eightBitStepOf, eightBitStartOf } = native as unknown as {
  eightBitStepOf(optimizer: InstanceType<typeof native.NativeEightBit>): NativeStep
  eightBitStartOf(optimizer: InstanceType<typeof native.NativeEightBit>): NativeStart
}

let maps: ReturnType<typeof native.eightBitMaps> | undefined
const quantMaps = () => (maps ??= native.eightBitMaps())

/** What distinguishes the 8-bit classes: names, algorithm, options and their defaults. */
export interface EightBitSpec {
  name: string
  algorithm: 'adam' | 'lion'
  /** Group options and their defaults. */
  group: Readonly<Record<string, unknown>>
  /** Optimizer-wide options, their defaults, and the one value each accepts where it is bitsandbytes' compatibility argument. */
  fixed: Readonly<Record<string, { default: unknown; only?: unknown }>>
}

const whole = (x: unknown) => typeof x === 'number' && Number.isSafeInteger(x) && x >= 0

/** The numbers per parameter of a native step's options: lr, beta1, beta2, eps, weightDecay. */
const HYPER = 5

/** `StepReport.Finite`, read once. */
const FINITE = native.StepReport.Finite

/**
 * Checks a group's options, in the words of the registry's optimizers, reading each once, in the
 * order every spec lists them (`lr`, `betas`, `eps` where it has one, `weightDecay`: the group
 * options of all three classes, which this reads by name, not from the spec); with `row`,
 * writes them there from `at` as a native step takes them (lr, beta1, beta2, eps or 0,
 * weightDecay). `where` names the group in errors: a string, or a group's index
 * (`paramGroups[i]`), whose name is made only for an error. No key is looked up by a variable and
 * nothing is allocated unless it throws: a step runs this for every group.
 */
function checkGroup(
  spec: EightBitSpec,
  group: Record<string, unknown>,
  where: string | number,
  row?: Float64Array,
  at = 0,
): void {
  const lr = group.lr
  checkNumber('lr', lr, where)
  const betas = group.betas
  // An array's length, then each element, read once.
  const length = Array.isArray(betas) ? (betas as unknown[]).length : -1
  const beta1 = length === 2 ? (betas as unknown[])[0] : undefined
  const beta2 = length === 2 ? (betas as unknown[])[1] : undefined
  if (typeof beta1 !== 'number' || typeof beta2 !== 'number')
    throw invalidType(`${named(where)}.betas must be an array of two numbers, got ${describe(betas)}`)
  checkBeta(0, beta1, where)
  checkBeta(1, beta2, where)
  const hasEps = 'eps' in spec.group
  const eps = hasEps ? group.eps : 0
  if (hasEps) checkNumber('eps', eps, where)
  const weightDecay = group.weightDecay
  checkNumber('weightDecay', weightDecay, where)
  if (row) {
    row[at] = lr as number
    row[at + 1] = beta1
    row[at + 2] = beta2
    row[at + 3] = eps as number
    row[at + 4] = weightDecay as number
  }
}

/** A group's name in errors ([`checkGroup`]'s `where`). */
const named = (where: string | number) => (typeof where === 'string' ? where : `paramGroups[${where}]`)

function checkNumber(key: string, value: unknown, where: string | number): void {
  if (typeof value !== 'number') throw invalidType(`${named(where)}.${key} must be a number, got ${describe(value)}`)
  if (!(value >= 0 && Number.isFinite(value)))
    throw outOfRange(`invalid ${key}: ${value} (expected a finite number >= 0) in ${named(where)}`)
}

function checkBeta(i: number, b: number, where: string | number): void {
  if (!(b >= 0 && b < 1))
    throw outOfRange(`invalid beta parameter at index ${i}: ${b} (expected a number in [0, 1)) in ${named(where)}`)
}

/** What the optimizers of 8-bit state share; `Adam8bit`, `AdamW8bit` and `Lion8bit` are its classes. */
export abstract class EightBitOptimizer<Options extends object> {
  /** The groups, each with every option filled in; change an option and the next step uses it. */
  readonly paramGroups: Array<EightBitGroup<Options>> = []
  /** The options a group gets when it does not set them. */
  readonly defaults: Readonly<Required<Options>>
  /** Parameters with fewer elements keep float32 state. */
  readonly minEightBitSize: number

  readonly #spec: EightBitSpec
  readonly #native: InstanceType<typeof native.NativeEightBit>
  /** The native step, bound to `#native` (src/eightbit.rs, `eightBitStepOf`). */
  readonly #step: NativeStep
  /** The native start of a `stepAsync`, bound to `#native` (`eightBitStartOf`), made by the first. */
  #start: NativeStart | undefined
  #params: Parameter<Float32Array>[] = []
  #labels: string[] = []
  #running: string | undefined
  /** Whether a `stepAsync()` is in flight: then the native optimizer holds no state to read or change. */
  #inFlight = false
  /**
   * A step's arguments, kept between steps so that a step allocates none: the options, then each
   * parameter's data and grad.
   */
  #args: unknown[] = []
  #hyper = new Float64Array(0)
  /** Each group's options as a step reads them, a row of HYPER numbers per group. */
  #rows = new Float64Array(0)
  /** The group of each parameter. */
  #groupOf = new Uint32Array(0)

  protected constructor(spec: EightBitSpec, params: unknown, options: unknown = {}) {
    this.#spec = spec
    const given = this.#snapshotOptions(options, 'options', true)
    for (const [key, { only }] of Object.entries(spec.fixed)) {
      if (key in given && only !== undefined && given[key] !== only)
        throw invalidValue(
          `options.${key} is ${JSON.stringify(given[key])}, which ${spec.name} does not support (expected ${JSON.stringify(only)}, as bitsandbytes)`,
        )
    }
    const defaults = {
      ...spec.group,
      ...Object.fromEntries(Object.entries(spec.fixed).map(([k, v]) => [k, v.default])),
    }
    this.defaults = Object.freeze({ ...defaults, ...given }) as Readonly<Required<Options>>
    checkGroup(spec, this.defaults as Record<string, unknown>, 'options')
    const min = (this.defaults as Record<string, unknown>).minEightBitSize
    if (!whole(min)) throw outOfRange(`invalid minEightBitSize: ${String(min)} (expected a whole number >= 0)`)
    this.minEightBitSize = min as number
    this.#native = new native.NativeEightBit(spec.algorithm, this.minEightBitSize)
    this.#step = eightBitStepOf(this.#native)
    const list = snapshotArray(params)
    if (!list)
      throw invalidType(`params must be an array of parameters or of parameter groups, got ${describe(params)}`)
    if (list.length === 0) throw invalidValue('params is empty: the optimizer got an empty parameter list')
    const first = list[0]
    const isGroup = typeof first === 'object' && first !== null && 'params' in first
    this.#addGroups(isGroup ? list : [{ params: list }])
  }

  /** Adds a group of parameters, as PyTorch's `add_param_group`. */
  addParamGroup(group: { params: readonly Parameter<Float32Array>[] } & Partial<EightBitGroupOptions>): void {
    this.#enter('addParamGroup()', () => this.#addGroups([group]))
  }

  /**
   * Runs `body` as the public method `what`: refused while a `stepAsync()` is in flight, and when
   * called from JavaScript that another call on this optimizer runs (a getter on a parameter or
   * an option).
   */
  #enter<T>(what: string, body: () => T): T {
    if (this.#running !== undefined) throw reentered(what, this.#running)
    if (this.#inFlight) throw busyError(what)
    this.#running = what
    try {
      return body()
    } finally {
      this.#running = undefined
    }
  }

  /** Own options of `given`, each read once; group options and, at construction, the optimizer's. */
  #snapshotOptions(given: unknown, where: string, constructing: boolean): Record<string, unknown> {
    const options = snapshotObject(given, where)
    const keys = [...Object.keys(this.#spec.group), ...(constructing ? Object.keys(this.#spec.fixed) : [])]
    for (const key of Object.keys(options)) {
      if (key === 'params' && !constructing) continue
      if (!keys.includes(key))
        throw invalidValue(
          `${where}.${key} is not an option of ${this.#spec.name} (expected one of ${keys.join(', ')})`,
        )
      options[key] = snapshotValue(options[key])
    }
    return options
  }

  #addGroups(groups: readonly unknown[]): void {
    const seen = new Set<unknown>(this.#params.flatMap((p) => [p, p.data]))
    const added: Array<EightBitGroup<Options>> = []
    const labels: string[] = []
    groups.forEach((group, g) => {
      const where = `paramGroups[${this.paramGroups.length + g}]`
      const options = this.#snapshotOptions(group, where, false)
      const params = snapshotArray(options.params)
      if (!params) throw invalidType(`${where}.params must be an array of parameters, got ${describe(options.params)}`)
      params.forEach((param, i) => {
        const label = `${where}.params[${i}]`
        if (typeof param !== 'object' || param === null)
          throw invalidType(`${label} must be an object with data and grad, got ${describe(param)}`)
        const data = (param as { data?: unknown }).data
        checkData(data, label, this.#spec.name)
        if (seen.has(param) || seen.has(data))
          throw invalidValue(`${label} appears more than once; every parameter must be in exactly one group, once`)
        seen.add(param).add(data)
        labels.push(label)
      })
      const complete: Record<string, unknown> = { params: Object.freeze(params) }
      for (const key of Object.keys(this.#spec.group)) {
        const value = key in options ? options[key] : (this.defaults as Record<string, unknown>)[key]
        complete[key] = Array.isArray(value) ? [...value] : value
      }
      checkGroup(this.#spec, complete, where)
      added.push(Object.seal(complete) as unknown as EightBitGroup<Options>)
    })
    const first = this.paramGroups.length
    this.paramGroups.push(...added)
    this.#params = [...this.#params, ...added.flatMap((group) => group.params)]
    this.#groupOf = Uint32Array.from([
      ...this.#groupOf,
      ...added.flatMap((group, g) => group.params.map(() => first + g)),
    ])
    this.#labels = [...this.#labels, ...labels]
    this.#native.setLabels(this.#labels)
  }

  /**
   * Updates every parameter whose `grad` is not null, in one native call on the thread pool.
   * Everything is checked first (options, array types and lengths, shared or detached memory):
   * on error nothing changes.
   *
   * Returns whether every gradient element was finite, as the other optimizers' `step()` does. A
   * gradient holding NaN or ±∞ does not stop the step (the update goes ahead, as bitsandbytes'
   * and PyTorch's do, and the NaN or ∞ reaches the parameters and the state); with
   * `{ skipNonFinite: true }` every gradient is checked before anything is written, and if one is
   * not finite the whole step is skipped (no parameter, state or step count changes) and `step()`
   * returns false.
   */
  step(options?: StepOptions): boolean
  /**
   * As PyTorch's `step(closure)`: calls `closure` once (it may call `zeroGrad`), then steps as
   * `step(options)` does, and returns what `closure` returned. `options` are checked before it
   * runs. If it throws, the error comes back as `ERR_CLOSURE_FAILED` and nothing is updated; a
   * closure that returns a promise is refused (`ERR_INVALID_RETURN_VALUE`), since the step runs
   * synchronously.
   */
  step<Loss>(closure: () => Loss, options?: StepOptions): Loss
  step(first?: StepOptions | (() => unknown), second?: StepOptions): unknown {
    // `#enter`'s guard, written out, as the registry's `step()` has it: no closure per step.
    if (this.#running !== undefined) throw reentered('step()', this.#running)
    if (this.#inFlight) throw busyError('step()')
    if (typeof first === 'function') {
      if (second !== undefined) stepOptions(second, 'step')
      const loss = callClosure(`${this.#spec.name}.step`, first)
      this.step(second)
      return loss
    }
    if (second !== undefined)
      throw invalidType(
        `step: a second argument follows a closure only, got ${describe(second)} after ${describe(first)}`,
      )
    this.#running = 'step()'
    try {
      const skipNonFinite = first === undefined ? false : stepOptions(first, 'step')
      // The native step checks that no parameter's data overlaps another array, naming both.
      return Reflect.apply(this.#step, undefined, this.#packArgs(skipNonFinite)) === FINITE
    } finally {
      this.#running = undefined
    }
  }

  /**
   * A native step's arguments, in `#args`: each group's options checked and written for each of
   * its parameters, then each parameter's data and grad (checked), then `skipNonFinite`.
   */
  #packArgs(skipNonFinite: boolean): unknown[] {
    const count = this.#params.length
    if (this.#hyper.length !== HYPER * count) {
      this.#hyper = new Float64Array(HYPER * count)
      this.#args = new Array<unknown>(2 + 2 * count).fill(null)
      this.#args[0] = this.#hyper
    }
    this.#args[1 + 2 * count] = skipNonFinite
    const groups = this.paramGroups
    if (this.#rows.length !== HYPER * groups.length) this.#rows = new Float64Array(HYPER * groups.length)
    const [args, hyper, rows] = [this.#args, this.#hyper, this.#rows]
    for (let g = 0; g < groups.length; g++)
      checkGroup(this.#spec, groups[g] as unknown as Record<string, unknown>, g, rows, HYPER * g)
    // The parameters as the groups were given (as PyTorch, a group's `params` is not re-read).
    for (let index = 0; index < count; index++) {
      const label = this.#labels[index]
      const { data: d, grad } = this.#params[index] as { data: unknown; grad: unknown }
      checkData(d, label, this.#spec.name)
      if (grad !== null && grad !== undefined) {
        if (typedArrayTag(grad) !== 'Float32Array')
          throw invalidType(`${label}.grad must be a Float32Array like its data, or null, got ${describe(grad)}`)
        checkUsable(grad as Float32Array, label, 'grad')
        if (lengthOf(grad as Float32Array) !== lengthOf(d as Float32Array))
          throw outOfRange(
            `${label}.grad has length ${lengthOf(grad as Float32Array)}, expected ${lengthOf(d as Float32Array)} like its data`,
          )
      }
      const row = HYPER * this.#groupOf[index]
      for (let k = 0; k < HYPER; k++) hyper[HYPER * index + k] = rows[row + k]
      args[1 + 2 * index] = d
      args[2 + 2 * index] = grad ?? null
    }
    return args
  }

  /**
   * `step()` without holding the event loop, as the other optimizers' `stepAsync()`: the same
   * checks and the same numbers, bit for bit, in a promise that resolves once every parameter is
   * updated (and rejects, having changed nothing, on the input `step()` would throw on). Until it
   * settles, the optimizer refuses `step`, `stepAsync`, `zeroGrad`, `addParamGroup`, `getState`,
   * `stateBytes`, `stateDict` and `loadStateDict` with `ERR_INVALID_STATE`.
   *
   * When every `data` and `grad` is on a SharedArrayBuffer, the update runs on a worker thread
   * and the event loop is free throughout. Otherwise it runs in slices of about half a
   * millisecond, the event loop running between them; each slice updates whole blocks. Either
   * way the arrays are updated in place, never copied, and kept alive until the promise settles.
   * Until then, do not write the arrays; an array replaced with `p.data = ...` is not the one
   * updated. Do not transfer or shrink them either: this is the one exception to a step's
   * all-or-none. An array transferred or shrunk while the step runs in slices stops it at the
   * next slice that would touch it, and the promise rejects with `ERR_INVALID_STATE`; what the
   * earlier slices wrote stays (every stepped parameter's step count has advanced, and the
   * elements before the point where the step stopped hold their new values and state).
   *
   * Resolves to whether every gradient element was finite, and takes `{ skipNonFinite }`, as
   * `step()` does.
   */
  stepAsync(options?: StepOptions): Promise<boolean> {
    try {
      return this.#enter('stepAsync()', () => {
        const skipNonFinite = stepOptions(options, 'stepAsync')
        const opt = this.#native
        this.#start ??= eightBitStartOf(opt)
        const start = Reflect.apply(this.#start, undefined, this.#packArgs(skipNonFinite))
        if (start === native.StartedStep.Skipped) return Promise.resolve(false)
        this.#inFlight = true
        return settle(start, opt, () => native.eightBitStepOffThread(opt)).finally(() => {
          this.#inFlight = false
        })
      })
    } catch (error) {
      return Promise.reject(error)
    }
  }

  /** Clears gradients: sets every `grad` to null (PyTorch's default), or fills them with zeros. */
  zeroGrad(setToNone = true): void {
    this.#enter('zeroGrad()', () => {
      if (typeof setToNone !== 'boolean')
        throw invalidType(`zeroGrad: setToNone must be a boolean, got ${describe(setToNone)}`)
      const grads = this.#params.map((param, i) => {
        const grad = (param as { grad: unknown }).grad
        if (grad !== null && grad !== undefined && !setToNone) {
          if (typedArrayTag(grad) !== 'Float32Array')
            throw invalidType(`${this.#labels[i]}.grad must be a Float32Array, got ${describe(grad)}`)
          checkUsable(grad as Float32Array, this.#labels[i], 'grad')
        }
        return grad
      })
      this.#params.forEach((param, i) => {
        const grad = grads[i]
        if (grad === null || grad === undefined) return
        if (setToNone) (param as { grad: unknown }).grad = null
        else (grad as Float32Array).fill(0)
      })
    })
  }

  /** A copy of a parameter's state (bitsandbytes' `opt.state[p]`), or undefined before its first step. */
  getState(param: Parameter<Float32Array>): EightBitState | undefined {
    return this.#enter('getState()', () => {
      const index = this.#params.indexOf(param)
      if (index < 0) throw invalidValue('getState: the parameter does not belong to this optimizer')
      return this.#exportState(index)
    })
  }

  #exportState(index: number): EightBitState | undefined {
    const entry = this.#native.exportState(index)
    if (!entry) return undefined
    const state: EightBitState = { step: entry.step, state1: entry.state1 }
    if (entry.state2) state.state2 = entry.state2
    if (entry.absmax1) {
      state.absmax1 = entry.absmax1
      state.qmap1 = quantMaps().signed.slice()
    }
    if (entry.absmax2) {
      state.absmax2 = entry.absmax2
      state.qmap2 = quantMaps().unsigned.slice()
    }
    return state
  }

  /** Bytes of optimizer state held for a parameter: codes, scales and float32 moments (the maps are shared). */
  stateBytes(param: Parameter<Float32Array>): number {
    return this.#enter('stateBytes()', () => {
      const index = this.#params.indexOf(param)
      if (index < 0) throw invalidValue('stateBytes: the parameter does not belong to this optimizer')
      return this.#native.stateBytes(index)
    })
  }

  /** The state as bitsandbytes' `state_dict()` has it, camelCase: state by parameter position, and the groups. */
  stateDict(): EightBitStateDict<Options> {
    return this.#enter('stateDict()', () => {
      const state: Record<number, EightBitState> = {}
      this.#params.forEach((_, i) => {
        const entry = this.#exportState(i)
        if (entry) state[i] = entry
      })
      let next = 0
      const paramGroups = this.paramGroups.map((group) => {
        const options = Object.fromEntries(
          Object.keys(this.#spec.group).map((key) => {
            const value = (group as Record<string, unknown>)[key]
            return [key, Array.isArray(value) ? [...value] : value]
          }),
        )
        return { ...options, params: group.params.map(() => next++) } as EightBitGroup<Options> & { params: number[] }
      })
      return { state, paramGroups }
    })
  }

  /**
   * Restores a `stateDict()` (this optimizer's, or bitsandbytes' read from a checkpoint). Everything
   * is checked first — groups, options, state names, dtypes and sizes of codes, scales and maps —
   * and on error nothing changes.
   */
  loadStateDict(stateDict: unknown): void {
    this.#enter('loadStateDict()', () => this.#load(stateDict))
  }

  #load(stateDict: unknown): void {
    const { dict, paramGroups: groups } = snapshotStateDict(stateDict, this.paramGroups.length)
    const indexOf = new Map<number, number>()
    let first = 0
    const groupOptions = groups.map((group, g) => {
      const where = `stateDict.paramGroups[${g}]`
      const { params: given, ...rest } = snapshotObject(group, where)
      const params = snapshotArray(given)
      const size = this.paramGroups[g].params.length
      if (!params || params.length !== size)
        throw invalidValue(
          `${where}.params must list ${size} parameters like the optimizer's group, got ${describe(given)}`,
        )
      params.forEach((id, k) => {
        if (!Number.isSafeInteger(id) || indexOf.has(id as number))
          throw invalidValue(`${where}.params[${k}] must be a distinct whole number, got ${String(id)}`)
        indexOf.set(id as number, first + k)
      })
      first += size
      const options: Record<string, unknown> = {}
      for (const [key, value] of Object.entries(rest)) {
        if (key in BNB_GROUP_DEFAULTS) {
          if (value !== BNB_GROUP_DEFAULTS[key])
            throw invalidValue(
              `${where}.${key} is ${JSON.stringify(value)}: ${this.#spec.name} supports only ${JSON.stringify(BNB_GROUP_DEFAULTS[key])}`,
            )
          continue
        }
        // bitsandbytes' Lion keeps eps (0) in its groups.
        if (key === 'eps' && !('eps' in this.#spec.group)) continue
        if (!(key in this.#spec.group))
          throw invalidValue(
            `${where}.${key} is not an option of ${this.#spec.name} (expected one of ${Object.keys(this.#spec.group).join(', ')})`,
          )
        options[key] = snapshotValue(value)
      }
      for (const key of Object.keys(this.#spec.group))
        if (!(key in options)) throw invalidValue(`${where}.${key} is missing`)
      checkGroup(this.#spec, options, where)
      return options
    })

    const lengths = this.#params.map((param, i) => {
      const data = (param as { data: unknown }).data
      checkData(data, this.#labels[i], this.#spec.name)
      return lengthOf(data as Float32Array)
    })
    const second = this.#spec.algorithm === 'adam'
    const { signed, unsigned } = quantMaps()
    const names = ['step', 'state1', 'absmax1', 'qmap1', ...(second ? ['state2', 'absmax2', 'qmap2'] : [])]
    const entries = Object.entries(snapshotObject(dict.state, 'stateDict.state')).map(([id, given]) => {
      const where = `stateDict.state[${id}]`
      const index = indexOf.get(Number(id))
      if (index === undefined) throw invalidValue(`${where} is for a parameter no group lists`)
      const entry = snapshotObject(given, where)
      for (const key of Object.keys(entry))
        if (!names.includes(key))
          throw invalidValue(`${where}.${key} is not state of ${this.#spec.name} (expected ${names.join(', ')})`)
      const step = entry.step
      if (typeof step !== 'number') throw invalidType(`${where}.step must be a number, got ${describe(step)}`)
      if (!Number.isSafeInteger(step) || step < 0)
        throw outOfRange(`invalid ${where}.step: ${step} (expected a whole number from 0 to 2^53 - 1)`)
      const length = lengths[index]
      const eightBit = length >= this.minEightBitSize
      const blocks = Math.ceil(length / 256)
      const array = (key: string, tag: string, size: number): ArrayBufferView => {
        const value = entry[key]
        if (typedArrayTag(value) !== tag)
          throw invalidType(
            `${where}.${key} must be a ${tag} (${eightBit ? `8-bit state: the parameter has ${length} elements, at least minEightBitSize ${this.minEightBitSize}` : `float32 state: the parameter has ${length} elements, under minEightBitSize ${this.minEightBitSize}`}), got ${describe(value)}`,
          )
        checkUsable(value as ArrayBufferView, `${where}.${key}`)
        const n = lengthOf(value as Float32Array)
        if (n !== size) throw outOfRange(`${where}.${key} has length ${n}, expected ${size}`)
        return value as ArrayBufferView
      }
      const map = (key: string, own: Float32Array) => {
        const value = array(key, 'Float32Array', 256) as Float32Array
        const same = value.every((x, i) => Object.is(x, own[i]))
        if (!same)
          throw invalidValue(
            `${where}.${key} is not bitsandbytes' dynamic map (create_dynamic_map(signed=${key === 'qmap1'})): codes index that map only`,
          )
      }
      const moments: Array<'1' | '2'> = second ? ['1', '2'] : ['1']
      if (eightBit) {
        for (const k of moments) {
          array(`state${k}`, 'Uint8Array', length)
          array(`absmax${k}`, 'Float32Array', blocks)
          map(`qmap${k}`, k === '1' ? signed : unsigned)
        }
      } else {
        for (const k of moments) {
          array(`state${k}`, 'Float32Array', length)
          for (const key of [`absmax${k}`, `qmap${k}`])
            if (entry[key] !== undefined)
              throw invalidValue(
                `${where}.${key} is given, but a parameter of ${length} elements (under minEightBitSize ${this.minEightBitSize}) has float32 state`,
              )
        }
      }
      return {
        index,
        step,
        state1: entry.state1 as Uint8Array | Float32Array,
        state2: second ? (entry.state2 as Uint8Array | Float32Array) : undefined,
        absmax1: eightBit ? (entry.absmax1 as Float32Array) : undefined,
        absmax2: eightBit && second ? (entry.absmax2 as Float32Array) : undefined,
      }
    })
    this.#native.importStates(lengths, entries)
    groupOptions.forEach((options, g) => {
      for (const [key, value] of Object.entries(options))
        (this.paramGroups[g] as Record<string, unknown>)[key] = Array.isArray(value) ? [...value] : value
    })
  }
}

/** A parameter's data must be a Float32Array: 8-bit state is bitsandbytes' for float32 parameters. */
function checkData(data: unknown, label: string, name: string): void {
  const tag = typedArrayTag(data)
  if (tag === 'Float64Array')
    throw invalidType(`${label}.data is a Float64Array: ${name} takes Float32Array parameters only`)
  if (tag !== 'Float32Array') throw invalidType(`${label}.data must be a Float32Array, got ${describe(data)}`)
  checkUsable(data as Float32Array, label, 'data')
}

const ADAM_FIXED = {
  amsgrad: { default: false, only: false },
  optimBits: { default: 32, only: 32 },
  minEightBitSize: { default: 4096 },
  isPaged: { default: false, only: false },
} as const

/**
 * bitsandbytes' `Adam8bit`: Adam with decoupled weight decay and block-wise 8-bit moments
 * (Dettmers et al., 2022), its numbers on the CPU.
 */
export class Adam8bit extends EightBitOptimizer<Adam8bitOptions> {
  constructor(params: EightBitParams, options: Adam8bitOptions = {}) {
    super(
      {
        name: 'Adam8bit',
        algorithm: 'adam',
        group: { lr: 1e-3, betas: [0.9, 0.999], eps: 1e-8, weightDecay: 0 },
        fixed: ADAM_FIXED,
      },
      params,
      options,
    )
  }
}

/** bitsandbytes' `AdamW8bit`: `Adam8bit` with a default weight decay of 0.01. */
export class AdamW8bit extends EightBitOptimizer<Adam8bitOptions> {
  constructor(params: EightBitParams, options: Adam8bitOptions = {}) {
    super(
      {
        name: 'AdamW8bit',
        algorithm: 'adam',
        group: { lr: 1e-3, betas: [0.9, 0.999], eps: 1e-8, weightDecay: 1e-2 },
        fixed: ADAM_FIXED,
      },
      params,
      options,
    )
  }
}

/** bitsandbytes' `Lion8bit`: Lion (Chen et al., 2023) with a block-wise 8-bit momentum. */
export class Lion8bit extends EightBitOptimizer<Lion8bitOptions> {
  constructor(params: EightBitParams, options: Lion8bitOptions = {}) {
    super(
      {
        name: 'Lion8bit',
        algorithm: 'lion',
        group: { lr: 1e-4, betas: [0.9, 0.99], weightDecay: 0 },
        fixed: { minEightBitSize: { default: 4096 }, isPaged: { default: false, only: false } },
      },
      params,
      options,
    )
  }
}
