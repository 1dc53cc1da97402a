// Property tests: random shapes, options and gradients. Every optimizer of the registry against a
// plain double-precision reference of PyTorch's equations (helpers/reference.ts; an optimizer with
// none fails, naming it), and the invariants that hold whatever the input: lr = 0 leaves
// parameters as they are (every optimizer), second moments are never negative, Adagrad's
// accumulator never shrinks, and the thread count changes no bit.
import test from 'ava'
import fc from 'fast-check'

import * as fastoptim from '../lib'
import type { FloatArray, GradKind, Optimizer, Parameter } from '../lib'
import { type Algorithm, type Options, Reference, REFERENCES, type RefParam } from './helpers/reference'
import { gradFor } from './helpers/sparse'

type AnyOptimizer = Optimizer<object, GradKind>
type Ctor = { new (params: never, options?: never): AnyOptimizer; defaults: Readonly<Record<string, unknown>> }

/** Every optimizer of the registry, in its order. */
const ALGORITHMS: Algorithm[] = fastoptim.algorithms().map((info) => info.name)

function classOf(algorithm: Algorithm): Ctor {
  const Class = (fastoptim as unknown as Record<string, Ctor | undefined>)[algorithm]
  if (!Class) throw new Error(`the registry lists ${algorithm}, but fastoptim exports no such class`)
  return Class
}

// Options kept where the equations are well conditioned, so that rounding cannot be amplified.
const lr = fc.oneof(fc.constant(0), fc.double({ min: 1e-4, max: 0.5, noNaN: true }))
const beta = (min: number, max: number) => fc.double({ min, max, noNaN: true })
const eps = fc.double({ min: 1e-10, max: 1e-4, noNaN: true })
const decay = fc.oneof(fc.constant(0), fc.double({ min: 1e-4, max: 0.1, noNaN: true }))
// PyTorch's default β₂ and 0.9 as well: with them RAdam switches to its rectified update at steps 6 and 5.
const beta2 = fc.oneof(beta(0.5, 0.9999), fc.constantFrom(0.9, 0.999))
const beta1 = fc.oneof(beta(0, 0.99), fc.constantFrom(0.9, 0.5))
const adam = { lr, betas: fc.tuple(beta1, beta2), eps, weightDecay: decay, maximize: fc.boolean() }

/** Options drawn for each optimizer, over the ranges where its equations are well conditioned. */
const OPTIONS: Record<Algorithm, fc.Arbitrary<Partial<Options>>> = {
  Adam: fc.record({ ...adam, amsgrad: fc.boolean(), decoupledWeightDecay: fc.boolean() }),
  AdamW: fc.record({ ...adam, amsgrad: fc.boolean() }),
  NAdam: fc.record({
    ...adam,
    momentumDecay: fc.double({ min: 0, max: 0.01, noNaN: true }),
    decoupledWeightDecay: fc.boolean(),
  }),
  RAdam: fc.record({ ...adam, decoupledWeightDecay: fc.boolean() }),
  Adamax: fc.record(adam),
  SGD: fc
    .record({
      lr,
      momentum: fc.double({ min: 0, max: 0.99, noNaN: true }),
      dampening: fc.double({ min: 0, max: 0.5, noNaN: true }),
      weightDecay: decay,
      nesterov: fc.boolean(),
      maximize: fc.boolean(),
    })
    .map((o) => (o.nesterov ? { ...o, momentum: Math.max(o.momentum, 0.1), dampening: 0 } : o)),
  // α ≥ 0.5: with α near 0 the centered variance v − a² cancels to rounding noise.
  RMSprop: fc.record({
    lr,
    alpha: beta(0.5, 0.999),
    eps,
    weightDecay: decay,
    momentum: fc.oneof(fc.constant(0), beta(0.1, 0.95)),
    centered: fc.boolean(),
    maximize: fc.boolean(),
  }),
  Adagrad: fc.record({
    lr,
    lrDecay: fc.oneof(fc.constant(0), beta(1e-3, 0.1)),
    weightDecay: decay,
    initialAccumulatorValue: fc.oneof(fc.constant(0), beta(0.01, 1)),
    eps,
    maximize: fc.boolean(),
  }),
  AdamWScheduleFree: fc.record({
    lr,
    betas: fc.tuple(beta(0.1, 0.99), beta2),
    eps,
    weightDecay: decay,
    warmupSteps: fc.integer({ min: 0, max: 4 }),
    r: fc.constantFrom(0, 1),
    trainMode: fc.constant(true),
  }),
  SGDScheduleFree: fc.record({
    lr,
    momentum: beta(0.1, 0.99),
    weightDecay: decay,
    warmupSteps: fc.integer({ min: 0, max: 4 }),
    r: fc.constantFrom(0, 1),
    trainMode: fc.constant(true),
  }),
  // The default coefficients, or the cubic iteration's (1.5, −0.5, 0), which converges.
  Muon: fc.record({
    lr,
    weightDecay: decay,
    momentum: beta(0, 0.99),
    nesterov: fc.boolean(),
    nsCoefficients: fc.constantFrom([3.4445, -4.775, 2.0315], [1.5, -0.5, 0]),
    eps: fc.constantFrom(1e-7, 1e-3),
    nsSteps: fc.integer({ min: 0, max: 7 }),
    adjustLrFn: fc.constantFrom(null, 'original', 'match_rms_adamw', 'spectral_unclamped'),
  }),
}

