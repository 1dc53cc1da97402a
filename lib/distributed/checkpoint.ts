// Sharded optimizer checkpoints in the layout of torch.distributed.checkpoint's Hugging Face
// safetensors storage (HuggingFaceStorageWriter with save_distributed=True), so that
// `dcp.load(state_dict, storage_reader=HuggingFaceStorageReader(dir))` reads them, and written by
// it so that fastoptim reads its checkpoints:
//
//   dir/shard-<rank+1>-model-<k>-of-<K>.safetensors   each rank's pieces (5-digit numbers)
//   dir/model.safetensors.index.json                  the index (fastoptim's; PyTorch needs none)
//
// Every tensor is named `state.<name>.<key>` (the parameter's fully qualified name or position,
// PyTorch's snake_case state key), holds one rectangular chunk of the whole tensor, and the
// file's `__metadata__` says where it lies: `DCP_SHARDING_INFO` is JSON of `{name:
// {saved_offsets: [...]}}`, beside `DCP_VERSION` and `format`. A rank's piece of a parameter is a
// flat range, which is a rectangle only in one dimension; a range of a matrix is cut into at most
// three rectangles (a partial row, whole rows, a partial row; 2·d − 1 for d dimensions), and since
// one safetensors file holds a name once, a rank's k-th rectangles of every tensor go in its k-th
// file. PyTorch's reader lists every `.safetensors` file of the directory and joins the chunks
// by their offsets, whatever number of ranks wrote them; so does `loadShardedCheckpoint`, which
// therefore loads into any number of ranks.
//
// A checkpoint is written into `<dir>.tmp`, and renamed to `<dir>` only once every rank has
// written and synced its files and rank 0 the index: a checkpoint is complete or absent.
import {
  closeSync,
  existsSync,
  fsyncSync,
  mkdirSync,
  openSync,
  readdirSync,
  readFileSync,
  renameSync,
  rmSync,
  writeSync,
} from 'node:fs'
import { basename, dirname, join, resolve } from 'node:path'

import { camel, scalarTensor, snake } from '../checkpoint'
import { describe, invalidState, invalidType, invalidValue, outOfRange } from '../errors'
import { native } from '../native'
import type { FloatArray, ParamState } from '../optimizer'
import { loadPieces, ShardedOptimizer } from './sharded'

/** Names the parameters in a sharded checkpoint. */
export interface ShardedCheckpointOptions {
  /**
   * The parameters' fully qualified names, in the order the groups list them (PyTorch's
   * `model.named_parameters()` names, `fc1.weight`), as the tensors' names:
   * `state.fc1.weight.exp_avg`. By default, their positions: `state.0.exp_avg`.
   */
  names?: readonly string[]
}

/** torch.distributed.checkpoint's names (torch/distributed/checkpoint/_hf_utils.py). */
export const INDEX_FILE = 'model.safetensors.index.json'
const SHARDING_INFO = 'DCP_SHARDING_INFO'
const SAVED_OFFSETS = 'saved_offsets'
const DCP_VERSION = '1.0'

/** `shard-00001-model-00001-of-00002.safetensors`: rank 0's first of two files. */
export function shardFileName(rank: number, file: number, files: number): string {
  const five = (n: number) => String(n).padStart(5, '0')
  return `shard-${five(rank + 1)}-model-${five(file + 1)}-of-${five(files)}.safetensors`
}

/** A rectangular chunk of a tensor: where it begins in each dimension, and its sizes. */
interface Box {
  offsets: number[]
  sizes: number[]
}

/**
 * The flat range [start, end) of a row-major tensor of `shape`, as rectangles in flat order,
 * each a contiguous run of the range: at most 2·d − 1 of them for d dimensions.
 */
