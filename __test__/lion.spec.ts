// Lion against lion-pytorch's trajectories (__test__/fixtures/lion.json, made by
// scripts/gen_fixtures_lion.py): both dtypes, every option, two groups, skipped gradients, sizes
// either side of the vector widths, and schedulers moving the lr under decoupled decay; how many
// elements are bit-identical; its final state; its defaults against lion-pytorch's signature;
// the initial lr decoupled decay divides by; its bad options.
import { readFileSync } from 'node:fs'
import { join } from 'node:path'

import test from 'ava'

import { CosineAnnealingLR, ExponentialLR, Lion, type LRScheduler, type Parameter } from '../lib'
import { type FixtureCase, loadCases, makeParams, maxRelativeError, maxUlps, typed } from './helpers/fixtures'

/** A Lion case: the options lion-pytorch's constructor got, and the scheduler it ran under, if any. */
type LionCase = Omit<FixtureCase, 'steps'> & {
  constructorOptions: Record<string, unknown>
  scheduler: { name: 'CosineAnnealingLR' | 'ExponentialLR'; options: Record<string, number> } | null
  steps: Array<FixtureCase['steps'][number] & { lrs: number[] }>
}

const file = 'lion.json'
const cases = loadCases(file) as LionCase[]
const lionDefaults: Record<string, unknown> = JSON.parse(readFileSync(join(__dirname, 'fixtures', file), 'utf8'))
  .defaults.Lion

/**
 * The issue's tolerances are float32 within 1e-4 relative and float64 within 1e-10; the kernel
 * rounds as lion-pytorch does, so these are PyTorch's own foundation tolerances, tighter.
 */
const tolerance = (dtype: FixtureCase['dtype']) => (dtype === 'float32' ? 1e-5 : 1e-12)

/** How many elements of `got` have exactly the bits of `want`, in `dtype`. */
function identical(got: ArrayLike<number>, want: ArrayLike<number>, dtype: FixtureCase['dtype']): number {
  const round = dtype === 'float32' ? Math.fround : (x: number) => x
  let count = 0
  for (let i = 0; i < want.length; i++) if (Object.is(got[i], round(want[i]))) count++
  return count
}

test('the fixture covers both dtypes, two groups of different lr, skipped grads, 20+ steps and every option', (t) => {
  t.deepEqual(new Set(cases.map((c) => c.dtype)), new Set(['float32', 'float64']))
  t.true(cases.some((c) => c.groups.length === 2 && c.groups[0].options.lr !== c.groups[1].options.lr))
  t.true(cases.some((c) => c.steps.some((s) => s.grads.includes(null))))
  t.true(cases.every((c) => c.steps.length >= 20))
  // Schedulers under decoupled decay, with groups of different lr: the lr each step used differs
  // from the constructor's, which decoupled decay divides by.
  const scheduled = cases.filter((c) => c.scheduler && c.constructorOptions.decoupledWeightDecay)
  t.deepEqual(new Set(scheduled.map((c) => c.scheduler!.name)), new Set(['CosineAnnealingLR', 'ExponentialLR']))
  t.true(scheduled.some((c) => c.groups.length === 2 && c.groups[0].options.lr !== c.groups[1].options.lr))
  for (const c of scheduled) t.true(c.steps.slice(1).every((s) => s.lrs[0] !== c.constructorOptions.lr))
  const options = cases.flatMap((c) => c.groups.map((g) => g.options))
  for (const [key, value] of Object.entries(lionDefaults)) {
    t.true(
      options.some((o) => JSON.stringify(o[key]) !== JSON.stringify(value)),
      `some case sets ${key} away from its default`,
    )
  }
  // Sizes either side of 16 and 32 elements.
  t.deepEqual(
    cases[0].init.map((p) => p.length),
    [1, 15, 17, 33],
  )
})

/** Elements compared and elements bit-identical, per dtype, over every case. */
const tally: Record<FixtureCase['dtype'], { elements: number; identical: number }> = {
  float32: { elements: 0, identical: 0 },
  float64: { elements: 0, identical: 0 },
}

