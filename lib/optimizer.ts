import { callClosure, describe, invalidType, invalidValue, outOfRange, reentered } from './errors'
import { native } from './native'
import {
  checkUsable,
  isFloatArray,
  lengthOf,
  snapshotArray,
  snapshotObject,
  snapshotStateDict,
  snapshotValue,
  typedArrayTag,
  type FloatArray,
} from './snapshot'
import { StepArrays } from './step'
import { busyError, stepAsync } from './task'

export type { FloatArray }

/**
 * A row-sparse gradient, as PyTorch's sparse gradient of an embedding (`nn.Embedding(sparse=True)`),
 * which SparseAdam takes: for a parameter of shape `[rows, ...]` (flat: rows of one element),
 * `indices` names rows and `values` holds one row of gradient for each, in the same order, in an
 * array like the parameter's data (`indices.length` times the product of `shape[1:]` elements).
 * A row may be named more than once: its values are summed, as PyTorch's `coalesce()` sums them.
 */
export interface SparseGrad {
  indices: Int32Array | Uint32Array
  values: FloatArray
}

/**
 * A tensor being optimized: `data` is updated in place by `step()`; `grad` is read, and a
 * parameter whose `grad` is null is skipped, as PyTorch skips parameters whose `.grad` is None.
 * Both are read at every step, so assigning a new array to `grad` (or `data`) works. `grad` is
 * an array like `data`, or a `SparseGrad` for an optimizer of sparse gradients (SparseAdam).
 */
export interface Parameter<Grad extends FloatArray | SparseGrad = FloatArray> {
  data: FloatArray
  grad: Grad | null
  /**
   * The tensor's dimensions, as PyTorch's `p.shape`; their product must be `data.length`. Absent
   * means flat (one dimension). Optimizers that treat matrices differently (Adafactor factors
   * the second moment of a tensor of 2 or more dimensions) read it, and checkpoints give state
   * the shapes PyTorch's has. Read when the parameter joins the optimizer.
   */
  readonly shape?: readonly number[]
}

/** The gradients an optimizer takes: arrays like the data, or (SparseAdam) sparse ones. */
export type GradKind = FloatArray | SparseGrad

/** A group of parameters with its own options; every option is present and live. */
export type ParamGroup<Options, Grad extends GradKind = FloatArray> = Required<Options> & {
  readonly params: readonly Parameter<Grad>[]
}

/**
 * Options as a caller gives them: any of them, and a pair (`betas`) as a tuple, a readonly tuple
 * (`as const`) or an array of numbers built elsewhere, whose length is checked at run time.
 */
export type OptionsInput<Options> = {
  [K in keyof Options]?: Options[K] extends readonly unknown[]
    ? Readonly<Options[K]> | readonly Options[K][number][]
    : Options[K]
}

/** The dtype an optimizer keeps its per-element state in: `stateDtype`. */
export type StateDtype = 'float32' | 'bfloat16'

/** How new bfloat16 state is rounded: `stateRounding`. */
export type StateRounding = 'nearest' | 'stochastic'

/** The constructor's options of an optimizer whose state may be bfloat16 (the Adam family, SGD). */
export type StateDtypeOptions<Options> = OptionsInput<Options> & {
  /**
   * The dtype of the per-element state (`expAvg`, `expAvgSq`, `momentumBuffer`, ...) of float32
   * parameters; by default the parameter's own dtype. `'bfloat16'` keeps each state element in 2
   * bytes: Adam then keeps 4 bytes of state per parameter instead of 8, and a step moves 20 bytes
   * per parameter instead of 28. Each step widens the state to float32 (exactly), runs the
   * optimizer's float32 update unchanged (the same kernel, so the same bits as float32 state holding
   * those widened values would give), and rounds the new state to bfloat16 to nearest, ties to even,
   * as PyTorch's `.to(torch.bfloat16)` does (NaN stays NaN). `getState` and `stateDict` give it as
   * Uint16Arrays of raw bfloat16 bits (typed as float32 state's `FloatArray`, so that code written
   * for it compiles: cast with `as unknown as Uint16Array`), which checkpoints write as safetensors
   * BF16; `loadStateDict`
   * takes float32 or bfloat16 state and converts it to this dtype, as PyTorch's `load_state_dict`
   * casts state to the parameter's dtype. Set for the whole optimizer (every group); float64
   * parameters are refused with either value.
   * @default the parameter's dtype
   */
  stateDtype?: StateDtype
  /**
   * How a step rounds the new bfloat16 state (with `stateDtype: 'bfloat16'` only). `'nearest'`:
   * to nearest, ties to even, as PyTorch's `.to(torch.bfloat16)`. `'stochastic'`: to the
   * bfloat16 below or above, up with probability equal to the value's fraction of the way between
   * them, so that a change smaller than half a bfloat16 ulp (2⁻⁹ of the value: Adam's second
   * moment decaying by β₂ = 0.999, say) is kept in expectation instead of lost every step. The
   * random bits are a hash of the parameter's place, its step count, the buffer and the element's
   * index, so results are the same from run to run, on any number of threads, with `step` or
   * `stepAsync`, and after a checkpoint is loaded. docs/bf16-state.md has the measurements: with
   * stochastic rounding Adam with bfloat16 state trained as float32 state did; to nearest, it
   * did not. Set for the whole optimizer, in the constructor.
   * @default 'nearest'
   */
  stateRounding?: StateRounding
}

/** Parameters, or groups of parameters each overriding some options. */
export type Params<Options, Grad extends GradKind = FloatArray> =
  readonly Parameter<Grad>[] | ReadonlyArray<{ params: readonly Parameter<Grad>[] } & OptionsInput<Options>>

/** One packed option: where it sits in the group object and what it must be. */
interface Slot {
  key: string
  index: number | undefined
  /**
   * `number?` is a number or null (PyTorch's None), packed as NaN; `choice?` one of `choices` (a
   * string option of PyTorch's), packed as its index, or null, packed as NaN.
   */
  kind: 'number' | 'boolean' | 'number?' | 'choice?'
  /** The names a `choice?` may hold. */
  choices: readonly string[]
  default: number
  /** What a value must be, as the core's messages say it. */
  expected: string
}

/** An optimizer of the native registry: its name, options, state layout. */
export type AlgorithmInfo = ReturnType<typeof native.algorithms>[number]

