import { readFileSync } from 'node:fs'

import test from 'ava'

import { Adam, AdamW, type Optimizer, type Parameter } from '../lib'
import { defaultsTable, README, readmeSection } from '../scripts/defaults-table'
import { loadCases, makeParams, maxRelativeError, maxUlps, tolerance, replay } from './helpers/fixtures'

const cases = loadCases('adam.json')
const classes = { Adam, AdamW } as const

/** Groups as the fixture gives them, with camelCase options passed through unchanged. */
function build(c: (typeof cases)[number], params: Parameter[]): Optimizer<object> {
  const Class = classes[c.optimizer as keyof typeof classes]
  const groups = c.groups.map((g) => ({ params: g.params.map((i) => params[i]), ...g.options }))
  return new Class(groups as never)
}

for (const c of cases) {
  test(`matches PyTorch's fused ${c.optimizer}: ${c.name}`, (t) => {
    const params = makeParams(c)
    const opt = build(c, params)
    let worstUlps = 0
    let differing = 0
    replay(c, params, opt, (p, want, s, i) => {
      const error = maxRelativeError(p.data, want)
      t.true(error <= tolerance(c.dtype), `step ${s + 1}, param ${i}: relative error ${error}`)
      worstUlps = Math.max(worstUlps, maxUlps(p.data, want, c.dtype))
      // PyTorch's vector loop covers all but the last len % 16 elements; there the rounding is
      // the same operation for operation, so the bits must be too.
      const vectorPart = p.data.length - (p.data.length % 16)
      for (let k = 0; k < p.data.length; k++) {
        if (p.data[k] === want[k]) continue
        differing++
        t.true(k >= vectorPart, `step ${s + 1}, param ${i}, element ${k}: ${p.data[k]} is not PyTorch's ${want[k]}`)
      }
    })
    c.finalState.forEach((want, i) => {
      const got = opt.getState(params[i])
      if (want === null) return t.is(got, undefined)
      t.is(got?.step, want.step as number, `param ${i} step count`)
      for (const [key, values] of Object.entries(want)) {
        if (key === 'step') continue
        const error = maxRelativeError(got![key] as ArrayLike<number>, values as number[])
        t.true(error <= tolerance(c.dtype), `param ${i} ${key}: relative error ${error}`)
      }
    })
    t.log(`${differing} element-steps differ from PyTorch, by at most ${worstUlps} ulp`)
  })
}

test('defaults are exactly PyTorch’s and are not shared between instances', (t) => {
  t.deepEqual(Adam.defaults, {
    lr: 1e-3,
    betas: [0.9, 0.999],
    eps: 1e-8,
    weightDecay: 0,
    amsgrad: false,
    maximize: false,
    decoupledWeightDecay: false,
  })
  t.deepEqual(AdamW.defaults, {
    lr: 1e-3,
    betas: [0.9, 0.999],
    eps: 1e-8,
    weightDecay: 1e-2,
    amsgrad: false,
    maximize: false,
  })
  const a = new Adam([{ data: new Float32Array(1), grad: null }])
  a.paramGroups[0].betas[0] = 0.5
  t.is(Adam.defaults.betas[0], 0.9)
  t.true(Object.isFrozen(Adam.defaults))
})

test('first step moves each element by lr against the sign of its gradient', (t) => {
  // t = 1: m = (1 − β₁)g, v = (1 − β₂)g², so m̂ = g, v̂ = g² and the step is lr·g/(|g| + ε).
  const w = { data: Float64Array.of(1, -2, 0.5), grad: Float64Array.of(0.25, -4, 0) }
  new Adam([w], { lr: 0.1 }).step()
  t.deepEqual([...w.data], [1 - 0.1 * (0.25 / (0.25 + 1e-8)), -2 + 0.1 * (4 / (4 + 1e-8)), 0.5])
})

test('param groups are live: a changed lr is used by the next step', (t) => {
  const make = () => ({ data: Float32Array.of(1, 2, 3), grad: Float32Array.of(0.5, -1, 2) })
  const [a, b] = [make(), make()]
  const late = new AdamW([a], { lr: 1e-3 })
  late.paramGroups[0].lr = 1e-2
  late.step()
  new AdamW([b], { lr: 1e-2 }).step()
  t.deepEqual(a.data, b.data)
  t.notDeepEqual(a.data, make().data)
})

test('step reads data and grad at call time; a null grad is skipped and its step count stays', (t) => {
  const w = { data: new Float32Array(4).fill(1), grad: new Float32Array(4).fill(1) as Float32Array | null }
  const opt = new Adam([w], { lr: 0.5 })
  opt.step()
  w.grad = null
  const before = Float32Array.from(w.data)
  opt.step()
  t.deepEqual(w.data, before)
  t.is(opt.getState(w)?.step, 1)
  w.grad = new Float32Array(4).fill(-1)
  opt.step()
  t.is(opt.getState(w)?.step, 2)
  t.true(w.data[0] > before[0])
})

test('zeroGrad sets grads to null by default, or fills them with zeros', (t) => {
  const w = { data: new Float32Array(2), grad: Float32Array.of(1, 2) as Float32Array | null }
  const opt = new Adam([w])
  const grad = w.grad!
  opt.zeroGrad(false)
  t.deepEqual([...grad], [0, 0])
  t.is(w.grad, grad)
  opt.zeroGrad()
  t.is(w.grad, null)
})

test('zero-length parameters and mixed float32/float64 parameters step together', (t) => {
  const empty = { data: new Float32Array(0), grad: new Float32Array(0) }
  const f32 = { data: Float32Array.of(1), grad: Float32Array.of(1) }
  const f64 = { data: Float64Array.of(1), grad: Float64Array.of(1) }
  const opt = new Adam([empty, f32, f64], { lr: 0.25 })
  opt.step()
  t.is(f32.data[0], Math.fround(1 - 0.25 * (1 / (1 + 1e-8))))
  t.is(f64.data[0], 1 - 0.25 * (1 / (1 + 1e-8)))
  t.is(opt.getState(empty)?.step, 1)
})

test('parameters can be added as a new group', (t) => {
  const a = { data: Float32Array.of(1), grad: Float32Array.of(1) }
  const b = { data: Float32Array.of(1), grad: Float32Array.of(1) }
  const opt = new Adam([a])
  opt.addParamGroup({ params: [b], lr: 0 })
  opt.step()
  t.is(opt.paramGroups.length, 2)
  t.is(b.data[0], 1)
  t.true(a.data[0] < 1)
  t.throws(() => opt.addParamGroup({ params: [a] }), {
    code: 'ERR_INVALID_ARG_VALUE',
    message: /appears more than once/,
  })
})

test('the README table of optimizers and defaults is the one generated from the native defaults', (t) => {
  const readme = readFileSync(README, 'utf8')
  t.is(readmeSection(readme), defaultsTable(), 'run `npx tsx scripts/defaults-table.ts` to regenerate it')
  t.regex(
    defaultsTable(),
    /\| `Adam` \| `torch\.optim\.Adam` \| `lr` 0\.001 · `betas` \[0\.9, 0\.999\] · `eps` 1e-8 · `weightDecay` 0 ·/,
  )
})
