import {
  closureFailed,
  describe,
  invalidReturnValue,
  invalidState,
  invalidType,
  invalidValue,
  outOfRange,
} from './errors'
import { native } from './native'
import type { FloatArray, Parameter, StateDict } from './optimizer'

/** Options of `LBFGS`, PyTorch's `torch.optim.LBFGS` arguments in camelCase. */
export interface LBFGSOptions {
  /**
   * Step length of a step without line search, and the first trial of a line search (the very
   * first iteration takes min(1, 1/‖g‖₁)·lr instead).
   * @default 1
   */
  lr?: number
  /**
   * Most iterations in one `step()`.
   * @default 20
   */
  maxIter?: number
  /**
   * Most closure evaluations in one `step()`; null means ⌊maxIter·5/4⌋ (PyTorch's `max_iter * 5 // 4`),
   * which the group then holds, as PyTorch's does.
   * @default null
   */
  maxEval?: number | null
  /**
   * Stop when the largest gradient magnitude is at most this.
   * @default 1e-7
   */
  toleranceGrad?: number
  /**
   * Stop when the loss, or the largest parameter change, moves by less than this.
   * @default 1e-9
   */
  toleranceChange?: number
  /**
   * How many (y, s) pairs the inverse Hessian approximation keeps.
   * @default 100
   */
  historySize?: number
  /**
   * `'strong_wolfe'` for a line search satisfying the strong Wolfe conditions (c₁ = 1e-4, c₂ = 0.9),
   * or null for fixed steps of length `lr`.
   * @default null
   */
  lineSearchFn?: 'strong_wolfe' | null
  /**
   * Maximize the closure's value instead of minimizing it.
   * @default false
   */
  maximize?: boolean
}

/** The one parameter group of an `LBFGS`, every option present and live. */
export type LBFGSGroup = Required<LBFGSOptions> & { readonly params: readonly Parameter[] }

/**
 * LBFGS's state, PyTorch's `opt.state[params[0]]` in camelCase (`H_diag` is `hDiag`). After the
 * first `step()` there are always `funcEvals` and `nIter`; the rest appears with the first
 * iteration. `oldDirs` and `oldStps` hold `ro.length` vectors one after the other, each as long
 * as all parameters together (PyTorch's lists of tensors, stacked).
 */
export type LBFGSState = {
  funcEvals: number
  nIter: number
  d?: FloatArray
  t?: number
  oldDirs?: FloatArray
  oldStps?: FloatArray
  ro?: FloatArray
  hDiag?: number
  prevFlatGrad?: FloatArray
  prevLoss?: number
  al?: FloatArray
}

/** `stateDict()` of an `LBFGS`: PyTorch's layout, the state kept under the first parameter. */
export interface LBFGSStateDict {
  state: Record<number, LBFGSState>
  paramGroups: Array<Required<LBFGSOptions> & { params: number[] }>
  /** `oldDirs` and `oldStps` as PyTorch stacks them: `[pairs, n]`. */
  shapes?: Record<number, Record<string, number[]>>
}

const DEFAULTS: Readonly<Required<LBFGSOptions>> = Object.freeze({
  lr: 1,
  maxIter: 20,
  maxEval: null,
  toleranceGrad: 1e-7,
  toleranceChange: 1e-9,
  historySize: 100,
  lineSearchFn: null,
  maximize: false,
})

const OPTION_KEYS = Object.keys(DEFAULTS) as Array<keyof LBFGSOptions>

/** The strong-Wolfe constants, PyTorch's. */
const C1 = 1e-4
const C2 = 0.9
/** Gradients a line search can hold at once (the core's `GRAD_SLOTS`). */
const GRAD_SLOTS = 5

type GradStats = ReturnType<InstanceType<typeof native.NativeLbfgs>['gather']>

/** A gathered gradient: where the native side holds it, and its statistics. */
interface Grad {
  slot: number
  stats: GradStats
}

