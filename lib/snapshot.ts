// Reading a caller's input once. Every public entry point copies what it is given into a plain
// snapshot (own enumerable properties, each read once; arrays element by element, holes read as
// undefined), checks the snapshot, and uses only the snapshot: a getter or a Proxy that answers
// differently on a second read is never read a second time.
import { describe, invalidState, invalidType, invalidValue } from './errors'

const TypedArrayPrototype = Object.getPrototypeOf(Float32Array.prototype) as object
const intrinsic = (name: PropertyKey) => Object.getOwnPropertyDescriptor(TypedArrayPrototype, name)!

/**
 * The typed array kind of `value` (`'Float32Array'`), read from the engine's own slot, or
 * undefined for anything else: a Proxy around a typed array is not one, a typed array of another
 * realm (`vm`) is, and no getter or `constructor` of the caller's is consulted.
 */
export const typedArrayTag: (value: unknown) => string | undefined = Function.prototype.call.bind(
  intrinsic(Symbol.toStringTag).get!,
)

/** The element count, 0 once detached or out of bounds, from the engine's own getter. */
export const lengthOf: (array: ArrayBufferView) => number = Function.prototype.call.bind(intrinsic('length').get!)

const fill: (array: ArrayBufferView, value: number) => unknown = Function.prototype.call.bind(
  (TypedArrayPrototype as { fill: (...args: unknown[]) => unknown }).fill,
)

export type FloatArray = Float32Array | Float64Array

/** Whether `value` is a Float32Array or Float64Array (of any realm; never a Proxy). */
export function isFloatArray(value: unknown): value is FloatArray {
  const tag = typedArrayTag(value)
  return tag === 'Float32Array' || tag === 'Float64Array'
}

/**
 * Whether a typed array's memory can be used: attached, and (on a resizable ArrayBuffer) not
 * shrunk below it. An empty array is the only one that needs a look: filling it changes nothing
 * and throws exactly when it is detached or out of bounds.
 */
export function isUsable(array: ArrayBufferView): boolean {
  if (lengthOf(array) > 0) return true
  try {
    fill(array, 0)
    return true
  } catch {
    return false
  }
}

const bufferOf: (array: ArrayBufferView) => ArrayBufferLike = Function.prototype.call.bind(intrinsic('buffer').get!)

/**
 * Throws `ERR_INVALID_STATE` for an array whose memory is gone (transferred, or shrunk below it),
 * naming it `where` or, given `field`, `where.field` (built only then: a step checks every
 * parameter's arrays).
 */
export function checkUsable(array: ArrayBufferView, where: string, field?: string): void {
  if (isUsable(array)) return
  if (field !== undefined) where = `${where}.${field}`
  let detached = false
  try {
    new Uint8Array(bufferOf(array), 0, 0)
  } catch {
    detached = true
  }
  throw invalidState(
    detached
      ? `${where} is detached (its ArrayBuffer was transferred)`
      : `${where} is out of bounds (its resizable ArrayBuffer shrank below it)`,
  )
}

/** Whether `value` is a non-null object that is not an array (a Proxy of an object counts). */
export function isPlainObject(value: unknown): value is object {
  return typeof value === 'object' && value !== null && !Array.isArray(value)
}

/**
 * The own enumerable properties of `value`, each read once, into a null-prototype object.
 * Throws `ERR_INVALID_ARG_TYPE` naming `where` for what is not an object.
 */
export function snapshotObject(value: unknown, where: string): Record<string, unknown> {
  if (!isPlainObject(value)) throw invalidType(`${where} must be an object, got ${describe(value)}`)
  const copy: Record<string, unknown> = Object.create(null)
  for (const key of Object.keys(value)) copy[key] = (value as Record<string, unknown>)[key]
  return copy
}

/**
 * The elements of an array, each read once (a hole as undefined), or undefined if `value` is not
 * an array.
 */
export function snapshotArray(value: unknown): unknown[] | undefined {
  if (!Array.isArray(value)) return undefined
  const length = value.length
  const copy = new Array<unknown>(length)
  for (let i = 0; i < length; i++) copy[i] = value[i]
  return copy
}

/**
 * A state dict read once into a snapshot, with its `paramGroups` (each read once); refused unless
 * they are an array, of `groups` groups when that is given.
 */
export function snapshotStateDict(
  value: unknown,
  groups?: number,
): { dict: Record<string, unknown>; paramGroups: unknown[] } {
  const dict = snapshotObject(value, 'stateDict')
  const paramGroups = snapshotArray(dict.paramGroups)
  if (!paramGroups) throw invalidType(`stateDict.paramGroups must be an array, got ${describe(dict.paramGroups)}`)
  if (groups !== undefined && paramGroups.length !== groups)
    throw invalidValue(`stateDict.paramGroups has ${paramGroups.length} groups, but the optimizer has ${groups}`)
  return { dict, paramGroups }
}

/** An option's value as a snapshot: an array copied element by element, anything else as it is. */
export function snapshotValue(value: unknown): unknown {
  return snapshotArray(value) ?? value
}
