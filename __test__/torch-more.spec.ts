// Adadelta, ASGD and Rprop against PyTorch's trajectories (__test__/fixtures/torch-more.json, made
// by scripts/gen_fixtures_torch_more.py), their final state (ASGD's average ax and its float32
// eta and mu among it), their defaults against torch.optim's signatures, and their bad options.
import test from 'ava'

import { Adadelta, ASGD, Rprop } from '../lib'
import { makeParams, maxRelativeError, maxUlps, replay } from './helpers/fixtures'
import {
  build,
  checkCoverage,
  checkState,
  checkTorchDefaults,
  loadTorchFixture,
  testBadOptions,
  testIdleParameters,
  type BadOptions,
} from './helpers/torch-optim'

const { cases, torchDefaults } = loadTorchFixture('torch-more.json')
const classes = { Adadelta, ASGD, Rprop } as const
type Name = keyof typeof classes

/** The tolerances these optimizers are held to: relative to the larger of |PyTorch's value| and 1e-6. */
const TOLERANCE = { float32: 1e-4, float64: 1e-10 } as const

/** How many of `got` have exactly PyTorch's bits. */
function identical(got: ArrayLike<number>, want: ArrayLike<number>): number {
  let count = 0
  for (let i = 0; i < got.length; i++) if (Object.is(got[i], want[i])) count++
  return count
}

test('the fixture covers every optimizer and option, both dtypes, two groups, skipped grads and 20+ steps', (t) => {
  for (const [name, Class] of Object.entries(classes)) {
    const mine = cases.filter((c) => c.optimizer === name)
    checkCoverage(t, mine, name)
    t.true(
      mine.some((c) => c.groups.some((g) => g.options.maximize === true)),
      `${name}: maximize`,
    )
    // Every option is away from its default in some group.
    for (const [option, value] of Object.entries(Class.defaults)) {
      const differs = mine.some((c) =>
        c.groups.some((g) => JSON.stringify(g.options[option]) !== JSON.stringify(value)),
      )
      t.true(differs, `${name}: ${option} is only ever its default`)
    }
  }
})

for (const c of cases) {
  test(`matches PyTorch's ${c.optimizer}: ${c.name}`, (t) => {
    const params = makeParams(c)
    const opt = build(classes, c, params)
    let worstUlps = 0
    let worstError = 0
    let same = 0
    let total = 0
    replay(c, params, opt, (p, want, s, i) => {
      const error = maxRelativeError(p.data, want)
      t.true(error <= TOLERANCE[c.dtype], `step ${s + 1}, param ${i}: relative error ${error}`)
      worstError = Math.max(worstError, error)
      worstUlps = Math.max(worstUlps, maxUlps(p.data, want, c.dtype))
      same += identical(p.data, want)
      total += p.data.length
    })
    c.finalState.forEach((want, i) => {
      // Every parameter has had a gradient at some step, so each has state here.
      const got = opt.getState(params[i])
      if (!got || !want) return t.fail(`param ${i} has state ${JSON.stringify(got)}, PyTorch ${JSON.stringify(want)}`)
      t.deepEqual(Object.keys(got).sort(), Object.keys(want).sort(), `param ${i}: the state PyTorch keeps, and no more`)
      // Each keeps a step count; ASGD's eta and mu are scalars.
      t.true('step' in want, `param ${i}: PyTorch's step count`)
      checkState(t, got, want, i, TOLERANCE[c.dtype])
    })
    t.log(
      `over ${c.steps.length} steps: ${same} of ${total} values bit-identical, largest difference ${worstUlps} ulp (relative ${worstError.toExponential(2)})`,
    )
  })
}

test('defaults are exactly those of torch.optim’s signatures', (t) => {
  checkTorchDefaults(t, classes, torchDefaults)
  // The values, written out, so that a fixture regenerated with another torch is noticed here too.
  t.deepEqual({ ...Adadelta.defaults }, { lr: 1, rho: 0.9, eps: 1e-6, weightDecay: 0, maximize: false })
  t.deepEqual({ ...ASGD.defaults }, { lr: 1e-2, lambd: 1e-4, alpha: 0.75, t0: 1e6, weightDecay: 0, maximize: false })
  t.deepEqual({ ...Rprop.defaults }, { lr: 1e-2, etas: [0.5, 1.2], stepSizes: [1e-6, 50], maximize: false })
})

