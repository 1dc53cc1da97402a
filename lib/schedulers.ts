// Learning-rate schedulers: PyTorch's `torch.optim.lr_scheduler`, value for value.
//
// A scheduler writes `lr` (and for OneCycleLR `momentum` or `betas[0]`) into the live
// `paramGroups` of any optimizer. Every formula below is PyTorch's own, operation for
// operation and in the same order, so the doubles agree with PyTorch's Python floats (up to
// the last bit of `Math.cos` and `**`, which V8 and the C library may round differently).
//
// PyTorch records `initial_lr` in each param group the first time a scheduler is attached;
// this optimizer seals its groups, so the same record lives here, in a WeakMap keyed by the
// group object. Every scheduler also keeps its own copy as `baseLrs`, which is what its
// `stateDict()` saves and `loadStateDict()` restores.
import { describe, invalidType, invalidValue } from './errors'

/** What a scheduler needs of an optimizer: its live param groups, and its defaults (OneCycleLR). */
export interface SchedulableOptimizer {
  readonly paramGroups: ReadonlyArray<{ lr: number }>
  readonly defaults: object
}

type Group = Record<string, unknown> & { lr: number }

function outOfRange(message: string) {
  return Object.assign(new RangeError(message), { code: 'ERR_OUT_OF_RANGE' as const })
}

function invalidState(message: string) {
  return Object.assign(new Error(message), { code: 'ERR_INVALID_STATE' as const })
}

/** PyTorch's `group["initial_lr"]`, for groups that cannot hold it themselves. */
const initialLrs = new WeakMap<object, number>()

// ------------------------------------------------------------------------------------------
// Reading and checking options and saved state. A field reads one value, checks it and returns
// it normalized; the same fields check a constructor's options and a state dict being loaded.

interface Context {
  /** The scheduler's class name, which starts every message. */
  name: string
  /** How many param groups the optimizer has, for per-group values. */
  groups: number
}

interface Field<T> {
  read(value: unknown, path: string, at: Context): T
  /** Read in place of an option that is left out; a field without one is required. */
  default?: unknown
  /** Whether `stateDict()` includes it (LambdaLR's functions are left out, as in PyTorch). */
  saved?: boolean
}

type Fields = Record<string, Field<unknown>>
type Values<F extends Fields> = { -readonly [K in keyof F]: F[K] extends Field<infer T> ? T : never }

function aNumber(value: unknown, path: string, at: Context): number {
  if (typeof value !== 'number') throw invalidType(`${at.name}: ${path} must be a number, got ${describe(value)}`)
  return value
}

function number(holds: (x: number) => boolean = () => true, expected = 'a number'): Field<number> {
  return {
    read(value, path, at) {
      const x = aNumber(value, path, at)
      if (!holds(x)) throw outOfRange(`${at.name}: invalid ${path}: ${x} (expected ${expected})`)
      return x
    },
  }
}

const anyNumber = number()
const nonNegative = number((x) => Number.isFinite(x) && x >= 0, 'a finite number >= 0')
const positive = number((x) => Number.isFinite(x) && x > 0, 'a finite number > 0')

function integer(min: number): Field<number> {
  return number((x) => Number.isSafeInteger(x) && x >= min, `an integer >= ${min}`)
}

function choice<T extends string>(...choices: T[]): Field<T> {
  return {
    read(value, path, at) {
      if (typeof value !== 'string') throw invalidType(`${at.name}: ${path} must be a string, got ${describe(value)}`)
      if (!(choices as string[]).includes(value)) {
        throw invalidValue(`${at.name}: invalid ${path}: ${JSON.stringify(value)} (expected ${choices.map((c) => JSON.stringify(c)).join(' or ')})`)
      }
      return value as T
    },
  }
}

const flag: Field<boolean> = {
  read(value, path, at) {
    if (typeof value !== 'boolean') throw invalidType(`${at.name}: ${path} must be a boolean, got ${describe(value)}`)
    return value
  },
}

function list<T>(element: Field<T>, length?: (at: Context) => number): Field<T[]> {
  return {
    read(value, path, at) {
      if (!Array.isArray(value)) throw invalidType(`${at.name}: ${path} must be an array, got ${describe(value)}`)
      const expected = length?.(at)
      if (expected !== undefined && value.length !== expected) {
        throw invalidValue(`${at.name}: ${path} has ${value.length} values, expected ${expected}, one per param group`)
      }
      return value.map((x, i) => element.read(x, `${path}[${i}]`, at))
    },
  }
}

/** One value per param group: exactly as many as the optimizer has groups. */
function perGroup<T>(element: Field<T>): Field<T[]> {
  return list(element, (at) => at.groups)
}

/** One value for every group, or a list of one per group (PyTorch's `_format_param`); kept as a list. */
function broadcast<T>(element: Field<T>): Field<T[]> {
  const each = perGroup(element)
  return { read: (value, path, at) => (Array.isArray(value) ? each.read(value, path, at) : Array<T>(at.groups).fill(element.read(value, path, at))) }
}

function withDefault<T>(field: Field<T>, value: unknown): Field<T> {
  return { ...field, default: value }
}

/** Also accepts null, PyTorch's None. */
function nullable<T>(field: Field<T>): Field<T | null> {
  return { read: (value, path, at) => (value === null ? null : field.read(value, path, at)) }
}

/** Integers >= `min`, each greater than the one before. */
function increasing(min: number): Field<number[]> {
  const each = list(integer(min))
  return {
    read(value, path, at) {
      const values = each.read(value, path, at)
      values.forEach((x, i) => {
        if (i > 0 && x <= values[i - 1]) throw outOfRange(`${at.name}: invalid ${path}[${i}]: ${x} (expected more than ${path}[${i - 1}], ${values[i - 1]})`)
      })
      return values
    },
  }
}

