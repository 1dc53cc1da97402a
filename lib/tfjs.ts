// `fastoptim/tfjs`: fastoptim's optimizers as TensorFlow.js optimizers. A `FastoptimOptimizer` is
// a `tf.Optimizer` (so `model.compile({ optimizer })`, `model.fit` and `optimizer.minimize` take
// it) that keeps one fastoptim optimizer over Float32Array mirrors of the tf variables it updates,
// and saves and restores its whole state through `getWeights`/`setWeights`, as tfjs's own
// optimizers do, so that `model.save({ includeOptimizer: true })` and loading resume exactly.
//
// What a step copies, on tfjs's cpu backend (the one every Node install has):
// - gradients: none. `dataSync()` of a float32 tensor returns the backend's own Float32Array,
//   which the step reads in place as the parameter's `grad`.
// - the update: fastoptim's step, in place on the mirrors (the parameters and the state).
// - writing back: one copy of each updated variable. `tf.tensor(values)` keeps the array it is
//   given, and `variable.assign(t)` adopts `t`'s data, so handing tfjs the mirror itself would make
//   the variable's storage the mirror: the next step would then change, in place, every tensor
//   sharing that data (clones) and every array `dataSync()` returned for it, where tfjs promises
//   values that do not change. tfjs gets a fresh copy of the mirror instead.
// On the wasm backend `tf.tensor` copies into the wasm heap and `dataSync()` copies out of it,
// so there is one copy each way and the mirror itself is handed over. Other backends (webgl,
// tfjs-node's) get a copy, as the cpu backend does: they may keep the array they are given until
// they upload it.
import * as tf from '@tensorflow/tfjs-core'

import { describe, invalidState, invalidType, invalidValue, outOfRange } from './errors'
import * as facade from './index'
import {
  algorithms,
  Optimizer,
  Schema,
  type AlgorithmInfo,
  type OptionsInput,
  type Parameter,
  type ParamState,
  type StateDict,
} from './optimizer'

/** tfjs's `{ name, tensor }`, which its package root does not export. */
export type NamedTensor = Awaited<ReturnType<tf.Optimizer['getWeights']>>[number]

type Classes = typeof facade
type OptionsOfClass<C> = C extends { readonly schema: Schema<infer O> } ? O : never

/** Each optimizer's options, by its registry name (`Adam`, `AdamW`, ...), as fastoptim's classes declare them. */
export type OptionsByName = {
  [K in keyof Classes as [OptionsOfClass<Classes[K]>] extends [never] ? never : K]: OptionsOfClass<Classes[K]>
}

/** A registry name fastoptim's classes know: `'SGD' | 'Adam' | ...`. */
export type AlgorithmName = keyof OptionsByName & string

type Lower = { [K in AlgorithmName as Lowercase<K>]: OptionsByName[K] }

/** The options of the optimizer named `N`, in any case (`'adamw'`, `'AdamW'`). */
export type OptionsOf<N extends string> = N extends AlgorithmName
  ? OptionsByName[N]
  : Lowercase<N> extends keyof Lower
    ? Lower[Lowercase<N>]
    : Record<string, unknown>

/** Makes a tf optimizer running fastoptim's optimizer of that name with `options`. */
export type Factory<Options extends object> = (options?: OptionsInput<Options>) => FastoptimOptimizer<Options>

/** A factory per registry optimizer, by its name lower-cased, as `tf.train` has them. */
export type Factories = { readonly [K in keyof Lower]: Factory<Lower[K]> }

type Inner = Optimizer<Record<string, unknown>>
type InnerClass = new (params: Parameter[], options?: Record<string, unknown>) => Inner

/**
 * The registry's entry for `name` (matched exactly, or else ignoring case) and fastoptim's class
 * for it: the facade's own (which may add to a step, as Schedule-Free's advance their group
 * state), or, for a registry optimizer the facade has no class for yet, the generic one.
 */
