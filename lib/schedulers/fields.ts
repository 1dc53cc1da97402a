// Reading and checking the schedulers' options and saved state, and the optimizer they are given.
// A field reads one value, checks it and returns it normalized; the same fields check a
// constructor's options and a state dict being loaded.
import { describe, invalidType, invalidValue, outOfRange } from '../errors'

/** What a scheduler needs of an optimizer: its live param groups, and its defaults (OneCycleLR). */
export interface SchedulableOptimizer {
  readonly paramGroups: ReadonlyArray<{ lr: number }>
  readonly defaults: object
}

/** A param group as the schedulers read and write it: `lr`, and any other option by name. */
export type Group = Record<string, unknown> & { lr: number }

/** Who is reading: for messages, and for the length of per-group values. */
export interface Context {
  /** The scheduler's class name, which starts every message. */
  name: string
  /** How many param groups the optimizer has, for per-group values. */
  groups: number
}

/** How one option or saved value is read and checked. */
export interface Field<T> {
  read(value: unknown, path: string, at: Context): T
  /** Read in place of an option that is left out; a field without one is required. */
  default?: unknown
  /** Whether `stateDict()` includes it (LambdaLR's functions are left out, as in PyTorch). */
  saved?: boolean
}

/** A scheduler's options, or its saved state, field by field. */
export type Fields = Record<string, Field<unknown>>
/** What reading every field of `F` gives. */
export type Values<F extends Fields> = { -readonly [K in keyof F]: F[K] extends Field<infer T> ? T : never }

function aNumber(value: unknown, path: string, at: Context): number {
  if (typeof value !== 'number') throw invalidType(`${at.name}: ${path} must be a number, got ${describe(value)}`)
  return value
}

/** A number for which `holds` is true; `expected` says which, in the message. */
export function number(holds: (x: number) => boolean = () => true, expected = 'a number'): Field<number> {
  return {
    read(value, path, at) {
      const x = aNumber(value, path, at)
      if (!holds(x)) throw outOfRange(`${at.name}: invalid ${path}: ${x} (expected ${expected})`)
      return x
    },
  }
}

export const anyNumber = number()
export const finiteNumber = number(Number.isFinite, 'a finite number')
export const nonNegative = number((x) => Number.isFinite(x) && x >= 0, 'a finite number >= 0')
export const positive = number((x) => Number.isFinite(x) && x > 0, 'a finite number > 0')

/** A safe integer >= `min`. */
export function integer(min: number): Field<number> {
  return number((x) => Number.isSafeInteger(x) && x >= min, `an integer >= ${min}`)
}

/** One of the given strings. */
export function choice<T extends string>(...choices: T[]): Field<T> {
  return {
    read(value, path, at) {
      if (typeof value !== 'string') throw invalidType(`${at.name}: ${path} must be a string, got ${describe(value)}`)
      if (!(choices as string[]).includes(value)) {
        throw invalidValue(
          `${at.name}: invalid ${path}: ${JSON.stringify(value)} ` +
            `(expected ${choices.map((c) => JSON.stringify(c)).join(' or ')})`,
        )
      }
      return value as T
    },
  }
}

/** A function of one number: LambdaLR's `lrLambda`, CyclicLR's `scaleFn`. */
export type NumberFunction = (x: number) => number

/** A function; what it returns is checked where it is called, by {@link numberFrom}. */
export const aFunction: Field<NumberFunction> = {
  read(value, path, at) {
    if (typeof value !== 'function') throw invalidType(`${at.name}: ${path} must be a function, got ${describe(value)}`)
    return value as NumberFunction
  },
}

/** `fn(x)`, which must be a number; `call` is how the message names `fn`. */
export function numberFrom(fn: NumberFunction, x: number, call: string, name: string): number {
  const result: unknown = fn(x)
  if (typeof result !== 'number')
    throw invalidType(`${name}: ${call}(${x}) must return a number, got ${describe(result)}`)
  return result
}

/** A boolean. */
export const flag: Field<boolean> = {
  read(value, path, at) {
    if (typeof value !== 'boolean') throw invalidType(`${at.name}: ${path} must be a boolean, got ${describe(value)}`)
    return value
  },
}

