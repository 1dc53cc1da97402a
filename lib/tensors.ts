// Named tensors as a safetensors file (https://github.com/huggingface/safetensors): an 8-byte
// little-endian header length, a JSON header mapping each name to its dtype, shape and byte
// range, then the raw little-endian data. Weight averages (lib/averaging.ts) are kept in this
// form, as PyTorch's AveragedModel.state_dict() names them (`n_averaged`, `module.<i>`);
// optimizer checkpoints go through the binding's codec (lib/checkpoint.ts).
import { describe, invalidType, invalidValue } from './errors'
import type { FloatArray } from './optimizer'

interface TensorInfo {
  dtype: 'F32' | 'F64' | 'I64'
  shape: number[]
  data_offsets: [number, number]
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