function resolve(name: unknown): { info: AlgorithmInfo; Class: InnerClass } {
  if (typeof name !== 'string') throw invalidType(`the optimizer's name must be a string, got ${describe(name)}`)
  const found =
    algorithms().find((a) => a.name === name) ?? algorithms().find((a) => a.name.toLowerCase() === name.toLowerCase())
  // An unknown name throws here, with the registry's own message (which lists its names).
  const schema = new Schema<Record<string, unknown>>(found?.name ?? name)
  const info = schema.info
  const Class = (facade as unknown as Record<string, unknown>)[info.name]
  if (typeof Class === 'function' && 'schema' in Class) return { info, Class: Class as unknown as InnerClass }
  return {
    info,
    Class: class extends Optimizer<Record<string, unknown>> {
      constructor(params: Parameter[], options?: Record<string, unknown>) {
        super(schema, params, options)
      }
    },
  }
}

/** The parameter standing for a variable (its mirror), and the variable's data when the mirror last matched it. */
interface Slot {
  variable: tf.Variable
  param: Parameter & { data: Float32Array; shape: number[] }
  dataId: object
}

/** A variable's state as `setWeights` read it: the name it was saved under, and each buffer's shape. */
interface Saved {
  name: string
  state: ParamState
  shapes: Record<string, number[]>
}

/** The tfjs name of a variable's state: `${variable}/${state}`. */
const weightName = (variable: string, key: string) => `${variable}/${key}`

/** A float64, exactly, as the two int32 words of its bits (little-endian): tfjs weights have no float64. */
function float64Words(value: number): Int32Array {
  return new Int32Array(Float64Array.of(value).buffer)
}

function arraysEqual(a: readonly number[], b: readonly number[]): boolean {
  return a.length === b.length && a.every((x, i) => x === b[i])
}

const copyOption = (value: unknown) => (Array.isArray(value) ? [...value] : value)

/**
 * A dense gradient as the row-sparse one an optimizer of sparse gradients (SparseAdam) takes:
 * the rows (along the first dimension) holding an element other than 0, as an embedding's
 * gradient, which tfjs computes dense, has them. A row looked up whose gradient is exactly 0
 * everywhere is therefore not named, where PyTorch's sparse gradient would name it. Costs a read
 * of the gradient and a copy of the rows named.
 */
function rowSparse(values: Float32Array, shape: readonly number[]): { indices: Int32Array; values: Float32Array } {
  const rows = shape.length === 0 ? 1 : shape[0]
  const width = rows === 0 ? 0 : values.length / rows
  const indices: number[] = []
  for (let row = 0; row < rows; row++) {
    for (let k = row * width; k < (row + 1) * width; k++) {
      if (values[k] !== 0) {
        indices.push(row)
        break
      }
    }
  }
  const out = new Float32Array(indices.length * width)
  indices.forEach((row, i) => out.set(values.subarray(row * width, (row + 1) * width), i * width))
  return { indices: Int32Array.from(indices), values: out }
}

/** Whether the active backend copies arrays into `tf.tensor` and out of `dataSync()` (wasm: its heap). */
function backendCopies(): boolean {
  return tf.getBackend() === 'wasm'
}

/**
 * A `tf.Optimizer` whose update is fastoptim's: any optimizer of fastoptim's registry, with its
 * options and PyTorch's numbers. Make one with a factory (`adam({ lr: 1e-3 })`) or
 * `optimizer(name, options)`, and give it to `model.compile({ optimizer })` or call `minimize`.
 *
 * Each variable gets a Float32Array mirror, of its shape, the first time it has a gradient, and
 * the mirrors form the one param group of a fastoptim optimizer; `applyGradients` steps them and
 * assigns the results to the variables. A variable assigned by anything else between steps
 * (`model.setWeights`, `variable.assign`) is read again before its next step, which starts from its
 * current value; the optimizer's state is kept.
 *
 * `getWeights()` returns `iter` (tfjs's iteration count) and, for each variable in the order it
 * was first seen, `<variable>/step` (int32), each state scalar as the two int32 words of its
 * float64 bits (NAdam's `<variable>/muProduct`), and each state buffer in PyTorch's shape
 * (`<variable>/expAvg`). `setWeights()` restores them by position, as tfjs's optimizers do, so
 * that a model loaded under new variable names takes its optimizer state along. The options (and
 * the group state some optimizers keep among them, as Schedule-Free's `k`) are `getConfig()`'s.
 */