/** An array of `element`s; with `length`, exactly that many. */
export function list<T>(element: Field<T>, length?: (at: Context) => number): Field<T[]> {
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
export function perGroup<T>(element: Field<T>): Field<T[]> {
  return list(element, (at) => at.groups)
}

/** One value for every group, or a list of one per group (PyTorch's `_format_param`); kept as a list. */
export function broadcast<T>(element: Field<T>): Field<T[]> {
  const each = perGroup(element)
  return {
    read: (value, path, at) =>
      Array.isArray(value) ? each.read(value, path, at) : Array<T>(at.groups).fill(element.read(value, path, at)),
  }
}

/** `field` with a default, which makes it optional. */
export function withDefault<T>(field: Field<T>, value: unknown): Field<T> {
  return { ...field, default: value }
}

/** Also accepts null, PyTorch's None. */
export function nullable<T>(field: Field<T>): Field<T | null> {
  return { read: (value, path, at) => (value === null ? null : field.read(value, path, at)) }
}

/** Integers >= `min`, each greater than the one before. */
export function increasing(min: number): Field<number[]> {
  const each = list(integer(min))
  return {
    read(value, path, at) {
      const values = each.read(value, path, at)
      values.forEach((x, i) => {
        if (i > 0 && x <= values[i - 1]) {
          throw outOfRange(
            `${at.name}: invalid ${path}[${i}]: ${x} (expected more than ${path}[${i - 1}], ${values[i - 1]})`,
          )
        }
      })
      return values
    },
  }
}

/** `field`, left out of `stateDict()`. */
export function unsaved<T>(field: Field<T>): Field<T> {
  return { ...field, saved: false }
}

/** `value` with its arrays, and the arrays in them, copied. */
export function copy<T>(value: T): T {
  return (Array.isArray(value) ? value.map(copy) : value) as T
}

/** Reads `source[key]` for every field into a fresh object; nothing is kept if any fails. */
export function readFields<F extends Fields>(
  fields: F,
  source: Record<string, unknown>,
  where: string,
  at: Context,
  useDefaults: boolean,
): Values<F> {
  const out: Record<string, unknown> = {}
  for (const [key, field] of Object.entries(fields)) {
    if (!useDefaults && field.saved === false) continue
    const value = source[key] === undefined && useDefaults && 'default' in field ? field.default : source[key]
    out[key] = field.read(value, `${where}.${key}`, at)
  }
  return out as Values<F>
}

/** Checks that `source` is an object with no keys but `allowed`. */
export function checkKeys(
  source: unknown,
  allowed: readonly string[],
  where: string,
  at: Context,
): asserts source is Record<string, unknown> {
  if (typeof source !== 'object' || source === null || Array.isArray(source)) {
    throw invalidType(`${at.name}: ${where} must be an object, got ${describe(source)}`)
  }
  for (const key of Object.keys(source)) {
    if (!allowed.includes(key)) {
      throw invalidValue(
        `${at.name}: ${where}.${key} is not ${where === 'stateDict' ? 'saved by' : 'an option of'} ${at.name} ` +
          `(expected one of ${allowed.join(', ')})`,
      )
    }
  }
}

/** Checks that `optimizer` has param groups, each with a number as `lr`. */
export function checkOptimizer(optimizer: unknown, name: string): asserts optimizer is SchedulableOptimizer {
  const groups = (optimizer as SchedulableOptimizer | null)?.paramGroups
  if (typeof optimizer !== 'object' || optimizer === null || !Array.isArray(groups)) {
    throw invalidType(`${name}: optimizer must be an optimizer with paramGroups, got ${describe(optimizer)}`)
  }
  groups.forEach((group: unknown, i) => {
    if (typeof (group as Group | null)?.lr !== 'number') {
      throw invalidType(
        `${name}: optimizer.paramGroups[${i}].lr must be a number, got ${describe((group as Group | null)?.lr)}`,
      )
    }
  })
}

/** Writes the momentum OneCycleLR and CyclicLR cycle into a group. */
export type MomentumSetter = (group: Group, momentum: number) => void

/**
 * Where `optimizer` keeps the momentum a scheduler cycles, as PyTorch decides: `betas[0]` if its
 * defaults have `betas` (Adam and kin), else `momentum` (SGD, RMSprop). With `cycleMomentum`, an
 * optimizer with neither is refused, and so is a group whose `betas` is not an array.
 */
export function momentumSetter(name: string, optimizer: SchedulableOptimizer, cycleMomentum: boolean): MomentumSetter {
  const defaults = optimizer.defaults as Record<string, unknown>
  const useBeta1 = 'betas' in defaults
  if (cycleMomentum && !useBeta1 && !('momentum' in defaults)) {
    throw invalidValue(`${name}: cycleMomentum needs an optimizer with momentum or betas; pass cycleMomentum: false`)
  }
  if (cycleMomentum && useBeta1) {
    optimizer.paramGroups.forEach(({ betas }: Partial<Group>, i) => {
      if (!Array.isArray(betas)) {
        throw invalidType(`${name}: optimizer.paramGroups[${i}].betas must be an array, got ${describe(betas)}`)
      }
    })
  }
  if (useBeta1) return (group, momentum) => (group.betas = [momentum, ...(group.betas as number[]).slice(1)])
  return (group, momentum) => (group.momentum = momentum)
}