export function boxesOf(shape: readonly number[], start: number, end: number): Box[] {
  if (start >= end) return []
  if (shape.length <= 1) return [{ offsets: [start], sizes: [end - start] }]
  const inner = shape.slice(1).reduce((a, b) => a * b, 1)
  const row = (r: number, from: number, to: number) =>
    boxesOf(shape.slice(1), from, to).map(({ offsets, sizes }) => ({ offsets: [r, ...offsets], sizes: [1, ...sizes] }))
  let first = Math.floor(start / inner)
  const last = Math.floor(end / inner)
  if (first === last) return row(first, start - first * inner, end - first * inner)
  const boxes: Box[] = []
  if (start % inner !== 0) boxes.push(...row(first++, start % inner, inner))
  if (last > first)
    boxes.push({ offsets: [first, ...shape.slice(1).map(() => 0)], sizes: [last - first, ...shape.slice(1)] })
  if (end % inner !== 0) boxes.push(...row(last, 0, end % inner))
  return boxes
}

/** The flat position of every row (the last dimension's runs) of `box` in a tensor of `shape`. */
function forEachRun(
  shape: readonly number[],
  box: Box,
  run: (flat: number, source: number, length: number) => void,
): void {
  const d = shape.length
  const strides = shape.map((_, i) => shape.slice(i + 1).reduce((a, b) => a * b, 1))
  const length = box.sizes[d - 1]
  const rows = box.sizes.slice(0, -1).reduce((a, b) => a * b, 1)
  const index = new Array<number>(d - 1).fill(0)
  for (let r = 0; r < rows; r++) {
    let flat = box.offsets[d - 1]
    for (let i = 0; i < d - 1; i++) flat += (box.offsets[i] + index[i]) * strides[i]
    run(flat, r * length, length)
    for (let i = d - 2; i >= 0; i--) {
      if (++index[i] < box.sizes[i]) break
      index[i] = 0
    }
  }
}

/** The names, checked: one distinct, non-empty string per parameter; positions by default. */
function namesOf(given: readonly string[] | undefined, count: number): string[] {
  if (given === undefined) return Array.from({ length: count }, (_, i) => String(i))
  if (!Array.isArray(given) || given.length !== count)
    throw invalidValue(`options.names must list ${count} names, one per parameter, got ${describe(given)}`)
  const seen = new Set<string>()
  given.forEach((name, i) => {
    if (typeof name !== 'string' || name === '' || seen.has(name))
      throw invalidValue(`options.names[${i}] must be a distinct, non-empty string, got ${describe(name)}`)
    seen.add(name)
  })
  return [...given]
}

type Named = Parameters<typeof native.encodeTensors>[2][number]

/** The bytes of a typed array, copied, for the binding. */
const bytesOf = (array: ArrayBufferView) => new Uint8Array(array.buffer, array.byteOffset, array.byteLength).slice()

/** Writes `bytes` to `path` and syncs it to the disk. */
function writeSynced(path: string, bytes: Uint8Array | string): void {
  const data = typeof bytes === 'string' ? Buffer.from(bytes) : bytes
  const fd = openSync(path, 'w')
  try {
    for (let done = 0; done < data.length;) done += writeSync(fd, data, done)
    fsyncSync(fd)
  } finally {
    closeSync(fd)
  }
}

/** Syncs a directory's entries (a rename within it) to the disk, where the system allows it. */
function syncDirectory(path: string): void {
  try {
    const fd = openSync(path, 'r')
    try {
      fsyncSync(fd)
    } finally {
      closeSync(fd)
    }
  } catch {
    // Some systems cannot open or sync a directory; the rename itself is still atomic.
  }
}

/** The arguments every call takes, checked: a directory's path and a ShardedOptimizer. */
function checked(what: string, dir: unknown, opt: unknown): ShardedOptimizer<object> {
  if (typeof dir !== 'string' || dir === '')
    throw invalidType(`${what}: dir must be a non-empty path, got ${describe(dir)}`)
  if (!(opt instanceof ShardedOptimizer))
    throw invalidType(`${what}: opt must be a ShardedOptimizer, got ${describe(opt)}`)
  return opt as ShardedOptimizer<object>
}