export class FastoptimOptimizer<Options extends object = Record<string, unknown>> extends tf.Optimizer {
  /** The name tfjs serializes this class under (`optimizer_config.class_name`). */
  static readonly className = 'Fastoptim'

  /** The registry name of the algorithm (`'Adam'`). */
  readonly algorithm: string
  /**
   * Every option, the defaults filled in. Live, as fastoptim's param groups are (it reads and
   * writes the group): a change, say `options.lr = 1e-4`, applies from the next step.
   */
  readonly options: Required<Options>

  readonly #Class: InnerClass
  readonly #sparse: boolean
  readonly #keys: readonly string[]
  readonly #buffers: readonly string[]
  readonly #scalars: readonly string[]
  /** The options while there is no fastoptim optimizer (before the first step). */
  #initial: Record<string, unknown>
  #inner: Inner | undefined
  /** By position: the order variables were first seen in, which is the order of their state. */
  #slots: Slot[] = []
  #positions = new Map<tf.Variable, number>()
  /** State restored by `setWeights` for positions no variable holds yet. */
  #pending = new Map<number, Saved>()
  /** What the last `getWeights()` returned: kept until the next call or `dispose()`. */
  #exported: tf.Tensor[] = []

  constructor(algorithm: string, options: OptionsInput<Options> = {}) {
    super()
    const { info, Class } = resolve(algorithm)
    this.algorithm = info.name
    this.#Class = Class
    this.#sparse = (info as { sparse?: boolean }).sparse === true
    this.#buffers = info.buffers.map((b) => b.name)
    this.#scalars = info.scalars
    // Checked now, by fastoptim and with its messages, rather than at the first step; on an empty
    // matrix, which an optimizer of matrices only (Muon) takes too.
    const probe = new Class(
      [{ data: new Float32Array(0), grad: null, shape: [0, 0] }],
      options as Record<string, unknown>,
    )
    const defaults = probe.defaults as Record<string, unknown>
    this.#keys = Object.keys(defaults)
    this.#initial = Object.fromEntries(this.#keys.map((key) => [key, copyOption(defaults[key])]))
    const group = () => (this.#inner?.paramGroups[0] ?? this.#initial) as Record<string, unknown>
    const live: PropertyDescriptorMap = Object.fromEntries(
      this.#keys.map((key) => [
        key,
        { enumerable: true, get: () => group()[key], set: (value: unknown) => void (group()[key] = value) },
      ]),
    )
    // console.log shows the values rather than [Getter/Setter].
    live[Symbol.for('nodejs.util.inspect.custom')] = {
      value: () => Object.fromEntries(this.#keys.map((key) => [key, group()[key]])),
    }
    this.options = Object.seal(Object.defineProperties({}, live)) as Required<Options>
  }

  /** Rebuilds an optimizer from `getConfig()`, as tfjs does when it loads a model saved with its optimizer. */
  static override fromConfig<T extends tf.serialization.Serializable>(
    cls: tf.serialization.SerializableConstructor<T>,
    config: tf.serialization.ConfigDict,
  ): T {
    return new cls(config.algorithm, config.options ?? {})
  }

  /** The algorithm and every option (with any group state): what `model.save()` writes as the optimizer's config. */
  override getConfig(): tf.serialization.ConfigDict {
    const options = Object.fromEntries(
      this.#keys.map((key) => [key, copyOption((this.options as Record<string, unknown>)[key])]),
    )
    return { algorithm: this.algorithm, options } as tf.serialization.ConfigDict
  }