/**
 * The options of an optimizer the table above lacks: those shared under PyTorch's names drawn as
 * above (lr, 0 included; weightDecay), every flag either way, the rest at their defaults. A flag
 * that needs another option (as SGD's nesterov needs momentum) makes its cases throw: such an
 * optimizer needs a row above.
 */
function optionsOf(algorithm: Algorithm): fc.Arbitrary<Partial<Options>> {
  if (OPTIONS[algorithm]) return OPTIONS[algorithm]
  const info = fastoptim.algorithms().find((i) => i.name === algorithm)!
  const drawn: Record<string, fc.Arbitrary<unknown>> = {}
  for (const option of info.options) {
    if (option.name === 'lr') drawn.lr = lr
    else if (option.name === 'weightDecay') drawn.weightDecay = decay
    else if (option.kind === 'boolean') drawn[option.name] = fc.boolean()
  }
  return fc.record(drawn) as fc.Arbitrary<Partial<Options>>
}

/** Sizes around the vector widths, the chunk size (2^14) and the parallel threshold (2^15). */
const size = fc.oneof(
  { weight: 8, arbitrary: fc.constantFrom(0, 1, 2, 3, 7, 8, 9, 15, 16, 17, 31, 33, 64, 65) },
  { weight: 4, arbitrary: fc.integer({ min: 0, max: 300 }) },
  { weight: 1, arbitrary: fc.constantFrom(2 ** 14 - 1, 2 ** 14 + 1, 2 ** 15 + 3, 40_001) },
)

const dim = fc.oneof(fc.constantFrom(1, 2, 3, 8, 17), fc.integer({ min: 1, max: 40 }))

/**
 * Parameter shapes: mostly flat (the sizes above, given without a shape), then 0-D, matrices and
 * 3-D tensors (the leading dimension a batch), one of them over the parallel threshold. A shape
 * changes the numbers only of an optimizer that treats matrices apart, and must not change the
 * others'. No matrix has a dimension of 0: PyTorch's Adafactor fails on one, so no reference says
 * what it should do.
 */
const shape: fc.Arbitrary<number[]> = fc.oneof(
  { weight: 12, arbitrary: size.map((n) => [n]) },
  { weight: 1, arbitrary: fc.constant<number[]>([]) },
  { weight: 3, arbitrary: fc.tuple(dim, dim) },
  { weight: 1, arbitrary: fc.tuple(fc.integer({ min: 1, max: 3 }), dim, dim) },
  { weight: 1, arbitrary: fc.constant<number[]>([129, 257]) },
)

/** Matrices, for an optimizer of matrices only (Muon): tall, wide, square, one over the parallel threshold. */
const matrix: fc.Arbitrary<number[]> = fc.oneof(
  { weight: 8, arbitrary: fc.tuple(dim, dim) },
  { weight: 1, arbitrary: fc.constantFrom<number[]>([1, 1], [1, 40], [40, 1]) },
  { weight: 1, arbitrary: fc.constant<number[]>([257, 129]) },
)

