// SGD, RMSprop, Adagrad, Adamax, NAdam and RAdam against PyTorch's trajectories
// (__test__/fixtures/family.json, made by scripts/gen_fixtures_family.py), their defaults against
// torch.optim's signatures, and their bad options against the errors each must give.
import test from 'ava'

import { Adagrad, Adamax, NAdam, RAdam, RMSprop, SGD } from '../lib'
import { makeParams, maxUlps, maxRelativeError, tolerance, replay } from './helpers/fixtures'
import {
  build,
  checkCoverage,
  checkState,
  checkTorchDefaults,
  loadTorchFixture,
  param,
  testBadOptions,
  testIdleParameters,
  type BadOptions,
} from './helpers/torch-optim'

const { cases, torchDefaults } = loadTorchFixture('family.json')
const classes = { SGD, RMSprop, Adagrad, Adamax, NAdam, RAdam } as const
type Name = keyof typeof classes

/** A state buffer PyTorch does not keep but this implementation does, and why it may. */
function allowedExtra(c: (typeof cases)[number], key: string, group: Record<string, unknown>): boolean {
  // Buffers are taken by count: centered RMSprop without momentum also holds a zero momentumBuffer.
  return c.optimizer === 'RMSprop' && key === 'momentumBuffer' && group.centered === true && group.momentum === 0
}

test('the fixture covers every optimizer, both dtypes, two groups, skipped grads and 20+ steps', (t) => {
  for (const name of Object.keys(classes)) {
    checkCoverage(
      t,
      cases.filter((c) => c.optimizer === name),
      name,
    )
  }
})

for (const c of cases) {
  test(`matches PyTorch's ${c.optimizer}: ${c.name}`, (t) => {
    const params = makeParams(c)
    const opt = build(classes, c, params)
    let worstUlps = 0
    replay(c, params, opt, (p, want, s, i) => {
      const error = maxRelativeError(p.data, want)
      t.true(error <= tolerance(c.dtype), `step ${s + 1}, param ${i}: relative error ${error}`)
      worstUlps = Math.max(worstUlps, maxUlps(p.data, want, c.dtype))
    })
    c.finalState.forEach((want, i) => {
      // Every parameter has had a gradient at some step, so each has state here.
      const got = opt.getState(params[i])
      if (!got || !want) return t.fail(`param ${i} has state ${JSON.stringify(got)}, PyTorch ${JSON.stringify(want)}`)
      // SGD keeps no step count; NAdam's muProduct is a scalar.
      checkState(t, got, want, i, tolerance(c.dtype))
      const group = c.groups.find((g) => g.params.includes(i))!.options
      for (const [key, value] of Object.entries(got)) {
        if (key === 'step' || key in want) continue
        t.true(allowedExtra(c, key, group), `param ${i} has ${key}, which PyTorch does not keep`)
        t.true(
          (value as ArrayLike<number>).length === params[i].data.length &&
            Array.from(value as ArrayLike<number>).every((x) => x === 0),
        )
      }
    })
    t.log(`largest difference from PyTorch over ${c.steps.length} steps: ${worstUlps} ulp`)
  })
}

test('defaults are exactly those of torch.optim’s signatures', (t) => {
  checkTorchDefaults(t, classes, torchDefaults)
  // The values, written out, so that a fixture regenerated with another torch is noticed here too.
  t.deepEqual(
    { ...SGD.defaults },
    { lr: 1e-3, momentum: 0, dampening: 0, weightDecay: 0, nesterov: false, maximize: false },
  )
  t.deepEqual(
    { ...RMSprop.defaults },
    { lr: 1e-2, alpha: 0.99, eps: 1e-8, weightDecay: 0, momentum: 0, centered: false, maximize: false },
  )
  t.deepEqual(
    { ...Adagrad.defaults },
    { lr: 1e-2, lrDecay: 0, weightDecay: 0, initialAccumulatorValue: 0, eps: 1e-10, maximize: false },
  )
  t.deepEqual({ ...Adamax.defaults }, { lr: 2e-3, betas: [0.9, 0.999], eps: 1e-8, weightDecay: 0, maximize: false })
  t.deepEqual(
    { ...NAdam.defaults },
    {
      lr: 2e-3,
      betas: [0.9, 0.999],
      eps: 1e-8,
      weightDecay: 0,
      momentumDecay: 4e-3,
      decoupledWeightDecay: false,
      maximize: false,
    },
  )
  t.deepEqual(
    { ...RAdam.defaults },
    { lr: 1e-3, betas: [0.9, 0.999], eps: 1e-8, weightDecay: 0, decoupledWeightDecay: false, maximize: false },
  )
})