const registry = new Map(native.algorithms().map((info) => [info.name, info]))

/** The optimizers of the native registry, in its order. */
export function algorithms(): AlgorithmInfo[] {
  return [...registry.values()]
}

/** The option table of one algorithm, read once from the native core, where defaults live. */
export class Schema<Options> {
  readonly slots: readonly Slot[]
  /** Option names, in the order the core lists them. */
  readonly keys: readonly string[]
  /**
   * The options that are group state a step advances (Schedule-Free's `k`, `lrMax`, `weightSum`,
   * `scheduledLr`), with their slots: each step writes their next values into the packed options
   * it was given, from where `step()` carries them to the groups.
   */
  readonly groupState: ReadonlyArray<{ key: string; slot: number }>
  readonly defaults: Readonly<Required<Options>>
  /** The registry's entry: state buffers and their layouts, scalars. */
  readonly info: AlgorithmInfo
  /** For each slot, how many slots share its key (the length of a tuple option). */
  readonly #arity: readonly number[]

  constructor(readonly algorithm: string) {
    const info = registry.get(algorithm)
    if (!info)
      throw invalidValue(
        `unknown optimizer ${JSON.stringify(algorithm)} (expected one of ${[...registry.keys()].join(', ')})`,
      )
    this.info = info
    this.slots = info.options.map(({ name, kind, choices, default: value, expected }) => {
      const [, key, index] = /^(\w+)(?:\[(\d+)\])?$/.exec(name)!
      return {
        key,
        index: index === undefined ? undefined : Number(index),
        kind: kind as Slot['kind'],
        choices,
        default: value,
        expected,
      }
    })
    this.keys = [...new Set(this.slots.map((s) => s.key))]
    this.#arity = this.slots.map((slot) => this.slots.filter((s) => s.key === slot.key).length)
    const defaults: Record<string, unknown> = {}
    for (const slot of this.slots) {
      const value =
        slot.kind === 'boolean'
          ? slot.default !== 0
          : (slot.kind === 'number?' || slot.kind === 'choice?') && Number.isNaN(slot.default)
            ? null
            : slot.kind === 'choice?'
              ? slot.choices[slot.default]
              : slot.default
      if (slot.index === undefined) defaults[slot.key] = value
      else ((defaults[slot.key] ??= []) as unknown[])[slot.index] = value
    }
    for (const value of Object.values(defaults)) if (Array.isArray(value)) Object.freeze(value)
    this.defaults = Object.freeze(defaults) as Required<Options>
    this.packValid = compilePacker(this.slots)
    this.groupState = info.groupState.map((key) => ({ key, slot: this.slots.findIndex((s) => s.key === key) }))
  }

  /**
   * `pack` for a group whose every option is acceptable as it is: reads each option once, by its
   * own name, and returns false (what it wrote then counts for nothing) at the first value `pack`
   * would refuse, so that the caller runs `pack` to say why. Compiled from the slots, because it
   * runs at every step: a load by a literal name is one check of the group's shape, where
   * `group[slot.key]` over many names is a generic lookup, and the whole step over a small model
   * costs about what these lookups do (BENCHMARKS.md, "Design choices").
   */
  readonly packValid: (group: Record<string, unknown>, out: Float64Array, offset: number) => boolean

  /** `options.betas[0]`: the name of slot `i` in messages. */
  #name(where: string, i: number): string {
    const slot = this.slots[i]
    return `${where}.${slot.key}${slot.index === undefined ? '' : `[${slot.index}]`}`
  }

  /** The index of `value` among the names slot `i` may hold; throws naming it otherwise. */
  #choice(slot: Slot, value: unknown, where: string, i: number): number {
    const index = typeof value === 'string' ? slot.choices.indexOf(value) : -1
    if (index >= 0) return index
    const names = slot.choices.map((name) => JSON.stringify(name)).join(', ')
    if (typeof value !== 'string')
      throw invalidType(`${this.#name(where, i)} must be one of ${names} or null, got ${describe(value)}`)
    const field = this.#name(where, i).replace(/^[^.]*\./, '')
    throw invalidValue(`invalid ${field}: ${JSON.stringify(value)} (expected ${slot.expected}) in ${where}`)
  }

  /** Writes a group's options into `out` at `offset`, checking their types. */
  pack(group: Record<string, unknown>, where: string, out: Float64Array, offset: number): void {
    // Runs at every step: names are built only for an error.
    for (let i = 0; i < this.slots.length; i++) {
      const slot = this.slots[i]
      let value = group[slot.key]
      if (slot.index !== undefined) {
        const tuple = value
        const arity = this.#arity[i]
        if (!Array.isArray(tuple) || tuple.length !== arity) {
          const of = this.slots.some((s) => s.key === slot.key && s.kind === 'number?') ? 'numbers or nulls' : 'numbers'
          throw invalidType(`${where}.${slot.key} must be an array of ${arity} ${of}, got ${describe(tuple)}`)
        }
        value = tuple[slot.index]
      }
      if (slot.kind === 'boolean') {
        if (typeof value !== 'boolean')
          throw invalidType(`${this.#name(where, i)} must be a boolean, got ${describe(value)}`)
        out[offset + i] = value ? 1 : 0
      } else if ((slot.kind === 'number?' || slot.kind === 'choice?') && value === null) {
        out[offset + i] = NaN
      } else if (slot.kind === 'choice?') {
        out[offset + i] = this.#choice(slot, value, where, i)
      } else {
        if (typeof value !== 'number') {
          throw invalidType(
            `${this.#name(where, i)} must be a number${slot.kind === 'number?' ? ' or null' : ''}, got ${describe(value)}`,
          )
        }
        // NaN is how null is packed: a NaN given here must not pass for null.
        if (slot.kind === 'number?' && Number.isNaN(value)) {
          throw outOfRange(
            `invalid ${this.#name(where, i).replace(/^[^.]*\./, '')}: NaN (expected ${slot.expected}) in ${where}`,
          )
        }
        out[offset + i] = value
      }
    }
  }
}

/**
 * The body of `Schema.packValid` for `slots`. Keys are the registry's option names (`\w+`, checked
 * when the slots are made), so they are safe as property names in source text.
 */