/** Whether `algorithm` takes matrices only. */
const matricesOnly = (algorithm: Algorithm) => fastoptim.algorithms().find((i) => i.name === algorithm)!.matrices

const elements = (dims: readonly number[]) => dims.reduce((a, b) => a * b, 1)

interface Case {
  algorithm: Algorithm
  options: Partial<Options>
  /** The second group's lr, when the parameters are split into two groups. */
  secondLr: number | undefined
  shapes: number[][]
  steps: number
  seed: number
  /** Per step (10) and parameter (4), whether the grad is null. */
  skips: boolean[][]
}

const caseOf = (algorithm: Algorithm): fc.Arbitrary<Case> =>
  fc
    .record({
      options: optionsOf(algorithm),
      secondLr: fc.option(fc.double({ min: 1e-4, max: 0.3, noNaN: true }), { nil: undefined }),
      shapes: fc.array(matricesOnly(algorithm) ? matrix : shape, { minLength: 1, maxLength: 4 }),
      steps: fc.integer({ min: 1, max: 10 }),
      seed: fc.integer(),
      skips: fc.array(fc.array(fc.integer({ min: 0, max: 99 }), { minLength: 4, maxLength: 4 }), {
        minLength: 10,
        maxLength: 10,
      }),
    })
    .map((r) => ({ ...r, algorithm, skips: r.skips.map((row) => row.map((u) => u < 15)) }))

/** Deterministic values in [−scale, scale) from a seed (mulberry32), cheap enough for 40,000 elements. */
function values(seed: number, n: number, scale: number): number[] {
  let a = seed >>> 0
  const out = new Array<number>(n)
  for (let i = 0; i < n; i++) {
    a = (a + 0x6d2b79f5) >>> 0
    let t = a
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    out[i] = ((((t ^ (t >>> 14)) >>> 0) / 4294967296) * 2 - 1) * scale
  }
  return out
}

/** Builds the optimizer and, where helpers/reference.ts has one, its reference over the same values. */
function build(c: Case, dtype: 'float32' | 'float64' = 'float64') {
  const Type = dtype === 'float32' ? Float32Array : Float64Array
  const Class = classOf(c.algorithm)
  // A flat parameter is given as before, without a shape.
  const shapeOf = (i: number) => (c.shapes[i].length === 1 ? undefined : c.shapes[i])
  const params: Parameter<GradKind>[] = c.shapes.map((dims, i) => ({
    data: Type.from(values(c.seed + i, elements(dims), 2)),
    grad: null,
    shape: shapeOf(i),
  }))
  const refs: RefParam[] = params.map((p, i) => ({ data: Array.from(p.data), grad: null, shape: shapeOf(i) }))
  const split = c.secondLr !== undefined && params.length > 1 ? 1 : params.length
  const groups = [
    { params: params.slice(0, split) },
    ...(split < params.length ? [{ params: params.slice(split), lr: c.secondLr }] : []),
  ]
  const opt = new Class(groups as never, c.options as never)
  // The options as the constructor completed them (Lion's initLr is its lr), for the reference.
  const options = { ...opt.defaults } as Options
  const reference = REFERENCES.includes(c.algorithm)
    ? new Reference(
        c.algorithm,
        [
          { options, params: refs.slice(0, split) },
          ...(split < params.length ? [{ options: { ...options, lr: c.secondLr! }, params: refs.slice(split) }] : []),
        ],
        dtype,
      )
    : undefined
  // An optimizer of sparse gradients gets the rows of each gradient that are not all 0.
  const sparse = fastoptim.algorithms().find((info) => info.name === c.algorithm)?.sparse ?? false
  /** Sets the grads of step `s` (the same values on both sides, element k scaled by `scale(k)`) and steps both. */
  const step = (s: number, scale = (_k: number) => 1) => {
    params.forEach((p, i) => {
      const skip = c.skips[s][i] ?? false
      const grad = skip
        ? null
        : Type.from(values(c.seed * 31 + s * 7 + i + 1000, p.data.length, 3).map((g, k) => g * scale(k)))
      p.grad = grad && gradFor(sparse, grad, shapeOf(i))
      refs[i].grad = grad && Array.from(grad)
    })
    opt.step()
    reference?.step()
  }
  return { opt, params, refs, reference, step }
}

