// LBFGS against PyTorch: fixtures/lbfgs.json was made by scripts/gen_fixtures_lbfgs.py with
// torch.optim.LBFGS; the closures below compute the same functions and gradients.
import { mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'

import test from 'ava'

import { cubicInterpolate, LBFGS, loadStateDict, saveStateDict, type FloatArray, type LBFGSOptions } from '../lib'
import type { LBFGSStateDict } from '../lib/lbfgs'
import { loadCases, maxRelativeError } from './helpers/fixtures'

interface Case {
  name: string
  problem: 'rosenbrock' | 'logistic'
  dtype: 'float32' | 'float64'
  sign: number
  options: LBFGSOptions
  init: number[][]
  data?: { X: number[][]; y: number[] }
  finalState: Record<string, number | number[] | number[][]>
  steps: Array<{ loss: number; params: number[][]; funcEvals: number; nIter: number }>
}

const fixture = loadCases('lbfgs.json') as unknown as Case[]
const L2 = 0.01

type Param = { data: FloatArray; grad: FloatArray | null }

function typed(dtype: Case['dtype'], values: ArrayLike<number>): FloatArray {
  return dtype === 'float32' ? Float32Array.from(values) : Float64Array.from(values)
}

/**
 * Σ 100 (x[i+1] − x[i]²)² + (1 − x[i])² over the parameters' elements as one vector, each
 * operation rounded by `r` in the order PyTorch's forward and backward passes take: a = x[i+1] − x[i]²,
 * ∂a = 100·(2a), and x's gradient summed from the slices of (1 − x[:-1]), x[:-1]², x[1:] in turn.
 */
function rosenbrock(params: Param[], r: (x: number) => number): { loss: number; grads: number[][] } {
  const x = params.flatMap((p) => [...p.data])
  const g = new Array<number>(x.length).fill(0)
  let loss = 0
  const ga: number[] = []
  for (let i = 0; i + 1 < x.length; i++) {
    const a = r(x[i + 1] - r(x[i] * x[i]))
    const b = r(1 - x[i])
    loss = r(loss + r(r(100 * r(a * a)) + r(b * b)))
    ga.push(r(100 * r(2 * a)))
    g[i] = r(-r(2 * b) - r(ga[i] * r(2 * x[i])))
  }
  ga.forEach((v, i) => (g[i + 1] = r(g[i + 1] + v)))
  let at = 0
  return { loss, grads: params.map((p) => g.slice(at, (at += p.data.length))) }
}

/** mean(softplus(−y (X w + b))) + ½·L2·|w|² with params [w, b]. */
function logistic(params: Param[], data: NonNullable<Case['data']>): { loss: number; grads: number[][] } {
  const [w, [b]] = [params[0].data, params[1].data]
  const m = data.y.length
  const gw = [...w].map((wi) => L2 * wi)
  let gb = 0
  let loss = 0
  data.X.forEach((row, i) => {
    const z = row.reduce((s, xij, j) => s + xij * w[j], 0) + b
    const u = -data.y[i] * z
    loss += Math.log1p(Math.exp(u)) / m
    const r = -data.y[i] / (1 + Math.exp(-u)) / m
    row.forEach((xij, j) => (gw[j] += r * xij))
    gb += r
  })
  loss += 0.5 * L2 * [...w].reduce((s, wi) => s + wi * wi, 0)
  return { loss, grads: [gw, [gb]] }
}

/** The case's closure: fills every grad and returns the loss, rounded to the dtype as PyTorch's is. */
function closureOf(c: Case, params: Param[]): () => number {
  return () => {
    const r = c.dtype === 'float32' ? Math.fround : (x: number) => x
    const { loss, grads } = c.problem === 'rosenbrock' ? rosenbrock(params, r) : logistic(params, c.data!)
    params.forEach(
      (p, i) =>
        (p.grad = typed(
          c.dtype,
          grads[i].map((x) => c.sign * x),
        )),
    )
    const value = c.sign * loss
    return c.dtype === 'float32' ? Math.fround(value) : value
  }
}

function setup(c: Case, options: LBFGSOptions = c.options) {
  const params: Param[] = c.init.map((values) => ({ data: typed(c.dtype, values), grad: null }))
  return { params, opt: new LBFGS(params, options), closure: closureOf(c, params) }
}

const tolerance = (c: Case) => (c.dtype === 'float32' ? 1e-4 : 1e-10)

/**
 * The largest difference between `got` and `want`, relative to the largest magnitude in `want`:
 * the error of a vector on its own scale, so that an element passing near zero is not held to
 * a relative precision its neighbours' rounding does not give it.
 */
function scaledError(got: ArrayLike<number>, want: ArrayLike<number>): number {
  if (got.length !== want.length) return Infinity
  const scale = Math.max(...Array.from(want, Math.abs), 1e-300)
  return maxRelativeError(got, want, scale)
}

for (const c of fixture) {
  test(`matches PyTorch: ${c.name} (${c.dtype})`, (t) => {
    const { params, opt, closure } = setup(c)
    c.steps.forEach((want, step) => {
      const loss = opt.step(closure)
      const where = `step ${step + 1}`
      t.true(maxRelativeError([loss], [want.loss]) <= tolerance(c), `${where}: loss ${loss} vs ${want.loss}`)
      params.forEach((p, i) => {
        const error = scaledError(p.data, want.params[i])
        t.true(error <= tolerance(c), `${where}, param ${i}: ${[...p.data]} vs ${want.params[i]} (${error})`)
      })
      const state = opt.getState()!
      t.deepEqual([state.funcEvals, state.nIter], [want.funcEvals, want.nIter], where)
    })
    const state = opt.getState()!
    const want = c.finalState
    for (const key of ['d', 'prevFlatGrad', 'ro', 'al', 't', 'hDiag', 'prevLoss'] as const) {
      const got = state[key]
      const expected = [want[key]].flat(2) as number[]
      t.true(
        scaledError(typeof got === 'number' ? [got] : [...got!], expected) <= tolerance(c),
        `${key}: ${String(got)} vs ${String(expected)}`,
      )
    }
    for (const key of ['oldDirs', 'oldStps'] as const) {
      t.true(scaledError([...state[key]!], (want[key] as number[][]).flat()) <= tolerance(c), key)
    }
  })
}

const rosenbrockCase = fixture.find((c) => c.problem === 'rosenbrock' && c.options.lineSearchFn === 'strong_wolfe')!
const logisticCase = fixture.find((c) => c.problem === 'logistic' && !c.options.lineSearchFn)!

test('the first loss is returned and a fixed step follows PyTorch by hand', (t) => {
  // f(x) = x² at x = 3: g = 6, the first t = min(1, 1/6)·lr = 1/6, d = −6, so x ← 3 − 1 = 2
  // with lr 1; maxIter 1 stops there without evaluating again.
  const p = { data: Float64Array.of(3), grad: null as FloatArray | null }
  const opt = new LBFGS([p], { maxIter: 1 })
  const closure = () => {
    p.grad = Float64Array.of(2 * p.data[0])
    return p.data[0] ** 2
  }
  t.is(opt.step(closure), 9)
  t.deepEqual([...p.data], [2])
  t.like(opt.getState(), { funcEvals: 1, nIter: 1, t: 1 / 6, hDiag: 1, prevLoss: 9 })
  t.is(opt.step(closure), 4)
})

test('defaults: PyTorch’s, as the JSDoc and the README give them; maxEval fixed when made', (t) => {
  const source = readFileSync(join(__dirname, '..', 'lib', 'lbfgs.ts'), 'utf8')
  const options = source.slice(
    source.indexOf('export interface LBFGSOptions'),
    source.indexOf('export type LBFGSGroup'),
  )
  const documented = Object.fromEntries(
    [...options.matchAll(/@default (\S+)\n\s*\*\/\n\s*(\w+)\?/g)].map(([, value, key]) => [key, JSON.parse(value)]),
  )
  t.deepEqual(documented, { ...LBFGS.DEFAULTS })
  const readme = readFileSync(join(__dirname, '..', 'README.md'), 'utf8')
  for (const [key, value] of Object.entries(LBFGS.DEFAULTS))
    t.true(readme.includes(`\`${key}\` ${String(value)}`), `README gives ${key} ${String(value)}`)
  const p = () => [{ data: new Float64Array(1), grad: null }]
  t.is(new LBFGS(p()).paramGroups[0].maxEval, 25)
  t.is(new LBFGS(p(), { maxIter: 7 }).paramGroups[0].maxEval, 8)
  t.is(new LBFGS([{ params: p(), maxIter: 9 }], { maxIter: 7 }).paramGroups[0].maxEval, 11)
  t.is(new LBFGS(p(), { maxIter: 7, maxEval: 3 }).paramGroups[0].maxEval, 3)
})

test('a parameter without a gradient counts as zero', (t) => {
  const [a, b] = [
    { data: Float32Array.of(1, 2), grad: null as FloatArray | null },
    { data: Float32Array.of(5), grad: null },
  ]
  const opt = new LBFGS([a, b], { maxIter: 1 })
  opt.step(() => {
    a.grad = Float32Array.of(1, 1)
    return 1
  })
  t.deepEqual([...b.data], [5])
  t.deepEqual([...opt.getState()!.d!], [-1, -1, -0])
})

const badOptions: Array<[string, LBFGSOptions, RegExp, string]> = [
  ['negative lr', { lr: -1 }, /^invalid lr: -1 \(expected a finite number >= 0\) in options/, 'ERR_OUT_OF_RANGE'],
  [
    'fractional maxIter',
    { maxIter: 1.5 },
    /^invalid maxIter: 1.5 \(expected a whole number >= 1\)/,
    'ERR_OUT_OF_RANGE',
  ],
  ['zero maxEval', { maxEval: 0 }, /^invalid maxEval: 0 \(expected a whole number >= 1, or null\)/, 'ERR_OUT_OF_RANGE'],
  ['negative toleranceGrad', { toleranceGrad: -1 }, /^invalid toleranceGrad: -1/, 'ERR_OUT_OF_RANGE'],
  ['NaN toleranceChange', { toleranceChange: NaN }, /^invalid toleranceChange: NaN/, 'ERR_OUT_OF_RANGE'],
  ['zero historySize', { historySize: 0 }, /^invalid historySize: 0/, 'ERR_OUT_OF_RANGE'],
  ['string lr', { lr: '1' as unknown as number }, /^options.lr must be a number, got a string/, 'ERR_INVALID_ARG_TYPE'],
  [
    'unknown line search',
    { lineSearchFn: 'wolfe' as 'strong_wolfe' },
    /^options.lineSearchFn must be 'strong_wolfe' or null, got "wolfe"/,
    'ERR_INVALID_ARG_VALUE',
  ],
  ['unknown option', { lrr: 1 } as LBFGSOptions, /^options.lrr is not an option of LBFGS/, 'ERR_INVALID_ARG_VALUE'],
  [
    'non-boolean maximize',
    { maximize: 1 as unknown as boolean },
    /^options.maximize must be a boolean/,
    'ERR_INVALID_ARG_TYPE',
  ],
]

for (const [name, options, message, code] of badOptions) {
  test(`bad option: ${name}`, (t) => {
    const p = { data: new Float64Array(2), grad: null }
    t.throws(() => new LBFGS([p], options), { message, code })
    if (name === 'unknown option') return
    // The same value set on the live group is refused by the next step, which then changes nothing.
    const opt = new LBFGS([p])
    Object.assign(opt.paramGroups[0], options)
    let calls = 0
    t.throws(() => opt.step(() => ++calls), { code })
    t.is(calls, 0)
    t.is(opt.getState(), undefined)
  })
}

test('bad parameters and groups', (t) => {
  const p = () => ({ data: new Float64Array(2), grad: null })
  t.throws(() => new LBFGS([]), { code: 'ERR_INVALID_ARG_VALUE', message: /^params is empty/ })
  t.throws(() => new LBFGS([{ params: [p()] }, { params: [p()] }] as never), {
    code: 'ERR_INVALID_ARG_VALUE',
    message: /^LBFGS doesn't support per-parameter options \(parameter groups\): got 2 groups, expected one/,
  })
  t.throws(() => new LBFGS([p(), { data: new Float32Array(2), grad: null }]), {
    code: 'ERR_INVALID_ARG_TYPE',
    message: /params\[1\]\.data is a Float32Array, but params\[0\]\.data is a Float64Array/,
  })
  const shared = p()
  t.throws(() => new LBFGS([shared, shared]), { code: 'ERR_INVALID_ARG_VALUE', message: /appears more than once/ })
  const buffer = new Float64Array(4)
  t.throws(
    () =>
      new LBFGS([
        { data: buffer.subarray(0, 3), grad: null },
        { data: buffer.subarray(2), grad: null },
      ]),
    { code: 'ERR_INVALID_ARG_VALUE', message: /share memory/ },
  )
  t.throws(() => new LBFGS([p()]).addParamGroup(), { code: 'ERR_INVALID_ARG_VALUE' })
  const opt = new LBFGS([{ params: [p()], lr: 0.5 }])
  t.is(opt.paramGroups[0].lr, 0.5)
})

test('a step refuses gradients of the wrong type or length, changing nothing', (t) => {
  const p = { data: Float64Array.of(1, 2), grad: null as unknown }
  const opt = new LBFGS([p as never])
  t.throws(
    () =>
      opt.step(() => {
        p.grad = Float32Array.of(1, 2)
        return 1
      }),
    {
      code: 'ERR_INVALID_ARG_TYPE',
      message: /params\[0\]\.grad must be a Float64Array like its data, or null, got Float32Array/,
    },
  )
  t.throws(
    () =>
      opt.step(() => {
        p.grad = Float64Array.of(1)
        return 1
      }),
    { code: 'ERR_OUT_OF_RANGE', message: /params\[0\]\.grad has length 1, expected 2/ },
  )
  t.deepEqual([...p.data], [1, 2])
  t.throws(() => opt.step('closure' as never), { code: 'ERR_INVALID_ARG_TYPE', message: /closure must be a function/ })
})

test('closure failures: coded errors, and the optimizer resumes from where it stopped', (t) => {
  for (const lineSearchFn of [null, 'strong_wolfe'] as const) {
    const c = logisticCase
    const { params, opt, closure } = setup(c, { ...c.options, lineSearchFn })
    opt.step(closure)
    const before = params.map((p) => p.data.slice())
    let calls = 0
    const failing = (outcome: () => unknown) => () => (++calls === 2 ? (outcome() as number) : closure())
    const cause = new Error('out of memory')
    const error = t.throws(
      () =>
        opt.step(
          failing(() => {
            throw cause
          }),
        ),
      {
        code: 'ERR_CLOSURE_FAILED',
        message: /^LBFGS.step: the closure threw at evaluation 2 of this step: out of memory/,
      },
    )
    t.is(error?.cause, cause)
    if (lineSearchFn) {
      // A line search puts the parameters back where it started.
      params.forEach((p, i) => t.deepEqual(p.data, before[i]))
    }
    calls = 0
    t.throws(() => opt.step(failing(() => NaN)), { instanceOf: RangeError, code: 'ERR_INVALID_RETURN_VALUE' })
    calls = 0
    t.throws(() => opt.step(failing(() => '1')), {
      instanceOf: TypeError,
      code: 'ERR_INVALID_RETURN_VALUE',
      message: /must return the loss as a number, got a string/,
    })
    t.throws(() => opt.step((() => Promise.resolve(1)) as never), { message: /the closure must be synchronous/ })
    // It carries on, and converges as an uninterrupted run does.
    for (let i = 0; i < 30; i++) opt.step(closure)
    t.true(Math.abs(opt.step(closure) - c.steps[c.steps.length - 1].loss) < 1e-6, `${lineSearchFn}`)
  }
})

test('step and loadStateDict refuse to run from inside the closure', (t) => {
  const p = { data: Float64Array.of(1), grad: null as FloatArray | null }
  const opt = new LBFGS([p])
  const error = t.throws(() => opt.step(() => opt.step(() => 0)), { code: 'ERR_CLOSURE_FAILED' })
  t.is((error?.cause as { code?: string }).code, 'ERR_INVALID_STATE')
})

/** Runs `steps` steps, saves, resumes in a fresh optimizer (through `transfer`) and runs `more`. */
function resumes(c: Case, transfer: (sd: LBFGSStateDict) => LBFGSStateDict) {
  const whole = setup(c)
  const first = setup(c)
  for (let i = 0; i < 3; i++) {
    whole.opt.step(whole.closure)
    first.opt.step(first.closure)
  }
  const resumed = setup(c)
  first.params.forEach((p, i) => resumed.params[i].data.set(p.data))
  resumed.opt.loadStateDict(transfer(first.opt.stateDict()))
  const losses = [[] as number[], [] as number[]]
  for (let i = 0; i < 5; i++) {
    losses[0].push(whole.opt.step(whole.closure))
    losses[1].push(resumed.opt.step(resumed.closure))
  }
  return { losses, whole, resumed }
}

for (const c of [rosenbrockCase, logisticCase]) {
  test(`save and resume continue bit for bit: ${c.name} (${c.dtype})`, (t) => {
    const dir = mkdtempSync(join(tmpdir(), 'lbfgs-'))
    try {
      const viaFile = (sd: LBFGSStateDict) => {
        saveStateDict(join(dir, 'opt.safetensors'), sd)
        return loadStateDict(join(dir, 'opt.safetensors')) as unknown as LBFGSStateDict
      }
      for (const transfer of [(sd: LBFGSStateDict) => sd, viaFile]) {
        const { losses, whole, resumed } = resumes(c, transfer)
        t.deepEqual(losses[1], losses[0])
        whole.params.forEach((p, i) => t.deepEqual(resumed.params[i].data, p.data))
        t.deepEqual(resumed.opt.getState(), whole.opt.getState())
      }
    } finally {
      rmSync(dir, { recursive: true, force: true })
    }
  })
}

test('loadStateDict checks everything first and changes nothing on error', (t) => {
  const c = logisticCase
  const { opt, closure } = setup(c)
  opt.step(closure)
  const good = opt.stateDict()
  const state = good.state[0]
  const bad: Array<[string, LBFGSStateDict, RegExp]> = [
    ['two groups', { ...good, paramGroups: [good.paramGroups[0], good.paramGroups[0]] }, /exactly one group/],
    ['a bad option', { ...good, paramGroups: [{ ...good.paramGroups[0], historySize: 0 }] }, /invalid historySize: 0/],
    [
      'state for another parameter',
      { ...good, state: { 1: state } },
      /LBFGS keeps its state under the first parameter/,
    ],
    ['an unknown name', { ...good, state: { 0: { ...state, step: 1 } as never } }, /step is not state of LBFGS/],
    [
      'a wrong dtype',
      { ...good, state: { 0: { ...state, d: Float32Array.from(state.d!) } } },
      /d must be a Float64Array/,
    ],
    [
      'a short vector',
      { ...good, state: { 0: { ...state, d: state.d!.subarray(1) } } },
      /d and prev_flat_grad must have 4 elements/,
    ],
    ['a partial state', { ...good, state: { 0: { ...state, ro: undefined } } }, /but not ro/],
    ['a fractional count', { ...good, state: { 0: { ...state, nIter: 1.5 } } }, /invalid nIter: 1.5/],
  ]
  const fresh = setup(c).opt
  for (const [name, sd, message] of bad) {
    t.throws(() => fresh.loadStateDict(sd), { message }, name)
    t.is(fresh.getState(), undefined, name)
    t.is(fresh.paramGroups[0].historySize, c.options.historySize!, name)
  }
})

test('every thread count gives the same bits', async (t) => {
  const { setNumThreads, getNumThreads } = await import('../lib')
  const n = 50_000
  const before = getNumThreads()
  const run = (threads: number) => {
    setNumThreads(threads)
    // A separable quadratic over two parameters: f = ½ Σ aᵢ (xᵢ − 1)².
    const params = [0, 1].map((k) => ({
      data: Float32Array.from({ length: n + k * 7 }, (_, i) => Math.sin(i + k)),
      grad: null as FloatArray | null,
    }))
    const opt = new LBFGS(params, { lineSearchFn: 'strong_wolfe', historySize: 4, maxIter: 6 })
    const closure = () => {
      let loss = 0
      for (const p of params) {
        const g = (p.grad ??= new Float32Array(p.data.length))
        p.data.forEach((x, i) => {
          const a = 1 + (i % 5)
          g[i] = a * (x - 1)
          loss += 0.5 * a * (x - 1) ** 2
        })
      }
      return Math.fround(loss)
    }
    const losses = [0, 1, 2].map(() => opt.step(closure))
    return { losses, params: params.map((p) => p.data), state: opt.getState() }
  }
  try {
    const one = run(1)
    const two = run(2)
    t.deepEqual(two, one)
  } finally {
    setNumThreads(before)
  }
})

test('cubic interpolation is PyTorch’s', (t) => {
  // The cubic through (0, 1) with slope −1 and (1, 0.5) with slope 0.5: d1 = −2, d2 = √4.5, min at (0.5 + √4.5 + 2)/(1.5 + 2√4.5)·… within [0, 1].
  const x = cubicInterpolate(0, 1, -1, 1, 0.5, 0.5)
  const d1 = -1 + 0.5 - (3 * (1 - 0.5)) / (0 - 1)
  const d2 = Math.sqrt(d1 * d1 + 0.5)
  t.is(x, 1 - (1 - 0) * ((0.5 + d2 - d1) / (0.5 + 1 + 2 * d2)))
  // No real minimum: the middle of the bounds.
  t.is(cubicInterpolate(0, 0, 1, 1, 2 / 3, 1, [2, 4]), 3)
})