function compilePacker(slots: readonly Slot[]): Schema<object>['packValid'] {
  const lines: string[] = []
  const tuples = new Set<string>()
  slots.forEach((slot, i) => {
    if (!/^\w+$/.test(slot.key)) throw new Error(`option name ${JSON.stringify(slot.key)} is not a word`)
    let value = `group.${slot.key}`
    if (slot.index !== undefined) {
      if (!tuples.has(slot.key)) {
        tuples.add(slot.key)
        const arity = slots.filter((s) => s.key === slot.key).length
        lines.push(`const ${slot.key} = group.${slot.key}`)
        lines.push(`if (!Array.isArray(${slot.key}) || ${slot.key}.length !== ${arity}) return false`)
      }
      value = `${slot.key}[${slot.index}]`
    }
    lines.push(`const v${i} = ${value}`)
    const at = `out[offset + ${i}]`
    switch (slot.kind) {
      case 'number':
        lines.push(`if (typeof v${i} !== 'number') return false`, `${at} = v${i}`)
        break
      case 'number?':
        // NaN packs null, so a NaN given is refused (by `pack`).
        lines.push(
          `if (v${i} === null) ${at} = NaN`,
          `else if (typeof v${i} === 'number' && v${i} === v${i}) ${at} = v${i}`,
        )
        lines.push('else return false')
        break
      case 'boolean':
        lines.push(`if (typeof v${i} !== 'boolean') return false`, `${at} = v${i} ? 1 : 0`)
        break
      case 'choice?':
        lines.push(`if (v${i} === null) ${at} = NaN`, `else if (typeof v${i} !== 'string') return false`)
        lines.push(`else { const c = choices[${i}].indexOf(v${i}); if (c < 0) return false; ${at} = c }`)
        break
    }
  })
  lines.push('return true')
  try {
    const make = new Function('choices', `return function packValid(group, out, offset) {\n${lines.join('\n')}\n}`)
    return make(slots.map((slot) => slot.choices)) as Schema<object>['packValid']
  } catch {
    // Code generation refused (`node --disallow-code-generation-from-strings`, a CSP): every
    // group takes `pack`, which reads the same options, only more slowly.
    return () => false
  }
}

/** How many elements a state buffer of `layout` has for a parameter of `length` elements and `shape`. */
export function layoutShape(
  layout: string,
  length: number,
  shape: readonly number[] | undefined,
): number[] | undefined {
  const dims = shape ? [...shape] : [length]
  const factored = dims.length >= 2
  switch (layout) {
    case 'param':
      return dims
    case 'unfactored':
      return factored ? undefined : dims
    case 'rows':
      return factored ? [...dims.slice(0, -1), 1] : undefined
    case 'cols':
      return factored ? [...dims.slice(0, -2), 1, dims[dims.length - 1]] : undefined
    default:
      throw new Error(`unknown layout ${layout}`)
  }
}

const product = (dims: readonly number[]) => dims.reduce((a, b) => a * b, 1)

/**
 * Options PyTorch keeps in its param groups that say how it runs rather than what it computes;
 * `loadStateDict` accepts and ignores them so that a PyTorch state dict loads as it is.
 */
const PYTORCH_ONLY_OPTIONS = new Set(['foreach', 'fused', 'capturable', 'differentiable', 'initialLr'])

/** A parameter's state: `step`, then the optimizer's scalars and buffers by PyTorch's names in camelCase. */
export type ParamState = { step: number } & Record<string, FloatArray | number>

/**
 * The shape of `stateDict()`: PyTorch's `state_dict()` with camelCase names. `State` is the
 * optimizer's per-parameter state (`AdamState`, ...), as `getState()` returns it.
 */
export interface StateDict<Options = Record<string, unknown>, State extends ParamState = ParamState> {
  state: Record<number, State>
  paramGroups: Array<Required<Options> & { params: number[] }>
  /**
   * The shape of each state buffer, as PyTorch's state_dict has it, where the parameter has a
   * `shape` (the buffers themselves are flat): `shapes[id][name]`. Checkpoints write tensors with
   * these shapes; without it, buffers are written flat.
   */
  shapes?: Record<number, Record<string, number[]>>
}

function copyOption(value: unknown): unknown {
  return Array.isArray(value) ? [...value] : value
}

/** Whether `grad` is given as a sparse gradient: an object with `indices` and `values`, not an array. */
function isSparseGrad(grad: unknown): boolean {
  return typeof grad === 'object' && grad !== null && !ArrayBuffer.isView(grad) && 'indices' in grad && 'values' in grad
}

/** A parameter as it was read when it joined: its arrays, each read once. */
interface ParamSnapshot {
  data: FloatArray
  /** The dense gradient, or a sparse gradient's values; null if it has none. */
  grad: FloatArray | null
  sparse: boolean
  /** A copy of its shape (undefined: flat). */
  shape: number[] | undefined
}

/**
 * Checks the gradient of a parameter joining an optimizer of sparse gradients, or a sparse gradient
 * joining another, as a step does and in its words; a step checks indices and lengths.
 */
function checkSparseGrad(grad: unknown, data: FloatArray, where: string, info: AlgorithmInfo): FloatArray {
  if (!info.sparse) {
    const names = algorithms().flatMap((a) => (a.sparse ? [a.name] : []))
    throw invalidType(
      `${where}.grad is a sparse gradient { indices, values }, which ${info.name} does not take (only ${names.join(' and ')} ${names.length === 1 ? 'does' : 'do'}): give a ${typedArrayTag(data)} like its data, or null`,
    )
  }
  if (isFloatArray(grad)) {
    throw invalidType(
      `${where}.grad is a ${typedArrayTag(grad)}: ${info.name} does not support dense gradients, please consider Adam instead (or give a row-sparse gradient { indices, values })`,
    )
  }
  if (typeof grad !== 'object' || grad === null)
    throw invalidType(`${where}.grad must be a row-sparse gradient { indices, values }, or null, got ${describe(grad)}`)
  const { indices, values } = grad as Record<string, unknown>
  const indexTag = typedArrayTag(indices)
  if (indexTag !== 'Int32Array' && indexTag !== 'Uint32Array')
    throw invalidType(`${where}.grad.indices must be an Int32Array or Uint32Array, got ${describe(indices)}`)
  if (!isFloatArray(values) || typedArrayTag(values) !== typedArrayTag(data))
    throw invalidType(`${where}.grad.values must be a ${typedArrayTag(data)} like its data, got ${describe(values)}`)
  checkUsable(indices as Int32Array, `${where}.grad.indices`)
  checkUsable(values, `${where}.grad.values`)
  return values
}