function unsaved<T>(field: Field<T>): Field<T> {
  return { ...field, saved: false }
}

function copy<T>(value: T): T {
  return (Array.isArray(value) ? value.map(copy) : value) as T
}

/** Reads `source[key]` for every field into a fresh object; nothing is kept if any fails. */
function readFields<F extends Fields>(fields: F, source: Record<string, unknown>, where: string, at: Context, useDefaults: boolean): Values<F> {
  const out: Record<string, unknown> = {}
  for (const [key, field] of Object.entries(fields)) {
    if (!useDefaults && field.saved === false) continue
    const value = source[key] === undefined && useDefaults && 'default' in field ? field.default : source[key]
    out[key] = field.read(value, `${where}.${key}`, at)
  }
  return out as Values<F>
}

function checkKeys(source: unknown, allowed: readonly string[], where: string, at: Context): asserts source is Record<string, unknown> {
  if (typeof source !== 'object' || source === null || Array.isArray(source)) {
    throw invalidType(`${at.name}: ${where} must be an object, got ${describe(source)}`)
  }
  for (const key of Object.keys(source)) {
    if (!allowed.includes(key)) throw invalidValue(`${at.name}: ${where}.${key} is not ${where === 'stateDict' ? 'saved by' : 'an option of'} ${at.name} (expected one of ${allowed.join(', ')})`)
  }
}

function checkOptimizer(optimizer: unknown, name: string): asserts optimizer is SchedulableOptimizer {
  const groups = (optimizer as SchedulableOptimizer | null)?.paramGroups
  if (typeof optimizer !== 'object' || optimizer === null || !Array.isArray(groups)) {
    throw invalidType(`${name}: optimizer must be an optimizer with paramGroups, got ${describe(optimizer)}`)
  }
  groups.forEach((group: unknown, i) => {
    if (typeof (group as Group | null)?.lr !== 'number') {
      throw invalidType(`${name}: optimizer.paramGroups[${i}].lr must be a number, got ${describe((group as Group | null)?.lr)}`)
    }
  })
}

// Hooks SequentialLR calls on the schedulers it chains (PyTorch's `_initial_step`,
// `_update_lr(epoch)` and `recursive_undo`). Exported only because declarations must name
// them; `lib/index.ts` does not export them, and the package exports nothing else.
/** @internal */
export const initialStep = Symbol('initialStep')
/** @internal */
export const updateLr = Symbol('updateLr')
/** @internal */
export const undoStep = Symbol('undoStep')
/** @internal Checks a state dict completely and returns what applies it, so that loading is all or nothing. */
export const prepareLoad = Symbol('prepareLoad')

const PROGRESS = {
  lastEpoch: integer(-1),
  stepCount: integer(0),
  baseLrs: perGroup(anyNumber),
  lastLr: perGroup(anyNumber),
}
type Progress = Values<typeof PROGRESS>

/** Options every epoch-based scheduler takes besides its own. */
export interface LRSchedulerOptions {
  /**
   * The index of the last epoch when resuming: the optimizer's groups must already have an
   * initial learning rate (a scheduler was attached to this optimizer before), and building the
   * scheduler computes epoch `lastEpoch + 1` at once, as PyTorch does. To resume from a
   * checkpoint, prefer a fresh scheduler and `loadStateDict`.
   * @default -1
   */
  lastEpoch?: number
}

/**
 * The base of the epoch-based schedulers, PyTorch's `LRScheduler`: each `step()` advances
 * `lastEpoch` and writes the learning rates `getLr()` computes into the optimizer's groups.
 * Building one records each group's initial learning rate (`baseLrs`) and takes step 0.
 */
export abstract class LRScheduler<F extends Fields = Fields> {
  /** The optimizer whose `paramGroups` this scheduler writes. */
  readonly optimizer: SchedulableOptimizer
  /** The scheduler's arguments, as checked and normalized by its constructor. */
  protected readonly args: Values<F>
  /** Progress through the schedule: PyTorch's `last_epoch`, `_step_count`, `base_lrs`, `_last_lr`. */
  protected progress: Progress
  /** True while the constructor takes step 0 (PyTorch's `_is_initial`). */
  protected isInitial = false
  readonly #fields: F
  readonly #name: string

  protected constructor(name: string, fields: F, optimizer: SchedulableOptimizer, options: object | undefined, required: boolean) {
    checkOptimizer(optimizer, name)
    const at = { name, groups: optimizer.paramGroups.length }
    const source = options ?? (required ? options : {})
    checkKeys(source, [...Object.keys(fields), 'lastEpoch'], 'options', at)
    const { lastEpoch } = readFields({ lastEpoch: withDefault(integer(-1), -1) }, source, 'options', at, true)
    this.optimizer = optimizer
    this.args = readFields(fields, source, 'options', at, true)
    this.progress = { lastEpoch, stepCount: 0, baseLrs: [], lastLr: [] }
    this.#fields = fields
    this.#name = name
  }

  /**
   * Takes step 0 from the groups' initial learning rates, and records them if it succeeds.
   * Subclasses call it last in their constructor, once every argument is checked: before it,
   * nothing has been written. `initial` replaces what is recorded (OneCycleLR's `maxLr/divFactor`).
   */
  protected start(initial?: number[]): void {
    const groups = this.groups()
    const fresh = this.progress.lastEpoch === -1
    this.progress.baseLrs = groups.map((group, i) => {
      const recorded = initialLrs.get(group)
      if (!fresh && recorded === undefined) {
        throw invalidValue(`${this.#name}: paramGroups[${i}] has no initial learning rate, which resuming with lastEpoch ${this.progress.lastEpoch} needs: no scheduler was attached to this optimizer before (to resume from a checkpoint, build the scheduler without lastEpoch and call loadStateDict)`)
      }
      return fresh ? (initial?.[i] ?? recorded ?? group.lr) : recorded!
    })
    this[initialStep]()
    if (fresh) groups.forEach((group, i) => initialLrs.set(group, this.progress.baseLrs[i]))
  }