/** |got − want| relative to max(|want|, 1): the values are of order 1, and an element passing near 0 is judged on that scale. */
function worst(got: ArrayLike<number>, want: ArrayLike<number>): number {
  let worst = got.length === want.length ? 0 : Infinity
  for (let i = 0; i < want.length; i++) {
    const error = Math.abs(got[i] - want[i]) / Math.max(Math.abs(want[i]), 1)
    if (!(error <= worst)) worst = Number.isNaN(error) ? Infinity : error
  }
  return worst
}

const RUNS = 30

test('the registry has optimizers to test', (t) => {
  t.true(ALGORITHMS.length > 0)
})

for (const algorithm of ALGORITHMS) {
  test(`${algorithm} matches its double-precision reference within 1e-12`, (t) => {
    if (!REFERENCES.includes(algorithm)) {
      return t.fail(
        `${algorithm} has no double-precision reference in __test__/helpers/reference.ts: write one from PyTorch's equations`,
      )
    }
    fc.assert(
      fc.property(caseOf(algorithm), (c) => {
        const { opt, params, refs, reference, step } = build(c)
        for (let s = 0; s < c.steps; s++) {
          step(s)
          params.forEach((p, i) => {
            const error = worst(p.data, refs[i].data)
            if (!(error <= 1e-12)) throw new Error(`step ${s + 1}, parameter ${i}: relative error ${error}`)
          })
        }
        // The state agrees too, by PyTorch's names: step counts, buffers, NAdam's product.
        params.forEach((p, i) => {
          const want = reference!.states.get(refs[i])
          const got = opt.getState(p)
          if (!want || !got) {
            if (want || got)
              throw new Error(
                `parameter ${i}: state ${JSON.stringify(got)} where the reference has ${JSON.stringify(want)}`,
              )
            return
          }
          if (got.step !== want.step) throw new Error(`parameter ${i}: step ${got.step}, expected ${want.step}`)
          if (want.muProduct !== undefined && got.muProduct !== want.muProduct)
            throw new Error(`parameter ${i}: muProduct ${got.muProduct}, expected ${want.muProduct}`)
          for (const [name, buffer] of Object.entries(want.buffers)) {
            const error = worst(got[name] as FloatArray, buffer)
            if (!(error <= 1e-12)) throw new Error(`parameter ${i}: ${name} off by ${error}`)
          }
        })
      }),
      { numRuns: RUNS },
    )
    t.pass()
  })
}

/**
 * Optimizers whose lr reaches the update through state, as in their reference, so that lr = 0 holds
 * still only from the first step, and with the options that make it so.
 */
const LR_THROUGH_STATE: Record<string, { options: object; why: string }> = {
  ASGD: { options: {}, why: 'a step uses the rate eta that the previous step computed from lr' },
  Rprop: { options: { stepSizes: [0, 50] }, why: 'lr is only the initial step size, raised to stepSizes[0]' },
}