/** Bad options, each with the error it must give when passed to the constructor. */
const badOptions: BadOptions<Name> = [
  ['Adadelta', { rho: 1.5 }, RangeError, 'ERR_OUT_OF_RANGE', 'invalid rho: 1.5 (expected 0 <= rho <= 1) in options'],
  [
    'Adadelta',
    { eps: -1e-6 },
    RangeError,
    'ERR_OUT_OF_RANGE',
    'invalid eps: -1e-6 (expected a finite eps >= 0) in options',
  ],
  [
    'ASGD',
    { lambd: -1 },
    RangeError,
    'ERR_OUT_OF_RANGE',
    'invalid lambd: -1 (expected a finite lambd >= 0) in options',
  ],
  ['ASGD', { t0: Infinity }, RangeError, 'ERR_OUT_OF_RANGE', 'invalid t0: Infinity (expected a finite t0) in options'],
  [
    'ASGD',
    { alpha: -0.75 },
    RangeError,
    'ERR_OUT_OF_RANGE',
    'invalid alpha: -0.75 (expected a finite alpha >= 0) in options',
  ],
  [
    'Rprop',
    { etas: [0, 1.2] },
    RangeError,
    'ERR_OUT_OF_RANGE',
    'invalid etas[0]: 0 (expected a finite etas[0] > 0) in options',
  ],
  [
    'Rprop',
    { etas: [1.5, 1.2] },
    TypeError,
    'ERR_INVALID_ARG_VALUE',
    'Rprop requires 0 < etas[0] < 1 < etas[1], got etas[0] = 1.5 and etas[1] = 1.2 in options',
  ],
  [
    'Rprop',
    { etas: [0.5, 1] },
    TypeError,
    'ERR_INVALID_ARG_VALUE',
    'Rprop requires 0 < etas[0] < 1 < etas[1], got etas[0] = 0.5 and etas[1] = 1 in options',
  ],
  [
    'Rprop',
    { stepSizes: [-1, 50] },
    RangeError,
    'ERR_OUT_OF_RANGE',
    'invalid stepSizes[0]: -1 (expected a finite stepSizes[0] >= 0) in options',
  ],
  [
    'Rprop',
    { stepSizes: [1e-6] },
    TypeError,
    'ERR_INVALID_ARG_TYPE',
    'options.stepSizes must be an array of 2 numbers, got Array',
  ],
]

testBadOptions(classes, badOptions)

test('Adadelta: the first step is γ·√ε/√((1 − ρ)g² + ε)·g (derived by hand)', (t) => {
  // ρ = 0.75, ε = 1e-6, γ = 0.5, g = 2: v = 0.25·4 = 1, Δ = √1e-6/√(1 + 1e-6)·2, u = 0.25·Δ².
  const w = { data: Float64Array.of(1), grad: Float64Array.of(2) }
  const opt = new Adadelta([w], { lr: 0.5, rho: 0.75 })
  opt.step()
  const delta = (Math.sqrt(1e-6) / Math.sqrt(1 + 1e-6)) * 2
  t.true(Math.abs(w.data[0] - (1 - 0.5 * delta)) <= 1e-15, `${w.data[0]}`)
  const state = opt.getState(w)!
  t.deepEqual([...(state.squareAvg as Float64Array)], [1])
  t.true(Math.abs((state.accDelta as Float64Array)[0] - 0.25 * delta * delta) <= 1e-20)
})

test('ASGD: ax copies the parameter until t0, then averages the iterates; eta and mu are each parameter’s own', (t) => {
  // γ = 0.5, λ = 0.25, α = 1, t₀ = 1, g = 0 after the first step: p shrinks by 1 − λη each step.
  const w = { data: Float64Array.of(1), grad: Float64Array.of(0) }
  const opt = new ASGD([w], { lr: 0.5, lambd: 0.25, alpha: 1, t0: 1 })
  const iterates: number[] = []
  for (let step = 1; step <= 4; step++) {
    opt.step()
    iterates.push(w.data[0])
  }
  // Steps 1 and 2 use μ = 1 (ax = p); step 3 uses μ = 1/max(1, 2 − 1) = 1; step 4 uses μ = 1/2.
  const ax = (opt.getState(w)!.ax as Float64Array)[0]
  t.true(Math.abs(ax - (iterates[2] + iterates[3]) / 2) <= 1e-16, `${ax} vs ${iterates}`)
  t.is(opt.getState(w)!.eta, Math.fround(0.5 / (1 + 0.25 * 0.5 * 4)))
  t.is(opt.getState(w)!.mu, Math.fround(1 / 3))
  // A parameter that joins at step 5 starts from η = γ and μ = 1.
  const late = { data: Float64Array.of(1), grad: Float64Array.of(1) }
  opt.addParamGroup({ params: [late] })
  opt.step()
  t.is(late.data[0], 1 * (1 - 0.25 * 0.5) - 0.5)
  t.is(opt.getState(late)!.eta, Math.fround(0.5 / 1.125))
  t.is(opt.getState(late)!.mu, 1)
})

test('Rprop: lr is only where the step size starts; the bounds clamp it from the first step', (t) => {
  // Step 1: s = clamp(γ·1) = 0.25 (γ = 2 clamped to sₘₐₓ), p ← p − sign(g)·s.
  const w = { data: Float64Array.of(0), grad: Float64Array.of(3) }
  const opt = new Rprop([w], { lr: 2, stepSizes: [0.01, 0.25] })
  opt.step()
  t.deepEqual([...w.data], [-0.25])
  opt.paramGroups[0].lr = 0
  // Step 2, the same sign: s = min(0.25·1.2, 0.25) = 0.25 still, whatever lr now says.
  opt.step()
  t.deepEqual([...w.data], [-0.5])
  // Step 3, the sign changes: s = 0.125, no step, and prev is zeroed.
  w.grad = Float64Array.of(-1)
  opt.step()
  t.deepEqual([...w.data], [-0.5])
  t.deepEqual(opt.getState(w), { step: 3, prev: Float64Array.of(0), stepSize: Float64Array.of(0.125) })
})

testIdleParameters(classes)
