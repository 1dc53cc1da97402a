// ZeRO stage 1 (Rajbhandari et al., 2020): optimizer state sharded over the ranks of a
// communicator. The parameters of each dtype are laid end to end in one flat buffer, padded to
// `size` equal blocks; rank r keeps optimizer state for block r only and steps only it, tensors
// being cut where a block boundary falls (DeepSpeed's `first_offset`). A step is: reduce-scatter
// of the gradients (their mean over ranks, block r to rank r), the registry optimizer's own
// native step on the pieces of block r (views of the flat buffers, no copies), and an all-gather
// of the updated blocks, after which every rank holds every parameter.
import { callClosure, describe, invalidState, invalidType, invalidValue, outOfRange } from '../errors'
import type {
  FloatArray,
  Optimizer,
  Parameter,
  ParamGroup,
  Params,
  ParamState,
  Schema,
  StateDict,
  StepOptions,
} from '../optimizer'
import { isFloatArray, lengthOf, snapshotArray, snapshotObject, snapshotStateDict } from '../snapshot'
import { blockOf, type Communicator } from './communicator'

/**
 * Loads state into each rank's pieces, on every rank or none (a collective), for
 * `loadShardedCheckpoint`: `prepare` runs on this rank and gives, by parameter position, the
 * state of its piece of the parameter (buffers of the piece's length), and the groups' options
 * (undefined: keep them). Not part of the public interface.
 */
export const loadPieces = Symbol('loadPieces')

/** What `prepare` gives `loadPieces`. */
export interface PieceStates {
  state: Map<number, ParamState>
  groups: ReadonlyArray<Record<string, unknown>> | undefined
}

/** A registry optimizer's class, as `Adam` or `Lion` of `fastoptim`. */
export interface OptimizerClass<Options extends object> {
  new (params: Params<Options>, options?: Partial<Options>): Optimizer<Options>
  readonly schema: Schema<Options>
}

/** Options of `ShardedOptimizer` beyond the optimizer's own. */
export interface ShardOptions {
  /** The ranks the state is sharded over. */
  comm: Communicator
}

/** One dtype's flat buffers and this rank's block of them. */
interface Flat {
  data: FloatArray
  /** Every rank's gradients, laid out as `data`: the reduce-scatter's input. */
  grad: FloatArray
  /** The mean of the gradients over the ranks, for block `rank` only. */
  reduced: FloatArray
  /** This rank's block: [start, end) of the real elements, `block` the padded block length. */
  start: number
  end: number
  block: number
}

/** Where a parameter lives in its dtype's flat buffer, and its piece of this rank's block. */
interface Placement {
  flat: Flat
  offset: number
  /** The parameter's piece of this rank's block, stepped by the inner optimizer; null if none. */
  piece: Parameter | null
  /** The piece's reduced gradient, which the piece's `grad` is when the parameter has one. */
  reduced: FloatArray
}

/** The elements of `Options`' buffers whose layout is not one element per parameter element. */
function refuseNonElementwise(schema: Schema<object>): void {
  const { info } = schema
  if (info.sparse)
    throw invalidValue(`ShardedOptimizer: ${info.name} takes sparse gradients, which ShardedOptimizer does not reduce`)
  const whole = info.buffers.filter((b) => b.layout !== 'param')
  if (whole.length > 0)
    throw invalidValue(
      `ShardedOptimizer: ${info.name} keeps state of whole tensors (${whole.map((b) => `${b.name}: ${b.layout}`).join(', ')}), ` +
        'which cannot be cut at a shard boundary; ShardedOptimizer takes optimizers whose state is one element per parameter element',
    )
}