for (const c of cases) {
  test(`matches lion-pytorch's Lion: ${c.name}`, (t) => {
    const params: Parameter[] = makeParams(c)
    const groups = c.groups.map((g) => ({ params: g.params.map((i) => params[i]), ...g.options }))
    // As lion-pytorch's, the constructor's lr is the initial lr of every group.
    const opt = new Lion(groups as never, c.constructorOptions)
    let worstUlps = 0
    let [elements, same] = [0, 0]
    c.steps.forEach((step, s) => {
      params.forEach((p, i) => {
        const grad = step.grads[i]
        p.grad = grad === null ? null : typed(c.dtype, grad)
      })
      // The lr lion-pytorch's scheduler had set for this step.
      opt.paramGroups.forEach((group, g) => (group.lr = step.lrs[g]))
      opt.step()
      params.forEach((p, i) => {
        const error = maxRelativeError(p.data, step.params[i])
        t.true(error <= tolerance(c.dtype), `step ${s + 1}, param ${i}: relative error ${error}`)
        worstUlps = Math.max(worstUlps, maxUlps(p.data, step.params[i], c.dtype))
        elements += p.data.length
        same += identical(p.data, step.params[i], c.dtype)
      })
    })
    tally[c.dtype].elements += elements
    tally[c.dtype].identical += same
    c.finalState.forEach((want, i) => {
      // Every parameter has had a gradient at some step, so each has state here.
      const got = opt.getState(params[i])
      if (!got || !want)
        return t.fail(`param ${i} has state ${JSON.stringify(got)}, lion-pytorch ${JSON.stringify(want)}`)
      // lion-pytorch keeps exp_avg only; the step count is the engine's, as for every optimizer.
      t.deepEqual(Object.keys(got).sort(), ['expAvg', 'step'])
      t.deepEqual(Object.keys(want), ['expAvg'])
      const skipped = c.steps.filter((s) => s.grads[i] === null).length
      t.is(got.step, c.steps.length - skipped, `param ${i} step count`)
      const error = maxRelativeError(got.expAvg as ArrayLike<number>, want.expAvg as number[])
      t.true(error <= tolerance(c.dtype), `param ${i} expAvg: relative error ${error}`)
      same += identical(got.expAvg as ArrayLike<number>, want.expAvg as number[], c.dtype)
      elements += (want.expAvg as number[]).length
    })
    t.log(
      `${same} of ${elements} elements bit-identical (parameters at every step, final expAvg); largest difference ${worstUlps} ulp`,
    )
    // The kernel rounds as lion-pytorch's CPU ops do (crate/src/optimizers/lion.rs): not one bit apart.
    t.is(same, elements, 'every element bit-identical')
  })
}

test.after.always('bit-identical elements per dtype', () => {
  for (const [dtype, { elements, identical }] of Object.entries(tally)) {
    if (elements > 0)
      console.log(`  Lion ${dtype}: ${identical} of ${elements} parameter elements bit-identical to lion-pytorch's`)
  }
})

test("defaults are exactly those of lion-pytorch's signature (use_triton left out)", (t) => {
  // initLr is lion-pytorch's `_init_lr`, which its constructor sets from lr (null until then).
  const { initLr, ...signature } = Lion.defaults
  t.is(initLr, null)
  t.deepEqual(signature, lionDefaults)
  t.deepEqual(signature, { lr: 1e-4, betas: [0.9, 0.99], weightDecay: 0, decoupledWeightDecay: false })
  t.true(Object.isFrozen(Lion.defaults))
})

test('the first steps move each element by lr along the sign of its direction (derived by hand)', (t) => {
  // γ = 0.5, λ = 0.2 (decay factor 1 − 0.1 = 0.9), β = (0.9, 0.99). Step 1, m = 0: the direction
  // is 0.1·g, so p ← 0.9·p − 0.5·sign(g): 1 → 0.4, −1 → −0.4 and, with g = 0, 2 → 1.8; m = 0.01·g.
  const w = { data: Float64Array.of(1, -1, 2), grad: Float64Array.of(3, -0.5, 0) }
  const opt = new Lion([w], { lr: 0.5, weightDecay: 0.2 })
  opt.step()
  t.deepEqual([...w.data], [0.4, -0.4, 1.8])
  // (1 − β₂)·g rounded once, as the kernel's fma(1 − β₂, g, 0·β₂) rounds it.
  t.deepEqual(opt.getState(w), { step: 1, expAvg: Float64Array.of((1 - 0.99) * 3, (1 - 0.99) * -0.5, 0) })
  // Step 2, g = −0.1 on element 0: the direction 0.9·0.03 − 0.01 = 0.017 is still positive, so
  // the momentum carries it down again: 0.9·0.4 − 0.5 = −0.14.
  w.grad = Float64Array.of(-0.1, 0, 0)
  opt.step()
  t.true(Math.abs(w.data[0] + 0.14) <= 1e-15, `${w.data[0]}`)
})

