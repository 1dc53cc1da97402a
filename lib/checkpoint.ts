// Optimizer checkpoints as safetensors files that PyTorch reads and writes too.
//
// Parsed and written by the safetensors crate in the binding (`decodeCheckpoint`,
// `encodeCheckpoint`, src/checkpoint.rs over crate/src/checkpoint.rs), which checks the header
// length, the JSON header, every tensor's dtype, shape and data_offsets. Tensor names follow
// PyTorch's state_dict keys: `state.0.exp_avg`, `state.0.step`, ...; the param groups go in the
// header's `__metadata__` as JSON under `param_groups`, with PyTorch's snake_case option names,
// so that in PyTorch
//   tensors = safetensors.torch.load_file(path); meta = safe_open(path, 'pt').metadata()
// gives back {'state': {0: {'exp_avg': ..., 'step': ...}}, 'param_groups': json.loads(meta['param_groups'])}.
//
// State values and their dtypes: a number is a 0-D tensor (F32 for a step count up to 2^24, as
// PyTorch writes it, F64 otherwise); Float32Array F32, Float64Array F64, Uint8Array U8 (8-bit
// codes), Uint16Array BF16 (raw bit patterns), Int32Array I32, BigInt64Array I64. Reading gives
// the same arrays back (F16, which PyTorch may write, reads as a Float32Array, exactly), and 0-D
// tensors as numbers.
import { readFileSync, writeFileSync } from 'node:fs'

import { describe, invalidType, invalidValue, outOfRange } from './errors'
import { native } from './native'
import type { FloatArray, ParamState, StateDict } from './optimizer'
import {
  checkUsable,
  isPlainObject,
  lengthOf,
  snapshotArray,
  snapshotObject,
  typedArrayTag,
  snapshotStateDict,
} from './snapshot'