/**
 * Runs `work` on every rank and has the ranks agree whether it succeeded everywhere (a
 * collective): a rank whose work threw rethrows its error, the others throw naming it.
 */
function together<T>(opt: ShardedOptimizer<object>, what: string, work: () => T): T {
  const { comm } = opt
  let failure: unknown
  let result: T | undefined
  try {
    result = work()
  } catch (error) {
    failure = error
  }
  const failed = new Float64Array(comm.size)
  failed[comm.rank] = failure === undefined ? 0 : 1
  comm.allReduce(failed, 'sum')
  if (failure !== undefined) throw failure
  const others = [...failed.keys()].filter((r) => failed[r] > 0)
  if (others.length > 0)
    throw invalidState(`${what}: rank${others.length > 1 ? 's' : ''} ${others.join(', ')} failed, so every rank stops`)
  return result as T
}

/**
 * Writes the optimizer's state to the directory `dir` as a sharded checkpoint (a collective:
 * every rank calls it with the same `dir` and names): each rank writes the pieces of the state
 * it holds, PyTorch's `torch.distributed.checkpoint` reads them with its
 * `HuggingFaceStorageReader`, and `loadShardedCheckpoint` loads them into any number of ranks.
 * The directory is replaced whole, once every rank has written: it holds the old checkpoint or
 * the new one, never part of one (a checkpoint being written is `<dir>.tmp`, the one it
 * replaces `<dir>.old` for the moment of the swap). Every rank must see the same file system.
 */
export function saveShardedCheckpoint<Options extends object>(
  dir: string,
  opt: ShardedOptimizer<Options>,
  options: ShardedCheckpointOptions = {},
): void {
  const sharded = checked('saveShardedCheckpoint', dir, opt)
  // `ckpt/` and `ckpt` alike: the temporary and old names are beside the directory, not in it.
  dir = resolve(dir)
  const { comm } = sharded
  const { rank, size } = comm
  const pieces = sharded.pieces()
  const names = namesOf(options.names, pieces.length)
  const tmp = `${dir}.tmp`
  const old = `${dir}.old`

  // This rank's tensors, file by file: the k-th rectangle of every buffer goes in file k.
  const files: Array<{ tensors: Named[]; info: Record<string, { [SAVED_OFFSETS]: number[] }> }> = []
  const firstFile = new Map<string, number>()
  let bytes = 0
  const add = (file: number, tensor: Named, offsets: number[]) => {
    while (files.length <= file) files.push({ tensors: [], info: {} })
    files[file].tensors.push(tensor)
    files[file].info[tensor.name] = { [SAVED_OFFSETS]: offsets }
    bytes += tensor.data.length
  }
  const layout = together(sharded, 'saveShardedCheckpoint', () => {
    pieces.forEach((entry, i) => {
      if (!entry) return
      const state = sharded.inner.getState(entry.piece)
      if (!state) return
      const shape = entry.param.shape ? [...entry.param.shape] : [entry.param.data.length]
      for (const [key, value] of Object.entries(state)) {
        const name = `state.${names[i]}.${snake(key)}`
        if (typeof value === 'number') {
          // Scalars once, by the rank holding the parameter's first element; steps as PyTorch writes them.
          if (entry.start !== 0) continue
          add(0, { name, ...scalarTensor(key, value), shape: [] }, [])
          firstFile.set(name, 0)
          continue
        }
        const dtype = value instanceof Float32Array ? 'F32' : 'F64'
        boxesOf(shape, entry.start, entry.end).forEach((box, k) => {
          const from = boxStart(shape, box) - entry.start
          const count = box.sizes.reduce((a, b) => a * b, 1)
          const data = bytesOf((value as FloatArray).subarray(from, from + count))
          add(k, { name, dtype, shape: box.sizes, data }, box.offsets)
          if (box.offsets.every((o) => o === 0)) firstFile.set(name, k)
        })
      }
    })
    return { files: files.length, bytes }
  })

  // Every rank's number of files and bytes, for the file names and the index.
  const counts = new Float64Array(2 * size)
  counts[2 * rank] = layout.files
  counts[2 * rank + 1] = layout.bytes
  comm.allGather(counts)
  const fileCount = Math.max(...Array.from({ length: size }, (_, r) => counts[2 * r]))
  together(sharded, 'saveShardedCheckpoint', () => {
    if (rank === 0) {
      rmSync(tmp, { recursive: true, force: true })
      mkdirSync(tmp, { recursive: true })
    }
  })
  together(sharded, 'saveShardedCheckpoint', () => {
    files.forEach(({ tensors, info }, k) => {
      const metadata = { [SHARDING_INFO]: JSON.stringify(info), DCP_VERSION, format: 'pt' }
      writeSynced(join(tmp, shardFileName(rank, k, fileCount)), native.encodeTensors('any', metadata, tensors))
    })
  })
  // The index: where each tensor begins (HF's weight_map), every file, and the groups' options.
  const weightMap: Record<string, string> = {}
  for (const [name, k] of firstFile) weightMap[name] = shardFileName(rank, k, fileCount)
  const maps = gatherText(sharded, JSON.stringify(weightMap))
  together(sharded, 'saveShardedCheckpoint', () => {
    if (rank !== 0) return
    const shardFiles = Array.from({ length: size }, (_, r) =>
      Array.from({ length: counts[2 * r] }, (_, k) => shardFileName(r, k, fileCount)),
    ).flat()
    const paramGroups = groupsOf(sharded)
    const index = {
      metadata: {
        total_size: Array.from({ length: size }, (_, r) => counts[2 * r + 1]).reduce((a, b) => a + b, 0),
        world_size: size,
        files: shardFiles,
        param_groups: paramGroups,
      },
      weight_map: Object.assign({}, ...maps.map((text) => JSON.parse(text) as Record<string, string>)),
    }
    writeSynced(join(tmp, INDEX_FILE), `${JSON.stringify(index, null, 2)}\n`)
    syncDirectory(tmp)
    // The swap: the old checkpoint aside, the new one in its place, the old one gone.
    rmSync(old, { recursive: true, force: true })
    if (existsSync(dir)) renameSync(dir, old)
    renameSync(tmp, dir)
    syncDirectory(dirname(dir))
    rmSync(old, { recursive: true, force: true })
  })
}