for (const c of cases.filter((c) => c.scheduler)) {
  test(`matches lion-pytorch's Lion under this package's ${c.scheduler!.name}: ${c.name}`, (t) => {
    const params: Parameter[] = makeParams(c)
    const groups = c.groups.map((g) => ({ params: g.params.map((i) => params[i]), ...g.options }))
    const opt = new Lion(groups as never, c.constructorOptions)
    const { name, options } = c.scheduler!
    const scheduler: LRScheduler =
      name === 'CosineAnnealingLR'
        ? new CosineAnnealingLR(opt, options as { tMax: number; etaMin: number })
        : new ExponentialLR(opt, options as { gamma: number })
    c.steps.forEach((step, s) => {
      params.forEach((p, i) => {
        const grad = step.grads[i]
        p.grad = grad === null ? null : typed(c.dtype, grad)
      })
      opt.paramGroups.forEach((group, g) => {
        const error = Math.abs(group.lr - step.lrs[g]) / step.lrs[g]
        t.true(error <= 1e-12, `step ${s + 1}, group ${g}: lr ${group.lr}, PyTorch's ${step.lrs[g]}`)
      })
      opt.step()
      scheduler.step()
      params.forEach((p, i) => {
        const error = maxRelativeError(p.data, step.params[i])
        t.true(error <= tolerance(c.dtype), `step ${s + 1}, param ${i}: relative error ${error}`)
      })
    })
  })
}

test("decoupledWeightDecay divides λ by the constructor's lr, whatever lr a scheduler or a group sets", (t) => {
  // lion-pytorch: wd / lr₀ with lr₀ its constructor's lr. A zero gradient keeps the direction 0,
  // so only the decay moves the weight: 2·(1 − lr·0.25/lr₀).
  for (const lr of [1e-4, 1e-2]) {
    const w = { data: Float64Array.of(2), grad: Float64Array.of(0) }
    const v = { data: Float64Array.of(2), grad: Float64Array.of(0) }
    const opt = new Lion([{ params: [w] }, { params: [v], lr: lr / 4 }], {
      lr,
      weightDecay: 0.25,
      decoupledWeightDecay: true,
    })
    t.deepEqual(
      opt.paramGroups.map((g) => g.initLr),
      [lr, lr],
    )
    opt.step()
    t.true(Math.abs(w.data[0] - 1.5) <= 1e-15, `lr ${lr}: ${w.data[0]}`)
    t.true(Math.abs(v.data[0] - 2 * (1 - 0.25 / 4)) <= 1e-15, `lr ${lr}: ${v.data[0]}`)
    // A scheduler halves the lr: the decay halves with it.
    opt.paramGroups[0].lr = lr / 2
    opt.step()
    t.true(Math.abs(w.data[0] - 1.5 * (1 - 0.125)) <= 1e-15, `lr ${lr}: ${w.data[0]}`)
  }
})