  /** The index of the last epoch: 0 after construction, then one more at every `step()`. */
  get lastEpoch(): number {
    return this.progress.lastEpoch
  }

  /** Each group's learning rate when the first scheduler was attached (PyTorch's `base_lrs`). */
  get baseLrs(): number[] {
    return [...this.progress.baseLrs]
  }

  /** The learning rates this scheduler last wrote, one per param group. */
  getLastLr(): number[] {
    return [...this.progress.lastLr]
  }

  /** Advances the schedule by one epoch (or batch) and writes the new learning rates. */
  step(): void {
    this.progress.stepCount += 1
    try {
      this[updateLr]()
    } catch (error) {
      this.progress.stepCount -= 1
      throw error
    }
  }

  /**
   * The scheduler's state as a plain object, as PyTorch's `state_dict()`: its arguments and its
   * progress (`lastEpoch`, `stepCount`, `baseLrs`, `lastLr`), with every array copied.
   */
  stateDict(): Record<string, unknown> {
    const out: Record<string, unknown> = {}
    for (const [key, field] of Object.entries(this.#fields)) if (field.saved !== false) out[key] = copy(this.args[key])
    for (const [key, value] of Object.entries(this.progress)) out[key] = copy(value)
    return out
  }

  /**
   * Restores a `stateDict()`: every key is checked first (names, types, ranges, one value per
   * param group), and on error nothing changes. Load the optimizer's own state dict too: the
   * scheduler restores only its own progress, not the groups' current learning rates.
   */
  loadStateDict(stateDict: Record<string, unknown>): void {
    this[prepareLoad](stateDict, 'stateDict')()
  }

  /** The learning rates of the epoch `lastEpoch` now names, one per group (PyTorch's `get_lr`). */
  protected abstract getLr(): number[]

  /** The learning rates of epoch `lastEpoch` from `baseLrs` alone, for schedulers that have one. */
  protected closedFormLr?(): number[]

  /** The groups, typed for reading and writing any option; there must be one per base lr. */
  protected groups(): Group[] {
    return this.optimizer.paramGroups as unknown as Group[]
  }

  /** Each group's current learning rate. */
  protected currentLrs(): number[] {
    return this.groups().map((group) => group.lr)
  }

  [initialStep](): void {
    this.progress.stepCount = 0
    this.isInitial = true
    try {
      this.step()
    } finally {
      this.isInitial = false
    }
  }

  /** PyTorch's `_update_lr`: the next epoch, or the given one by the closed form if there is one. */
  [updateLr](epoch?: number): void {
    const groups = this.groups()
    if (groups.length !== this.progress.baseLrs.length) {
      throw invalidState(`${this.#name}: the optimizer has ${groups.length} param groups, but the scheduler was built for ${this.progress.baseLrs.length}`)
    }
    const previous = this.progress.lastEpoch
    this.progress.lastEpoch = epoch ?? previous + 1
    let lrs: number[]
    try {
      lrs = epoch !== undefined && this.closedFormLr ? this.closedFormLr() : this.getLr()
    } catch (error) {
      this.progress.lastEpoch = previous
      throw error
    }
    groups.forEach((group, i) => (group.lr = lrs[i]))
    this.progress.lastLr = this.currentLrs()
  }

  [undoStep](): void {
    this.progress.lastEpoch -= 1
  }

  [prepareLoad](stateDict: unknown, where: string): () => void {
    const at = { name: this.#name, groups: this.optimizer.paramGroups.length }
    const saved = Object.keys(this.stateDict())
    checkKeys(stateDict, saved, where, at)
    for (const key of saved) if (!(key in stateDict)) throw invalidValue(`${this.#name}: ${where}.${key} is missing`)
    const args = readFields(this.#fields, stateDict, where, at, false)
    const progress = readFields(PROGRESS, stateDict, where, at, false)
    this.checkLoaded(args, where, at)
    return () => {
      Object.assign(this.args, args)
      this.progress = progress
    }
  }

  /** Cross-field checks of a state dict being loaded, beyond each field's own. */
  protected checkLoaded(_args: Values<F>, _where: string, _at: Context): void {}
}

// ------------------------------------------------------------------------------------------

const STEP_LR = { stepSize: integer(1), gamma: withDefault(nonNegative, 0.1) }

/** StepLR's arguments, PyTorch's in camelCase. */
export interface StepLROptions extends LRSchedulerOptions {
  /** Decay every `stepSize` epochs. */
  stepSize: number
  /**
   * The factor the learning rate is multiplied by at each decay.
   * @default 0.1
   */
  gamma?: number
}

/**
 * Multiplies each group's learning rate by `gamma` every `stepSize` epochs, as PyTorch's
 * `StepLR`: lr ← lr·γ when `lastEpoch` is a non-zero multiple of `stepSize`. It scales the
 * current lr, so it chains with changes made from outside.
 */
export class StepLR extends LRScheduler<typeof STEP_LR> {
  constructor(optimizer: SchedulableOptimizer, options: StepLROptions) {
    super('StepLR', STEP_LR, optimizer, options, true)
    this.start()
  }

  protected override getLr(): number[] {
    const { lastEpoch } = this.progress
    if (lastEpoch === 0 || lastEpoch % this.args.stepSize !== 0) return this.currentLrs()
    return this.currentLrs().map((lr) => lr * this.args.gamma)
  }

  protected override closedFormLr(): number[] {
    const decays = Math.floor(this.progress.lastEpoch / this.args.stepSize)
    return this.progress.baseLrs.map((base) => base * this.args.gamma ** decays)
  }
}

const MULTI_STEP_LR = { milestones: list(integer(0)), gamma: withDefault(nonNegative, 0.1) }

/** MultiStepLR's arguments, PyTorch's in camelCase. */
export interface MultiStepLROptions extends LRSchedulerOptions {
  /** The epochs at which to decay; a milestone listed n times decays by γⁿ there. */
  milestones: number[]
  /**
   * The factor the learning rate is multiplied by at each milestone.
   * @default 0.1
   */
  gamma?: number
}

/**
 * Multiplies each group's learning rate by `gamma` at each milestone epoch, as PyTorch's
 * `MultiStepLR` (milestones in any order; a repeated one decays by γ once per repetition).
 */
export class MultiStepLR extends LRScheduler<typeof MULTI_STEP_LR> {
  constructor(optimizer: SchedulableOptimizer, options: MultiStepLROptions) {
    super('MultiStepLR', MULTI_STEP_LR, optimizer, options, true)
    this.start()
  }

  protected override getLr(): number[] {
    const times = this.args.milestones.filter((m) => m === this.progress.lastEpoch).length
    if (times === 0) return this.currentLrs()
    return this.currentLrs().map((lr) => lr * this.args.gamma ** times)
  }

  protected override closedFormLr(): number[] {
    const passed = this.args.milestones.filter((m) => m <= this.progress.lastEpoch).length
    return this.progress.baseLrs.map((base) => base * this.args.gamma ** passed)
  }
}

const EXPONENTIAL_LR = { gamma: nonNegative }

/** ExponentialLR's arguments. */
export interface ExponentialLROptions extends LRSchedulerOptions {
  /** The factor the learning rate is multiplied by every epoch. */
  gamma: number
}

/** Multiplies each group's learning rate by `gamma` every epoch, as PyTorch's `ExponentialLR`. */
export class ExponentialLR extends LRScheduler<typeof EXPONENTIAL_LR> {
  constructor(optimizer: SchedulableOptimizer, options: ExponentialLROptions) {
    super('ExponentialLR', EXPONENTIAL_LR, optimizer, options, true)
    this.start()
  }

  protected override getLr(): number[] {
    if (this.isInitial) return this.currentLrs()
    return this.currentLrs().map((lr) => lr * this.args.gamma)
  }

  protected override closedFormLr(): number[] {
    return this.progress.baseLrs.map((base) => base * this.args.gamma ** this.progress.lastEpoch)
  }
}

const COSINE_ANNEALING_LR = { tMax: integer(1), etaMin: withDefault(nonNegative, 0) }

/** CosineAnnealingLR's arguments: PyTorch's `T_max` and `eta_min`. */
export interface CosineAnnealingLROptions extends LRSchedulerOptions {
  /** Half the period: epochs from the initial learning rate down to `etaMin`. */
  tMax: number
  /**
   * The lowest learning rate.
   * @default 0
   */
  etaMin?: number
}

/**
 * Cosine annealing without restarts (Loshchilov & Hutter, "SGDR", ICLR 2017), in PyTorch's
 * recursive form, so the numbers are PyTorch's rather than the closed form's:
 *
 *     η ← η_min + (η − η_min)·(1 + cos(π·t/T))/(1 + cos(π·(t − 1)/T))
 *
 * which follows η_t = η_min + (η₀ − η_min)·(1 + cos(π·t/T))/2 and, past T, comes back up.
 * Where the denominator would vanish (t − 1 − T a multiple of 2T) it adds
 * (η₀ − η_min)·(1 − cos(π/T))/2 instead.
 */
export class CosineAnnealingLR extends LRScheduler<typeof COSINE_ANNEALING_LR> {
  constructor(optimizer: SchedulableOptimizer, options: CosineAnnealingLROptions) {
    super('CosineAnnealingLR', COSINE_ANNEALING_LR, optimizer, options, true)
    this.start()
  }

  protected override getLr(): number[] {
    const { tMax, etaMin } = this.args
    const { lastEpoch: t, stepCount, baseLrs } = this.progress
    const lrs = this.currentLrs()
    if (this.isInitial) return lrs
    if (stepCount === 1 && t > 0) {
      return baseLrs.map((base) => etaMin + ((base - etaMin) * (1 + Math.cos((t * Math.PI) / tMax))) / 2)
    }
    if ((t - 1 - tMax) % (2 * tMax) === 0) {
      return lrs.map((lr, i) => lr + ((baseLrs[i] - etaMin) * (1 - Math.cos(Math.PI / tMax))) / 2)
    }
    return lrs.map((lr) => ((1 + Math.cos((Math.PI * t) / tMax)) / (1 + Math.cos((Math.PI * (t - 1)) / tMax))) * (lr - etaMin) + etaMin)
  }

  protected override closedFormLr(): number[] {
    const { tMax, etaMin } = this.args
    const t = this.progress.lastEpoch
    return this.progress.baseLrs.map((base) => etaMin + ((base - etaMin) * (1 + Math.cos((Math.PI * t) / tMax))) / 2)
  }
}

const LINEAR_LR = {
  startFactor: withDefault(
    number((x) => x > 0 && x <= 1, '0 < startFactor <= 1'),
    1 / 3,
  ),
  endFactor: withDefault(
    number((x) => x >= 0 && x <= 1, '0 <= endFactor <= 1'),
    1,
  ),
  totalIters: withDefault(integer(1), 5),
}

/** LinearLR's arguments, PyTorch's in camelCase. */
export interface LinearLROptions extends LRSchedulerOptions {
  /**
   * The factor of the first epoch, in (0, 1].
   * @default 1/3
   */
  startFactor?: number
  /**
   * The factor reached after `totalIters` epochs, in [0, 1].
   * @default 1
   */
  endFactor?: number
  /**
   * Epochs over which the factor moves from `startFactor` to `endFactor`.
   * @default 5
   */
  totalIters?: number
}

/**
 * Scales each group's learning rate by a factor that moves linearly from `startFactor` to
 * `endFactor` over `totalIters` epochs, as PyTorch's `LinearLR` (a warm-up, or a linear decay),
 * in its recursive form: lr ← lr·(1 + (e − s)/(T·s + (t − 1)·(e − s))).
 */
export class LinearLR extends LRScheduler<typeof LINEAR_LR> {
  constructor(optimizer: SchedulableOptimizer, options?: LinearLROptions) {
    super('LinearLR', LINEAR_LR, optimizer, options, false)
    this.start()
  }

  protected override getLr(): number[] {
    const { startFactor: s, endFactor: e, totalIters } = this.args
    const t = this.progress.lastEpoch
    if (t === 0) return this.currentLrs().map((lr) => lr * s)
    if (this.isInitial || t > totalIters) return this.currentLrs()
    return this.currentLrs().map((lr) => lr * (1.0 + (e - s) / (totalIters * s + (t - 1) * (e - s))))
  }

  protected override closedFormLr(): number[] {
    const { startFactor: s, endFactor: e, totalIters } = this.args
    const t = this.progress.lastEpoch
    return this.progress.baseLrs.map((base) => base * (s + ((e - s) * Math.min(totalIters, t)) / totalIters))
  }
}

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

const ONE_CYCLE_LR = {
  maxLr: broadcast(nonNegative),
  totalSteps: withDefault(nullable(integer(1)), null),
  epochs: withDefault(nullable(integer(1)), null),
  stepsPerEpoch: withDefault(nullable(integer(1)), null),
  pctStart: withDefault(
    number((x) => x >= 0 && x <= 1, '0 <= pctStart <= 1'),
    0.3,
  ),
  annealStrategy: withDefault(choice('cos', 'linear'), 'cos'),
  cycleMomentum: withDefault(flag, true),
  baseMomentum: withDefault(broadcast(anyNumber), 0.85),
  maxMomentum: withDefault(broadcast(anyNumber), 0.95),
  divFactor: withDefault(positive, 25),
  finalDivFactor: withDefault(positive, 1e4),
  threePhase: withDefault(flag, false),
}

/** OneCycleLR's arguments, PyTorch's in camelCase. */
export interface OneCycleLROptions extends LRSchedulerOptions {
  /** The peak learning rate: one for every group, or one per group. */
  maxLr: number | number[]
  /** Steps in the cycle; or give `epochs` and `stepsPerEpoch`. */
  totalSteps?: number | null
  /** With `stepsPerEpoch`, gives `totalSteps = epochs·stepsPerEpoch` when `totalSteps` is not given. */
  epochs?: number | null
  /** See `epochs`. */
  stepsPerEpoch?: number | null
  /**
   * The fraction of the cycle spent raising the learning rate.
   * @default 0.3
   */
  pctStart?: number
  /**
   * How to go from one phase's start to its end: `'cos'` or `'linear'`.
   * @default 'cos'
   */
  annealStrategy?: 'cos' | 'linear'
  /**
   * Cycle the momentum (SGD, RMSprop) or `betas[0]` (Adam and kin) inversely to the learning rate.
   * @default true
   */
  cycleMomentum?: boolean
  /**
   * The momentum at the peak learning rate: one for every group, or one per group.
   * @default 0.85
   */
  baseMomentum?: number | number[]
  /**
   * The momentum at the start (and end) of the cycle: one for every group, or one per group.
   * @default 0.95
   */
  maxMomentum?: number | number[]
  /**
   * The initial learning rate is `maxLr / divFactor`.
   * @default 25
   */
  divFactor?: number
  /**
   * The final learning rate is the initial one divided by `finalDivFactor`.
   * @default 1e4
   */
  finalDivFactor?: number
  /**
   * Three phases (up, down to the initial lr, then down to the final lr), as in the paper,
   * instead of fastai's two.
   * @default false
   */
  threePhase?: boolean
}

interface Phase {
  endStep: number
  startLr: 'initial' | 'max' | 'min'
  endLr: 'initial' | 'max' | 'min'
  startMomentum: 'base' | 'max'
  endMomentum: 'base' | 'max'
}

/**
 * The 1cycle policy (Smith & Topin, "Super-Convergence", 2017), as PyTorch's `OneCycleLR`:
 * the learning rate rises from `maxLr/divFactor` to `maxLr` over the first `pctStart` of the
 * steps, then falls to `maxLr/divFactor/finalDivFactor` (with `threePhase`, first back to the
 * initial lr), each phase annealed by cosine, end + (start − end)·(1 + cos(π·pct))/2, or
 * linearly. With `cycleMomentum`, the momentum (or `betas[0]`) moves the opposite way between
 * `maxMomentum` and `baseMomentum`. It is meant to be stepped after every batch, `totalSteps`
 * times at most.
 */
export class OneCycleLR extends LRScheduler<typeof ONE_CYCLE_LR> {
  /** Whether the momentum lives in `betas[0]` rather than `momentum`. */
  readonly #useBeta1: boolean

  constructor(optimizer: SchedulableOptimizer, options: OneCycleLROptions) {
    super('OneCycleLR', ONE_CYCLE_LR, optimizer, options, true)
    const { args } = this
    if (args.totalSteps === null) {
      if (args.epochs === null || args.stepsPerEpoch === null) {
        throw invalidValue('OneCycleLR: options must give totalSteps, or epochs and stepsPerEpoch')
      }
      args.totalSteps = args.epochs * args.stepsPerEpoch
    }
    this.#checkPhases(args, 'options')
    const defaults = optimizer.defaults as Record<string, unknown>
    this.#useBeta1 = 'betas' in defaults
    if (args.cycleMomentum && !('momentum' in defaults) && !this.#useBeta1) {
      throw invalidValue('OneCycleLR: cycleMomentum needs an optimizer with momentum or betas; pass cycleMomentum: false')
    }
    this.groups().forEach((group, i) => {
      if (args.cycleMomentum && this.#useBeta1 && !Array.isArray(group.betas)) {
        throw invalidType(`OneCycleLR: optimizer.paramGroups[${i}].betas must be an array, got ${describe(group.betas)}`)
      }
    })
    // PyTorch also sets each group's momentum to maxMomentum here; step 0 overwrites it anyway.
    this.start(args.maxLr.map((lr) => lr / args.divFactor))
  }

  #phases(args = this.args): Phase[] {
    const { pctStart, threePhase } = args
    const totalSteps = args.totalSteps!
    if (threePhase) {
      return [
        { endStep: pctStart * totalSteps - 1, startLr: 'initial', endLr: 'max', startMomentum: 'max', endMomentum: 'base' },
        { endStep: 2 * pctStart * totalSteps - 2, startLr: 'max', endLr: 'initial', startMomentum: 'base', endMomentum: 'max' },
        { endStep: totalSteps - 1, startLr: 'initial', endLr: 'min', startMomentum: 'max', endMomentum: 'max' },
      ]
    }
    return [
      { endStep: pctStart * totalSteps - 1, startLr: 'initial', endLr: 'max', startMomentum: 'max', endMomentum: 'base' },
      { endStep: totalSteps - 1, startLr: 'max', endLr: 'min', startMomentum: 'base', endMomentum: 'max' },
    ]
  }

  /** PyTorch divides by zero in a phase that starts where it ends; refuse such a cycle up front. */
  #checkPhases(args: Values<typeof ONE_CYCLE_LR>, where: string): void {
    let startStep = 0.0
    this.#phases(args).forEach((phase, p, phases) => {
      // Only the first phase can be reached by a step at its start, and only the last past its end.
      if (phase.endStep === startStep && (p === 0 || p === phases.length - 1)) {
        throw outOfRange(`OneCycleLR: invalid ${where}.pctStart: ${args.pctStart} (with totalSteps ${args.totalSteps}, phase ${p + 1} of the cycle would be empty, and PyTorch would divide by zero in it)`)
      }
      startStep = phase.endStep
    })
  }