/** The flat position of a box's first element in a tensor of `shape`. */
function boxStart(shape: readonly number[], box: Box): number {
  let flat = 0
  shape.forEach((_, i) => (flat = flat * shape[i] + box.offsets[i]))
  return flat
}

/** The groups' options, snake_case as PyTorch's, with their parameters' positions. */
function groupsOf(opt: ShardedOptimizer<object>): object[] {
  let next = 0
  return opt.paramGroups.map(({ params, ...options }) => ({
    ...Object.fromEntries(Object.entries(options).map(([k, v]) => [snake(k), v])),
    params: params.map(() => next++),
  }))
}

/** Every rank's `text`, by rank (a collective: its UTF-16 code units all-gathered as numbers). */
function gatherText(opt: ShardedOptimizer<object>, text: string): string[] {
  const { comm } = opt
  const lengths = new Float64Array(comm.size)
  lengths[comm.rank] = text.length
  comm.allGather(lengths)
  const longest = Math.max(...lengths)
  const units = new Float64Array(longest * comm.size)
  for (let i = 0; i < text.length; i++) units[comm.rank * longest + i] = text.charCodeAt(i)
  comm.allGather(units)
  return Array.from({ length: comm.size }, (_, r) => {
    let out = ''
    // In pieces: a spread of a long array would overflow the stack.
    for (let i = 0; i < lengths[r]; i += 8192)
      out += String.fromCharCode(...units.subarray(r * longest + i, r * longest + Math.min(i + 8192, lengths[r])))
    return out
  })
}