/**
 * A registry optimizer whose state is sharded over the ranks of `comm` (ZeRO stage 1): each rank
 * keeps 1/size of the state and steps 1/size of the parameters, and every rank ends a step with
 * all parameters updated. Call it on every rank with the same parameters (shapes, order, groups)
 * and options; each rank gives the gradients of its share of the batch, and a step averages them.
 *
 * At construction each parameter's `data` is replaced by a view of one flat buffer per dtype
 * (values copied; rank 0's are broadcast to all ranks), and its `grad` by a view of a second one:
 * write gradients into `p.grad` in place (`zeroGrad(false)` zeroes them) and a step copies
 * nothing; a `grad` replaced by another array is copied in, and a null `grad` counts as zeros,
 * the parameter being skipped (as a single process skips it) only if its `grad` is null on every
 * rank. `paramGroups` are live, as an optimizer's: schedulers work unchanged.
 *
 * Refused: optimizers whose state is not one element per parameter element (Adafactor's row and
 * column factors), which cannot be cut mid-tensor, and those of sparse gradients.
 *
 * @example
 * const comm = workerCommunicator() // or mpiCommunicator()
 * const opt = new ShardedOptimizer(Adam, params, { lr: 1e-3 }, { comm })
 * backward(myShardOfTheBatch); opt.clipGradNorm(1); opt.step()
 */
export class ShardedOptimizer<Options extends object> {
  /** The groups of the caller's parameters, with every option; change an option and the next step uses it. */
  readonly paramGroups: Array<ParamGroup<Options>>
  readonly defaults: Readonly<Required<Options>>
  readonly comm: Communicator
  readonly #inner: Optimizer<Options>
  readonly #keys: readonly string[]
  readonly #info: Schema<Options>['info']
  readonly #params: readonly Parameter[]
  readonly #placements: readonly Placement[]
  readonly #flats: readonly Flat[]
  /** Whether each parameter had a gradient on some rank, after the last reduction. */
  readonly #present: Float64Array
  #reduced = false