  /**
   * One step of fastoptim's optimizer over the variables named in `variableGradients` (a map from
   * variable name to gradient, or a list of `{ name, tensor }`). A variable whose gradient is null
   * or missing is left alone, its state and step count included. Gradients must be float32 and
   * shaped like their variables; every gradient is checked before anything changes.
   */
  override applyGradients(variableGradients: tf.NamedTensorMap | NamedTensor[]): void {
    const given: Array<[string, tf.Tensor | null | undefined]> = Array.isArray(variableGradients)
      ? variableGradients.map(({ name, tensor }) => [name, tensor])
      : Object.entries(variableGradients)
    const registered = tf.engine().registeredVariables
    const work: Array<[tf.Variable, tf.Tensor]> = []
    const seen = new Set<tf.Variable>()
    for (const [name, grad] of given) {
      const variable = registered[name]
      if (!variable) {
        throw invalidValue(
          `applyGradients: no variable is named ${JSON.stringify(name)} (gradients are keyed by variable name)`,
        )
      }
      if (seen.has(variable)) {
        throw invalidValue(`applyGradients: variable ${JSON.stringify(name)} has more than one gradient`)
      }
      seen.add(variable)
      if (grad === null || grad === undefined) continue
      if (!(grad instanceof tf.Tensor)) {
        throw invalidType(`applyGradients: the gradient of ${name} must be a tf.Tensor, got ${describe(grad)}`)
      }
      if (grad.dtype !== 'float32') {
        throw invalidType(`applyGradients: the gradient of ${name} must be float32, got ${grad.dtype}`)
      }
      if (variable.dtype !== 'float32') {
        throw invalidType(`applyGradients: variable ${name} must be float32, got ${variable.dtype}`)
      }
      if (!arraysEqual(grad.shape, variable.shape)) {
        throw outOfRange(
          `applyGradients: the gradient of ${name} has shape ${JSON.stringify(grad.shape)}, expected ${JSON.stringify(variable.shape)} like the variable`,
        )
      }
      work.push([variable, grad])
    }
    if (work.length > 0) this.#step(work)
    this.incrementIterations()
  }

  #step(work: Array<[tf.Variable, tf.Tensor]>): void {
    this.#join(work.map(([variable]) => variable))
    const stepped: Slot[] = []
    try {
      for (const [variable, grad] of work) {
        const slot = this.#slots[this.#positions.get(variable)!]
        this.#readBack(slot)
        // cpu: the backend's own array, no copy; wasm: a copy out of its heap.
        const values = grad.dataSync() as Float32Array
        slot.param.grad = (this.#sparse ? rowSparse(values, slot.param.shape) : values) as Float32Array
        stepped.push(slot)
      }
      this.#inner!.step()
    } finally {
      // The gradients are the caller's, who disposes them: keep no reference.
      for (const slot of stepped) slot.param.grad = null
    }
    this.#writeBack(stepped)
  }

  /**
   * Schedule-Free's training mode, as fastoptim's class's `train()`: moves every variable this
   * optimizer has stepped from the average x to the training point y, and lets steps run (they are
   * refused in eval mode). Call it before `model.fit` or `minimize`. Only optimizers with a
   * `trainMode` option have modes; any other throws `ERR_INVALID_STATE`.
   */
  train(): void {
    this.#switchMode('train')
  }

  /**
   * Schedule-Free's evaluation mode, as fastoptim's class's `eval()`: moves every variable this
   * optimizer has stepped to the average x, the point to evaluate (`model.predict`,
   * `model.evaluate`) and to save, and refuses steps until `train()`.
   */
  eval(): void {
    this.#switchMode('eval')
  }

  #switchMode(mode: 'train' | 'eval'): void {
    if (!this.#keys.includes('trainMode')) {
      throw invalidState(
        `${mode}(): ${this.algorithm} has no training and evaluation modes (only optimizers with a trainMode option have them)`,
      )
    }
    const inner = this.#inner as (Inner & Partial<Record<typeof mode, () => void>>) | undefined
    if (!inner) {
      this.#initial.trainMode = mode === 'train'
      return
    }
    for (const slot of this.#slots) this.#readBack(slot)
    inner[mode]!()
    this.#writeBack(this.#slots)
  }