for (const dtype of ['float32', 'float64'] as const) {
  for (const algorithm of ALGORITHMS) {
    test(`lr = 0 leaves every parameter as it is: ${algorithm} (${dtype})`, (t) => {
      const throughState = LR_THROUGH_STATE[algorithm]
      fc.assert(
        fc.property(caseOf(algorithm), (c) => {
          // Some steps with the case's lr build up state, then steps with lr = 0 must not move a bit
          // (from the start, for an optimizer whose lr acts through its state).
          const { opt, params, step } = build(c, dtype)
          const zero = () => {
            for (const group of opt.paramGroups) Object.assign(group, { lr: 0 }, throughState?.options)
          }
          if (throughState) zero()
          else step(0)
          zero()
          const before = params.map((p) => Array.from(p.data))
          for (let s = 1; s < 10; s++) step(s)
          params.forEach((p, i) => {
            if (!before[i].every((x, k) => Object.is(x, p.data[k]))) throw new Error(`parameter ${i} moved with lr = 0`)
          })
        }),
        { numRuns: 10 },
      )
      t.pass()
    })
  }

  test(`second moments are never negative (${dtype})`, (t) => {
    // By PyTorch's state names: averages and sums of g² (or, for Adamax, of |g|), of every
    // optimizer of the registry that keeps one.
    const SECOND_MOMENTS = new Set([
      'expAvgSq',
      'maxExpAvgSq',
      'squareAvg',
      'expInf',
      'sum',
      'variance',
      'rowVar',
      'colVar',
    ])
    const moments = fastoptim
      .algorithms()
      .map((info): [Algorithm, string[]] => [
        info.name,
        info.buffers.map((b) => b.name).filter((name) => SECOND_MOMENTS.has(name)),
      ])
      .filter(([, names]) => names.length > 0)
    t.true(moments.length > 0)
    for (const [algorithm, names] of moments) {
      fc.assert(
        fc.property(caseOf(algorithm), fc.double({ min: -300, max: 300, noNaN: true }), (c, exponent) => {
          // Gradients of any magnitude, down to subnormal and up to overflowing squares.
          const { opt, params, step } = build(c, dtype)
          for (let s = 0; s < c.steps; s++) step(s, (k) => 10 ** (exponent * ((k % 3) / 2)))
          for (const p of params) {
            const state = opt.getState(p)
            for (const name of names) {
              const buffer = state?.[name] as FloatArray | undefined
              if (buffer?.some((x) => x < 0))
                throw new Error(`${algorithm} ${name} went negative: ${buffer.find((x) => x < 0)}`)
            }
          }
        }),
        { numRuns: 10 },
      )
    }
    t.pass()
  })

  test(`Adagrad's accumulator never shrinks (${dtype})`, (t) => {
    fc.assert(
      fc.property(caseOf('Adagrad'), (c) => {
        const { opt, params, step } = build(c, dtype)
        let last: Array<number[] | undefined> = params.map(() => undefined)
        for (let s = 0; s < c.steps; s++) {
          step(s)
          const now = params.map((p) => {
            const sum = opt.getState(p)?.sum as FloatArray | undefined
            return sum && Array.from(sum)
          })
          now.forEach((sum, i) => {
            const before = last[i]
            if (sum && before && sum.some((x, k) => !(x >= before[k])))
              throw new Error(`parameter ${i}: the accumulator shrank at step ${s + 1}`)
          })
          last = now
        }
      }),
      { numRuns: 40 },
    )
    t.pass()
  })
}

// setNumThreads is newer than these properties: the property runs where the library has it.
const threads = fastoptim as unknown as { setNumThreads?: (n: number) => void; getNumThreads?: () => number }

test('one thread and many give the same bits', (t) => {
  if (typeof threads.setNumThreads !== 'function' || typeof threads.getNumThreads !== 'function') {
    t.pass('this build has no setNumThreads()')
    return
  }
  const initial = threads.getNumThreads()
  try {
    fc.assert(
      fc.property(
        fc.constantFrom(...ALGORITHMS).chain(caseOf),
        fc.constantFrom<'float32' | 'float64'>('float32', 'float64'),
        (c, dtype) => {
          // Big enough to be split across threads: over the parallel threshold in all, flat and as a matrix.
          const large = matricesOnly(c.algorithm)
            ? [
                [191, 181],
                [64, 300],
              ]
            : [[2 ** 15 + 4097], [181, 191]]
          const big = { ...c, shapes: [...c.shapes, ...large] }
          const run = (n: number) => {
            threads.setNumThreads!(n)
            const { params, step } = build(big, dtype)
            for (let s = 0; s < c.steps; s++) step(s)
            return params.map((p) => Array.from(p.data))
          }
          const one = run(1)
          const many = run(4)
          one.forEach((values, i) => {
            if (!values.every((x, k) => Object.is(x, many[i][k])))
              throw new Error(`parameter ${i} differs between 1 and 4 threads`)
          })
        },
      ),
      { numRuns: 12 },
    )
  } finally {
    threads.setNumThreads(initial)
  }
  t.pass()
})