  constructor(
    Algorithm: OptimizerClass<Options>,
    params: Params<Options>,
    options: Partial<Options> | undefined,
    shard: ShardOptions,
  ) {
    if (typeof Algorithm !== 'function' || !(Algorithm as { schema?: unknown }).schema)
      throw invalidType(
        `ShardedOptimizer: Algorithm must be an optimizer class such as Adam, got ${describe(Algorithm)}`,
      )
    if (typeof shard !== 'object' || shard === null || typeof shard.comm !== 'object' || shard.comm === null)
      throw invalidType(
        `ShardedOptimizer: shard must be { comm } with a Communicator, got ${describe(shard?.comm ?? shard)}`,
      )
    refuseNonElementwise(Algorithm.schema as Schema<object>)
    const { comm } = shard
    // The optimizer itself checks the parameters, groups and options, as it would unsharded.
    const whole = new Algorithm(params, options)
    this.comm = comm
    this.defaults = whole.defaults
    this.paramGroups = whole.paramGroups
    this.#keys = Algorithm.schema.keys
    this.#info = Algorithm.schema.info
    this.#params = this.paramGroups.flatMap((group) => [...group.params])
    for (const [i, param] of this.#params.entries()) {
      if (param.grad !== null && param.grad !== undefined && !(param.grad instanceof param.data.constructor))
        throw invalidType(
          `ShardedOptimizer: params[${i}].grad must be a ${param.data.constructor.name} like its data, or null`,
        )
    }

    const lengths = { Float32Array: 0, Float64Array: 0 }
    const offsets = this.#params.map((param) => {
      const name = param.data.constructor.name as keyof typeof lengths
      const offset = lengths[name]
      lengths[name] += param.data.length
      return offset
    })
    this.#agree(lengths.Float32Array, lengths.Float64Array)
    const flats = {
      Float32Array: makeFlat(Float32Array, lengths.Float32Array, comm),
      Float64Array: makeFlat(Float64Array, lengths.Float64Array, comm),
    }
    this.#flats = [flats.Float32Array, flats.Float64Array]
    this.#placements = this.#params.map((param, i) => {
      const flat = flats[param.data.constructor.name as keyof typeof flats]
      const offset = offsets[i]
      const length = param.data.length
      flat.data.set(param.data, offset)
      const start = Math.max(offset, flat.start)
      const end = Math.min(offset + length, flat.end)
      const reduced = flat.reduced.subarray(Math.max(start - flat.start, 0), Math.max(end - flat.start, 0))
      const piece = start < end ? { data: flat.data.subarray(start, end), grad: reduced } : null
      return { flat, offset, piece, reduced }
    })
    for (const flat of this.#flats) comm.broadcast(flat.data, 0)
    this.#params.forEach((param, i) => {
      const { flat, offset } = this.#placements[i]
      const length = param.data.length
      const grad = param.grad
      param.data = flat.data.subarray(offset, offset + length)
      const view = flat.grad.subarray(offset, offset + length)
      if (grad) view.set(grad)
      param.grad = grad ? view : null
    })
    this.#present = new Float64Array(this.#params.length)

    // The inner optimizer: the same groups and options, over this rank's pieces.
    let next = 0
    const groups = this.paramGroups.map((group) => {
      const pieces = group.params.flatMap(() => this.#placements[next++].piece ?? [])
      return { ...this.#options(group), params: pieces } as { params: Parameter[] } & Partial<Options>
    })
    this.#inner = new Algorithm(groups, options)
  }

  /**
   * Averages the gradients over the ranks, each rank receiving its block (a collective: every
   * rank calls it). `step()` and `clipGradNorm()` call it when the gradients were not yet
   * reduced since the last step; call it yourself only to inspect the reduced gradients.
   */
  reduceGradients(): void {
    this.#params.forEach((param, i) => {
      const { flat, offset } = this.#placements[i]
      const view = flat.grad.subarray(offset, offset + param.data.length)
      const grad = param.grad
      this.#present[i] = grad ? 1 : 0
      if (grad === view) return
      if (grad === null || grad === undefined) view.fill(0)
      else {
        if (!(grad instanceof param.data.constructor) || grad.length !== view.length)
          throw invalidType(
            `ShardedOptimizer: params[${i}].grad must be a ${param.data.constructor.name} of length ${view.length}, or null, got ${describe(grad)}${ArrayBuffer.isView(grad) ? ` of length ${(grad as FloatArray).length}` : ''}`,
          )
        view.set(grad)
      }
    })
    this.comm.allReduce(this.#present, 'sum')
    for (const flat of this.#flats) this.comm.reduceScatter(flat.grad, flat.reduced, 'mean')
    this.#placements.forEach(({ piece, reduced }, i) => {
      if (piece) piece.grad = this.#present[i] > 0 ? reduced : null
    })
    this.#reduced = true
  }

  /**
   * One step of every rank (a collective): reduces the gradients if `clipGradNorm` did not,
   * steps this rank's block with the optimizer's native step, and gathers every block. Returns
   * whether every reduced gradient element was finite on every rank; with `skipNonFinite`, a
   * non-finite one anywhere skips the step on every rank.
   */
  step(options?: StepOptions): boolean
  /**
   * As PyTorch's `step(closure)`: calls `closure` once on this rank (it computes this rank's
   * gradients and returns its loss), then steps as `step(options)` does, and returns what
   * `closure` returned. Every rank must call it, as every rank must call `step()`: a closure that
   * throws (`ERR_CLOSURE_FAILED`) on one rank leaves the others waiting in the collective.
   */
  step<Loss>(closure: () => Loss, options?: StepOptions): Loss
  step(first?: StepOptions | (() => unknown), second?: StepOptions): unknown {
    const options = typeof first === 'function' ? second : first
    const skipNonFinite = options?.skipNonFinite ?? false
    if (typeof skipNonFinite !== 'boolean')
      throw invalidType(`step: options.skipNonFinite must be a boolean, got ${describe(skipNonFinite)}`)
    if (typeof first === 'function') {
      const loss = callClosure('ShardedOptimizer.step', first)
      this.step(options)
      return loss
    }
    if (!this.#reduced) this.reduceGradients()
    this.#reduced = false
    this.#syncOptions()
    const flag = new Float64Array(1)
    if (skipNonFinite) {
      flag[0] = this.#flats.some((flat) => !flat.reduced.every(Number.isFinite)) ? 1 : 0
      this.comm.allReduce(flag, 'sum')
      if (flag[0] > 0) return false
    }
    flag[0] = this.#inner.step() ? 0 : 1
    for (const flat of this.#flats) this.comm.allGather(flat.data)
    if (skipNonFinite) return true
    this.comm.allReduce(flag, 'sum')
    return flag[0] === 0
  }

  /**
   * Scales the gradients so that their global norm is at most `maxNorm` and returns the norm
   * before scaling, as PyTorch's `clip_grad_norm_` on the averaged gradients (a collective): each
   * rank sums |g|^p over its block, the sums are all-reduced, and every rank scales its block.
   * The norm is that of every element at once (PyTorch takes the norm of per-tensor norms), so it
   * can differ from PyTorch's in the last bits.
   */
  clipGradNorm(maxNorm: number, options: { normType?: number; errorIfNonfinite?: boolean } = {}): number {
    const { normType = 2, errorIfNonfinite = false } = options
    if (typeof maxNorm !== 'number' || !(maxNorm >= 0))
      throw outOfRange(`clipGradNorm: maxNorm must be a number >= 0, got ${String(maxNorm)}`)
    if (typeof normType !== 'number' || !(normType > 0))
      throw outOfRange(`clipGradNorm: options.normType must be a number > 0 or Infinity, got ${String(normType)}`)
    if (!this.#reduced) this.reduceGradients()
    const partial = new Float64Array(1)
    for (const { reduced } of this.#flats) {
      for (let i = 0; i < reduced.length; i++) {
        const a = Math.abs(reduced[i])
        partial[0] = normType === Infinity ? Math.max(partial[0], a) : partial[0] + a ** normType
      }
    }
    if (normType === Infinity) {
      // The max over ranks as a sum: gather each rank's max, then take theirs.
      const maxima = new Float64Array(this.comm.size)
      maxima[this.comm.rank] = partial[0]
      this.comm.allReduce(maxima, 'sum')
      partial[0] = Math.max(...maxima)
    } else this.comm.allReduce(partial, 'sum')
    const total = normType === Infinity ? partial[0] : partial[0] ** (1 / normType)
    if (errorIfNonfinite && !Number.isFinite(total))
      throw invalidState(
        `clipGradNorm: the total norm of order ${normType} is ${total}; the gradients are left as they are`,
      )
    const coefficient = Math.min(1, maxNorm / (total + 1e-6))
    for (const { reduced } of this.#flats) {
      const c = reduced instanceof Float32Array ? Math.fround(coefficient) : coefficient
      for (let i = 0; i < reduced.length; i++) reduced[i] *= c
    }
    return total
  }

  /** Sets every gradient to null (PyTorch's default) or, with `false`, fills it with zeros. */
  zeroGrad(setToNone = true): void {
    if (typeof setToNone !== 'boolean')
      throw invalidType(`zeroGrad: setToNone must be a boolean, got ${describe(setToNone)}`)
    this.#params.forEach((param, i) => {
      if (setToNone) param.grad = null
      else {
        const { flat, offset } = this.#placements[i]
        const view = flat.grad.subarray(offset, offset + param.data.length)
        view.fill(0)
        param.grad = view
      }
    })
  }

  /** The bytes of optimizer state this rank holds (its buffers; scalars not counted). */
  stateBytes(): number {
    let bytes = 0
    for (const entry of Object.values(this.#inner.stateDict().state))
      for (const value of Object.values(entry)) if (ArrayBuffer.isView(value)) bytes += value.byteLength
    return bytes
  }

  /** The elements of parameters this rank steps, per dtype. */
  get shard(): {
    float32: { start: number; end: number; length: number }
    float64: { start: number; end: number; length: number }
  } {
    const [f32, f64] = this.#flats
    const of = (flat: Flat) => ({ start: flat.start, end: flat.end, length: flat.data.length })
    return { float32: of(f32), float64: of(f64) }
  }

  /** The optimizer stepping this rank's pieces (its state dict is this rank's shard of the state). */
  get inner(): Optimizer<Options> {
    return this.#inner
  }

  /** For each parameter, its piece of this rank's block (`start`, `end` within the parameter), or null. */
  pieces(): Array<{ param: Parameter; start: number; end: number; piece: Parameter } | null> {
    return this.#placements.map(({ flat, offset, piece }, i) => {
      if (!piece) return null
      const start = Math.max(offset, flat.start) - offset
      return { param: this.#params[i], start, end: start + piece.data.length, piece }
    })
  }

  /**
   * The optimizer's whole state, as the wrapped optimizer's `stateDict()` gives it: every
   * parameter's full buffers (gathered from the ranks' pieces), step and scalars, keyed by
   * position, the groups' options, and `shapes` for parameters that have a `shape`. A
   * collective: every rank calls it, and every rank gets the whole state.
   */
  stateDict(): StateDict<Options> {
    const state: Record<number, ParamState> = {}
    const shapes: Record<number, Record<string, number[]>> = {}
    this.#gather().forEach((entry, i) => {
      if (!entry) return
      state[i] = entry
      const shape = this.#params[i].shape
      if (!shape) return
      shapes[i] = {}
      for (const [key, value] of Object.entries(entry)) if (ArrayBuffer.isView(value)) shapes[i][key] = [...shape]
    })
    let next = 0
    const paramGroups = this.paramGroups.map((group) => ({
      ...structuredClone(this.#options(group)),
      params: group.params.map(() => next++),
    })) as StateDict<Options>['paramGroups']
    return Object.keys(shapes).length > 0 ? { state, paramGroups, shapes } : { state, paramGroups }
  }

  /**
   * Restores a whole state dict, as the wrapped optimizer's `loadStateDict` does: this
   * optimizer's `stateDict()` from any number of ranks (the state is whole, so loading into
   * another number of ranks reshards it), or one optimizer's own. Each rank keeps the pieces of
   * its block. A collective: every rank calls it with the same dict; on an error on any rank,
   * no rank's state or options change.
   */
  loadStateDict(stateDict: StateDict<Options>): void {
    this[loadPieces](() => {
      const { dict, paramGroups: groups } = snapshotStateDict(stateDict, this.paramGroups.length)
      // Parameter ids (PyTorch's may be any distinct numbers) to positions, group by group.
      const positions = new Map<string, number>()
      let first = 0
      const options = groups.map((given, g) => {
        const where = `stateDict.paramGroups[${g}]`
        const { params, ...rest } = snapshotObject(given, where)
        const ids = snapshotArray(params)
        const size = this.paramGroups[g].params.length
        if (!ids || ids.length !== size)
          throw invalidValue(
            `${where}.params must list ${size} parameters like the optimizer's group, got ${describe(params)}`,
          )
        ids.forEach((id, k) => positions.set(String(id), first + k))
        first += size
        return rest
      })
      const state = new Map<number, ParamState>()
      for (const [id, given] of Object.entries(snapshotObject(dict.state, 'stateDict.state'))) {
        const where = `stateDict.state[${id}]`
        const index = positions.get(id)
        if (index === undefined) throw invalidValue(`${where} is for a parameter no group lists`)
        const piece = this.#pieceRange(index)
        const entry: Record<string, unknown> = {}
        const length = this.#params[index].data.length
        for (const [key, value] of Object.entries(snapshotObject(given, where))) {
          if (!ArrayBuffer.isView(value)) {
            entry[key] = value
            continue
          }
          if (!isFloatArray(value) || lengthOf(value) !== length)
            throw outOfRange(
              `${where}.${key} must be a ${this.#params[index].data.constructor.name} of the parameter's length ${length}, got ${describe(value)}${isFloatArray(value) ? ` of length ${lengthOf(value)}` : ''}`,
            )
          if (piece) entry[key] = value.subarray(piece.start, piece.end)
        }
        if (piece) state.set(index, entry as ParamState)
      }
      return { state, groups: options }
    })
  }

  /**
   * A copy of a parameter's whole state, as the wrapped optimizer's `getState(param)` gives it
   * (its step, scalars and full buffers), or undefined before its first step. A collective:
   * every rank calls it with the same parameter.
   */
  getState(param: Parameter): ParamState | undefined {
    const index = this.#params.indexOf(param)
    if (index < 0) throw invalidValue('getState: the parameter does not belong to this optimizer')
    return this.#gather()[index]
  }

  /**
   * Every parameter's whole state, gathered (a collective): the step and scalars of the rank
   * holding the parameter's first element, and each buffer all-gathered per dtype.
   */
  #gather(): Array<ParamState | undefined> {
    const { rank, size } = this.comm
    const { scalars, buffers } = this.#info
    const names = buffers.map((b) => b.name)
    // Per parameter: has state, step, scalars, then whether each buffer is there.
    const width = 2 + scalars.length + names.length
    const rows = this.#params.length * width
    const meta = new Float64Array(rows * size)
    const mine = this.#placements.map(({ piece }) => (piece ? this.#inner.getState(piece) : undefined))
    this.#placements.forEach(({ flat, offset, piece }, i) => {
      const entry = mine[i]
      // The rank holding the first element speaks for the parameter.
      if (!piece || !entry || offset < flat.start) return
      const row = meta.subarray(rank * rows + i * width, rank * rows + (i + 1) * width)
      row[0] = 1
      row[1] = entry.step
      scalars.forEach((name, k) => (row[2 + k] = entry[name] as number))
      names.forEach((name, k) => (row[2 + scalars.length + k] = ArrayBuffer.isView(entry[name]) ? 1 : 0))
    })
    this.comm.allGather(meta)
    const rowOf = (i: number) => {
      const { flat, offset } = this.#placements[i]
      const owner = Math.floor(offset / Math.max(flat.block, 1))
      return meta.subarray(owner * rows + i * width, owner * rows + (i + 1) * width)
    }
    const out = this.#params.map((param, i): ParamState | undefined => {
      if (param.data.length === 0) return undefined
      const row = rowOf(i)
      if (row[0] !== 1) return undefined
      const entry = { step: row[1] } as ParamState
      scalars.forEach((name, k) => (entry[name] = row[2 + k]))
      return entry
    })
    names.forEach((name, k) => {
      for (const flat of this.#flats) {
        const holders = this.#placements.flatMap((placement, i) =>
          placement.flat === flat && out[i] && rowOf(i)[2 + scalars.length + k] === 1 ? [i] : [],
        )
        if (holders.length === 0) continue
        const gathered = new (flat.data.constructor as Float32ArrayConstructor | Float64ArrayConstructor)(
          flat.data.length,
        )
        for (const i of holders) {
          const { offset, piece } = this.#placements[i]
          const value = mine[i]?.[name]
          if (piece && isFloatArray(value)) gathered.set(value, Math.max(offset, flat.start))
        }
        this.comm.allGather(gathered)
        for (const i of holders) {
          const { offset } = this.#placements[i]
          out[i]![name] = gathered.slice(offset, offset + this.#params[i].data.length)
        }
      }
    })
    return out
  }

  /** Where this rank's piece of parameter `index` lies within the parameter, or null. */
  #pieceRange(index: number): { start: number; end: number } | null {
    const { flat, offset, piece } = this.#placements[index]
    if (!piece) return null
    const start = Math.max(offset, flat.start) - offset
    return { start, end: start + piece.data.length }
  }

  /**
   * Loads the pieces' state `prepare` gives, on every rank or none: each rank loads its own into
   * its inner optimizer (which checks everything), the ranks agree on whether all succeeded, and
   * a rank that loaded while another failed puts its previous state back.
   */
  [loadPieces](prepare: () => PieceStates): void {
    const { rank, size } = this.comm
    let failure: unknown
    let before: StateDict<Options> | undefined
    try {
      const { state, groups } = prepare()
      const inner: Record<number, ParamState> = {}
      let next = 0
      const paramGroups = this.paramGroups.map((group, g) => {
        const params: number[] = []
        for (const param of group.params) {
          const index = this.#params.indexOf(param)
          if (!this.#placements[index].piece) continue
          const entry = state.get(index)
          if (entry) inner[next] = entry
          params.push(next++)
        }
        return { ...this.#options(group), ...groups?.[g], params }
      })
      before = this.#inner.stateDict()
      this.#inner.loadStateDict({ state: inner, paramGroups } as unknown as StateDict<Options>)
    } catch (error) {
      failure = error
      before = undefined
    }
    const failed = new Float64Array(size)
    failed[rank] = failure === undefined ? 0 : 1
    this.comm.allReduce(failed, 'sum')
    const others = [...failed.keys()].filter((r) => r !== rank && failed[r] > 0)
    if (failure !== undefined) throw failure
    if (others.length > 0) {
      if (before) this.#inner.loadStateDict(before)
      throw invalidState(
        `ShardedOptimizer: rank${others.length > 1 ? 's' : ''} ${others.join(', ')} could not load the state, so no rank did (rank ${rank} kept its state)`,
      )
    }
    this.paramGroups.forEach((group, g) => {
      const loaded = this.#inner.paramGroups[g] as Record<string, unknown>
      for (const key of this.#keys) (group as Record<string, unknown>)[key] = structuredClone(loaded[key])
    })
  }

  /** The options of a group, without its parameters. */
  #options(group: ParamGroup<Options>): Partial<Options> {
    return Object.fromEntries(
      this.#keys.map((key) => [key, (group as Record<string, unknown>)[key]]),
    ) as Partial<Options>
  }

  /** The caller's live group options, onto the inner optimizer's groups. */
  #syncOptions(): void {
    this.paramGroups.forEach((group, g) => Object.assign(this.#inner.paramGroups[g], this.#options(group)))
  }

  /** Checks that every rank has the same number of elements of each dtype and parameters. */
  #agree(f32: number, f64: number): void {
    const { rank, size } = this.comm
    const all = new Float64Array(3 * size)
    all.set([f32, f64, this.#params.length], 3 * rank)
    this.comm.allReduce(all, 'sum')
    for (let r = 0; r < size; r++) {
      if (all[3 * r] !== f32 || all[3 * r + 1] !== f64 || all[3 * r + 2] !== this.#params.length)
        throw invalidValue(
          `ShardedOptimizer: rank ${r} has ${all[3 * r + 2]} parameters of ${all[3 * r]} float32 and ${all[3 * r + 1]} float64 elements, ` +
            `but rank ${rank} has ${this.#params.length} of ${f32} and ${f64}: every rank must give the same parameters`,
        )
    }
  }
}

function makeFlat(Type: Float32ArrayConstructor | Float64ArrayConstructor, length: number, comm: Communicator): Flat {
  const { start, end, block } = blockOf(length, comm.rank, comm.size)
  return {
    data: new Type(block * comm.size),
    grad: new Type(block * comm.size),
    reduced: new Type(block),
    start,
    end,
    block,
  }
}