/** PyTorch's name of a state key or option (`expAvg` → `exp_avg`), and back. */
export const snake = (name: string) => name.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`)
export const camel = (name: string) => name.replace(/_([a-z])/g, (_, c: string) => c.toUpperCase())

/** Largest integer a float32 holds exactly: steps up to it are written as F32 scalars, like PyTorch's. */
const F32_EXACT = 2 ** 24

/** A 0-D tensor of state: a step count up to 2^24 as F32, as PyTorch keeps it; anything else F64. */
export function scalarTensor(key: string, value: number): { dtype: 'F32' | 'F64'; data: Uint8Array } {
  const exact = key === 'step' && Number.isInteger(value) && Math.abs(value) <= F32_EXACT
  const array = exact ? Float32Array.of(value) : Float64Array.of(value)
  return { dtype: exact ? 'F32' : 'F64', data: new Uint8Array(array.buffer) }
}

/** The dtype each typed array is written as. */
const DTYPES: Readonly<Record<string, string>> = {
  Float32Array: 'F32',
  Float64Array: 'F64',
  Uint8Array: 'U8',
  Uint16Array: 'BF16',
  Int32Array: 'I32',
  BigInt64Array: 'I64',
}

type TensorToEncode = Parameters<typeof native.encodeCheckpoint>[1][number]

/** What a checkpoint holds: any optimizer's `stateDict()` (LBFGS's keeps no `step`; absent entries are skipped). */
export interface CheckpointDict {
  state: Record<number, Record<string, FloatArray | Uint8Array | number | undefined>>
  paramGroups: ReadonlyArray<object>
  shapes?: Record<number, Record<string, number[]>>
}

/** A JSON value of a param group: numbers, booleans, null, strings, and arrays of them. */
function checkGroupValue(value: unknown, where: string): unknown {
  const array = snapshotArray(value)
  if (array) return array.map((v, i) => checkGroupValue(v, `${where}[${i}]`))
  if (value === null || typeof value === 'boolean' || typeof value === 'string') return value
  if (typeof value === 'number') {
    if (!Number.isFinite(value)) throw outOfRange(`${where} is ${value}, which JSON cannot hold`)
    return value
  }
  throw invalidType(`${where} must be a number, boolean, string, null or an array of them, got ${describe(value)}`)
}

/** The shape of a state buffer of `length` elements: `given` checked, or flat. */
function shapeOf(given: unknown, length: number, where: string): number[] {
  if (given === undefined) return [length]
  const shape = snapshotArray(given)
  if (!shape || !shape.every((d) => Number.isSafeInteger(d) && (d as number) >= 0 && (d as number) < 2 ** 32))
    throw invalidType(`${where} must be an array of whole numbers from 0 to 2^32 - 1, got ${describe(given)}`)
  const count = (shape as number[]).reduce((a, b) => a * b, 1)
  if (count !== length)
    throw outOfRange(`${where} ${JSON.stringify(shape)} holds ${count} elements, but the state has ${length}`)
  return shape as number[]
}

/**
 * Encodes a state dict as safetensors bytes. Everything is read once and checked first; a value
 * that cannot be written (a string as state, a detached array, a shape that does not fit)
 * throws a coded error and nothing is written.
 */
export function encodeSafetensors(stateDict: CheckpointDict): Uint8Array {
  const { dict, paramGroups: groups } = snapshotStateDict(stateDict)
  const paramGroups = groups.map((group, g) => {
    const where = `stateDict.paramGroups[${g}]`
    const entries = Object.entries(snapshotObject(group, where))
    return Object.fromEntries(entries.map(([k, v]) => [snake(k), checkGroupValue(v, `${where}.${k}`)]))
  })
  const shapes = dict.shapes === undefined ? Object.create(null) : snapshotObject(dict.shapes, 'stateDict.shapes')
  const tensors: TensorToEncode[] = []
  for (const [id, state] of Object.entries(snapshotObject(dict.state, 'stateDict.state'))) {
    const where = `stateDict.state[${id}]`
    const param = Number(id)
    if (!(String(param) === id && Number.isSafeInteger(param) && param >= 0 && param < 2 ** 32))
      throw invalidValue(`${where}: state is keyed by parameter positions 0, 1, ..., got ${JSON.stringify(id)}`)
    const paramShapes =
      shapes[id] === undefined ? Object.create(null) : snapshotObject(shapes[id], `stateDict.shapes[${id}]`)
    for (const [key, value] of Object.entries(snapshotObject(state, where))) {
      if (!/^[A-Za-z0-9]+$/.test(key))
        throw invalidValue(
          `${where}.${key}: state names are letters and digits (camelCase), got ${JSON.stringify(key)}`,
        )
      if (value === undefined) continue
      const name = { param, key: snake(key) }
      if (typeof value === 'number') {
        tensors.push({ ...name, ...scalarTensor(key, value), shape: [] })
        continue
      }
      const tag = typedArrayTag(value)
      const dtype = tag === undefined ? undefined : DTYPES[tag]
      if (dtype === undefined) {
        throw invalidType(
          `${where}.${key} must be a number or one of ${Object.keys(DTYPES).join(', ')}, got ${describe(value)}`,
        )
      }
      const array = value as ArrayBufferView
      checkUsable(array, `${where}.${key}`)
      const shape = shapeOf(paramShapes[key], lengthOf(array), `stateDict.shapes[${id}].${key}`)
      // A copy: the bytes cross to the binding as they are now.
      const data = new Uint8Array(array.buffer, array.byteOffset, array.byteLength).slice()
      tensors.push({ ...name, dtype, shape, data })
    }
  }
  return native.encodeCheckpoint({ format: 'pt', param_groups: JSON.stringify(paramGroups) }, tensors)
}

/**
 * Decodes safetensors bytes written by `encodeSafetensors` or by PyTorch into a state dict for
 * `loadStateDict`. Throws `ERR_INVALID_ARG_VALUE` on anything malformed (truncated data, ranges
 * outside the file or out of order, dtypes other than those above, names that are not
 * `state.<n>.<key>`, param groups that are not a JSON array of objects).
 */
export function decodeSafetensors(bytes: Uint8Array): StateDict<object> {
  const corrupt = (why: string) => invalidValue(`not a valid optimizer checkpoint: ${why}`)
  const { metadata, tensors } = native.decodeCheckpoint(bytes)
  const text = Object.hasOwn(metadata, 'param_groups') ? metadata.param_groups : undefined
  if (typeof text !== 'string') throw corrupt('__metadata__.param_groups is missing')
  let groups: unknown
  try {
    groups = JSON.parse(text)
  } catch {
    throw corrupt('__metadata__.param_groups is not JSON')
  }
  if (!Array.isArray(groups)) throw corrupt('__metadata__.param_groups is not an array')
  const paramGroups = groups.map((group, g) => {
    if (!isPlainObject(group)) throw corrupt(`__metadata__.param_groups[${g}] is ${describe(group)}, not an object`)
    return Object.fromEntries(Object.entries(group).map(([k, v]) => [camel(k), v]))
  }) as StateDict<object>['paramGroups']

  const state: Record<number, ParamState> = {}
  const shapes: Record<number, Record<string, number[]>> = {}
  for (const { param, key, shape, data, scalar } of tensors) {
    const name = camel(key)
    const entry = (state[param] ??= {} as ParamState)
    if (Object.hasOwn(entry, name)) throw corrupt(`state.${param}.${key} is given twice (as ${name})`)
    entry[name] = (scalar ?? data) as ParamState[string]
    if (shape.length > 1) (shapes[param] ??= {})[name] = shape
  }
  return Object.keys(shapes).length > 0 ? { state, paramGroups, shapes } : { state, paramGroups }
}

/** Writes `opt.stateDict()` to a safetensors file. */
export function saveStateDict(path: string, stateDict: CheckpointDict): void {
  writeFileSync(path, encodeSafetensors(stateDict))
}

/** Reads a safetensors checkpoint (fastoptim's or PyTorch's) for `opt.loadStateDict`. */
export function loadStateDict<Options extends object = Record<string, unknown>>(path: string): StateDict<Options> {
  return decodeSafetensors(readFileSync(path)) as StateDict<Options>
}
