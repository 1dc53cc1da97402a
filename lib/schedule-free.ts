// Schedule-Free AdamW and SGD (Defazio et al., "The Road Less Scheduled", 2024), as the
// `schedulefree` package's AdamWScheduleFree and SGDScheduleFree: the registry's options and
// kernels, plus what the generated classes lack: train() and eval(), which move the parameters
// between the training point y and the average x (natively, one fused pass over each parameter
// and its z), and the group state (k, weightSum, lrMax, scheduledLr) that every step advances.
import { invalidState } from './errors'
import {
  Optimizer,
  Schema,
  type FloatArray,
  type OptionsInput,
  type ParamState,
  type Params,
  type StepOptions,
} from './optimizer'
import type {
  AdamWScheduleFreeOptions,
  AdamWScheduleFreeState,
  SGDScheduleFreeOptions,
  SGDScheduleFreeState,
} from './optimizers'

/** What the package keeps in each param group beside the options, as these keep it. */
interface GroupState {
  k: number
  trainMode: boolean
  weightSum: number
  lrMax: number
  scheduledLr: number
}

/**
 * What both optimizers add to the generated class: the modes and the group state.
 *
 * Each group's `k`, `weightSum`, `lrMax` and `scheduledLr` are per group, not per parameter, as in
 * the package's `param_groups`: every step advances them for every group, whichever of its
 * parameters have gradients. They are live like the options, and `stateDict()` and
 * `loadStateDict()` carry them, `trainMode` too, in `paramGroups`.
 */
abstract class ScheduleFreeOptimizer<Options extends GroupState, State extends ParamState> extends Optimizer<
  Options,
  FloatArray,
  State
> {
  readonly #schema: Schema<Options>

  protected constructor(schema: Schema<Options>, params: Params<Options>, options?: OptionsInput<Options>) {
    super(schema, params, options)
    this.#schema = schema
  }

  /**
   * Training mode, as the package's `train()`: every group in eval mode moves its parameters
   * from the average x to the training point y = x + (1 − β)·(z − x) (parameters that have not
   * stepped yet stay as they are) and becomes `trainMode: true`. Call it before training steps:
   * a step in eval mode is refused.
   */
  train(): void {
    this.guarded('train()', () => this.#switch(true))
  }

  /**
   * Evaluation mode, as the package's `eval()`: every group in training mode moves its
   * parameters from y to the average x = y + (1 − 1/β)·(z − y), the point to evaluate and to
   * save, and becomes `trainMode: false`.
   */
  eval(): void {
    this.guarded('eval()', () => this.#switch(false))
  }

  /**
   * `Optimizer.step()`, refused with `ERR_INVALID_STATE` in eval mode (any group's `trainMode`
   * false; nothing changes, and a closure is not called); then every group's `k`, `weightSum`,
   * `lrMax` and `scheduledLr` advance, unless the step was skipped for a non-finite gradient.
   */
  override step(options?: StepOptions): boolean
  /** `Optimizer.step(closure)`, refused in eval mode as `step()` is, before `closure` runs. */
  override step<Loss>(closure: () => Loss, options?: StepOptions): Loss
  override step(first?: StepOptions | (() => unknown), second?: StepOptions): unknown {
    this.#refuseInEval('step()')
    // Both arguments as given, whichever overload they fit: the base class checks them.
    return (super.step as (first?: unknown, second?: unknown) => unknown).call(this, first, second)
  }

  /** `step()` without holding the event loop (`Optimizer.stepAsync()`), refused in eval mode as `step()` is. */
  override stepAsync(options?: StepOptions): Promise<boolean> {
    try {
      this.#refuseInEval('stepAsync()')
    } catch (error) {
      return Promise.reject(error)
    }
    return super.stepAsync(options)
  }

  #refuseInEval(method: string): void {
    const group = this.paramGroups.findIndex((g) => g.trainMode === false)
    if (group < 0) return
    throw invalidState(
      `${method} was called in eval mode (paramGroups[${group}].trainMode is false): ` +
        'call train() before training steps, and eval() before evaluating or saving',
    )
  }

  /** Every group's options and state, packed as a step takes them (their types checked). */
  #pack(): Float64Array {
    const width = this.#schema.slots.length
    const packed = new Float64Array(this.paramGroups.length * width)
    this.paramGroups.forEach((group, g) => {
      this.#schema.pack(group as Record<string, unknown>, `paramGroups[${g}]`, packed, g * width)
    })
    return packed
  }

  #switch(train: boolean): void {
    const packed = this.#pack()
    const data = this.paramGroups.flatMap((group) => group.params.map((param) => param.data))
    const groupOf = Uint32Array.from(this.paramGroups.flatMap((group, g) => group.params.map(() => g)))
    this.nativeOptimizer.switchMode(data, groupOf, packed, train)
    for (const group of this.paramGroups) group.trainMode = train
  }
}

/**
 * Schedule-Free AdamW (Defazio et al., 2024): Adam's normalized steps, averaged instead of
 * scheduled; as the `schedulefree` package's `AdamWScheduleFree`. It starts in eval mode, as the
 * package's does: call `train()` before training steps and `eval()` before evaluating or saving.
 *
 * @example
 * const w = { data: new Float32Array(n), grad: new Float32Array(n) }
 * const opt = new AdamWScheduleFree([w], { warmupSteps: 100 })
 * opt.train()
 * opt.step()
 * opt.eval() // w.data holds the average x
 */
export class AdamWScheduleFree extends ScheduleFreeOptimizer<AdamWScheduleFreeOptions, AdamWScheduleFreeState> {
  static readonly schema = new Schema<AdamWScheduleFreeOptions>('AdamWScheduleFree')
  /** The package's defaults (and its initial group state), read from the native core. */
  static readonly defaults = AdamWScheduleFree.schema.defaults

  constructor(params: Params<AdamWScheduleFreeOptions>, options?: OptionsInput<AdamWScheduleFreeOptions>) {
    super(AdamWScheduleFree.schema, params, options)
  }
}

/**
 * Schedule-Free SGD (Defazio et al., 2024): SGD averaged instead of scheduled; as the
 * `schedulefree` package's `SGDScheduleFree`. It starts in eval mode, as the package's does:
 * call `train()` before training steps and `eval()` before evaluating or saving.
 *
 * @example
 * const w = { data: new Float32Array(n), grad: new Float32Array(n) }
 * const opt = new SGDScheduleFree([w], { lr: 1, warmupSteps: 100 })
 * opt.train()
 * opt.step()
 * opt.eval() // w.data holds the average x
 */
export class SGDScheduleFree extends ScheduleFreeOptimizer<SGDScheduleFreeOptions, SGDScheduleFreeState> {
  static readonly schema = new Schema<SGDScheduleFreeOptions>('SGDScheduleFree')
  /** The package's defaults (and its initial group state), read from the native core. */
  static readonly defaults = SGDScheduleFree.schema.defaults

  constructor(params: Params<SGDScheduleFreeOptions>, options?: OptionsInput<SGDScheduleFreeOptions>) {
    super(SGDScheduleFree.schema, params, options)
  }
}
