// Adafactor against PyTorch's trajectories (__test__/fixtures/adafactor.json, made by
// scripts/gen_fixtures_adafactor.py): 0-D to 3-D parameters, both dtypes, every option, two
// groups and skipped gradients; its state with PyTorch's shapes; its defaults.
import { readFileSync } from 'node:fs'
import { join } from 'node:path'

import test from 'ava'

import * as fastoptim from '../lib'
import { type FixtureCase, loadCases, maxRelativeError, typed, replay } from './helpers/fixtures'

type ShapedCase = FixtureCase & { shapes: number[][]; stateShapes: Array<Record<string, number[]>> }
const file = 'adafactor.json'
const cases = loadCases(file) as ShapedCase[]
const torchDefaults = JSON.parse(readFileSync(join(__dirname, 'fixtures', file), 'utf8')).defaults.Adafactor
const Adafactor = (fastoptim as unknown as Record<string, unknown>).Adafactor as
  | ((new (params: never, options?: object) => fastoptim.Optimizer<object>) & { defaults: Record<string, unknown> })
  | undefined

/** The tolerances: float32 within 1e-4 relative, float64 within 1e-10. */
const tolerance = (dtype: FixtureCase['dtype']) => (dtype === 'float32' ? 1e-4 : 1e-10)

/**
 * Adafactor's step is relative to the parameter's RMS, so an element that passes near zero carries
 * rounding on the scale of RMS(p): elements are compared relative to the larger of themselves and it.
 */
const rms = (values: ArrayLike<number>) =>
  Math.sqrt(Array.from(values).reduce((s, x) => s + x * x, 0) / Math.max(1, values.length))

test('Adafactor is in the registry, and the fixture covers 0-D to 3-D, both dtypes, two groups and skipped grads', (t) => {
  t.truthy(Adafactor, 'exported')
  t.deepEqual(new Set(cases.map((c) => c.dtype)), new Set(['float32', 'float64']))
  t.deepEqual([...new Set(cases.flatMap((c) => c.shapes.map((s) => s.length)))].sort(), [0, 1, 2, 3])
  t.true(cases.some((c) => c.groups.length === 2))
  t.true(cases.some((c) => c.steps.some((s) => s.grads.includes(null))))
})

test('defaults are exactly those of torch.optim.Adafactor', (t) => {
  t.deepEqual({ ...Adafactor!.defaults }, torchDefaults)
  t.deepEqual(
    { ...Adafactor!.defaults },
    { lr: 1e-2, beta2Decay: -0.8, eps: [null, 1e-3], d: 1, weightDecay: 0, maximize: false },
  )
})

for (const c of cases) {
  test(`matches PyTorch's Adafactor: ${c.name}`, (t) => {
    const params = c.init.map((values, i) => ({
      data: typed(c.dtype, values),
      grad: null as fastoptim.FloatArray | null,
      shape: c.shapes[i],
    }))
    const groups = c.groups.map((g) => ({ params: g.params.map((i) => params[i]), ...g.options }))
    const opt = new Adafactor!(groups as never)
    let worst = 0
    replay(c, params, opt, (p, want, s, i) => {
      const error = maxRelativeError(p.data, want, rms(want))
      worst = Math.max(worst, error)
      t.true(
        error <= tolerance(c.dtype),
        `step ${s + 1}, param ${i} of shape [${c.shapes[i]}]: relative error ${error}`,
      )
    })
    const dict = opt.stateDict()
    c.finalState.forEach((want, i) => {
      const got = opt.getState(params[i])
      if (!got || !want) return t.fail(`param ${i} has state ${JSON.stringify(got)}, PyTorch ${JSON.stringify(want)}`)
      t.deepEqual(Object.keys(got).sort(), Object.keys(want).sort(), `param ${i}: the state PyTorch keeps, no more`)
      t.is(got.step, want.step as number)
      for (const [key, values] of Object.entries(want)) {
        if (key === 'step') continue
        const error = maxRelativeError(got[key] as ArrayLike<number>, values as number[], rms(values as number[]))
        t.true(error <= tolerance(c.dtype), `param ${i} ${key}: relative error ${error}`)
      }
      const shapes = c.shapes[i].length > 0 ? dict.shapes?.[i] : undefined
      for (const [key, shape] of Object.entries(c.stateShapes[i])) {
        // A 0-D parameter's state is flat here as its data is; the others carry PyTorch's shapes.
        if (c.shapes[i].length > 0) t.deepEqual(shapes?.[key], shape, `param ${i} ${key} shape`)
      }
    })
    t.log(`largest relative difference from PyTorch over ${c.steps.length} steps: ${worst.toExponential(2)}`)
  })
}

test('a parameter whose shape does not hold its data is refused, naming both', (t) => {
  const error = t.throws(() => new Adafactor!([{ data: new Float32Array(6), grad: null, shape: [4, 2] }] as never))
  t.is((error as { code?: string }).code, 'ERR_OUT_OF_RANGE')
  t.is(error?.message, 'paramGroups[0].params[0].shape [4,2] holds 8 elements, but its data has length 6')
})

test('eps[0] takes null or a number, and NaN is not null', (t) => {
  const param = () => ({ data: new Float32Array(4), grad: new Float32Array(4), shape: [2, 2] })
  t.notThrows(() => new Adafactor!([param()] as never, { eps: [1e-30, 1e-3] }).step())
  const error = t.throws(() => new Adafactor!([param()] as never, { eps: [NaN, 1e-3] }))
  t.is((error as { code?: string }).code, 'ERR_OUT_OF_RANGE')
  t.regex(error!.message, /eps\[0\]: NaN \(expected null or a finite eps\[0\] >= 0\)/)
})
