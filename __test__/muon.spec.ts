// Muon against PyTorch's trajectories (__test__/fixtures/muon.json, made by
// scripts/gen_fixtures_muon.py): tall, wide and square matrices of odd sizes, both dtypes, every
// adjustLrFn, Nesterov on and off, two groups and skipped gradients, over 10 steps.
//
// PyTorch runs the Newton–Schulz iteration in bfloat16; fastoptim runs it in the parameter's dtype.
// So each case is checked twice: against torch.optim.Muon with its iteration run in the parameter's
// dtype (the same operations as fastoptim), within float rounding; and against torch.optim.Muon as
// shipped, within what bfloat16 allows: each step, an element of the orthogonalised update may
// differ by the fixture's `bf16UpdateTolerance` (0.15; the generator checks that PyTorch's own two
// trajectories stay within it), so a parameter element by that much times the step's adjusted lr,
// summed over the steps so far.
import { readFileSync } from 'node:fs'
import { join } from 'node:path'

import test from 'ava'

import * as fastoptim from '../lib'
import { type FixtureCase, loadCases, maxRelativeError, maxUlps, typed } from './helpers/fixtures'

type MuonCase = FixtureCase & {
  shapes: number[][]
  finalParamsInDtype: number[][]
  finalStateInDtype: Array<Record<string, number[]>>
}
const file = 'muon.json'
const cases = loadCases(file) as MuonCase[]
const fixture = JSON.parse(readFileSync(join(__dirname, 'fixtures', file), 'utf8'))
const bf16UpdateTolerance: number = fixture.bf16UpdateTolerance
const { Muon } = fastoptim

/** Against the iteration in the parameter's dtype: what float32 and float64 rounding allow. */
const tolerance = (dtype: FixtureCase['dtype']) => (dtype === 'float32' ? 2e-6 : 1e-14)

/** PyTorch's `_adjust_lr`: γ scaled by the matrix's shape A × B. */
function adjustedLr(options: fastoptim.MuonOptions, [a, b]: number[]): number {
  switch (options.adjustLrFn) {
    case 'match_rms_adamw':
      return options.lr * 0.2 * Math.sqrt(Math.max(a, b))
    case 'spectral_unclamped':
      return options.lr * Math.sqrt(a / b)
    default:
      return options.lr * Math.sqrt(Math.max(1, a / b))
  }
}

test('the fixture covers tall, wide and square matrices, both dtypes, every adjustLrFn, nesterov on and off, two groups and skipped grads over 10 steps', (t) => {
  const shapes = cases.flatMap((c) => c.shapes)
  t.true(shapes.some(([a, b]) => a > b) && shapes.some(([a, b]) => a < b) && shapes.some(([a, b]) => a === b))
  t.deepEqual(new Set(cases.map((c) => c.dtype)), new Set(['float32', 'float64']))
  const options = cases.flatMap((c) => c.groups.map((g) => g.options))
  t.deepEqual(
    new Set(options.map((o) => o.adjustLrFn)),
    new Set([null, 'original', 'match_rms_adamw', 'spectral_unclamped']),
  )
  t.deepEqual(new Set(options.map((o) => o.nesterov)), new Set([true, false]))
  t.true(cases.some((c) => c.groups.length === 2))
  t.true(cases.some((c) => c.steps.some((s) => s.grads.includes(null))))
  t.true(cases.every((c) => c.steps.length >= 10))
})

test('defaults are exactly those of torch.optim.Muon', (t) => {
  t.deepEqual({ ...Muon.defaults }, fixture.defaults.Muon)
  t.deepEqual(
    { ...Muon.defaults },
    {
      lr: 1e-3,
      weightDecay: 0.1,
      momentum: 0.95,
      nesterov: true,
      nsCoefficients: [3.4445, -4.775, 2.0315],
      eps: 1e-7,
      nsSteps: 5,
      adjustLrFn: null,
    },
  )
})