/** Checks one option; returns what the step uses (maxEval filled in). */
function checkOptions(group: Record<string, unknown>, where: string): Required<LBFGSOptions> & { maxEval: number } {
  const number = (key: string, ok: (x: number) => boolean, expected: string): number => {
    const value = group[key]
    if (typeof value !== 'number') throw invalidType(`${where}.${key} must be a number, got ${describe(value)}`)
    if (!ok(value)) throw outOfRange(`invalid ${key}: ${value} (expected ${expected}) in ${where}`)
    return value
  }
  const whole = (x: number) => Number.isSafeInteger(x) && x >= 1
  const lr = number('lr', (x) => x >= 0 && Number.isFinite(x), 'a finite number >= 0')
  const maxIter = number('maxIter', whole, 'a whole number >= 1')
  const maxEval =
    group.maxEval === null ? Math.floor((maxIter * 5) / 4) : number('maxEval', whole, 'a whole number >= 1, or null')
  const toleranceGrad = number('toleranceGrad', (x) => x >= 0, 'a number >= 0')
  const toleranceChange = number('toleranceChange', (x) => x >= 0, 'a number >= 0')
  const historySize = number('historySize', (x) => whole(x) && x <= 2 ** 32 - 1, 'a whole number >= 1')
  const { lineSearchFn, maximize } = group
  if (lineSearchFn !== null && lineSearchFn !== 'strong_wolfe')
    throw invalidValue(
      `${where}.lineSearchFn must be 'strong_wolfe' or null, got ${typeof lineSearchFn === 'string' ? JSON.stringify(lineSearchFn) : describe(lineSearchFn)}`,
    )
  if (typeof maximize !== 'boolean') throw invalidType(`${where}.maximize must be a boolean, got ${describe(maximize)}`)
  return { lr, maxIter, maxEval, toleranceGrad, toleranceChange, historySize, lineSearchFn, maximize }
}

function checkKeys(options: object, where: string, allowParams: boolean): void {
  if (typeof options !== 'object' || options === null || Array.isArray(options))
    throw invalidType(`${where} must be an object, got ${describe(options)}`)
  for (const key of Object.keys(options)) {
    if (!(OPTION_KEYS as string[]).includes(key) && !(allowParams && key === 'params'))
      throw invalidValue(`${where}.${key} is not an option of LBFGS (expected one of ${OPTION_KEYS.join(', ')})`)
  }
}

/**
 * The minimizer of the cubic through (x₁, f₁) and (x₂, f₂) with slopes g₁ and g₂, clamped to
 * `bounds` (default: between x₁ and x₂); their midpoint when the cubic has no minimum. As
 * PyTorch's `_cubic_interpolate` (Nocedal & Wright, eq. 3.59).
 */
export function cubicInterpolate(
  x1: number,
  f1: number,
  g1: number,
  x2: number,
  f2: number,
  g2: number,
  bounds?: readonly [number, number],
): number {
  const [low, high] = bounds ?? (x1 <= x2 ? [x1, x2] : [x2, x1])
  const d1 = g1 + g2 - (3 * (f1 - f2)) / (x1 - x2)
  const d2Square = d1 * d1 - g1 * g2
  if (!(d2Square >= 0)) return (low + high) / 2
  const d2 = Math.sqrt(d2Square)
  const minPos =
    x1 <= x2
      ? x2 - (x2 - x1) * ((g2 + d2 - d1) / (g2 - g1 + 2 * d2))
      : x1 - (x1 - x2) * ((g1 + d2 - d1) / (g1 - g2 + 2 * d2))
  // PyTorch's min(max(minPos, low), high) with Python's rules: a NaN minPos gives low.
  const clamped = low > minPos || Number.isNaN(minPos) ? low : minPos
  return high < clamped ? high : clamped
}