/**
 * Why a parameter of `shape` (undefined: flat, `length` elements) cannot join an optimizer that
 * takes matrices only; in the binding's words (src/js.rs, `not_a_matrix`).
 */
function notAMatrix(where: string, info: AlgorithmInfo, shape: readonly number[] | undefined, length: number): string {
  const has = shape ? `shape [${shape.join(',')}]` : `no shape (flat, ${length} elements)`
  return `${where} has ${has}, but ${info.name} takes matrices only (a shape [rows, cols]): optimize it with another optimizer, such as AdamW`
}

/** Checks a parameter joining an optimizer, reading each of its properties once. */
function checkParameter(param: unknown, where: string, info: AlgorithmInfo): ParamSnapshot {
  if (typeof param !== 'object' || param === null) {
    throw invalidType(`${where} must be an object with data and grad, got ${describe(param)}`)
  }
  const { data, grad } = param as Record<string, unknown>
  if (!isFloatArray(data))
    throw invalidType(`${where}.data must be a Float32Array or Float64Array, got ${describe(data)}`)
  checkUsable(data, `${where}.data`)
  const { shape: given } = param as { shape?: unknown }
  const shape = snapshotArray(given) ?? given
  if (shape !== undefined) {
    if (!Array.isArray(shape) || !shape.every((d) => Number.isSafeInteger(d) && d >= 0)) {
      throw invalidType(
        `${where}.shape must be an array of whole numbers >= 0, got ${Array.isArray(shape) ? JSON.stringify(shape) : describe(shape)}`,
      )
    }
    if (product(shape) !== lengthOf(data)) {
      throw outOfRange(
        `${where}.shape ${JSON.stringify(shape)} holds ${product(shape)} elements, but its data has length ${lengthOf(data)}`,
      )
    }
  }
  const copied = shape as number[] | undefined
  if (info.matrices && copied?.length !== 2) throw invalidValue(notAMatrix(where, info, copied, lengthOf(data)))
  const snapshot = { data, grad: null, sparse: false, shape: copied }
  if (grad === null || grad === undefined) return snapshot
  if (info.sparse || isSparseGrad(grad)) {
    return { ...snapshot, grad: checkSparseGrad(grad, data, where, info), sparse: true }
  }
  if (!isFloatArray(grad) || typedArrayTag(grad) !== typedArrayTag(data)) {
    throw invalidType(`${where}.grad must be a ${typedArrayTag(data)} like its data, or null, got ${describe(grad)}`)
  }
  checkUsable(grad, `${where}.grad`)
  if (lengthOf(grad) !== lengthOf(data))
    throw outOfRange(`${where}.grad has length ${lengthOf(grad)}, expected ${lengthOf(data)} like its data`)
  return { ...snapshot, grad }
}

/**
 * Fails if any parameter's data shares memory with another parameter's data or with any grad, with
 * the check and the words of the step itself (grads may share memory with each other: they are only
 * read). `labels[i]` names `params[i]`.
 */
function checkDisjoint(params: readonly ParamSnapshot[], labels: readonly string[]): void {
  // Of a sparse gradient, its values (a step checks its indices too).
  native.checkDisjoint(
    params.flatMap((param) => [param.data, param.grad]),
    params.flatMap(() => [true, false]),
    labels.flatMap((label, i) => [`${label}.data`, `${label}.grad${params[i].sparse ? '.values' : ''}`]),
  )
}

/** How `step()` and `stepAsync()` treat gradients that hold NaN or ±∞. */
export interface StepOptions {
  /**
   * Skip the whole step if any gradient element is NaN or infinite: every gradient is checked
   * before anything is written, and then nothing changes (parameters, state, step counts).
   * @default false (as PyTorch: the update goes ahead and the NaN or ∞ propagates)
   */
  skipNonFinite?: boolean
}

/**
 * Whether `object[key] = value` would succeed: not frozen or sealed against a new property, not a
 * read-only property, not a getter without a setter, on the object or its prototypes.
 */
function canAssign(object: object, key: string): boolean {
  for (let o: object | null = object; o !== null; o = Object.getPrototypeOf(o)) {
    const descriptor = Object.getOwnPropertyDescriptor(o, key)
    if (!descriptor) continue
    if ('value' in descriptor) return descriptor.writable === true && (o === object || Object.isExtensible(object))
    return descriptor.set !== undefined
  }
  return Object.isExtensible(object)
}

/** `StepReport.Finite`, read once. */
const FINITE = native.StepReport.Finite

/** `{ skipNonFinite }` of `step` or `stepAsync` (`method`), checked: whether to skip a non-finite step. */
export function stepOptions(options: unknown, method: string): boolean {
  if (options === undefined) return false
  if (typeof options !== 'object' || options === null || Array.isArray(options)) {
    throw invalidType(`${method}: options must be an object such as { skipNonFinite: true }, got ${describe(options)}`)
  }
  for (const key of Object.keys(options)) {
    if (key !== 'skipNonFinite')
      throw invalidValue(`${method}: options.${key} is not an option of ${method}() (expected skipNonFinite)`)
  }
  const { skipNonFinite = false } = options as { skipNonFinite?: unknown }
  if (typeof skipNonFinite !== 'boolean')
    throw invalidType(`${method}: options.skipNonFinite must be a boolean, got ${describe(skipNonFinite)}`)
  return skipNonFinite
}

/**
 * What every optimizer shares: parameter groups whose options stay live, and a step that
 * updates all parameters in one native call.
 */
export abstract class Optimizer<
  Options extends object,
  Grad extends GradKind = FloatArray,
  State extends ParamState = ParamState,