/** Bad options, each with the error it must give when passed to the constructor. */
const badOptions: BadOptions<Name> = [
  [
    'SGD',
    { nesterov: true },
    TypeError,
    'ERR_INVALID_ARG_VALUE',
    'nesterov momentum requires momentum > 0 and dampening = 0, got momentum = 0 and dampening = 0 in options',
  ],
  [
    'SGD',
    { nesterov: true, momentum: 0.9, dampening: 0.1 },
    TypeError,
    'ERR_INVALID_ARG_VALUE',
    'nesterov momentum requires momentum > 0 and dampening = 0, got momentum = 0.9 and dampening = 0.1 in options',
  ],
  [
    'SGD',
    { momentum: -0.9 },
    RangeError,
    'ERR_OUT_OF_RANGE',
    'invalid momentum: -0.9 (expected a finite momentum >= 0) in options',
  ],
  [
    'SGD',
    { dampening: Infinity },
    RangeError,
    'ERR_OUT_OF_RANGE',
    'invalid dampening: Infinity (expected a finite dampening) in options',
  ],
  ['SGD', { nesterov: 1 }, TypeError, 'ERR_INVALID_ARG_TYPE', 'options.nesterov must be a boolean, got a number'],
  ['SGD', { betas: [0.9, 0.999] }, TypeError, 'ERR_INVALID_ARG_VALUE', /^options\.betas is not an option of SGD/],
  [
    'RMSprop',
    { alpha: -0.5 },
    RangeError,
    'ERR_OUT_OF_RANGE',
    'invalid alpha: -0.5 (expected a finite alpha >= 0) in options',
  ],
  [
    'RMSprop',
    { eps: -1e-8 },
    RangeError,
    'ERR_OUT_OF_RANGE',
    'invalid eps: -1e-8 (expected a finite eps >= 0) in options',
  ],
  [
    'RMSprop',
    { centered: 'yes' },
    TypeError,
    'ERR_INVALID_ARG_TYPE',
    'options.centered must be a boolean, got a string',
  ],
  [
    'Adagrad',
    { lrDecay: -1 },
    RangeError,
    'ERR_OUT_OF_RANGE',
    'invalid lrDecay: -1 (expected a finite lrDecay >= 0) in options',
  ],
  [
    'Adagrad',
    { initialAccumulatorValue: -0.1 },
    RangeError,
    'ERR_OUT_OF_RANGE',
    'invalid initialAccumulatorValue: -0.1 (expected a finite initialAccumulatorValue >= 0) in options',
  ],
  [
    'Adamax',
    { betas: [1, 0.999] },
    RangeError,
    'ERR_OUT_OF_RANGE',
    'invalid betas[0]: 1 (expected 0 <= betas[0] < 1) in options',
  ],
  [
    'Adamax',
    { betas: [0.9] },
    TypeError,
    'ERR_INVALID_ARG_TYPE',
    'options.betas must be an array of 2 numbers, got Array',
  ],
  [
    'NAdam',
    { momentumDecay: -4e-3 },
    RangeError,
    'ERR_OUT_OF_RANGE',
    'invalid momentumDecay: -0.004 (expected a finite momentumDecay >= 0) in options',
  ],
  [
    'NAdam',
    { betas: [0.9, 1.5] },
    RangeError,
    'ERR_OUT_OF_RANGE',
    'invalid betas[1]: 1.5 (expected 0 <= betas[1] < 1) in options',
  ],
  ['RAdam', { eps: NaN }, RangeError, 'ERR_OUT_OF_RANGE', 'invalid eps: NaN (expected a finite eps >= 0) in options'],
  [
    'RAdam',
    { weightDecay: -0.01 },
    RangeError,
    'ERR_OUT_OF_RANGE',
    'invalid weightDecay: -0.01 (expected a finite weightDecay >= 0) in options',
  ],
]

testBadOptions(classes, badOptions)

test('a cross-field error in one group names the group; a bad change to a live group changes nothing', (t) => {
  const [a, b] = [param(), param()]
  t.throws(() => new SGD([{ params: [a] }, { params: [b], nesterov: true }], { momentum: 0.9, dampening: 0.5 }), {
    code: 'ERR_INVALID_ARG_VALUE',
    message:
      'nesterov momentum requires momentum > 0 and dampening = 0, got momentum = 0.9 and dampening = 0.5 in paramGroups[1]',
  })
  const opt = new SGD([{ params: [a] }, { params: [b], nesterov: true, dampening: 0 }], {
    momentum: 0.9,
    dampening: 0.5,
  })
  opt.step()
  const before = { a: Float32Array.from(a.data), b: Float32Array.from(b.data), state: opt.getState(b) }
  opt.paramGroups[1].momentum = 0
  t.throws(() => opt.step(), {
    instanceOf: TypeError,
    code: 'ERR_INVALID_ARG_VALUE',
    message:
      'nesterov momentum requires momentum > 0 and dampening = 0, got momentum = 0 and dampening = 0 in paramGroups[1]',
  })
  opt.paramGroups[1].momentum = 0.9
  opt.paramGroups[0].lr = -1
  t.throws(() => opt.step(), {
    instanceOf: RangeError,
    code: 'ERR_OUT_OF_RANGE',
    message: 'invalid lr: -1 (expected a finite lr >= 0) in paramGroups[0]',
  })
  t.deepEqual(a.data, before.a)
  t.deepEqual(b.data, before.b)
  t.deepEqual(opt.getState(b), before.state)
})