for (const c of cases) {
  test(`matches PyTorch's Muon: ${c.name}`, (t) => {
    const params = c.init.map((values, i) => ({
      data: typed(c.dtype, values),
      grad: null as fastoptim.FloatArray | null,
      shape: c.shapes[i],
    }))
    const groups = c.groups.map((g) => ({ params: g.params.map((i) => params[i]), ...g.options }))
    const opt = new Muon(groups as never)
    const optionsOf = params.map((_, i) => opt.paramGroups[c.groups.findIndex((g) => g.params.includes(i))])
    const allowed = params.map(() => 0)
    let worst = 0
    c.steps.forEach((step, s) => {
      params.forEach((p, i) => {
        const grad = step.grads[i]
        p.grad = grad === null ? null : typed(c.dtype, grad)
        if (grad !== null) allowed[i] += bf16UpdateTolerance * adjustedLr(optionsOf[i], c.shapes[i])
      })
      opt.step()
      params.forEach((p, i) => {
        const error = Math.max(...Array.from(p.data, (x, k) => Math.abs(x - step.params[i][k])))
        if (allowed[i] > 0) worst = Math.max(worst, error / allowed[i])
        t.true(
          error <= allowed[i],
          `step ${s + 1}, param ${i} of shape [${c.shapes[i]}]: ${error} from PyTorch's bfloat16 trajectory, more than ${allowed[i]}`,
        )
      })
    })
    let inDtype = 0
    params.forEach((p, i) => {
      const error = maxRelativeError(p.data, c.finalParamsInDtype[i], 1)
      inDtype = Math.max(inDtype, error)
      t.true(error <= tolerance(c.dtype), `param ${i} of shape [${c.shapes[i]}]: relative error ${error} in dtype`)
    })
    c.finalState.forEach((want, i) => {
      const got = opt.getState(params[i])
      if (!got || !want) return t.fail(`param ${i} has state ${JSON.stringify(got)}, PyTorch ${JSON.stringify(want)}`)
      // PyTorch's Muon keeps no step count; fastoptim keeps one for every optimizer.
      t.deepEqual(Object.keys(got).sort(), ['momentumBuffer', 'step'])
      t.deepEqual(Object.keys(want), ['momentumBuffer'])
      // The buffer takes no matrix products: both PyTorch runs have it, and to the bit (PyTorch's lerp).
      t.deepEqual(want.momentumBuffer, c.finalStateInDtype[i].momentumBuffer)
      t.is(maxUlps(got.momentumBuffer as ArrayLike<number>, want.momentumBuffer as number[], c.dtype), 0, `param ${i}`)
    })
    t.log(
      `from PyTorch's bfloat16 trajectory: at most ${worst.toFixed(3)} of the bound; from its iteration in ${c.dtype}: ${inDtype.toExponential(1)} relative`,
    )
  })
}

test('parameters that are not matrices are refused, naming them and their shape, and nothing changes', (t) => {
  const matrix = { data: new Float32Array(6), grad: new Float32Array(6).fill(1), shape: [2, 3] }
  const another = () => ({ data: new Float32Array(6), grad: null, shape: [2, 3] })
  const cases: Array<[object, string]> = [
    [{ data: new Float32Array(4), grad: null }, 'has no shape \\(flat, 4 elements\\)'],
    [{ data: new Float32Array(4), grad: null, shape: [4] }, 'has shape \\[4\\]'],
    [{ data: new Float32Array(1), grad: null, shape: [] }, 'has shape \\[\\]'],
    [{ data: new Float32Array(8), grad: null, shape: [2, 2, 2] }, 'has shape \\[2,2,2\\]'],
  ]
  for (const [param, has] of cases) {
    const message = new RegExp(
      `^paramGroups\\[\\d\\]\\.params\\[1\\] ${has}, but Muon takes matrices only \\(a shape \\[rows, cols\\]\\): optimize it with another optimizer, such as AdamW$`,
    )
    t.throws(() => new Muon([matrix, param] as never), { code: 'ERR_INVALID_ARG_VALUE', message })
    const opt = new Muon([matrix])
    t.throws(() => opt.addParamGroup({ params: [another(), param] as never }), {
      code: 'ERR_INVALID_ARG_VALUE',
      message,
    })
    t.is(opt.paramGroups.length, 1, 'the group was not added')
    opt.step()
    t.is(opt.getState(matrix)?.step, 1)
  }
})

