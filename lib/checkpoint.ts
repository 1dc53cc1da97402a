// Optimizer checkpoints as safetensors files that PyTorch reads and writes too.
//
// Layout (https://github.com/huggingface/safetensors): an 8-byte little-endian header length, a
// JSON header mapping each tensor name to its dtype, shape and byte range, then the raw
// little-endian data. Tensor names follow PyTorch's state_dict keys: `state.0.exp_avg`,
// `state.0.step`, ...; the param groups go in the header's `__metadata__` as JSON under
// `param_groups`, with PyTorch's snake_case option names, so that in PyTorch
//   tensors = safetensors.torch.load_file(path); meta = safe_open(path, 'pt').metadata()
// gives back {'state': {0: {'exp_avg': ..., 'step': ...}}, 'param_groups': json.loads(meta['param_groups'])}.
import { readFileSync, writeFileSync } from 'node:fs'

import { describe, invalidType, invalidValue } from './errors'
import type { FloatArray, ParamState, StateDict } from './optimizer'

const snake = (name: string) => name.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`)
const camel = (name: string) => name.replace(/_([a-z])/g, (_, c: string) => c.toUpperCase())

/** Largest integer a float32 holds exactly: steps up to it are written as F32 scalars, like PyTorch's. */
const F32_EXACT = 2 ** 24

interface TensorInfo {
  dtype: 'F32' | 'F64' | 'I64'
  shape: number[]
  data_offsets: [number, number]
}

/** What a checkpoint holds: any optimizer's `stateDict()` (LBFGS's keeps no `step`). */
export interface CheckpointDict {
  state: Record<number, Record<string, FloatArray | number | undefined>>
  paramGroups: ReadonlyArray<object>
  shapes?: Record<number, Record<string, number[]>>
}

/** Encodes a state dict as safetensors bytes. */
export function encodeSafetensors(stateDict: CheckpointDict): Uint8Array {
  const tensors: NamedTensor[] = []
  for (const [id, state] of Object.entries(stateDict.state)) {
    for (const [key, value] of Object.entries(state)) {
      if (value === undefined) continue
      const name = `state.${id}.${snake(key)}`
      if (typeof value === 'number') {
        const exact = key === 'step' && Number.isInteger(value) && Math.abs(value) <= F32_EXACT
        const array = exact ? Float32Array.of(value) : Float64Array.of(value)
        tensors.push({ name, dtype: exact ? 'F32' : 'F64', shape: [], bytes: new Uint8Array(array.buffer) })
      } else {
        const dtype = value instanceof Float32Array ? 'F32' : 'F64'
        const shape = stateDict.shapes?.[Number(id)]?.[key] ?? [value.length]
        tensors.push({
          name,
          dtype,
          shape: [...shape],
          bytes: new Uint8Array(value.buffer, value.byteOffset, value.byteLength),
        })
      }
    }
  }
  const paramGroups = stateDict.paramGroups.map((group) =>
    Object.fromEntries(Object.entries(group).map(([k, v]) => [snake(k), v])),
  )
  return encodeTensors(tensors, { format: 'pt', param_groups: JSON.stringify(paramGroups) })
}

/** One tensor of a safetensors file, its data as little-endian bytes. */
export interface NamedTensor {
  name: string
  dtype: 'F32' | 'F64' | 'I64'
  shape: number[]
  bytes: Uint8Array
}

/** A tensor as read from a safetensors file; I64 data as a BigInt64Array. */
export interface DecodedTensor {
  name: string
  shape: number[]
  values: FloatArray | BigInt64Array
}

const ELEMENT_BYTES = { F32: 4, F64: 8, I64: 8 } as const

/** Lays `tensors` out as a safetensors file, with `metadata` as the header's `__metadata__`. */
export function encodeTensors(tensors: NamedTensor[], metadata: Record<string, string>): Uint8Array {
  const header: Record<string, unknown> = { __metadata__: metadata }
  let offset = 0
  for (const t of tensors) {
    header[t.name] = {
      dtype: t.dtype,
      shape: t.shape,
      data_offsets: [offset, offset + t.bytes.byteLength],
    } satisfies TensorInfo
    offset += t.bytes.byteLength
  }
  let json = JSON.stringify(header)
  json += ' '.repeat((8 - ((8 + Buffer.byteLength(json)) % 8)) % 8)
  const headerBytes = Buffer.from(json, 'utf8')
  const out = new Uint8Array(8 + headerBytes.byteLength + offset)
  new DataView(out.buffer).setBigUint64(0, BigInt(headerBytes.byteLength), true)
  out.set(headerBytes, 8)
  let at = 8 + headerBytes.byteLength
  for (const t of tensors) {
    out.set(t.bytes, at)
    at += t.bytes.byteLength
  }
  return out
}

/**
 * Reads a safetensors file: its `__metadata__` (empty if it has none) and its tensors, each
 * copied out. Throws `ERR_INVALID_ARG_VALUE`, saying it is not a valid `what`, on anything
 * malformed (truncated data, ranges outside the file, dtypes other than F32, F64 and I64).
 */
export function decodeTensors(
  bytes: Uint8Array,
  what: string,
): { metadata: Record<string, unknown>; tensors: DecodedTensor[] } {
  const corrupt = (why: string) => invalidValue(`not a valid ${what}: ${why}`)
  if (!(bytes instanceof Uint8Array)) throw invalidType(`${what} bytes must be a Uint8Array, got ${describe(bytes)}`)
  if (bytes.byteLength < 8) throw corrupt(`${bytes.byteLength} bytes, shorter than the 8-byte header length`)
  const headerLength = Number(new DataView(bytes.buffer, bytes.byteOffset, 8).getBigUint64(0, true))
  if (headerLength > bytes.byteLength - 8) throw corrupt(`header length ${headerLength} exceeds the file`)
  let header: Record<string, unknown>
  try {
    header = JSON.parse(Buffer.from(bytes.buffer, bytes.byteOffset + 8, headerLength).toString('utf8'))
  } catch (error) {
    throw corrupt(`header is not JSON (${(error as Error).message})`)
  }
  if (typeof header !== 'object' || header === null) throw corrupt('header is not an object')
  const dataStart = 8 + headerLength
  const dataLength = bytes.byteLength - dataStart
  const tensors: DecodedTensor[] = []
  for (const [name, info] of Object.entries(header)) {
    if (name === '__metadata__') continue
    const { dtype, shape, data_offsets: range } = info as TensorInfo
    const size = Object.hasOwn(ELEMENT_BYTES, dtype) ? ELEMENT_BYTES[dtype] : 0
    if (size === 0) throw corrupt(`${name} has dtype ${String(dtype)} (expected F32, F64 or I64)`)
    if (
      !Array.isArray(shape) ||
      !shape.every((d) => Number.isSafeInteger(d) && d >= 0) ||
      !Array.isArray(range) ||
      range.length !== 2
    ) {
      throw corrupt(`${name} has a malformed shape or data_offsets`)
    }
    const [begin, end] = range
    const count = shape.reduce((a: number, b: number) => a * b, 1)
    if (
      !Number.isSafeInteger(begin) ||
      !Number.isSafeInteger(end) ||
      begin < 0 ||
      end > dataLength ||
      end - begin !== count * size
    ) {
      throw corrupt(
        `${name}: data_offsets [${begin}, ${end}] do not fit ${count} ${dtype} values in ${dataLength} data bytes`,
      )
    }
    // Copy into a buffer of its own: the data in the file need not be aligned for a typed array
    // view (and a Node Buffer's slice() would share its pool).
    const copy = new Uint8Array(bytes.subarray(dataStart + begin, dataStart + end)).buffer
    const values =
      dtype === 'F32' ? new Float32Array(copy) : dtype === 'F64' ? new Float64Array(copy) : new BigInt64Array(copy)
    tensors.push({ name, shape: [...shape], values })
  }
  return { metadata: (header.__metadata__ ?? {}) as Record<string, unknown>, tensors }
}

/**
 * Decodes safetensors bytes written by `encodeSafetensors` or by PyTorch into a state dict for
 * `loadStateDict`. Throws on anything malformed (truncated data, ranges outside the file,
 * dtypes other than F32/F64, names that are not `state.<n>.<key>`).
 */
export function decodeSafetensors(bytes: Uint8Array): StateDict<object> {
  const corrupt = (why: string) => invalidValue(`not a valid optimizer checkpoint: ${why}`)
  const { metadata, tensors } = decodeTensors(bytes, 'optimizer checkpoint')
  if (typeof metadata.param_groups !== 'string') throw corrupt('__metadata__.param_groups is missing')
  let groups: unknown
  try {
    groups = JSON.parse(metadata.param_groups)
  } catch {
    throw corrupt('__metadata__.param_groups is not JSON')
  }
  if (!Array.isArray(groups)) throw corrupt('__metadata__.param_groups is not an array')
  const paramGroups = groups.map((group) =>
    Object.fromEntries(Object.entries(group as object).map(([k, v]) => [camel(k), v])),
  )

  const state: Record<number, ParamState> = {}
  const shapes: Record<number, Record<string, number[]>> = {}
  for (const { name, shape, values } of tensors) {
    const match = /^state\.(\d+)\.(\w+)$/.exec(name)
    if (!match) throw corrupt(`tensor ${JSON.stringify(name)} is not named state.<n>.<key>`)
    if (values instanceof BigInt64Array) throw corrupt(`${name} has dtype I64 (expected F32 or F64)`)
    const entry = (state[Number(match[1])] ??= {} as ParamState)
    entry[camel(match[2])] = shape.length === 0 ? values[0] : values
    if (shape.length > 1) (shapes[Number(match[1])] ??= {})[camel(match[2])] = [...shape]
  }
  const groupsOut = paramGroups as StateDict<object>['paramGroups']
  return Object.keys(shapes).length > 0 ? { state, paramGroups: groupsOut, shapes } : { state, paramGroups: groupsOut }
}

/** Writes `opt.stateDict()` to a safetensors file. */
export function saveStateDict(path: string, stateDict: CheckpointDict): void {
  writeFileSync(path, encodeSafetensors(stateDict))
}

/** Reads a safetensors checkpoint (fastoptim's or PyTorch's) for `opt.loadStateDict`. */
export function loadStateDict<Options extends object = Record<string, unknown>>(path: string): StateDict<Options> {
  return decodeSafetensors(readFileSync(path)) as StateDict<Options>
}