/**
 * Loads a sharded checkpoint into the optimizer (a collective: every rank calls it with the same
 * `dir` and names): one that `saveShardedCheckpoint` wrote on any number of ranks, or one that
 * PyTorch's `torch.distributed.checkpoint` wrote with `HuggingFaceStorageWriter(dir,
 * save_distributed=True)` from tensors named `state.<name>.<key>` (without the index, which
 * PyTorch does not write, every `.safetensors` file of `dir` is read, and the groups' options
 * stay as they are). Each rank keeps the elements of its block, whatever ranks wrote them; a
 * parameter whose state is in several dimensions needs its `shape`. Everything is checked
 * (names, dtypes, shapes, offsets, every element of every piece covered once), and on an error
 * on any rank no rank's state changes.
 */
export function loadShardedCheckpoint<Options extends object>(
  dir: string,
  opt: ShardedOptimizer<Options>,
  options: ShardedCheckpointOptions = {},
): void {
  const sharded = checked('loadShardedCheckpoint', dir, opt)
  sharded[loadPieces](() => {
    const pieces = sharded.pieces()
    const names = namesOf(options.names, pieces.length)
    const positions = new Map(names.map((name, i) => [name, i]))
    const params = sharded.paramGroups.flatMap((group) => [...group.params])
    const { files, groups } = readIndex(dir)
    const state = new Map<number, Record<string, FloatArray | number>>()
    const covered = new Map<string, Uint8Array>()
    const scalars = new Map<number, Record<string, number>>()
    for (const file of files) {
      const { metadata, tensors } = native.decodeTensors(readFileSync(join(dir, file)), 'any')
      const where = `${basename(dir)}/${file}`
      const info = shardingInfo(metadata, where)
      for (const { name, dtype, shape, data, scalar } of tensors) {
        if (!name.startsWith('state.')) continue
        const dot = name.lastIndexOf('.')
        const index = positions.get(name.slice('state.'.length, dot))
        if (index === undefined || dot <= 'state.'.length)
          throw invalidValue(`${where}: ${name} is not state.<name>.<key> of a parameter named ${describeNames(names)}`)
        const key = camel(name.slice(dot + 1))
        const param = params[index]
        if (shape.length === 0) {
          ;(scalars.get(index) ?? scalars.set(index, {}).get(index)!)[key] = scalar!
          continue
        }
        const entry = pieces[index]
        const whole = param.shape ? [...param.shape] : [param.data.length]
        const offsets = info[name]?.[SAVED_OFFSETS] ?? shape.map(() => 0)
        if (
          offsets.length !== whole.length ||
          shape.length !== whole.length ||
          offsets.some((o, d) => !Number.isSafeInteger(o) || o < 0 || o + shape[d] > whole[d])
        )
          throw outOfRange(
            `${where}: ${name}, of shape ${JSON.stringify(shape)} at offsets ${JSON.stringify(offsets)}, is not a piece of the parameter's shape ${JSON.stringify(whole)}${param.shape ? '' : ' (give the parameter its shape)'}`,
          )
        const Type = param.data.constructor as Float32ArrayConstructor | Float64ArrayConstructor
        if (!(data instanceof Type))
          throw invalidValue(`${where}: ${name} is ${dtype}, but the parameter is a ${Type.name}`)
        if (!entry) continue
        const values = (state.get(index) ?? state.set(index, {}).get(index)!) as Record<string, FloatArray>
        const length = entry.end - entry.start
        const target = (values[key] ??= new Type(length))
        const mask =
          covered.get(`${index}.${key}`) ??
          covered.set(`${index}.${key}`, new Uint8Array(length)).get(`${index}.${key}`)!
        forEachRun(whole, { offsets, sizes: shape }, (flat, source, run) => {
          const from = Math.max(flat, entry.start)
          const to = Math.min(flat + run, entry.end)
          for (let x = from; x < to; x++) {
            if (mask[x - entry.start]++ > 0) throw invalidValue(`${where}: element ${x} of ${name} is given twice`)
          }
          if (from < to) target.set(data.subarray(source + from - flat, source + to - flat), from - entry.start)
        })
      }
    }
    for (const [id, mask] of covered) {
      const missing = mask.indexOf(0)
      if (missing >= 0) {
        const [index, key] = id.split('.')
        const at = pieces[Number(index)]!.start + missing
        throw invalidValue(`${dir}: element ${at} of state.${names[Number(index)]}.${snake(key)} is in no file`)
      }
    }
    const pieceStates = new Map<number, ParamState>()
    for (const [index, values] of state)
      pieceStates.set(index, { step: 0, ...scalars.get(index), ...values } as ParamState)
    // A parameter of this rank with scalars only (the state of a step without buffers).
    for (const [index, values] of scalars)
      if (pieces[index] && !pieceStates.has(index)) pieceStates.set(index, { step: 0, ...values } as ParamState)
    return { state: pieceStates, groups }
  })
}

