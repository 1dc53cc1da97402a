// Lion, as lion-pytorch's `Lion`: the registry's options and kernel (crate/src/optimizers/lion.rs),
// with a constructor that records its lr as the initial lr `decoupledWeightDecay` divides the
// weight decay by, as lion-pytorch's constructor records `self._init_lr`.
import { Optimizer, Schema, type FloatArray, type OptionsInput, type Params } from './optimizer'
import type { LionOptions, LionState } from './optimizers'
import { snapshotObject } from './snapshot'

/**
 * Lion (Chen et al., 2023): steps of size lr along the sign of an interpolated momentum, with one
 * state buffer; as `lion_pytorch.Lion`.
 *
 * With `decoupledWeightDecay`, each step scales the weights by 1 − lr·weightDecay/initLr, where
 * `initLr` is the lr given to the constructor (lion-pytorch's `_init_lr`): 1 − weightDecay per
 * step at that lr, and following a scheduler's lr from there. As in lion-pytorch it is one value
 * for every group, whatever lr a group sets; unlike lion-pytorch's, it is an option of each group
 * (filled from the constructor's lr, or given), so `stateDict()` saves it and `loadStateDict()`
 * restores it with the other options, and a resumed run decays as the original did whatever lr
 * it is constructed with. It is not PyTorch's `initial_lr`, which a scheduler records per group
 * (and which `loadStateDict()` ignores). A constructor lr of 0, which lion-pytorch refuses,
 * leaves `initLr` null: the decay is then weightDecay per step whatever the lr.
 *
 * @example
 * const w = { data: new Float32Array(n), grad: new Float32Array(n) }
 * const opt = new Lion([w], { lr: 3e-4, weightDecay: 1, decoupledWeightDecay: true })
 * opt.step()
 */
export class Lion extends Optimizer<LionOptions, FloatArray, LionState> {
  static readonly schema = new Schema<LionOptions>('Lion')
  /** lion-pytorch's defaults, read from the native core; `initLr` null until a constructor fills it. */
  static readonly defaults = Lion.schema.defaults

  constructor(params: Params<LionOptions>, options?: OptionsInput<LionOptions>) {
    super(Lion.schema, params, withInitLr(options))
  }
}

/**
 * The constructor's options, read once, with `initLr` set to their lr (the default's if they give
 * none) unless they set it. A value of the wrong type is left for the constructor to refuse.
 */
function withInitLr(options: unknown): OptionsInput<LionOptions> {
  const given = options === undefined ? Object.create(null) : snapshotObject(options, 'options')
  if ('initLr' in given) return given as OptionsInput<LionOptions>
  const lr = 'lr' in given ? given.lr : Lion.defaults.lr
  if (typeof lr === 'number' && lr > 0 && Number.isFinite(lr)) given.initLr = lr
  return given as OptionsInput<LionOptions>
}