  protected override checkLoaded(args: Values<typeof ONE_CYCLE_LR>, where: string, at: Context): void {
    if (args.totalSteps === null) throw invalidType(`${at.name}: ${where}.totalSteps must be a number, got null`)
    this.#checkPhases(args, where)
  }

  #anneal(start: number, end: number, pct: number): number {
    if (this.args.annealStrategy === 'cos') return end + ((start - end) / 2.0) * (Math.cos(Math.PI * pct) + 1)
    return (end - start) * pct + start
  }

  #setMomentum(group: Group, momentum: number): void {
    if (this.#useBeta1) {
      group.betas = [momentum, ...(group.betas as number[]).slice(1)]
    } else {
      group.momentum = momentum
    }
  }

  /** Computes every group's lr and momentum before writing any momentum, so a failed step changes nothing. */
  protected override getLr(): number[] {
    const { maxLr, finalDivFactor, cycleMomentum, baseMomentum, maxMomentum } = this.args
    const totalSteps = this.args.totalSteps!
    const step = this.progress.lastEpoch
    if (step > totalSteps) {
      throw invalidState(`OneCycleLR: tried to step ${step} times, but totalSteps is ${totalSteps}`)
    }
    const phases = this.#phases()
    const lrs: number[] = []
    const momentums: number[] = []
    this.progress.baseLrs.forEach((initial, i) => {
      const lrOf = { initial, max: maxLr[i], min: initial / finalDivFactor }
      const momentumOf = { base: baseMomentum[i], max: maxMomentum[i] }
      let startStep = 0.0
      for (const [p, phase] of phases.entries()) {
        if (step <= phase.endStep || p === phases.length - 1) {
          const pct = (step - startStep) / (phase.endStep - startStep)
          lrs.push(this.#anneal(lrOf[phase.startLr], lrOf[phase.endLr], pct))
          momentums.push(this.#anneal(momentumOf[phase.startMomentum], momentumOf[phase.endMomentum], pct))
          break
        }
        startStep = phase.endStep
      }
    })
    if (cycleMomentum) this.groups().forEach((group, i) => this.#setMomentum(group, momentums[i]))
    return lrs
  }
}

const SEQUENTIAL_LR = { milestones: increasing(0) }

/** SequentialLR's arguments. */
export interface SequentialLROptions extends LRSchedulerOptions {
  /** The schedulers to run one after the other, all built on the same optimizer. */
  schedulers: LRScheduler[]
  /** The epochs at which to switch to the next scheduler: one fewer than `schedulers`, increasing. */
  milestones: number[]
}

/**
 * Runs `schedulers` one after another, switching at each milestone, as PyTorch's `SequentialLR`:
 * building it resets each group's learning rate to its initial one and restarts the first
 * scheduler; at a milestone the next scheduler starts at its epoch 0 (by its closed form, if
 * it has one). Build the chained schedulers first, on the same optimizer.
 */
export class SequentialLR extends LRScheduler<typeof SEQUENTIAL_LR> {
  readonly #schedulers: LRScheduler[]

  constructor(optimizer: SchedulableOptimizer, options: SequentialLROptions) {
    const isObject = typeof options === 'object' && options !== null
    const { schedulers, ...rest }: Partial<SequentialLROptions> = isObject ? options : {}
    super('SequentialLR', SEQUENTIAL_LR, optimizer, isObject ? rest : options, true)
    if (!Array.isArray(schedulers)) throw invalidType(`SequentialLR: options.schedulers must be an array of schedulers, got ${describe(schedulers)}`)
    if (schedulers.length === 0) throw invalidValue('SequentialLR: options.schedulers is empty; it needs at least one scheduler')
    schedulers.forEach((scheduler: unknown, i) => {
      if (scheduler instanceof ReduceLROnPlateau) {
        throw invalidValue(`SequentialLR: options.schedulers[${i}] is a ReduceLROnPlateau, which SequentialLR cannot run: its step needs a metric`)
      }
      if (scheduler instanceof SequentialLR || !(scheduler instanceof LRScheduler)) {
        throw invalidType(`SequentialLR: options.schedulers[${i}] must be a StepLR, MultiStepLR, ExponentialLR, CosineAnnealingLR, LinearLR, LambdaLR or OneCycleLR, got ${describe(scheduler)}`)
      }
      if (scheduler.optimizer !== optimizer) {
        throw invalidValue(`SequentialLR: options.schedulers[${i}] (${describe(scheduler)}) belongs to another optimizer; all must belong to this one`)
      }
    })
    const { milestones } = this.args
    if (milestones.length !== schedulers.length - 1) {
      throw invalidValue(`SequentialLR: options.milestones has ${milestones.length} values for ${schedulers.length} schedulers; it needs one fewer than the schedulers`)
    }
    const groups = this.groups()
    groups.forEach((group, i) => {
      if (!initialLrs.has(group)) throw invalidState(`SequentialLR: paramGroups[${i}] was added to the optimizer after its schedulers were built`)
    })
    this.#schedulers = [...schedulers]
    this.progress.lastEpoch += 1
    this.progress.baseLrs = groups.map((group) => initialLrs.get(group)!)
    groups.forEach((group, i) => (group.lr = this.progress.baseLrs[i]))
    this[undoStep]()
    const first = this.#schedulers[this.#current()]
    first[initialStep]()
    this.progress.lastLr = first.getLastLr()
  }

  /** The chained schedulers (the array is a copy). */
  get schedulers(): LRScheduler[] {
    return [...this.#schedulers]
  }

  /** The index of the scheduler that runs at `lastEpoch` (PyTorch's `bisect_right`). */
  #current(): number {
    const index = this.args.milestones.findIndex((m) => m > this.progress.lastEpoch)
    return index === -1 ? this.args.milestones.length : index
  }

  override step(): void {
    this.progress.lastEpoch += 1
    const index = this.#current()
    const scheduler = this.#schedulers[index]
    try {
      if (index > 0 && this.args.milestones[index - 1] === this.progress.lastEpoch) scheduler[updateLr](0)
      else scheduler.step()
    } catch (error) {
      this.progress.lastEpoch -= 1
      throw error
    }
    this.progress.lastLr = scheduler.getLastLr()
  }

  /** Never called: `step()` delegates to the chained schedulers. */
  protected override getLr(): number[] {
    return this.getLastLr()
  }

  /** Its own progress and milestones, and the state of every chained scheduler under `schedulers`. */
  override stateDict(): Record<string, unknown> {
    return { ...super.stateDict(), schedulers: this.#schedulers.map((s) => s.stateDict()) }
  }

  override [undoStep](): void {
    for (const scheduler of this.#schedulers) scheduler[undoStep]()
  }

  override [prepareLoad](stateDict: unknown, where: string): () => void {
    const at = { name: 'SequentialLR', groups: this.optimizer.paramGroups.length }
    checkKeys(stateDict, Object.keys(this.stateDict()), where, at)
    const { schedulers, ...own } = stateDict
    if (!Array.isArray(schedulers) || schedulers.length !== this.#schedulers.length) {
      throw invalidValue(`SequentialLR: ${where}.schedulers must be an array of ${this.#schedulers.length} state dicts, one per chained scheduler, got ${describe(schedulers)}${Array.isArray(schedulers) ? ` of ${schedulers.length}` : ''}`)
    }
    const applyOwn = super[prepareLoad]({ ...own, schedulers: [] }, where)
    const applyEach = this.#schedulers.map((s, i) => s[prepareLoad](schedulers[i], `${where}.schedulers[${i}]`))
    return () => {
      applyOwn()
      for (const apply of applyEach) apply()
    }
  }
}

// ------------------------------------------------------------------------------------------

const REDUCE_LR_ON_PLATEAU = {
  mode: withDefault(choice('min', 'max'), 'min'),
  factor: withDefault(
    number((x) => x >= 0 && x < 1, '0 <= factor < 1'),
    0.1,
  ),
  patience: withDefault(integer(0), 10),
  threshold: withDefault(nonNegative, 1e-4),
  thresholdMode: withDefault(choice('rel', 'abs'), 'rel'),
  cooldown: withDefault(integer(0), 0),
  minLr: withDefault<number | number[]>(
    {
      read: (value, path, at) => (Array.isArray(value) ? perGroup(nonNegative).read(value, path, at) : nonNegative.read(value, path, at)),
    },
    0,
  ),
  eps: withDefault(nonNegative, 1e-8),
}

const PLATEAU_PROGRESS = {
  lastEpoch: integer(0),
  lastLr: list(anyNumber),
  best: anyNumber,
  numBadEpochs: integer(0),
  cooldownCounter: integer(0),
}

/** ReduceLROnPlateau's arguments, PyTorch's in camelCase. */
export interface ReduceLROnPlateauOptions {
  /**
   * `'min'`: reduce when the metric stops decreasing; `'max'`: when it stops increasing.
   * @default 'min'
   */
  mode?: 'min' | 'max'
  /**
   * The factor the learning rate is multiplied by at each reduction, in [0, 1).
   * @default 0.1
   */
  factor?: number
  /**
   * Epochs without improvement to allow before reducing.
   * @default 10
   */
  patience?: number
  /**
   * How much better a metric must be to count as an improvement.
   * @default 1e-4
   */
  threshold?: number
  /**
   * `'rel'`: better than best·(1 ∓ threshold); `'abs'`: better than best ∓ threshold.
   * @default 'rel'
   */
  thresholdMode?: 'rel' | 'abs'
  /**
   * Epochs to wait after a reduction before counting bad epochs again.
   * @default 0
   */
  cooldown?: number
  /**
   * The lowest learning rate: one for every group, or one per group.
   * @default 0
   */
  minLr?: number | number[]
  /**
   * A reduction smaller than this is skipped.
   * @default 1e-8
   */
  eps?: number
}

/**
 * Reduces each group's learning rate by `factor` when a metric has not improved for more than
 * `patience` epochs, as PyTorch's `ReduceLROnPlateau`: `step(metric)` after each evaluation.
 */
export class ReduceLROnPlateau {
  /** The optimizer whose `paramGroups` this scheduler writes. */
  readonly optimizer: SchedulableOptimizer
  readonly #args: Values<typeof REDUCE_LR_ON_PLATEAU>
  #progress: Values<typeof PLATEAU_PROGRESS>

  constructor(optimizer: SchedulableOptimizer, options?: ReduceLROnPlateauOptions) {
    checkOptimizer(optimizer, 'ReduceLROnPlateau')
    const at = { name: 'ReduceLROnPlateau', groups: optimizer.paramGroups.length }
    const source = options ?? {}
    checkKeys(source, Object.keys(REDUCE_LR_ON_PLATEAU), 'options', at)
    this.optimizer = optimizer
    this.#args = readFields(REDUCE_LR_ON_PLATEAU, source, 'options', at, true)
    this.#progress = { lastEpoch: 0, lastLr: this.#lrs(), best: this.#worst(), numBadEpochs: 0, cooldownCounter: 0 }
  }

  /** The number of `step` calls so far. */
  get lastEpoch(): number {
    return this.#progress.lastEpoch
  }

  /** The best metric seen so far (±Infinity before the first). */
  get best(): number {
    return this.#progress.best
  }

  /** The learning rates after the last step, one per param group. */
  getLastLr(): number[] {
    return [...this.#progress.lastLr]
  }

  /** Records one epoch's metric and reduces the learning rates if it has not improved for long enough. */
  step(metric: number): void {
    if (typeof metric !== 'number') throw invalidType(`ReduceLROnPlateau: metric must be a number, got ${describe(metric)}`)
    const { patience, cooldown } = this.#args
    const next = { ...this.#progress, lastEpoch: this.#progress.lastEpoch + 1 }
    if (this.#isBetter(metric, next.best)) {
      next.best = metric
      next.numBadEpochs = 0
    } else {
      next.numBadEpochs += 1
    }
    if (next.cooldownCounter > 0) {
      next.cooldownCounter -= 1
      next.numBadEpochs = 0
    }
    if (next.numBadEpochs > patience) {
      this.#reduce()
      next.cooldownCounter = cooldown
      next.numBadEpochs = 0
    }
    next.lastLr = this.#lrs()
    this.#progress = next
  }

  /** Its arguments and progress (`lastEpoch`, `lastLr`, `best`, `numBadEpochs`, `cooldownCounter`). */
  stateDict(): Record<string, unknown> {
    return copy({ ...this.#args, ...this.#progress }) as Record<string, unknown>
  }

  /** Restores a `stateDict()`, checking every key first; on error nothing changes. */
  loadStateDict(stateDict: Record<string, unknown>): void {
    const at = { name: 'ReduceLROnPlateau', groups: this.optimizer.paramGroups.length }
    const keys = [...Object.keys(REDUCE_LR_ON_PLATEAU), ...Object.keys(PLATEAU_PROGRESS)]
    checkKeys(stateDict, keys, 'stateDict', at)
    const args = readFields(REDUCE_LR_ON_PLATEAU, stateDict, 'stateDict', at, false)
    const progress = readFields(PLATEAU_PROGRESS, stateDict, 'stateDict', at, false)
    Object.assign(this.#args, args)
    this.#progress = progress
  }

  #lrs(): number[] {
    return this.optimizer.paramGroups.map((group) => group.lr)
  }

  #worst(): number {
    return this.#args.mode === 'min' ? Infinity : -Infinity
  }

  #isBetter(a: number, best: number): boolean {
    const { mode, threshold, thresholdMode } = this.#args
    if (mode === 'min' && thresholdMode === 'rel') return a < best * (1.0 - threshold)
    if (mode === 'min') return a < best - threshold
    if (thresholdMode === 'rel') return a > best * (threshold + 1.0)
    return a > best + threshold
  }

  #reduce(): void {
    const { factor, minLr, eps } = this.#args
    const groups = this.optimizer.paramGroups as unknown as Group[]
    if (Array.isArray(minLr) && minLr.length !== groups.length) {
      throw invalidState(`ReduceLROnPlateau: the optimizer has ${groups.length} param groups, but minLr has ${minLr.length} values; give one per group`)
    }
    groups.forEach((group, i) => {
      const old = group.lr
      const lr = Math.max(old * factor, Array.isArray(minLr) ? minLr[i] : minLr)
      if (old - lr > eps) group.lr = lr
    })
  }
}