const describeNames = (names: readonly string[]) =>
  names.length > 4
    ? `${names
        .slice(0, 4)
        .map((n) => JSON.stringify(n))
        .join(', ')}, ...`
    : names.map((n) => JSON.stringify(n)).join(', ')

/** `DCP_SHARDING_INFO` of a file's metadata: `{name: {saved_offsets}}`, or none (every offset 0). */
function shardingInfo(metadata: Record<string, string>, where: string): Record<string, { [SAVED_OFFSETS]?: number[] }> {
  const text = Object.hasOwn(metadata, SHARDING_INFO) ? metadata[SHARDING_INFO] : undefined
  if (text === undefined) return {}
  try {
    const info = JSON.parse(text) as unknown
    if (typeof info === 'object' && info !== null && !Array.isArray(info))
      return info as Record<string, { [SAVED_OFFSETS]?: number[] }>
  } catch {
    // Refused below.
  }
  throw invalidValue(`${where}: __metadata__.${SHARDING_INFO} is not JSON of {name: {saved_offsets}}`)
}

/** The files of a checkpoint and its groups' options: from the index, or every `.safetensors` file. */
function readIndex(dir: string): { files: string[]; groups: Array<Record<string, unknown>> | undefined } {
  if (!existsSync(dir))
    throw invalidValue(
      `loadShardedCheckpoint: ${dir} does not exist${existsSync(`${dir}.old`) ? ` (${dir}.old holds the checkpoint a save was replacing when it stopped)` : ''}`,
    )
  const indexPath = join(dir, INDEX_FILE)
  if (!existsSync(indexPath)) {
    const files = readdirSync(dir)
      .filter((f) => f.endsWith('.safetensors'))
      .sort()
    if (files.length === 0) throw invalidValue(`loadShardedCheckpoint: ${dir} holds no .safetensors file`)
    return { files, groups: undefined }
  }
  let index: { metadata?: { files?: unknown; param_groups?: unknown } }
  try {
    index = JSON.parse(readFileSync(indexPath, 'utf8'))
  } catch {
    throw invalidValue(`loadShardedCheckpoint: ${indexPath} is not JSON`)
  }
  const files = index.metadata?.files
  if (
    !Array.isArray(files) ||
    !files.every((f) => typeof f === 'string' && basename(f) === f && f.endsWith('.safetensors'))
  )
    throw invalidValue(`loadShardedCheckpoint: ${indexPath} does not list its files (metadata.files)`)
  for (const file of files)
    if (!existsSync(join(dir, file)))
      throw invalidValue(`loadShardedCheckpoint: ${file}, which the index lists, is missing from ${dir}`)
  const given = index.metadata?.param_groups
  const groups = Array.isArray(given)
    ? given.map((group) => {
        const { params: _, ...rest } = group as Record<string, unknown>
        return Object.fromEntries(Object.entries(rest).map(([k, v]) => [camel(k), v]))
      })
    : undefined
  return { files, groups }
}