test('adjustLrFn takes its names or null, and refuses anything else by name', (t) => {
  const matrix = () => ({ data: new Float64Array(6), grad: new Float64Array(6).fill(1), shape: [2, 3] })
  for (const name of ['original', 'match_rms_adamw', 'spectral_unclamped', null] as const) {
    const opt = new Muon([matrix()], { adjustLrFn: name })
    t.is(opt.paramGroups[0].adjustLrFn, name)
    opt.step()
  }
  t.throws(() => new Muon([matrix()], { adjustLrFn: 'spectral' as never }), {
    code: 'ERR_INVALID_ARG_VALUE',
    message:
      'invalid adjustLrFn: "spectral" (expected null or one of "original", "match_rms_adamw", "spectral_unclamped") in options',
  })
  t.throws(() => new Muon([matrix()], { adjustLrFn: 1 as never }), {
    code: 'ERR_INVALID_ARG_TYPE',
    message:
      'options.adjustLrFn must be one of "original", "match_rms_adamw", "spectral_unclamped" or null, got a number',
  })
  const opt = new Muon([matrix()])
  const before = Float64Array.from(opt.paramGroups[0].params[0].data)
  opt.paramGroups[0].adjustLrFn = 'rms' as never
  t.throws(() => opt.step(), {
    code: 'ERR_INVALID_ARG_VALUE',
    message: /^invalid adjustLrFn: "rms" .* in paramGroups\[0\]$/,
  })
  t.deepEqual(Float64Array.from(opt.paramGroups[0].params[0].data), before, 'nothing changed')
  t.is(opt.getState(opt.paramGroups[0].params[0]), undefined)
})

test('nsSteps is a whole number below 100, as PyTorch requires', (t) => {
  const matrix = { data: new Float64Array(4), grad: null, shape: [2, 2] }
  for (const nsSteps of [100, 2.5, -1]) {
    t.throws(() => new Muon([matrix], { nsSteps }), {
      code: 'ERR_OUT_OF_RANGE',
      message: `invalid nsSteps: ${nsSteps} (expected a whole number 0 <= nsSteps < 100) in options`,
    })
  }
  t.notThrows(() => new Muon([matrix], { nsSteps: 0 }))
})

const internal = require(join(__dirname, '..', 'native', 'index.js')) as {
  __allocations(): { count: number; bytes: number }
}

test("a step allocates one packing buffer per matrix product, matrixmultiply's, and nothing else", (t) => {
  // On one thread no product is cut: 3 products per Newton–Schulz step and matrix, each
  // allocating the buffer matrixmultiply packs into (crate/src/optimizers/muon.rs, "Allocation").
  const threads = fastoptim.getNumThreads()
  try {
    fastoptim.setNumThreads(1)
    for (const nsSteps of [5, 2]) {
      const params = [
        [64, 48],
        [200, 190],
      ].map(([rows, cols], i) => ({
        data: Float32Array.from({ length: rows * cols }, (_, k) => Math.sin(k + i)),
        grad: Float32Array.from({ length: rows * cols }, (_, k) => Math.cos(1.3 * k + i)),
        shape: [rows, cols],
      }))
      const opt = new Muon(params, { nsSteps })
      // The first two steps allocate the state and the step's bookkeeping.
      opt.step()
      opt.step()
      const before = internal.__allocations()
      for (let i = 0; i < 10; i++) opt.step()
      const count = (internal.__allocations().count - before.count) / 10
      t.log(`nsSteps ${nsSteps}, 2 matrices, 1 thread: ${count} allocations a step`)
      t.is(count, 2 * 3 * nsSteps)
    }
  } finally {
    fastoptim.setNumThreads(threads)
  }
})