test('initLr is filled from the constructor, given groups and added groups alike, and survives a state dict', (t) => {
  const w = { data: Float32Array.of(1), grad: Float32Array.of(0) }
  t.is(new Lion([w]).paramGroups[0].initLr, 1e-4)
  t.is(new Lion([w], { lr: 3e-3 }).defaults.initLr, 3e-3)
  t.is(new Lion([w], { lr: 3e-3, initLr: 1e-2 }).paramGroups[0].initLr, 1e-2)
  // lion-pytorch refuses a constructor lr of 0; here initLr stays null: the group's lr.
  t.is(new Lion([w], { lr: 0 }).paramGroups[0].initLr, null)
  t.is(Lion.defaults.initLr, null)

  const v = { data: Float32Array.of(1), grad: Float32Array.of(0) }
  const opt = new Lion([w], { lr: 3e-3, weightDecay: 0.1, decoupledWeightDecay: true })
  opt.addParamGroup({ params: [v], lr: 1e-3 })
  t.is(opt.paramGroups[1].initLr, 3e-3)
  opt.paramGroups[0].lr = 1e-3
  opt.step()
  const saved = opt.stateDict()
  t.deepEqual(
    saved.paramGroups.map((g) => g.initLr),
    [3e-3, 3e-3],
  )
  // Resumed with another lr, the loaded initLr decays as the original run did.
  const w2 = { data: Float32Array.from(w.data), grad: Float32Array.of(0) }
  const v2 = { data: Float32Array.from(v.data), grad: Float32Array.of(0) }
  const resumed = new Lion([w2], { lr: 1e-3, weightDecay: 0.1, decoupledWeightDecay: true })
  resumed.addParamGroup({ params: [v2], lr: 1e-3 })
  resumed.loadStateDict(saved)
  t.deepEqual(
    resumed.paramGroups.map((g) => g.initLr),
    [3e-3, 3e-3],
  )
  opt.step()
  resumed.step()
  t.deepEqual([...w2.data, ...v2.data], [...w.data, ...v.data])
})

test('betas may be 0 or 1 (a closed range, as lion-pytorch checks it)', (t) => {
  const w = { data: Float32Array.of(1), grad: Float32Array.of(1) }
  t.notThrows(() => new Lion([w], { betas: [1, 1] }).step())
  t.notThrows(() => new Lion([w], { betas: [0, 0] }).step())
})

const param = () => ({ data: Float32Array.of(1, -2, 3), grad: Float32Array.of(0.5, 0.25, -1) })

/** Bad options, each with the error it must give when passed to the constructor. */
const badOptions: Array<[Record<string, unknown>, typeof TypeError | typeof RangeError, string, string | RegExp]> = [
  [{ lr: -1e-4 }, RangeError, 'ERR_OUT_OF_RANGE', 'invalid lr: -0.0001 (expected a finite lr >= 0) in options'],
  [
    { betas: [1.5, 0.99] },
    RangeError,
    'ERR_OUT_OF_RANGE',
    'invalid betas[0]: 1.5 (expected 0 <= betas[0] <= 1) in options',
  ],
  [
    { betas: [0.9, -0.1] },
    RangeError,
    'ERR_OUT_OF_RANGE',
    'invalid betas[1]: -0.1 (expected 0 <= betas[1] <= 1) in options',
  ],
  [{ betas: [0.9] }, TypeError, 'ERR_INVALID_ARG_TYPE', 'options.betas must be an array of 2 numbers, got Array'],
  [
    { weightDecay: -0.1 },
    RangeError,
    'ERR_OUT_OF_RANGE',
    'invalid weightDecay: -0.1 (expected a finite weightDecay >= 0) in options',
  ],
  [
    { decoupledWeightDecay: 1 },
    TypeError,
    'ERR_INVALID_ARG_TYPE',
    'options.decoupledWeightDecay must be a boolean, got a number',
  ],
  [
    { initLr: 0 },
    RangeError,
    'ERR_OUT_OF_RANGE',
    'invalid initLr: 0 (expected null or a finite initLr > 0) in options',
  ],
  [{ initLr: '1e-3' }, TypeError, 'ERR_INVALID_ARG_TYPE', 'options.initLr must be a number or null, got a string'],
  [{ eps: 1e-8 }, TypeError, 'ERR_INVALID_ARG_VALUE', /^options\.eps is not an option of Lion/],
]

for (const [options, instanceOf, code, message] of badOptions) {
  const shown = Object.entries(options).map(
    ([key, value]) => `${key}: ${Array.isArray(value) ? `[${value}]` : String(value)}`,
  )
  test(`Lion rejects { ${shown.join(', ')} }`, (t) => {
    const data = Float32Array.from(param().data)
    const w = param()
    t.throws(() => new Lion([w], options as never), { instanceOf, code, message })
    t.deepEqual(w.data, data)
  })
}

test('Lion accepts parameters with grad null and zero-length parameters', (t) => {
  const empty = { data: new Float32Array(0), grad: new Float32Array(0) }
  const idle = { data: Float64Array.of(1, 2), grad: null }
  const opt = new Lion([empty, idle])
  opt.step()
  t.is(opt.getState(empty)?.step, 1)
  t.is(opt.getState(idle), undefined)
  t.deepEqual([...idle.data], [1, 2])
})