test('SGD: the momentum buffer starts as the first gradient, then decays (derived by hand)', (t) => {
  // γ = 0.5, μ = 0.5, τ = 0.5. Step 1: b = g = 1, p = 1 − 0.5 = 0.5.
  // Step 2 with g = 2: b = 0.5·1 + 0.5·2 = 1.5, p = 0.5 − 0.5·1.5 = −0.25.
  const w = { data: Float64Array.of(1), grad: Float64Array.of(1) }
  const opt = new SGD([w], { lr: 0.5, momentum: 0.5, dampening: 0.5 })
  opt.step()
  t.deepEqual([...w.data], [0.5])
  t.deepEqual(opt.getState(w), { step: 1, momentumBuffer: Float64Array.of(1) })
  w.grad = Float64Array.of(2)
  opt.step()
  t.deepEqual([...w.data], [-0.25])
  t.deepEqual([...(opt.getState(w)!.momentumBuffer as Float64Array)], [1.5])
})

test('Adagrad: the accumulator starts at initialAccumulatorValue on a parameter’s first step', (t) => {
  // s = 0.5 + g² = 4.5 with g = 2; p = 1 − 0.1·2/(√4.5 + 1e-10).
  const early = { data: Float64Array.of(1), grad: Float64Array.of(2) as Float64Array | null }
  const late = { data: Float64Array.of(1), grad: null as Float64Array | null }
  const opt = new Adagrad([early, late], { lr: 0.1, initialAccumulatorValue: 0.5 })
  opt.step()
  t.is(opt.getState(late), undefined)
  late.grad = Float64Array.of(2)
  early.grad = null
  opt.step()
  const expected = 1 + (-0.1 * 2) / (Math.sqrt(4.5) + 1e-10)
  t.deepEqual([...early.data], [expected])
  t.deepEqual([...late.data], [expected])
  t.deepEqual(opt.getState(late), { step: 1, sum: Float64Array.of(4.5) })
})

test('Adagrad: a group’s own initialAccumulatorValue is honoured (PyTorch reads only the constructor’s)', (t) => {
  const a = { data: Float64Array.of(1), grad: Float64Array.of(2) }
  const b = { data: Float64Array.of(1), grad: Float64Array.of(2) }
  const opt = new Adagrad([{ params: [a] }, { params: [b], initialAccumulatorValue: 5 }], {
    initialAccumulatorValue: 1,
  })
  opt.step()
  t.deepEqual([...(opt.getState(a)!.sum as Float64Array)], [5])
  t.deepEqual([...(opt.getState(b)!.sum as Float64Array)], [9])
})

test('NAdam: muProduct is each parameter’s own float32 running product of the momentum schedule', (t) => {
  const mu = (step: number) => 0.9 * (1 - 0.5 * 0.96 ** (step * 4e-3))
  const a = { data: Float32Array.of(1), grad: Float32Array.of(1) as Float32Array | null }
  const b = { data: Float32Array.of(1), grad: null as Float32Array | null }
  const opt = new NAdam([a, b])
  opt.step()
  b.grad = Float32Array.of(1)
  opt.step()
  t.is(opt.getState(a)!.muProduct, Math.fround(Math.fround(mu(1)) * Math.fround(mu(2))))
  t.is(opt.getState(b)!.muProduct, Math.fround(mu(1)))
})

test('RAdam steps as SGD with bias-corrected momentum until ρₜ > 5 (step 6 with β₂ = 0.999)', (t) => {
  // Before rectification p ← p − γ·m/(1 − β₁ᵗ); with a constant gradient 1, m/(1 − β₁ᵗ) = 1.
  const w = { data: Float64Array.of(0), grad: Float64Array.of(1) }
  const opt = new RAdam([w], { lr: 0.1 })
  for (let step = 1; step <= 5; step++) {
    opt.step()
    t.true(Math.abs(w.data[0] + 0.1 * step) <= 1e-15, `step ${step}: ${w.data[0]}`)
  }
  // Step 6: ρ∞ = 1999, ρ₆ = ρ∞ − 12·β₂⁶/(1 − β₂⁶) ≈ 5.994 > 5, so the step is scaled by
  // r₆ ≈ 0.0258 and by the adaptive rate √(1 − β₂⁶)/(√v + ε) = 1/(1 + ε/√(1 − β₂⁶)), v = 1 − β₂⁶.
  const rhoInf = 1999
  const rho = rhoInf - (12 * 0.999 ** 6) / (1 - 0.999 ** 6)
  const rect = Math.sqrt(((rho - 4) * (rho - 2) * rhoInf) / ((rhoInf - 4) * (rhoInf - 2) * rho))
  const adaptive = 1 / (1 + 1e-8 / Math.sqrt(1 - 0.999 ** 6))
  opt.step()
  const want = -0.5 - 0.1 * rect * adaptive
  t.true(Math.abs(w.data[0] - want) <= 1e-14, `${w.data[0]} vs ${want}`)
})

testIdleParameters(classes)