/**
 * L-BFGS, as PyTorch's `torch.optim.LBFGS`: a quasi-Newton method that approximates the inverse
 * Hessian from the last `historySize` steps and gradients (Nocedal & Wright, *Numerical
 * Optimization*, 2nd ed., §7.2: the two-loop recursion, Algorithm 7.4, with the initial scale
 * γ = sᵀy / yᵀy of eq. 7.20; the strong-Wolfe line search of §3.5, Algorithms 3.5 and 3.6, with
 * cubic interpolation). All parameters are treated as one flat vector.
 *
 * `step(closure)` runs up to `maxIter` iterations, each: the direction d = −H·g (the first ever:
 * d = −g); a step length t (first ever: min(1, 1/‖g‖₁)·lr, then lr, or what the line search
 * finds); x ← x + t·d; the closure again for the new loss and gradient. It stops early when
 * ‖g‖∞ ≤ toleranceGrad, g·d > −toleranceChange, ‖t·d‖∞ ≤ toleranceChange, the loss moves by less
 * than toleranceChange, or after `maxEval` evaluations; the next `step()` continues where it
 * stopped. The vector work (gathering the gradients, the two loops, the updates) runs in the
 * native core, on all threads for large parameters, and gives the same bits on any number of
 * threads. Memory: about (2·historySize + 3) times the parameters (plus 5 with the line search).
 *
 * Exactly one parameter group; every parameter of one element type. A parameter whose `grad` is
 * null counts as a zero gradient, as in PyTorch.
 *
 * Rounding: the reductions (g·d, y·s, ‖g‖₁, ...) are summed in float64 and rounded to the
 * parameters' dtype, as PyTorch's 0-d tensors are; the line search's scalar arithmetic runs in
 * float64, where PyTorch, for float32 parameters, does part of it in float32 tensors. So results
 * differ from PyTorch's by the rounding of a different summation order, which grows with the
 * iterations on an ill-conditioned problem; a float32 run parts from PyTorch's once it reaches
 * float32's noise floor, where either side's rounding decides the next iterate.
 *
 * @example
 * const opt = new LBFGS(params, { lineSearchFn: 'strong_wolfe' })
 * opt.step(() => { const loss = forwardAndBackward(); return loss })
 */
export class LBFGS {
  /** The one group, every option filled in; change an option and the next step uses it. */
  readonly paramGroups: [LBFGSGroup]
  /** The options the group got where it did not set them. */
  readonly defaults: Readonly<Required<LBFGSOptions>>
  /** PyTorch's defaults, for documentation and tests. */
  static readonly DEFAULTS = DEFAULTS

  readonly #params: readonly Parameter[]
  readonly #native: InstanceType<typeof native.NativeLbfgs>
  readonly #float32: boolean
  #counters: LBFGSCounters | undefined
  #stepping = false

