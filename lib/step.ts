// Steps that skip re-reading the parameters natively when they are the arrays of the last step.
import { native } from './native'
import type { FloatArray, GradKind, Parameter } from './optimizer'

type NativeOptimizer = InstanceType<typeof native.NativeOptimizer>

/**
 * `(packedBuffer, skipNonFinite?, grads?)`: the packed options' ArrayBuffer (asking a buffer for
 * its memory takes fewer Node-API functions than asking a typed array, and a training loop finds
 * each out of cache); the flag only when set, for the same reason; and where gradients changed,
 * each parameter's new one (undefined where it is the last step's). The report comes back as
 * undefined for `StepReport.Finite`, as null when there is no step to repeat.
 */
type StepAgain = (
  packedBuffer: ArrayBufferLike,
  skipNonFinite?: true,
  grads?: ReadonlyArray<GradKind | undefined>,
) => number | undefined | null

const FINITE = native.StepReport.Finite

/** Registered by hand in src/lib.rs (so that a step allocates nothing), hence not in the generated typings. */
const stepAgainOf = (native as unknown as { stepAgainOf(optimizer: NativeOptimizer): StepAgain }).stepAgainOf

/**
 * Reading a parameter's arrays natively costs a few hundred nanoseconds of Node-API calls, which
 * for a model of hundreds of small tensors is more than updating them. So after a step has read
 * them, this remembers which arrays it read, and a later step whose parameters hold the very same
 * arrays asks the native side to step them again without reading them (`stepAgain`, bound to the
 * optimizer once). A step whose parameters hold the same data arrays but new gradient arrays (a
 * training loop that makes its gradients anew at every step, as fastoptim/tfjs does) hands over
 * just those. Whether the arrays are still attached, where they were and of their length, and
 * whether each new gradient fits its data, is checked there, natively, before anything is
 * written; where one is not or does not, `stepAgain` answers null, changing nothing, and the step
 * takes the full native read, with its checks and errors, as it does for a new data array or a
 * gradient that is no longer an array. Only identities are compared here, so this touches none of
 * the arrays (a training loop finds each out of cache). The remembered arrays are held here, so
 * they stay alive. A sparse gradient (`{ indices, values }`) is never remembered: the native step
 * reports it as undefined, so a step with one always takes the full read, which checks and
 * coalesces it.
 */
export class StepArrays {
  #params: readonly Parameter<GradKind>[] | undefined
  readonly #seen: Array<FloatArray | null | undefined> = []
  readonly #now: Array<GradKind | null | undefined> = []
  /** Each parameter's new gradient for `stepAgain`, undefined where it is the last step's. */
  readonly #grads: Array<GradKind | undefined> = []
  /** `stepAgain` bound to the optimizer it was made for. */
  #again: StepAgain | undefined
  #againOf: NativeOptimizer | undefined
  /** The packed options the last step took, and their ArrayBuffer. */
  #packed: Float64Array | undefined
  #packedBuffer: ArrayBufferLike | undefined

  /**
   * Steps, and returns the native report (`StepReport`). The comparison is written out here, not
   * called: a step after other work finds every function on its way out of the caches.
   */
  step(
    opt: NativeOptimizer,
    params: readonly Parameter<GradKind>[],
    groupOf: Uint32Array,
    packed: Float64Array,
    skipNonFinite: boolean,
  ): number {
    if (params === this.#params && this.#againOf === opt) {
      const count = 2 * params.length
      const now = this.#now
      if (now.length !== count) now.length = count
      // Getters may run here, so first take every array, then compare, which runs no JavaScript.
      for (let i = 0; i < params.length; i++) {
        const param = params[i]
        now[2 * i] = param.data
        now[2 * i + 1] = param.grad
      }
      const seen = this.#seen
      let same = true
      for (let k = 0; k < count; k++) {
        if (now[k] !== seen[k]) {
          same = false
          break
        }
      }
      if (packed !== this.#packed) {
        this.#packed = packed
        this.#packedBuffer = packed.buffer
      }
      const buffer = this.#packedBuffer!
      if (same) {
        const report = skipNonFinite ? this.#again!(buffer, true) : this.#again!(buffer)
        if (report === undefined) return FINITE
        if (report !== null) return report
      } else if (this.#newGrads(count)) {
        const report = this.#again!(buffer, skipNonFinite ? true : undefined, this.#grads)
        if (report !== null) {
          for (let k = 1; k < count; k += 2) seen[k] = now[k] as FloatArray
          return report === undefined ? FINITE : report
        }
      }
    }
    this.#params = undefined
    const seen = this.#seen
    // Only when it changes: setting an array's length is a runtime call even to the same value.
    if (seen.length !== 2 * params.length) seen.length = 2 * params.length
    const report = opt.step(params, groupOf, packed, seen, skipNonFinite)
    if (this.#againOf !== opt) {
      this.#again = stepAgainOf(opt)
      this.#againOf = opt
    }
    this.#params = params
    return report
  }

  /**
   * Whether only gradients changed since the last step, each to another object (the native side
   * checks that it is an array that fits): then `#grads` holds them, undefined where unchanged.
   */
  #newGrads(count: number): boolean {
    const now = this.#now
    const seen = this.#seen
    const grads = this.#grads
    if (grads.length !== count >> 1) grads.length = count >> 1
    for (let k = 0; k < count; k += 2) {
      const grad = now[k + 1]
      if (now[k] !== seen[k]) return false
      if (grad === seen[k + 1]) {
        grads[k >> 1] = undefined
      } else if (typeof grad === 'object' && grad !== null) {
        grads[k >> 1] = grad
      } else {
        return false
      }
    }
    return true
  }

  /** Forgets the last step's arrays, so that the next step reads them natively. */
  forget(): void {
    this.#params = undefined
  }
}