> {
  /** The groups, each with every option filled in; change an option and the next step uses it. */
  readonly paramGroups: Array<ParamGroup<Options, Grad>> = []
  /** The options a group gets when it does not set them. */
  readonly defaults: Readonly<Required<Options>>

  readonly #schema: Schema<Options>
  readonly #native: InstanceType<typeof native.NativeOptimizer>
  #params: Parameter<Grad>[] = []
  /** Each parameter's shape as it joined (undefined: flat), by position over all groups. */
  #shapes: Array<number[] | undefined> = []
  #groupOf = new Uint32Array(0)
  #packed = new Float64Array(0)
  readonly #arrays = new StepArrays()
  /** The public method running now, if any (see `#enter`). */
  #running: string | undefined
  /** The constructor's `stateDtype`, if given. */
  readonly #stateDtype: StateDtype | undefined

  protected constructor(schema: Schema<Options>, params: Params<Options, Grad>, options: OptionsInput<Options> = {}) {
    this.#schema = schema
    this.#native = new native.NativeOptimizer(schema.algorithm)
    // Every input is read once into a snapshot, checked, and only the snapshot is used.
    const list = snapshotArray(params)
    if (!list)
      throw invalidType(`params must be an array of parameters or of parameter groups, got ${describe(params)}`)
    if (list.length === 0) throw invalidValue('params is empty: the optimizer got an empty parameter list')
    const given = this.#snapshotOptions(options, 'options', false, true)
    if ('stateDtype' in given) {
      const { stateDtype } = given
      delete given.stateDtype
      if (typeof stateDtype !== 'string')
        throw invalidType(`options.stateDtype must be "float32" or "bfloat16", got ${describe(stateDtype)}`)
      this.#native.setStateDtype(stateDtype)
      this.#stateDtype = stateDtype as StateDtype
    }
    if ('stateRounding' in given) {
      const { stateRounding } = given
      delete given.stateRounding
      if (typeof stateRounding !== 'string')
        throw invalidType(`options.stateRounding must be "nearest" or "stochastic", got ${describe(stateRounding)}`)
      this.#native.setStateRounding(stateRounding)
    }
    this.defaults = Object.freeze({ ...schema.defaults, ...given }) as Readonly<Required<Options>>
    this.#pack([this.defaults as Record<string, unknown>], 'options', true)
    const first = list[0]
    const isGroup = typeof first === 'object' && first !== null && 'params' in first
    this.#addGroups(isGroup ? list : [{ params: list }])
  }

  /**
   * The native optimizer that holds the state, for a subclass with native methods of its own
   * (lib/schedule-free.ts); it refuses them while a `stepAsync()` is in flight.
   */
  protected get nativeOptimizer(): InstanceType<typeof native.NativeOptimizer> {
    return this.#native
  }

  /**
   * Runs `body` as a subclass's public method `what`, guarded as this class's own methods are:
   * refused while a `stepAsync()` is in flight, and when called from JavaScript that another call
   * on this optimizer runs.
   */
  protected guarded<T>(what: string, body: () => T): T {
    return this.#enter(what, body)
  }

  /** Adds a group of parameters, as PyTorch's `add_param_group`. */
  addParamGroup(group: { params: readonly Parameter<Grad>[] } & OptionsInput<Options>): void {
    this.#enter('addParamGroup()', () => this.#addGroups([group]))
  }

  /**
   * Runs `body` as the public method `what`: refused while a `stepAsync()` is in flight, and when
   * called from JavaScript that another call on this optimizer runs (a getter on a parameter, an
   * option or a state dict), which would otherwise see or change the optimizer half way.
   */
  #enter<T>(what: string, body: () => T, nativeChecksBusy = false): T {
    // First: asking the native side whether it is busy would itself collide with the running call.
    if (this.#running !== undefined) throw reentered(what, this.#running)
    // A step's native call refuses a step in flight itself (and asking costs a Node-API call).
    if (!nativeChecksBusy && this.#native.busy) throw busyError(what)
    this.#running = what
    try {
      return body()
    } finally {
      this.#running = undefined
    }
  }

  /**
   * Updates every parameter whose `grad` is not null, in one native call. Everything is checked
   * first (options, array types and lengths, shared or detached memory): on error nothing changes.
   *
   * Returns whether every gradient element was finite. A gradient holding NaN or ±∞ does not stop
   * the step, as in PyTorch: the update goes ahead and the NaN or ∞ reaches the parameters and the
   * state (and `step()` returns false). With `{ skipNonFinite: true }` every gradient is checked
   * before anything is written, and if one is not finite the whole step is skipped: no parameter,
   * state or step count changes, and `step()` returns false. The check in the default mode costs
   * no memory traffic (each piece of a gradient is scanned while the update has it in cache); the
   * skipping mode reads the gradients once more.
   */
  step(options?: StepOptions): boolean
  /**
   * As PyTorch's `step(closure)`: calls `closure` once (it typically zeroes the gradients, runs
   * the forward and backward pass and returns the loss; it may call `zeroGrad`), then steps as
   * `step(options)` does, and returns what `closure` returned. `options` are checked before it
   * runs. If it throws, the error comes back as `ERR_CLOSURE_FAILED` (the cause is what it
   * threw) and nothing is updated; a closure that returns a promise is refused
   * (`ERR_INVALID_RETURN_VALUE`), since the step runs synchronously.
   */
  step<Loss>(closure: () => Loss, options?: StepOptions): Loss
  step(first?: StepOptions | (() => unknown), second?: StepOptions): unknown {
    if (typeof first === 'function') return this.#stepAfter(first, second)
    const options = first
    // `#enter`'s guard, written out: in a training loop the work between two steps evicts the
    // caches, and each function, closure and lookup on the way to the native call then costs a
    // trip to memory, so the step goes straight there (BENCHMARKS.md, "Design choices").
    if (this.#running !== undefined) throw reentered('step()', this.#running)
    if (second !== undefined)
      throw invalidType(
        `step: a second argument follows a closure only, got ${describe(second)} after ${describe(first)}`,
      )
    this.#running = 'step()'
    try {
      const skipNonFinite = options === undefined ? false : stepOptions(options, 'step')
      const groups = this.paramGroups as Array<Record<string, unknown>>
      this.#pack(groups, 'paramGroups', false)
      const report = this.#arrays.step(this.#native, this.#params, this.#groupOf, this.#packed, skipNonFinite)
      if (this.#schema.groupState.length !== 0) this.#takeGroupState(groups, this.#packed)
      return report === FINITE
    } finally {
      this.#running = undefined
    }
  }

  /** `step(closure, options)`: the closure runs outside the step's guard, so it may call `zeroGrad`. */
  #stepAfter(closure: () => unknown, options: StepOptions | undefined): unknown {
    if (this.#running !== undefined) throw reentered('step()', this.#running)
    if (options !== undefined) stepOptions(options, 'step')
    const loss = callClosure(`${this.#schema.algorithm}.step`, closure)
    this.step(options)
    return loss
  }

  /**
   * Copies into `groups` the group state a step advanced (`Schema.groupState`), which the step
   * wrote into the packed options it read; a skipped step left them as they were packed.
   */
  #takeGroupState(groups: Array<Record<string, unknown>>, packed: Float64Array): void {
    const state = this.#schema.groupState
    if (state.length === 0) return
    const width = this.#schema.slots.length
    for (let g = 0; g < groups.length; g++) for (const { key, slot } of state) groups[g][key] = packed[g * width + slot]
  }

  /**
   * `step()` without holding the event loop: the same checks and the same numbers, bit for bit,
   * in a promise that resolves once every parameter is updated (and rejects, having changed
   * nothing, on the input `step()` would throw on). Until it settles, the optimizer refuses
   * `step`, `stepAsync`, `zeroGrad`, `addParamGroup`, `getState`, `stateDict`, `loadStateDict`
   * and Schedule-Free's `train` and `eval` with `ERR_INVALID_STATE`.
   *
   * When every `data` and `grad` is on a SharedArrayBuffer, the update runs on a worker thread
   * and the event loop is free throughout. Otherwise it runs in slices of about half a
   * millisecond (each runs pieces of the update until 500 µs have passed), the event loop running
   * between them. Either way the arrays are updated in place, never copied, and kept alive until
   * the promise settles. Until then, do not write the arrays (the step reads `grad` and writes
   * `data` as it goes); an array replaced with `p.data = ...` is not the one updated.
   *
   * Do not transfer or shrink them either. This is the one exception to a step's all-or-none:
   * an array transferred or shrunk while the step runs in slices stops it at the next slice that
   * would touch the array, and the promise rejects with `ERR_INVALID_STATE`. Nothing crashes and
   * no freed memory is written, but what the earlier slices wrote stays: every stepped
   * parameter's step count has advanced, and the elements before the point where the step
   * stopped (whole parameters, and possibly the first part of one) hold their new values and
   * state, the rest their old ones.
   *
   * Resolves to whether every gradient element was finite, and takes `{ skipNonFinite }`, as
   * `step()` does. A step of sparse gradients (SparseAdam's) costs what its rows cost, and runs
   * whole when called.
   */
  stepAsync(options?: StepOptions): Promise<boolean> {
    try {
      // The parameters are read (and their getters run) before the first await.
      return this.#enter(
        'stepAsync()',
        () => {
          const skipNonFinite = stepOptions(options, 'stepAsync')
          const groups = this.paramGroups as Array<Record<string, unknown>>
          this.#pack(groups, 'paramGroups', false)
          // The packed options stay this step's until it settles: every call that would pack
          // again is refused meanwhile.
          const packed = this.#packed
          return stepAsync(this.#native, this.#params, this.#groupOf, packed, skipNonFinite).then((finite) => {
            this.#takeGroupState(groups, packed)
            return finite
          })
        },
        true,
      )
    } catch (error) {
      return Promise.reject(error)
    }
  }

  /**
   * Clears gradients: sets every `grad` to null (PyTorch's default), or fills them with zeros (a
   * sparse gradient is left naming no rows, as PyTorch's `zero_()` leaves it).
   */
  zeroGrad(setToNone = true): void {
    this.#enter('zeroGrad()', () => {
      if (typeof setToNone !== 'boolean')
        throw invalidType(`zeroGrad: setToNone must be a boolean, got ${describe(setToNone)}`)
      // Everything is read and checked first; only then is anything cleared.
      const plan = this.#params.map((param, i) => {
        const where = this.#label(i)
        const grad: unknown = param.grad
        if (grad === null || grad === undefined) return { param, grad, write: false, next: grad }
        if (!setToNone && isFloatArray(grad)) {
          checkUsable(grad, `${where}.grad`)
          return { param, grad, write: false, next: grad }
        }
        // As PyTorch's zero_() of a sparse gradient: no rows (a step then counts, and changes nothing else).
        let next: unknown = null
        if (!setToNone) {
          const { indices, values } = grad as Record<string, unknown>
          if (typedArrayTag(indices) === undefined || !isFloatArray(values))
            throw invalidType(
              `${where}.grad must be a ${typedArrayTag(param.data) ?? 'typed array'} or a sparse gradient, got ${describe(grad)}`,
            )
          checkUsable(indices as Int32Array, `${where}.grad.indices`)
          checkUsable(values, `${where}.grad.values`)
          next = { indices: (indices as Int32Array).subarray(0, 0), values: values.subarray(0, 0) }
        }
        if (!canAssign(param, 'grad'))
          throw invalidValue(`${where}.grad cannot be assigned (the parameter is frozen, or its grad is read-only)`)
        return { param, grad, write: true, next }
      })
      for (const step of plan) if (!step.write && isFloatArray(step.grad)) step.grad.fill(0)
      const done: typeof plan = []
      try {
        for (const step of plan) {
          if (!step.write) continue
          if (!Reflect.set(step.param, 'grad', step.next))
            throw invalidValue(`${this.#label(this.#params.indexOf(step.param))}.grad cannot be assigned`)
          done.push(step)
        }
      } catch (error) {
        // A setter of the caller's refused: put back what was already cleared.
        for (const step of done.reverse()) Reflect.set(step.param, 'grad', step.grad)
        throw error
      }
    })
  }

  /** `paramGroups[g].params[i]`: the name of parameter `index` (over all groups) in messages. */
  #label(index: number): string {
    const group = this.#groupOf[index]
    return `paramGroups[${group}].params[${index - this.#groupOf.indexOf(group)}]`
  }

  /**
   * A copy of a parameter's state, as PyTorch's `opt.state[p]`: its step count, scalars and
   * buffers (`expAvg`, ...), or undefined before its first step.
   */
  getState(param: Parameter<Grad>): State | undefined {
    return this.#enter('getState()', () => {
      const index = this.#params.indexOf(param)
      if (index < 0) throw invalidValue('getState: the parameter does not belong to this optimizer')
      return this.#exportState(index) as State | undefined
    })
  }

  /**
   * The optimizer's state as a plain object shaped like PyTorch's `state_dict()`: per-parameter
   * state (copies) keyed by the parameter's position across all groups, and each group's options
   * with the positions of its parameters.
   */
  stateDict(): StateDict<Options, State> {
    return this.#enter('stateDict()', () => this.#stateDict())
  }

  #stateDict(): StateDict<Options, State> {
    const state: Record<number, State> = {}
    const shapes: Record<number, Record<string, number[]>> = {}
    this.#params.forEach((_, index) => {
      const entry = this.#exportState(index)
      if (!entry) return
      state[index] = entry as State
      const shape = this.#shapes[index]
      if (!shape) return
      shapes[index] = {}
      for (const { name, layout } of this.#schema.info.buffers) {
        // The shape's product is the data's length: `data` is not read again (a getter could run).
        const dims = layoutShape(layout, product(shape), shape)
        if (dims && name in entry) shapes[index][name] = dims
      }
    })
    let next = 0
    const paramGroups = this.paramGroups.map((group) => {
      const options = Object.fromEntries(
        this.#schema.keys.map((key) => [key, copyOption((group as Record<string, unknown>)[key])]),
      )
      return { ...options, params: group.params.map(() => next++) } as Required<Options> & { params: number[] }
    })
    return Object.keys(shapes).length > 0 ? { state, paramGroups, shapes } : { state, paramGroups }
  }

  /**
   * Restores a `stateDict()` (this optimizer's, or one converted from PyTorch's): the groups'
   * options and every parameter's state. Everything is checked first — group and parameter
   * counts, option names, types and ranges, state names, dtypes and lengths — and on error
   * nothing changes.
   */
  loadStateDict(stateDict: StateDict<Options>): void {
    this.#enter('loadStateDict()', () => this.#loadStateDict(stateDict))
  }

  #loadStateDict(stateDict: unknown): void {
    // Read once, whole, into a snapshot; checked; then only the snapshot is used.
    const { dict, paramGroups } = snapshotStateDict(stateDict, this.paramGroups.length)
    const width = this.#schema.slots.length
    const packed = new Float64Array(paramGroups.length * width)
    const indexOf = new Map<number, number>()
    let first = 0
    const groupOptions = paramGroups.map((group: unknown, g) => {
      const where = `stateDict.paramGroups[${g}]`
      const { params: given, ...options } = snapshotObject(group, where)
      const params = snapshotArray(given)
      const size = this.paramGroups[g].params.length
      if (!params || params.length !== size) {
        throw invalidValue(
          `${where}.params must list ${size} parameters like the optimizer's group, got ${describe(given)}${params ? ` of ${params.length}` : ''}`,
        )
      }
      params.forEach((id: unknown, k) => {
        if (!Number.isSafeInteger(id) || indexOf.has(id as number))
          throw invalidValue(`${where}.params[${k}] must be a distinct whole number, got ${String(id)}`)
        indexOf.set(id as number, first + k)
      })
      first += size
      for (const key of Object.keys(options)) if (PYTORCH_ONLY_OPTIONS.has(key)) delete options[key]
      // PyTorch's AdamW lists decoupled_weight_decay: true, which AdamW here implies.
      if (options.decoupledWeightDecay === true && !this.#schema.keys.includes('decoupledWeightDecay'))
        delete options.decoupledWeightDecay
      const values = this.#snapshotOptions(options, where, false)
      for (const key of this.#schema.keys) {
        if (!(key in values)) throw invalidValue(`${where}.${key} is missing`)
      }
      this.#schema.pack(values, where, packed, g * width)
      this.#native.validateOptions(where, packed.subarray(g * width, (g + 1) * width))
      return values
    })

    const state = snapshotObject(dict.state, 'stateDict.state')
    const names = this.#native.stateNames()
    const entries = Object.entries(state).map(([id, given]) => {
      const where = `stateDict.state[${id}]`
      const index = indexOf.get(Number(id))
      if (index === undefined) throw invalidValue(`${where} is for a parameter no group lists`)
      const entry = snapshotObject(given, where)
      // The parameter's data as this optimizer's state was made for: its dtype and length.
      const data = this.#params[index].data
      if (!isFloatArray(data))
        throw invalidType(`${this.#label(index)}.data must be a Float32Array or Float64Array, got ${describe(data)}`)
      const dataTag = typedArrayTag(data)!
      const dataLength = lengthOf(data)
      for (const key of Object.keys(entry)) {
        if (key !== 'step' && !names.scalars.includes(key) && !names.buffers.includes(key)) {
          throw invalidValue(
            `${where}.${key} is not state of ${this.#schema.algorithm} (expected step${[...names.scalars, ...names.buffers].map((n) => `, ${n}`).join('')})`,
          )
        }
      }
      // PyTorch's SGD keeps no step count; elsewhere it is always there.
      const step = entry.step ?? 0
      if (typeof step !== 'number') throw invalidType(`${where}.step must be a number, got ${describe(step)}`)
      // As the native check words it: every count up to 2^53 - 1 loads, and a step refuses to pass it.
      if (!Number.isSafeInteger(step) || step < 0)
        throw outOfRange(`invalid state[${index}].step: ${step} (expected a whole number from 0 to 2^53 - 1)`)
      const scalars = names.scalars.map((name) => {
        const value = entry[name]
        if (typeof value !== 'number') throw invalidType(`${where}.${name} must be a number, got ${describe(value)}`)
        return value
      })
      const buffers = this.#schema.info.buffers.map(({ name, layout }) => {
        let value = entry[name]
        if (value === undefined || value === null) return null
        // A 0-D buffer reads back from safetensors as a number, as a 0-D step does.
        if (typeof value === 'number' && this.#shapes[index]?.length === 0) {
          value = dataTag === 'Float32Array' ? Float32Array.of(value) : Float64Array.of(value)
        }
        // float32 and bfloat16 state load into either kind of optimizer, converted (see StateDtypeOptions).
        const tag = typedArrayTag(value)
        const bf16 = dataTag === 'Float32Array' && this.#schema.info.bf16State
        if (!(tag === dataTag || (tag === 'Uint16Array' && bf16))) {
          const bits = this.#stateDtype === 'bfloat16' ? ' or a Uint16Array of bfloat16 bits' : ''
          throw invalidType(
            `${where}.${name} must be a ${dataTag} like the parameter's data${bits}, got ${describe(value)}`,
          )
        }
        const array = value as FloatArray | Uint16Array
        checkUsable(array, `${where}.${name}`)
        const dims = layoutShape(layout, dataLength, this.#shapes[index])
        if (!dims)
          throw invalidValue(
            `${where}.${name} is not state of a parameter of shape ${JSON.stringify(this.#shapes[index] ?? [dataLength])}`,
          )
        if (lengthOf(array) !== product(dims)) {
          const like =
            layout === 'param' || layout === 'unfactored'
              ? "like the parameter's data"
              : `for its shape ${JSON.stringify(dims)}`
          throw outOfRange(`${where}.${name} has length ${lengthOf(array)}, expected ${product(dims)} ${like}`)
        }
        return array
      })
      const dtype = dataTag === 'Float32Array' ? 'float32' : 'float64'
      return { index, step, dtype, length: dataLength, scalars, buffers }
    })
    this.#native.importStates(this.#params.length, entries)
    groupOptions.forEach((values, g) => {
      for (const key of this.#schema.keys)
        (this.paramGroups[g] as Record<string, unknown>)[key] = copyOption(values[key])
    })
  }

  #exportState(index: number): ParamState | undefined {
    const entry = this.#native.exportState(index)
    if (!entry) return undefined
    const { scalars, buffers } = this.#schema.info
    const state: ParamState = { step: entry.step }
    scalars.forEach((name, i) => (state[name] = entry.scalars[i]))
    // The length the native state was made for: reading `data` again could run a getter.
    const length = entry.length
    buffers.forEach(({ name, layout }, i) => {
      const buffer = entry.buffers[i]
      // A layout the parameter's shape has no buffer for (Adafactor's rowVar of a vector) is not state.
      // bfloat16 state comes as a Uint16Array, typed as float32 state is (see StateDtypeOptions).
      if (buffer && layoutShape(layout, length, this.#shapes[index])) state[name] = buffer as FloatArray
    })
    return state
  }

  /**
   * The options of `given` (own enumerable properties, each read once; arrays copied), checked
   * to be options of this optimizer (and `params`, with `allowParams`, left as read).
   */
  #snapshotOptions(given: unknown, where: string, allowParams: boolean, constructing = false): Record<string, unknown> {
    const options = snapshotObject(given, where)
    for (const key of Object.keys(options)) {
      if (
        !this.#schema.keys.includes(key) &&
        !(allowParams && key === 'params') &&
        !(constructing && (key === 'stateDtype' || key === 'stateRounding'))
      ) {
        throw invalidValue(
          `${where}.${key} is not an option of ${this.#schema.algorithm} (expected one of ${this.#schema.keys.join(', ')})`,
        )
      }
      if (key !== 'params') options[key] = snapshotValue(options[key])
    }
    return options
  }

  /** Validates every new group fully, from a snapshot of it, before adding any of them. */
  #addGroups(groups: readonly unknown[]): void {
    const seen = new Set<unknown>()
    // The arrays the parameters already in the optimizer hold now, for the overlap check.
    const current: ParamSnapshot[] = this.#params.map((param) => {
      const { data, grad } = param as { data: unknown; grad: unknown }
      const values = isFloatArray(grad) || !grad ? grad : (grad as { values?: unknown }).values
      seen.add(param).add(data)
      return {
        data: data as FloatArray,
        grad: isFloatArray(values) ? values : null,
        sparse: !isFloatArray(grad) && !!grad,
        shape: undefined,
      }
    })
    const added: Array<ParamGroup<Options, Grad>> = []
    const snapshots: ParamSnapshot[] = []
    groups.forEach((group, g) => {
      const where = `paramGroups[${this.paramGroups.length + g}]`
      const options = this.#snapshotOptions(group, where, true)
      const params = snapshotArray(options.params)
      if (!params) throw invalidType(`${where}.params must be an array of parameters, got ${describe(options.params)}`)
      params.forEach((param, i) => {
        const snapshot = checkParameter(param, `${where}.params[${i}]`, this.#schema.info)
        if (this.#stateDtype !== undefined && typedArrayTag(snapshot.data) === 'Float64Array') {
          throw invalidType(
            `${where}.params[${i}].data is a Float64Array, but the optimizer was made with stateDtype "${this.#stateDtype}", which is for float32 parameters only`,
          )
        }
        if (seen.has(param) || seen.has(snapshot.data)) {
          throw invalidValue(
            `${where}.params[${i}] appears more than once; every parameter must be in exactly one group, once`,
          )
        }
        seen.add(param).add(snapshot.data)
        snapshots.push(snapshot)
      })
      const complete = { ...this.defaults, ...options, params: Object.freeze(params) }
      for (const [key, value] of Object.entries(complete)) {
        if (Array.isArray(value) && key !== 'params') (complete as Record<string, unknown>)[key] = [...value]
      }
      added.push(Object.seal(complete) as unknown as ParamGroup<Options, Grad>)
    })
    const all = [...this.paramGroups, ...added]
    checkDisjoint(
      [...current, ...snapshots],
      all.flatMap((group, g) => group.params.map((_, i) => `paramGroups[${g}].params[${i}]`)),
    )
    this.#pack(all as Array<Record<string, unknown>>, 'paramGroups', true)
    const allShapes = [...this.#shapes, ...snapshots.map((snapshot) => snapshot.shape)]
    if (allShapes.some((shape) => shape !== undefined)) this.#native.setShapes(allShapes.map((shape) => shape ?? null))
    this.paramGroups.push(...added)
    this.#shapes = allShapes
    this.#params = this.paramGroups.flatMap((group) => [...group.params])
    this.#groupOf = Uint32Array.from(this.paramGroups.flatMap((group, g) => group.params.map(() => g)))
  }

  /**
   * Packs each group's options into `#packed` (reallocated when the group count changes),
   * checking their types; with `validate`, also their ranges, which `step` leaves to the core.
   */
  #pack(groups: Array<Record<string, unknown>>, where: string, validate: boolean): void {
    const width = this.#schema.slots.length
    if (this.#packed.length !== groups.length * width) this.#packed = new Float64Array(groups.length * width)
    for (let g = 0; g < groups.length; g++) {
      if (!validate && this.#schema.packValid(groups[g], this.#packed, g * width)) continue
      const label = where === 'options' ? where : `${where}[${g}]`
      this.#schema.pack(groups[g], label, this.#packed, g * width)
      if (validate) this.#native.validateOptions(label, this.#packed.subarray(g * width, (g + 1) * width))
    }
  }
}