  /** A variable assigned by someone else since the mirror last matched it: the mirror takes its value (one copy). */
  #readBack(slot: Slot): void {
    if (slot.dataId === slot.variable.dataId) return
    slot.param.data.set(slot.variable.dataSync() as Float32Array)
    slot.dataId = slot.variable.dataId
  }

  /** Assigns each mirror to its variable. */
  #writeBack(slots: readonly Slot[]): void {
    const copies = backendCopies()
    tf.tidy(() => {
      for (const slot of slots) {
        // cpu: one copy, which is tfjs's from here on; wasm: tf.tensor copies into its heap.
        const values = copies ? slot.param.data : slot.param.data.slice()
        slot.variable.assign(tf.tensor(values, slot.param.shape, 'float32'))
        slot.dataId = slot.variable.dataId
      }
    })
  }

  /**
   * The optimizer's state as named tensors (see the class's description). They belong to the
   * optimizer, as a tfjs optimizer's own weights do: do not dispose them; they stay valid until the
   * next `getWeights()` or `dispose()`, which frees them.
   */
  override async getWeights(): Promise<NamedTensor[]> {
    tf.dispose(this.#exported)
    this.#exported = []
    const weights: NamedTensor[] = [await this.saveIterations()]
    const dict = this.#inner?.stateDict()
    const count = Math.max(this.#slots.length, ...[...this.#pending.keys()].map((position) => position + 1))
    for (let position = 0; position < count; position++) {
      const pending = this.#pending.get(position)
      const name = pending?.name ?? this.#slots[position]?.variable.name
      if (name === undefined) continue
      const state = pending?.state ?? dict?.state[position]
      const step = state?.step ?? 0
      if (step > 2 ** 31 - 1) {
        throw outOfRange(`getWeights: the step count of ${name} (${step}) does not fit the int32 tfjs saves it as`)
      }
      weights.push({ name: weightName(name, 'step'), tensor: tf.scalar(step, 'int32') })
      if (!state) continue
      for (const key of this.#scalars) {
        weights.push({ name: weightName(name, key), tensor: tf.tensor1d(float64Words(state[key] as number), 'int32') })
      }
      for (const key of this.#buffers) {
        const buffer = state[key]
        if (!(buffer instanceof Float32Array)) continue
        const shape = pending?.shapes[key] ?? dict?.shapes?.[position]?.[key] ?? [buffer.length]
        weights.push({ name: weightName(name, key), tensor: tf.tensor(buffer, shape, 'float32') })
      }
    }
    this.#exported = weights.map(({ tensor }) => tf.keep(tensor))
    return weights
  }

  /**
   * Restores what `getWeights()` returned (as `model.save({ includeOptimizer: true })` stores it):
   * tfjs's iteration count, then each variable's state, by position. State for a position no
   * variable holds yet waits for the variable first seen there. Replaces all the state there was;
   * on error (a name that is not this optimizer's state, a buffer that does not fit its variable)
   * nothing changes.
   */
  override async setWeights(weightValues: NamedTensor[]): Promise<void> {
    if (!Array.isArray(weightValues) || weightValues.length === 0) {
      throw invalidType(
        `setWeights: weights must be a non-empty array of { name, tensor }, got ${describe(weightValues)}`,
      )
    }
    const known = ['step', ...this.#scalars, ...this.#buffers]
    const saved: Saved[] = []
    const positions = new Map<string, number>()
    for (const { name, tensor } of weightValues.slice(1)) {
      const cut = typeof name === 'string' ? name.lastIndexOf('/') : -1
      const key = cut < 0 ? '' : name.slice(cut + 1)
      if (!known.includes(key)) {
        throw invalidValue(
          `setWeights: ${JSON.stringify(name)} is not state of ${this.algorithm} (expected <variable>/${known.join(', <variable>/')})`,
        )
      }
      const variable = name.slice(0, cut)
      let position = positions.get(variable)
      if (position === undefined) {
        position = saved.push({ name: variable, state: { step: 0 }, shapes: {} }) - 1
        positions.set(variable, position)
      }
      const entry = saved[position]
      const values = await tensor.data()
      if (key === 'step' || this.#scalars.includes(key)) {
        const words = key === 'step' ? 1 : 2
        if (tensor.dtype !== 'int32' || values.length !== words) {
          throw invalidType(
            `setWeights: ${name} must be ${words === 1 ? 'an int32 scalar' : 'an int32 tensor of 2 words'}, got ${tensor.dtype} of ${values.length}`,
          )
        }
        entry.state[key] = key === 'step' ? values[0] : new Float64Array(Int32Array.from(values).buffer)[0]
      } else {
        if (tensor.dtype !== 'float32') throw invalidType(`setWeights: ${name} must be float32, got ${tensor.dtype}`)
        entry.state[key] = Float32Array.from(values)
        entry.shapes[key] = [...tensor.shape]
      }
    }
    // A variable saved before its first step has a step count of 0 and nothing else: no state.
    const stateful = saved
      .map((entry, position) => [position, entry] as const)
      .filter(([, { state }]) => Object.keys(state).length > 1 || state.step !== 0)
    this.#restore(new Map(stateful), true)
    await this.extractIterations(weightValues)
  }

  /** Frees the tensors the last `getWeights()` returned and drops the mirrors and the state. */
  override dispose(): void {
    tf.dispose(this.#exported)
    this.#exported = []
    if (this.#inner)
      this.#initial = Object.fromEntries(
        this.#keys.map((key) => [key, copyOption((this.options as Record<string, unknown>)[key])]),
      )
    this.#inner = undefined
    this.#slots = []
    this.#positions.clear()
    this.#pending.clear()
    super.dispose()
  }

  /**
   * Gives each variable not seen before a mirror (a copy of its value) and remakes the fastoptim
   * optimizer with every mirror in its one param group, carrying the state and the group's options
   * over: fastoptim adds parameters only as new groups, and one group keeps the options, and the
   * group state some optimizers keep (Schedule-Free's), in one place. Copies all the state: this
   * happens when variables are first seen, usually once.
   */
  #join(variables: tf.Variable[]): void {
    const fresh = variables.filter((variable) => !this.#positions.has(variable))
    if (fresh.length === 0) return
    const added = fresh.map((variable): Slot => {
      // A copy: on the cpu backend dataSync() returns the variable's own array.
      const data = Float32Array.from(variable.dataSync() as Float32Array)
      return { variable, param: { data, grad: null, shape: [...variable.shape] }, dataId: variable.dataId }
    })
    const slots = [...this.#slots, ...added]
    const old = this.#inner
    const options = old
      ? Object.fromEntries(
          this.#keys.map((key) => [key, copyOption((old.paramGroups[0] as Record<string, unknown>)[key])]),
        )
      : this.#initial
    const inner = new this.#Class(
      slots.map((slot) => slot.param),
      options,
    )
    if (old) {
      const dict: StateDict = old.stateDict()
      dict.paramGroups[0].params = slots.map((_, position) => position)
      inner.loadStateDict(dict)
    }
    this.#inner = inner
    this.#slots = slots
    for (const [i, slot] of added.entries()) this.#positions.set(slot.variable, slots.length - added.length + i)
    this.#restore(this.#pending, false)
  }

  /**
   * Loads `pending` state into the positions variables hold (with `replace`, clearing the others'
   * state) and keeps the rest for variables to come. On error nothing changes.
   */
  #restore(pending: Map<number, Saved>, replace: boolean): void {
    const ready = [...pending].filter(([position]) => position < this.#slots.length)
    const inner = this.#inner
    if (inner && (replace || ready.length > 0)) {
      const dict: StateDict = inner.stateDict()
      if (replace) dict.state = {}
      for (const [position, { state }] of ready) dict.state[position] = state
      inner.loadStateDict(dict)
    }
    this.#pending = new Map([...pending].filter(([position]) => position >= this.#slots.length))
  }
}

tf.serialization.registerClass(FastoptimOptimizer)

/**
 * A tf optimizer running fastoptim's optimizer `name` (a registry name, in any case: `'adam'`,
 * `'AdamW'`) with `options` (fastoptim's, checked now with fastoptim's errors).
 *
 * @example
 * model.compile({ optimizer: optimizer('adamw', { lr: 1e-3, weightDecay: 0.01 }), loss: 'meanSquaredError' })
 */
export function optimizer<N extends AlgorithmName | Lowercase<AlgorithmName>>(
  name: N,
  options?: OptionsInput<OptionsOf<N>>,
): FastoptimOptimizer<OptionsOf<N>>
export function optimizer(name: string, options?: object): FastoptimOptimizer
export function optimizer(name: string, options?: object): FastoptimOptimizer {
  return new FastoptimOptimizer(name, options)
}

const factory =
  (name: string) =>
  (options?: object): FastoptimOptimizer =>
    new FastoptimOptimizer(name, options as Record<string, unknown>)

/**
 * Every optimizer of fastoptim's registry, by its name lower-cased (`train.adam`, `train.rmsprop`),
 * as `tf.train` has tfjs's: read from the registry, so an optimizer added to it is here too.
 */
export const train = Object.freeze(
  Object.fromEntries(algorithms().map(({ name }) => [name.toLowerCase(), factory(name)])),
) as unknown as Factories

/** `train`'s factory for `name`, or (a name the registry lacks) one that throws fastoptim's unknown-optimizer error when called. */
const named = (name: string) =>
  (train as unknown as Record<string, ReturnType<typeof factory>>)[name.toLowerCase()] ?? factory(name)

/** `train[K]`'s type, or a factory of unknown options for a name the facade's types lack. */
type NamedFactory<K extends string> = K extends keyof Factories ? Factories[K] : Factory<Record<string, unknown>>

// The factories again as named exports (`import { adam } from 'fastoptim/tfjs'`), which need
// names written out to be seen by TypeScript and by Node's ESM import of this CommonJS module.
// __test__/tfjs.spec.ts fails for a registry optimizer missing here. Each is `train`'s function.

/** SGD, with momentum: `torch.optim.SGD`. */
export const sgd = named('SGD') as NamedFactory<'sgd'>
/** Adam: `torch.optim.Adam`. */
export const adam = named('Adam') as NamedFactory<'adam'>
/** AdamW: `torch.optim.AdamW`. */
export const adamw = named('AdamW') as NamedFactory<'adamw'>
/** RMSprop: `torch.optim.RMSprop`. */
export const rmsprop = named('RMSprop') as NamedFactory<'rmsprop'>
/** Adagrad: `torch.optim.Adagrad`. */
export const adagrad = named('Adagrad') as NamedFactory<'adagrad'>
/** Adamax: `torch.optim.Adamax`. */
export const adamax = named('Adamax') as NamedFactory<'adamax'>
/** NAdam: `torch.optim.NAdam`. */
export const nadam = named('NAdam') as NamedFactory<'nadam'>
/** RAdam: `torch.optim.RAdam`. */
export const radam = named('RAdam') as NamedFactory<'radam'>
/** Adafactor: `torch.optim.Adafactor` (matrices' second moments factored). */
export const adafactor = named('Adafactor') as NamedFactory<'adafactor'>
/** Lion. */
export const lion = named('Lion') as NamedFactory<'lion'>
/** Adadelta: `torch.optim.Adadelta`. */
export const adadelta = named('Adadelta') as NamedFactory<'adadelta'>
/** ASGD: `torch.optim.ASGD`. */
export const asgd = named('ASGD') as NamedFactory<'asgd'>
/** Rprop: `torch.optim.Rprop`. */
export const rprop = named('Rprop') as NamedFactory<'rprop'>
/** SparseAdam: `torch.optim.SparseAdam`, on the rows of each gradient that are not all 0. */
export const sparseadam = named('SparseAdam') as NamedFactory<'sparseadam'>
/** Schedule-Free AdamW (the `schedulefree` package's); it steps only in training mode: call `train()` first, or make it with `{ trainMode: true }`, and `eval()` before evaluating or saving. */
export const adamwschedulefree = named('AdamWScheduleFree') as NamedFactory<'adamwschedulefree'>
/** Schedule-Free SGD (the `schedulefree` package's); it steps only in training mode: call `train()` first, or make it with `{ trainMode: true }`, and `eval()` before evaluating or saving. */
export const sgdschedulefree = named('SGDScheduleFree') as NamedFactory<'sgdschedulefree'>
/** Muon: `torch.optim.Muon`, for models whose variables are all matrices (dense layers without bias). */
export const muon = named('Muon') as NamedFactory<'muon'>