  /**
   * @param params the parameters, or a list of exactly one group `{ params, ...options }`.
   * @param options overrides of the defaults.
   */
  constructor(
    params: readonly Parameter[] | readonly [{ params: readonly Parameter[] } & LBFGSOptions],
    options: LBFGSOptions = {},
  ) {
    if (!Array.isArray(params))
      throw invalidType(`params must be an array of parameters or of one parameter group, got ${describe(params)}`)
    if (params.length === 0) throw invalidValue('params is empty: the optimizer got an empty parameter list')
    checkKeys(options, 'options', false)
    // As PyTorch, maxEval is fixed when the optimizer is made (null: ⌊maxIter·5/4⌋).
    const given = { ...DEFAULTS, ...options }
    this.defaults = Object.freeze({ ...given, maxEval: checkOptions(given, 'options').maxEval })
    const isGroup = typeof params[0] === 'object' && params[0] !== null && 'params' in params[0]
    if (isGroup && params.length !== 1)
      throw invalidValue(
        `LBFGS doesn't support per-parameter options (parameter groups): got ${params.length} groups, expected one`,
      )
    const group = (isGroup ? params[0] : { params }) as { params: readonly Parameter[] } & LBFGSOptions
    checkKeys(group, 'paramGroups[0]', true)
    if (!Array.isArray(group.params))
      throw invalidType(`paramGroups[0].params must be an array of parameters, got ${describe(group.params)}`)
    if (group.params.length === 0) throw invalidValue('paramGroups[0].params is empty')
    const list = [...group.params]
    const seen = new Set<unknown>()
    list.forEach((param, i) => {
      const where = `paramGroups[0].params[${i}]`
      if (typeof param !== 'object' || param === null)
        throw invalidType(`${where} must be an object with data and grad, got ${describe(param)}`)
      const { data } = param
      if (!(data instanceof Float32Array || data instanceof Float64Array))
        throw invalidType(`${where}.data must be a Float32Array or Float64Array, got ${describe(data)}`)
      if (data.constructor !== list[0].data.constructor)
        throw invalidType(
          `${where}.data is a ${data.constructor.name}, but params[0].data is a ${list[0].data.constructor.name}: LBFGS treats all parameters as one vector of one element type`,
        )
      if (seen.has(param) || seen.has(data))
        throw invalidValue(`${where} appears more than once; every parameter must be in the group once`)
      seen.add(param).add(data)
    })
    native.checkDisjoint(
      list.map((p) => p.data),
      list.map(() => true),
      list.map((_, i) => `paramGroups[0].params[${i}].data`),
    )
    const complete = { ...this.defaults, ...group, params: Object.freeze(list) }
    if (group.maxEval === undefined && group.maxIter !== undefined) complete.maxEval = null
    complete.maxEval = checkOptions(complete, 'paramGroups[0]').maxEval
    this.paramGroups = [Object.seal(complete) as LBFGSGroup]
    this.#params = list
    this.#float32 = list[0].data instanceof Float32Array
    this.#native = new native.NativeLbfgs(
      this.#float32 ? 'float32' : 'float64',
      list.map((p) => p.data.length),
      complete.historySize,
    )
  }

  /** LBFGS keeps one group: refused, as PyTorch refuses groups. */
  addParamGroup(): never {
    throw invalidValue("LBFGS doesn't support per-parameter options (parameter groups): it keeps exactly one")
  }

  /** `x` rounded as PyTorch's 0-d tensors of the parameters' dtype round it. */
  #round(x: number): number {
    return this.#float32 ? Math.fround(x) : x
  }

  /**
   * Runs up to `maxIter` iterations, calling `closure` to evaluate the loss at the current
   * parameters (it must fill every parameter's `grad` and return the loss as a number), and
   * returns the loss of its first evaluation, as PyTorch's `step` does.
   *
   * Errors: a closure that throws fails the step with `ERR_CLOSURE_FAILED` (the error it threw is
   * the `cause`); one that returns anything but a number (a Promise included: the closure must be
   * synchronous) fails with a TypeError, and one that returns NaN or ±∞ with a RangeError, both
   * `ERR_INVALID_RETURN_VALUE`. PyTorch carries on with a non-finite loss; here it stops. Either way
   * the step stops there and the optimizer stays usable: the parameters stay where the failed
   * evaluation had them, except in a line search, where they go back to where it started;
   * `funcEvals` and `nIter` count as far as PyTorch's would, and the direction, step length and
   * history are those of the iteration that was running, so that the next `step()` resumes from
   * the parameters as they are.
   */
  step(closure: () => number): number {
    if (this.#stepping)
      throw invalidState('LBFGS.step: called from inside its own closure; the closure must only evaluate the loss')
    if (typeof closure !== 'function')
      throw invalidType(`LBFGS.step: closure must be a function that returns the loss, got ${describe(closure)}`)
    const options = checkOptions(this.paramGroups[0], 'paramGroups[0]')
    this.#native.setHistorySize(options.historySize)
    this.#stepping = true
    try {
      return this.#run(closure, options)
    } finally {
      this.#stepping = false
    }
  }

  /** Calls the closure once, checking what it returns. */
  #evaluate(closure: () => number, count: number): number {
    let value: unknown
    try {
      value = closure()
    } catch (cause) {
      throw closureFailed(
        `LBFGS.step: the closure threw at evaluation ${count} of this step: ${cause instanceof Error ? cause.message : String(cause)}`,
        cause,
      )
    }
    if (typeof value !== 'number') {
      const promise = typeof (value as { then?: unknown } | null)?.then === 'function'
      throw invalidReturnValue(
        `LBFGS.step: the closure must return the loss as a number, got ${describe(value)}${promise ? ' (the closure must be synchronous)' : ''}`,
        'type',
      )
    }
    if (!Number.isFinite(value))
      throw invalidReturnValue(
        `LBFGS.step: the closure returned ${value} at evaluation ${count} of this step (expected a finite loss)`,
        'range',
      )
    return value
  }

  #run(closure: () => number, o: Required<LBFGSOptions> & { maxEval: number }): number {
    const state = (this.#counters ??= { funcEvals: 0, nIter: 0 })
    const sign = o.maximize ? -1 : 1
    const origLoss = this.#evaluate(closure, 1)
    let loss = sign * origLoss
    let currentEvals = 1
    state.funcEvals += 1
    let grad: Grad = { slot: 0, stats: this.#native.gather(this.#params, 0, o.maximize) }
    if (grad.stats.absMax <= o.toleranceGrad) return origLoss

    for (let nIter = 1; nIter <= o.maxIter; nIter++) {
      state.nIter += 1
      const first = state.nIter === 1
      const direction = first
        ? this.#native.firstDirection(grad.slot)
        : this.#native.nextDirection(grad.slot, state.t ?? o.lr)
      state.prevLoss = loss
      // PyTorch: min(1., 1. / |g|.sum()) * lr, the reciprocal a tensor of the parameters' dtype.
      const inverse = this.#round(1 / grad.stats.absSum)
      let t = first ? (inverse < 1 ? this.#round(inverse * o.lr) : o.lr) : o.lr
      state.t = t
      const gtd = direction.gtd
      if (gtd > -o.toleranceChange) break

      let evals = 0
      let optimal = false
      if (o.lineSearchFn === 'strong_wolfe') {
        this.#native.saveParams(this.#params)
        const found = this.#strongWolfe(closure, o, currentEvals, t, loss, grad, gtd, direction.dAbsMax)
        ;({ loss, grad, t, evals } = found)
        state.t = t
        this.#native.trialParams(this.#params, t)
        optimal = grad.stats.absMax <= o.toleranceGrad
      } else {
        this.#native.stepParams(this.#params, t)
        if (nIter !== o.maxIter) {
          loss = sign * this.#evaluate(closure, currentEvals + 1)
          grad = { slot: grad.slot, stats: this.#native.gather(this.#params, grad.slot, o.maximize) }
          optimal = grad.stats.absMax <= o.toleranceGrad
          evals = 1
        }
      }
      currentEvals += evals
      state.funcEvals += evals

      if (nIter === o.maxIter || currentEvals >= o.maxEval || optimal) break
      if (this.#round(direction.dAbsMax * Math.abs(this.#round(t))) <= o.toleranceChange) break
      if (Math.abs(loss - state.prevLoss) < o.toleranceChange) break
    }
    return origLoss
  }

  /**
   * PyTorch's `_strong_wolfe` (Nocedal & Wright, Algorithms 3.5 and 3.6): brackets a step length
   * satisfying the strong Wolfe conditions, then zooms in on it by cubic interpolation, evaluating
   * at most `maxEval − evalsSoFar` times. The parameters are at x + t·d after each evaluation; on
   * error they go back to x.
   */
  #strongWolfe(
    closure: () => number,
    o: Required<LBFGSOptions> & { maxEval: number },
    evalsSoFar: number,
    t: number,
    f: number,
    g: Grad,
    gtd: number,
    dNorm: number,
  ): { loss: number; grad: Grad; t: number; evals: number } {
    const maxLs = o.maxEval - evalsSoFar
    const sign = o.maximize ? -1 : 1
    // Slots other gradients may not be gathered into: those of every gradient still referenced.
    let held: Grad[] = [g]
    const evaluate = (at: number): { f: number; g: Grad } => {
      this.#native.trialParams(this.#params, at)
      try {
        const value = sign * this.#evaluate(closure, evalsSoFar + lsFuncEvals + 1)
        const slot = [...Array(GRAD_SLOTS).keys()].find((s) => !held.some((h) => h.slot === s))!
        return { f: value, g: { slot, stats: this.#native.gather(this.#params, slot, o.maximize) } }
      } catch (error) {
        this.#native.restoreParams(this.#params)
        throw error
      }
    }
    let lsFuncEvals = 0
    let { f: fNew, g: gNew } = evaluate(t)
    lsFuncEvals = 1
    let gtdNew = gNew.stats.gtd

    let [tPrev, fPrev, gPrev, gtdPrev] = [0, f, g, gtd]
    let done = false
    let lsIter = 0
    let bracket: number[] = []
    let bracketF: number[] = []
    let bracketG: Grad[] = []
    let bracketGtd: number[] = []
    while (lsIter < maxLs) {
      if (fNew > f + C1 * t * gtd || (lsIter > 1 && fNew >= fPrev)) {
        ;[bracket, bracketF, bracketG, bracketGtd] = [
          [tPrev, t],
          [fPrev, fNew],
          [gPrev, gNew],
          [gtdPrev, gtdNew],
        ]
        break
      }
      if (Math.abs(gtdNew) <= -C2 * gtd) {
        ;[bracket, bracketF, bracketG] = [[t], [fNew], [gNew]]
        done = true
        break
      }
      if (gtdNew >= 0) {
        ;[bracket, bracketF, bracketG, bracketGtd] = [
          [tPrev, t],
          [fPrev, fNew],
          [gPrev, gNew],
          [gtdPrev, gtdNew],
        ]
        break
      }
      const minStep = t + 0.01 * (t - tPrev)
      const maxStep = t * 10
      const tmp = t
      t = cubicInterpolate(tPrev, fPrev, gtdPrev, t, fNew, gtdNew, [minStep, maxStep])
      ;[tPrev, fPrev, gPrev, gtdPrev] = [tmp, fNew, gNew, gtdNew]
      held = [g, gPrev]
      ;({ f: fNew, g: gNew } = evaluate(t))
      lsFuncEvals += 1
      gtdNew = gNew.stats.gtd
      lsIter += 1
    }
    if (lsIter === maxLs)
      [bracket, bracketF, bracketG] = [
        [0, t],
        [f, fNew],
        [g, gNew],
      ]

    let insufficientProgress = false
    let [low, high] = bracketF[0] <= bracketF[bracketF.length - 1] ? [0, 1] : [1, 0]
    while (!done && lsIter < maxLs) {
      if (Math.abs(bracket[1] - bracket[0]) * dNorm < o.toleranceChange) break
      t = cubicInterpolate(bracket[0], bracketF[0], bracketGtd[0], bracket[1], bracketF[1], bracketGtd[1])
      const top = Math.max(...bracket)
      const bottom = Math.min(...bracket)
      const eps = 0.1 * (top - bottom)
      if (Math.min(top - t, t - bottom) < eps) {
        if (insufficientProgress || t >= top || t <= bottom) {
          t = Math.abs(t - top) < Math.abs(t - bottom) ? top - eps : bottom + eps
          insufficientProgress = false
        } else {
          insufficientProgress = true
        }
      } else {
        insufficientProgress = false
      }
      held = [...bracketG]
      ;({ f: fNew, g: gNew } = evaluate(t))
      lsFuncEvals += 1
      gtdNew = gNew.stats.gtd
      lsIter += 1
      if (fNew > f + C1 * t * gtd || fNew >= bracketF[low]) {
        ;[bracket[high], bracketF[high], bracketG[high], bracketGtd[high]] = [t, fNew, gNew, gtdNew]
        ;[low, high] = bracketF[0] <= bracketF[1] ? [0, 1] : [1, 0]
      } else {
        if (Math.abs(gtdNew) <= -C2 * gtd) {
          done = true
        } else if (gtdNew * (bracket[high] - bracket[low]) >= 0) {
          ;[bracket[high], bracketF[high], bracketG[high], bracketGtd[high]] = [
            bracket[low],
            bracketF[low],
            bracketG[low],
            bracketGtd[low],
          ]
        }
        ;[bracket[low], bracketF[low], bracketG[low], bracketGtd[low]] = [t, fNew, gNew, gtdNew]
      }
    }
    return { loss: bracketF[low], grad: bracketG[low], t: bracket[low], evals: lsFuncEvals }
  }

  /** Clears gradients: sets every `grad` to null (PyTorch's default), or fills them with zeros. */
  zeroGrad(setToNone = true): void {
    if (typeof setToNone !== 'boolean')
      throw invalidType(`zeroGrad: setToNone must be a boolean, got ${describe(setToNone)}`)
    for (const param of this.#params) {
      if (setToNone) param.grad = null
      else param.grad?.fill(0)
    }
  }

  /**
   * A copy of the state, as PyTorch's `opt.state[params[0]]`, or undefined before the first step.
   * Given another parameter of the optimizer, undefined (PyTorch keeps it all under the first).
   */
  getState(param: Parameter = this.#params[0]): LBFGSState | undefined {
    const index = this.#params.indexOf(param)
    if (index < 0) throw invalidValue('getState: the parameter does not belong to this optimizer')
    if (index > 0 || !this.#counters) return undefined
    const { funcEvals, nIter, t, prevLoss } = this.#counters
    const state: LBFGSState = { funcEvals, nIter }
    const history = this.#native.exportHistory()
    if (!history) return state
    const { d, prevFlatGrad, oldDirs, oldStps, ro, hDiag, al } = history
    Object.assign(state, { d, t, oldDirs, oldStps, ro, hDiag, prevFlatGrad, prevLoss })
    if (al) state.al = al
    return state
  }

  /** The state as PyTorch's `state_dict()` lays it out (camelCase), for `loadStateDict` and checkpoints. */
  stateDict(): LBFGSStateDict {
    const { params, ...options } = this.paramGroups[0]
    const paramGroups = [{ ...options, params: params.map((_, i) => i) }]
    const state = this.getState()
    if (!state) return { state: {}, paramGroups }
    if (!state.oldDirs) return { state: { 0: state }, paramGroups }
    const n = state.d!.length
    const pairs = [state.ro!.length, n]
    return { state: { 0: state }, paramGroups, shapes: { 0: { oldDirs: pairs, oldStps: pairs } } }
  }

  /**
   * Restores a `stateDict()` (or one read from a checkpoint): options and state, all checked
   * first; on error nothing changes. The next `step()` continues exactly as the saved optimizer's
   * would have.
   */
  loadStateDict(stateDict: LBFGSStateDict | StateDict<object>): void {
    if (this.#stepping) throw invalidState('LBFGS.loadStateDict: called from inside the closure of a step')
    if (typeof stateDict !== 'object' || stateDict === null)
      throw invalidType(`stateDict must be an object, got ${describe(stateDict)}`)
    const { state, paramGroups } = stateDict
    if (!Array.isArray(paramGroups) || paramGroups.length !== 1)
      throw invalidValue(
        `stateDict.paramGroups must be an array of exactly one group (LBFGS keeps one), got ${Array.isArray(paramGroups) ? `${paramGroups.length} groups` : describe(paramGroups)}`,
      )
    const where = 'stateDict.paramGroups[0]'
    const { params, ...options } = paramGroups[0] as Record<string, unknown>
    if (!Array.isArray(params) || params.length !== this.#params.length)
      throw invalidValue(`${where}.params must list ${this.#params.length} parameters like the optimizer's group`)
    for (const key of ['foreach', 'fused', 'capturable', 'differentiable']) delete options[key]
    checkKeys(options, where, false)
    for (const key of OPTION_KEYS) if (!(key in options)) throw invalidValue(`${where}.${key} is missing`)
    checkOptions(options, where)
    if (typeof state !== 'object' || state === null)
      throw invalidType(`stateDict.state must be an object, got ${describe(state)}`)
    const ids = Object.keys(state)
    const firstId = String(params[0])
    if (ids.some((id) => id !== firstId))
      throw invalidValue(
        `stateDict.state has an entry for parameter ${ids.find((id) => id !== firstId)}; LBFGS keeps its state under the first parameter (${firstId}) only`,
      )
    const entry = (state as Record<string, unknown>)[firstId] as Record<string, unknown> | undefined
    let counters: LBFGSCounters | undefined
    let history: NativeHistory = null
    if (entry !== undefined) {
      ;({ counters, history } = this.#checkEntry(entry, `stateDict.state[${firstId}]`))
    }
    this.#native.importHistory(history)
    this.#counters = counters
    const group = this.paramGroups[0] as Record<string, unknown>
    for (const key of OPTION_KEYS) group[key] = options[key]
  }

  #checkEntry(entry: Record<string, unknown>, where: string): { counters: LBFGSCounters; history: NativeHistory } {
    if (typeof entry !== 'object' || entry === null)
      throw invalidType(`${where} must be an object, got ${describe(entry)}`)
    const known = [
      'funcEvals',
      'nIter',
      'd',
      't',
      'oldDirs',
      'oldStps',
      'ro',
      'hDiag',
      'prevFlatGrad',
      'prevLoss',
      'al',
    ]
    for (const key of Object.keys(entry))
      if (!known.includes(key))
        throw invalidValue(`${where}.${key} is not state of LBFGS (expected ${known.join(', ')})`)
    const count = (key: string): number => {
      const value = entry[key]
      if (typeof value !== 'number') throw invalidType(`${where}.${key} must be a number, got ${describe(value)}`)
      if (!Number.isSafeInteger(value) || value < 0)
        throw outOfRange(`invalid ${key}: ${value} (expected a whole number >= 0) in ${where}`)
      return value
    }
    const counters: LBFGSCounters = { funcEvals: count('funcEvals'), nIter: count('nIter') }
    const vectors = ['d', 'oldDirs', 'oldStps', 'ro', 'prevFlatGrad']
    const present = vectors.filter((key) => entry[key] !== undefined && entry[key] !== null)
    if (present.length === 0) return { counters, history: null }
    const missing = [...vectors, 'hDiag', 't', 'prevLoss'].filter(
      (key) => entry[key] === undefined || entry[key] === null,
    )
    if (missing.length > 0) throw invalidValue(`${where} has ${present.join(', ')} but not ${missing.join(', ')}`)
    const Type = this.#float32 ? Float32Array : Float64Array
    const array = (key: string): FloatArray => {
      let value = entry[key]
      // A one-pair history's ro reads back from safetensors as a number when written 0-d.
      if (typeof value === 'number') value = Type.of(value)
      if (!(value instanceof Type))
        throw invalidType(`${where}.${key} must be a ${Type.name} like the parameters, got ${describe(value)}`)
      return value
    }
    const scalar = (key: string): number => {
      const value = entry[key]
      if (typeof value !== 'number') throw invalidType(`${where}.${key} must be a number, got ${describe(value)}`)
      return value
    }
    counters.t = scalar('t')
    counters.prevLoss = scalar('prevLoss')
    const history = {
      d: array('d'),
      prevFlatGrad: array('prevFlatGrad'),
      oldDirs: array('oldDirs'),
      oldStps: array('oldStps'),
      ro: array('ro'),
      hDiag: scalar('hDiag'),
      al: entry.al === undefined || entry.al === null ? undefined : array('al'),
    }
    return { counters, history }
  }
}

/** The native side's vector state, as it exports and imports it. */
type NativeHistory = Parameters<InstanceType<typeof native.NativeLbfgs>['importHistory']>[0]

/** The state kept on this side: counters and scalars. */
interface LBFGSCounters {
  funcEvals: number
  nIter: number
  t?: number
  prevLoss?: number
}
