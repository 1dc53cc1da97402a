// SparseAdam against PyTorch's trajectories (__test__/fixtures/sparse-adam.json, made by
// scripts/gen_fixtures_sparse_adam.py): embedding-like tables given row-sparse gradients (rows in
// any order, duplicates, rows with zero values, rows never named, steps naming no row, skipped
// gradients, two groups), both dtypes; rows never named keep their bits; duplicates are summed as
// PyTorch's coalesce() sums them; bad sparse gradients are refused, naming field and value, and
// change nothing; a dense gradient is refused in PyTorch's words; the thread count changes no bit;
// a steady-state sparse step allocates nothing, and costs what its rows cost.
import { readFileSync } from 'node:fs'
import { join } from 'node:path'

import test from 'ava'

import {
  Adam,
  getNumThreads,
  setNumThreads,
  SparseAdam,
  type FloatArray,
  type Parameter,
  type SparseGrad,
  type ParamState,
} from '../lib'
import { type FixtureCase, loadCases, maxRelativeError, maxUlps, typed } from './helpers/fixtures'

interface SparseStep {
  grads: Array<{ indices: number[]; values: number[] } | null>
  params: number[][]
}
type SparseCase = Omit<FixtureCase, 'steps'> & { shapes: number[][]; steps: SparseStep[] }

const file = 'sparse-adam.json'
const cases = loadCases(file) as unknown as SparseCase[]
const torchDefaults = JSON.parse(readFileSync(join(__dirname, 'fixtures', file), 'utf8')).defaults.SparseAdam
const internal = require(join(__dirname, '..', 'native', 'index.js')) as {
  __allocations(): { count: number; bytes: number }
}

/** The tolerances: float32 within 1e-4 relative, float64 within 1e-10. */
const tolerance = (dtype: FixtureCase['dtype']) => (dtype === 'float32' ? 1e-4 : 1e-10)

type Table = Parameter<SparseGrad>

const bits = (a: FloatArray) => Buffer.from(a.buffer, a.byteOffset, a.byteLength)

test('SparseAdam is in the registry as an optimizer of sparse gradients, with PyTorch defaults', (t) => {
  t.true(SparseAdam.schema.info.sparse)
  t.deepEqual({ ...SparseAdam.defaults }, torchDefaults)
  t.deepEqual(
    SparseAdam.schema.info.buffers.map((b) => [b.name, b.layout]),
    [
      ['expAvg', 'param'],
      ['expAvgSq', 'param'],
    ],
  )
})

test('the fixture covers both dtypes, tables of rows of 1, 6 and 8, duplicates, empty and skipped gradients, two groups', (t) => {
  t.deepEqual(new Set(cases.map((c) => c.dtype)), new Set(['float32', 'float64']))
  t.true(cases.some((c) => c.groups.length === 2))
  t.true(cases.every((c) => c.steps.length >= 20))
  const grads = cases.flatMap((c) => c.steps.flatMap((s) => s.grads))
  t.true(grads.includes(null))
  t.true(grads.some((g) => g !== null && g.indices.length === 0))
  t.true(grads.some((g) => g !== null && new Set(g.indices).size < g.indices.length))
  t.true(grads.some((g) => g !== null && g.indices.some((r, k) => k > 0 && r < g.indices[k - 1])))
})

for (const c of cases) {
  test(`matches PyTorch's SparseAdam: ${c.name}`, (t) => {
    const params: Table[] = c.init.map((values, i) => ({
      data: typed(c.dtype, values),
      grad: null,
      shape: c.shapes[i],
    }))
    const start = params.map((p) => p.data.slice())
    const groups = c.groups.map((g) => ({ params: g.params.map((i) => params[i]), ...g.options }))
    const opt = new SparseAdam(groups as never)
    const named = params.map(() => new Set<number>())
    let [worst, ulps] = [0, 0]
    c.steps.forEach((step, s) => {
      params.forEach((p, i) => {
        const grad = step.grads[i]
        // Int32Array and Uint32Array indices on alternate steps: the same rows.
        const Indices = s % 2 === 0 ? Int32Array : Uint32Array
        p.grad = grad === null ? null : { indices: Indices.from(grad.indices), values: typed(c.dtype, grad.values) }
        grad?.indices.forEach((r) => named[i].add(r))
      })
      opt.step()
      params.forEach((p, i) => {
        const error = maxRelativeError(p.data, step.params[i])
        worst = Math.max(worst, error)
        ulps = Math.max(ulps, maxUlps(p.data, step.params[i], c.dtype))
        t.true(
          error <= tolerance(c.dtype),
          `step ${s + 1}, param ${i} of shape [${c.shapes[i]}]: relative error ${error}`,
        )
        // Rows not named so far keep their bits.
        const rowLength = p.data.length / c.shapes[i][0]
        for (let r = 0; r < c.shapes[i][0]; r++) {
          if (named[i].has(r)) continue
          const [from, to] = [r * rowLength, (r + 1) * rowLength]
          t.true(
            bits(p.data.subarray(from, to)).equals(bits(start[i].subarray(from, to))),
            `step ${s + 1}, param ${i}: row ${r} was never named, yet moved`,
          )
        }
      })
    })
    c.finalState.forEach((want, i) => {
      const got = opt.getState(params[i])
      if (!got || !want) return t.is(got, undefined, `param ${i}: state where PyTorch has none`)
      t.deepEqual(Object.keys(got).sort(), Object.keys(want).sort(), `param ${i}: the state PyTorch keeps, no more`)
      t.is(got.step, want.step as number)
      for (const key of ['expAvg', 'expAvgSq']) {
        const error = maxRelativeError((got as ParamState)[key] as FloatArray, want[key] as number[])
        t.true(error <= tolerance(c.dtype), `param ${i} ${key}: relative error ${error}`)
      }
    })
    t.log(
      `largest relative difference from PyTorch over ${c.steps.length} steps: ${worst.toExponential(2)} (${ulps} ulps)`,
    )
  })
}

/** A [rows, width] table with values 1, 1.125, 1.25, ..., and its optimizer. */
function table(rows = 5, width = 2, Type: typeof Float32Array | typeof Float64Array = Float32Array, options = {}) {
  const param: Table = {
    data: Type.from(Array.from({ length: rows * width }, (_, k) => 1 + k / 8)),
    grad: null,
    shape: [rows, width],
  }
  return { param, opt: new SparseAdam([param], options) }
}

const grad = (
  indices: number[],
  values: number[],
  Type: typeof Float32Array | typeof Float64Array = Float32Array,
): SparseGrad => ({
  indices: Int32Array.from(indices),
  values: Type.from(values),
})

test('duplicate rows are summed in the order given, as coalesce() does: the same bits as the summed gradient', (t) => {
  // 2^24 + 1 + 1 in float32 depends on the order: (2^24 + 1) + 1 = 2^24, 2^24 + (1 + 1) = 2^24 + 2.
  const big = 2 ** 24
  const a = table()
  a.param.grad = grad([3, 1, 3, 3], [big, 5, 0.5, 0.25, 1, 0, 1, 0])
  a.opt.step()
  const b = table()
  b.param.grad = grad([1, 3], [0.5, 0.25, Math.fround(Math.fround(big + 1) + 1), 5])
  b.opt.step()
  t.true(bits(a.param.data).equals(bits(b.param.data)))
  t.deepEqual(a.opt.getState(a.param), b.opt.getState(b.param))
  // Already coalesced (strictly increasing) indices are used in place: the same bits again.
  const c = table()
  c.param.grad = { indices: Uint32Array.of(1, 3), values: Float32Array.of(0.5, 0.25, big, 5) }
  c.opt.step()
  t.true(bits(c.param.data).equals(bits(b.param.data)))
})

test('a named row with a zero gradient still moves (its moments decay); a gradient naming no row counts a step and moves nothing', (t) => {
  const { param, opt } = table()
  param.grad = grad([2], [1, -1])
  opt.step()
  const after = param.data.slice()
  param.grad = grad([2], [0, 0])
  opt.step()
  t.not(param.data[4], after[4], 'row 2 moves on its first moment')
  t.is(opt.getState(param)!.step, 2)
  const before = param.data.slice()
  const state = opt.getState(param)
  param.grad = grad([], [])
  t.true(opt.step())
  t.deepEqual(param.data, before)
  t.deepEqual({ ...opt.getState(param), step: 2 }, state)
  t.is(opt.getState(param)!.step, 3)
  // zeroGrad(false) leaves the gradient naming no row, as PyTorch's zero_() of a sparse gradient.
  param.grad = grad([0, 4], [1, 2, 3, 4])
  opt.zeroGrad(false)
  t.is(param.grad!.indices.length, 0)
  opt.step()
  t.deepEqual(param.data, before)
  t.is(opt.getState(param)!.step, 4)
})

test('indices changed in place between steps are read again (no step reuses an earlier read)', (t) => {
  const { param, opt } = table()
  const indices = Int32Array.of(1)
  param.grad = { indices, values: Float32Array.of(1, 1) }
  opt.step()
  indices[0] = 4
  const row1 = param.data.slice(2, 4)
  opt.step()
  t.deepEqual(param.data.slice(2, 4), row1, 'row 1 not named this time')
  t.not(param.data[8], 1 + 8 / 8, 'row 4 named')
  indices[0] = 5
  t.throws(() => opt.step(), { instanceOf: RangeError, code: 'ERR_OUT_OF_RANGE', message: /grad\.indices\[0\] is 5/ })
})

test('stepAsync gives the same bits as step, and maximize and options too', async (t) => {
  const a = table(40, 3, Float64Array, { lr: 0.05, maximize: true, betas: [0.5, 0.9] })
  const b = table(40, 3, Float64Array, { lr: 0.05, maximize: true, betas: [0.5, 0.9] })
  for (let s = 0; s < 5; s++) {
    const g = grad([s, 7, 30 - s, 7], [1, 2, 3, 4, 5, 6, -1, 0.5, 2, 8, 9, 10], Float64Array)
    a.param.grad = g
    b.param.grad = g
    a.opt.step()
    t.true(await b.opt.stepAsync())
  }
  t.true(bits(a.param.data).equals(bits(b.param.data)))
  b.param.grad = grad([1], [NaN, 1, 2], Float64Array)
  t.false(await b.opt.stepAsync(), 'a non-finite gradient is reported')
  const before = a.param.data.slice()
  a.param.grad = grad([1, 1], [1e308, 1, 1, 1e308, 1, 1], Float64Array)
  t.false(a.opt.step({ skipNonFinite: true }), 'values that sum to infinity are not finite')
  t.deepEqual(a.param.data, before)
})

test('a flat parameter has rows of one element, a 0-D one a single row', (t) => {
  const flat: Table = {
    data: Float32Array.of(1, 2, 3, 4),
    grad: { indices: Int32Array.of(2, 0, 2), values: Float32Array.of(1, 1, 1) },
  }
  const scalar: Table = {
    data: Float32Array.of(5),
    grad: { indices: Int32Array.of(0), values: Float32Array.of(1) },
    shape: [],
  }
  const opt = new SparseAdam([flat, scalar], { lr: 0.1 })
  opt.step()
  t.deepEqual(
    Array.from(flat.data).map((x, i) => x !== [1, 2, 3, 4][i]),
    [true, false, true, false],
  )
  t.not(scalar.data[0], 5)
  scalar.grad = { indices: Int32Array.of(1), values: Float32Array.of(1) }
  t.throws(() => opt.step(), {
    instanceOf: RangeError,
    message: /params\[1\]\.grad\.indices\[0\] is 1, not a row of the parameter, which has 1 rows \(expected 0 to 0\)$/,
  })
})

test('one thread and several give the same bits (a step large enough to run in parallel)', (t) => {
  const threads = getNumThreads()
  const run = (n: number) => {
    setNumThreads(n)
    const { param, opt } = table(20_000, 16, Float32Array, { lr: 0.01 })
    for (let s = 0; s < 4; s++) {
      const indices = Int32Array.from({ length: 6000 }, (_, k) => (k * 7919 + s * 31) % 20_000)
      const values = Float32Array.from({ length: 6000 * 16 }, (_, k) => Math.sin(k * 0.37 + s))
      param.grad = { indices, values }
      opt.step()
    }
    return param.data
  }
  try {
    const one = run(1)
    t.true(bits(run(2)).equals(bits(one)))
    t.true(bits(run(3)).equals(bits(one)))
  } finally {
    setNumThreads(threads)
  }
})

test('reading, checking and coalescing a sparse gradient allocates nothing in a steady state', (t) => {
  // A sparse gradient takes the full native read at every step; that call's napi-rs glue allocates
  // what it allocates for any optimizer (here a dense step whose data and grad alternate between
  // two arrays each, which also runs the overlap check; with new gradients alone a step takes
  // only those), and the sparse step must allocate no more.
  const threads = getNumThreads()
  const count = (step: () => void) => {
    for (let i = 0; i < 10; i++) step()
    const before = internal.__allocations()
    for (let i = 0; i < 200; i++) step()
    return internal.__allocations().count - before.count
  }
  try {
    setNumThreads(1)
    const grads = [new Float32Array(32).fill(0.5), new Float32Array(32).fill(0.25)]
    const datas = [new Float32Array(32), new Float32Array(32)]
    const dense = { data: datas[0], grad: grads[0] }
    const adam = new Adam([dense])
    let i = 0
    const glue = count(() => ((dense.data = datas[i % 2]), (dense.grad = grads[i++ % 2]), adam.step()))
    t.log(`a dense step with a full read allocates ${glue / 200} times`)
    const { param, opt } = table(1000, 8)
    // Unsorted with duplicates (sorted into the scratch), sorted with duplicates, coalesced already.
    for (const indices of [
      [900, 3, 17, 3, 500],
      [3, 3, 17, 500, 900],
      [3, 17, 500, 900],
    ]) {
      param.grad = { indices: Int32Array.from(indices), values: new Float32Array(indices.length * 8).fill(0.5) }
      const sparse = count(() => opt.step())
      t.log(`indices ${indices}: ${sparse / 200} allocations per step`)
      t.true(sparse <= glue, `indices ${indices}`)
    }
  } finally {
    setNumThreads(threads)
  }
})

test('a step costs what its rows cost: 64 rows of a 1M-row table take less time than 1% of a dense step', (t) => {
  const rows = 1 << 20
  const { param, opt } = table(rows, 8)
  param.grad = grad(
    Array.from({ length: 64 }, (_, k) => (k * 16_411) % rows),
    Array.from({ length: 512 }, () => 1),
  )
  const dense = { data: param.data.slice(), grad: new Float32Array(rows * 8).fill(1) }
  const adam = new Adam([dense])
  const time = (f: () => void, n: number) => {
    f()
    const start = process.hrtime.bigint()
    for (let i = 0; i < n; i++) f()
    return Number(process.hrtime.bigint() - start) / n
  }
  const sparse = time(() => opt.step(), 2000)
  const full = time(() => adam.step(), 20)
  t.log(
    `sparse ${(sparse / 1e3).toFixed(2)} us, dense ${(full / 1e3).toFixed(0)} us: ${((100 * sparse) / full).toFixed(3)}%`,
  )
  t.true(sparse < full / 100)
})

// Bad sparse gradients, as a table: each row sets the gradient of a [5, 2] float32 table (after a
// good step), steps, and must be refused with the error's class, its code and a message naming
// the field and the value; the parameters and the state are as they were.

type Check = { instanceOf: ErrorConstructor; code: string; message: RegExp }
const argType = (message: RegExp): Check => ({ instanceOf: TypeError, code: 'ERR_INVALID_ARG_TYPE', message })
const argValue = (message: RegExp): Check => ({ instanceOf: TypeError, code: 'ERR_INVALID_ARG_VALUE', message })
const outOfRange = (message: RegExp): Check => ({ instanceOf: RangeError, code: 'ERR_OUT_OF_RANGE', message })
const invalidState = (message: RegExp): Check => ({ instanceOf: Error, code: 'ERR_INVALID_STATE', message })

/** Detaches `array`'s buffer, as posting it to a worker with a transfer list does. */
const transfer = (array: ArrayBufferView) =>
  structuredClone(array.buffer as ArrayBuffer, { transfer: [array.buffer as ArrayBuffer] })

const P = '^paramGroups\\[0\\]\\.params\\[0\\]'
const BAD: Array<[string, (data: Float32Array) => unknown, Check]> = [
  [
    'an index past the last row',
    () => grad([1, 5], [1, 1, 1, 1]),
    outOfRange(
      new RegExp(
        `${P}\\.grad\\.indices\\[1\\] is 5, not a row of the parameter, which has 5 rows \\(expected 0 to 4\\)$`,
      ),
    ),
  ],
  [
    'a negative index',
    () => grad([-1], [1, 1]),
    outOfRange(new RegExp(`${P}\\.grad\\.indices\\[0\\] is -1, not a row`)),
  ],
  [
    'an index of 2^32 - 1 (Uint32Array)',
    () => ({ indices: Uint32Array.of(0, 2 ** 32 - 1), values: new Float32Array(4) }),
    outOfRange(/\.grad\.indices\[1\] is 4294967295, not a row/),
  ],
  [
    'indices as a plain array',
    () => ({ indices: [1], values: Float32Array.of(1, 1) }),
    argType(new RegExp(`${P}\\.grad\\.indices must be an Int32Array or Uint32Array, got Array$`)),
  ],
  [
    'indices as a Float32Array',
    () => ({ indices: Float32Array.of(1), values: Float32Array.of(1, 1) }),
    argType(/\.grad\.indices must be an Int32Array or Uint32Array, got Float32Array$/),
  ],
  [
    'indices as a BigInt64Array',
    () => ({ indices: BigInt64Array.of(1n), values: Float32Array.of(1, 1) }),
    argType(/\.grad\.indices must be an Int32Array or Uint32Array, got BigInt64Array$/),
  ],
  [
    'indices missing',
    () => ({ values: Float32Array.of(1, 1) }),
    argType(/\.grad\.indices must be an Int32Array or Uint32Array, got undefined$/),
  ],
  [
    'values too short',
    () => grad([0, 1], [1, 1, 1]),
    outOfRange(new RegExp(`${P}\\.grad\\.values has length 3, expected 4 \\(2 indices × 2 elements per row\\)$`)),
  ],
  ['values too long', () => grad([0], [1, 1, 1]), outOfRange(/\.grad\.values has length 3, expected 2/)],
  [
    'values of the wrong dtype',
    () => grad([0], [1, 1], Float64Array),
    argType(new RegExp(`${P}\\.grad\\.values must be a Float32Array like its data, got Float64Array$`)),
  ],
  [
    'values as a plain array',
    () => ({ indices: Int32Array.of(0), values: [1, 1] }),
    argType(/\.grad\.values must be a Float32Array like its data, got Array$/),
  ],
  [
    'values missing',
    () => ({ indices: Int32Array.of(0) }),
    argType(/\.grad\.values must be a Float32Array like its data, got undefined$/),
  ],
  [
    'indices detached',
    () => {
      const g = grad([0], [1, 1])
      transfer(g.indices)
      return g
    },
    invalidState(new RegExp(`${P}\\.grad\\.indices is detached \\(its ArrayBuffer was transferred\\)$`)),
  ],
  [
    'values detached',
    () => {
      const g = grad([], [])
      g.values = new Float32Array(new ArrayBuffer(8), 0, 0)
      transfer(g.values)
      return g
    },
    invalidState(/\.grad\.values is detached/),
  ],
  [
    'a dense gradient',
    () => new Float32Array(10),
    argType(
      new RegExp(
        `${P}\\.grad is a Float32Array: SparseAdam does not support dense gradients, please consider Adam instead`,
      ),
    ),
  ],
  [
    'a number',
    () => 3,
    argType(new RegExp(`${P}\\.grad must be a row-sparse gradient \\{ indices, values \\}, or null, got a number$`)),
  ],
  [
    'values sharing memory with the data',
    (data) => ({ indices: Int32Array.of(0), values: data.subarray(4, 6) }),
    argValue(/\.data and paramGroups\[0\]\.params\[0\]\.grad\.values share memory/),
  ],
  [
    'indices sharing memory with the data',
    (data) => ({ indices: new Int32Array(data.buffer, 0, 1).fill(0), values: Float32Array.of(1, 1) }),
    argValue(/\.data and paramGroups\[0\]\.params\[0\]\.grad\.indices share memory/),
  ],
]

for (const [what, make, error] of BAD) {
  for (const method of ['step', 'stepAsync'] as const) {
    test(`${method}: ${what} is refused, and nothing changes`, async (t) => {
      const { param, opt } = table()
      const other: Table = { data: Float32Array.of(1, 2, 3), grad: null }
      opt.addParamGroup({ params: [other], lr: 0.1 })
      param.grad = grad([0, 2], [1, 2, 3, 4])
      other.grad = grad([1], [1])
      opt.step()
      // The other parameter's gradient is good: the bad one stops the whole step before anything is written.
      param.grad = make(param.data as Float32Array) as SparseGrad
      const before = [param.data.slice(), other.data.slice()]
      const state = [opt.getState(param), opt.getState(other)]
      if (method === 'step') t.throws(() => opt.step(), error)
      else await t.throwsAsync(() => opt.stepAsync(), error)
      t.deepEqual([param.data, other.data], before)
      t.deepEqual([opt.getState(param), opt.getState(other)], state)
    })
  }
}

test('other optimizers refuse a sparse gradient, when it joins and at a step', (t) => {
  const sparse = { indices: Int32Array.of(1), values: Float32Array.of(1) }
  const message =
    /^paramGroups\[0\]\.params\[0\]\.grad is a sparse gradient \{ indices, values \}, which Adam does not take \(only SparseAdam does\): give a Float32Array like its data, or null$/
  t.throws(() => new Adam([{ data: new Float32Array(4), grad: sparse as never }]), argType(message))
  const p = { data: new Float32Array(4), grad: null as FloatArray | null }
  const opt = new Adam([p])
  p.grad = sparse as never
  t.throws(() => opt.step(), argType(message))
  t.deepEqual(p.data, new Float32Array(4))
})

test('SparseAdam refuses a dense gradient when it joins, in PyTorch words', (t) => {
  t.throws(
    () => new SparseAdam([{ data: new Float32Array(4), grad: new Float32Array(4) as never }]),
    argType(
      /^paramGroups\[0\]\.params\[0\]\.grad is a Float32Array: SparseAdam does not support dense gradients, please consider Adam instead \(or give a row-sparse gradient \{ indices, values \}\)$/,
    ),
  )
  t.throws(
    () => new SparseAdam([{ data: new Float32Array(4), grad: { indices: [0], values: Float32Array.of(1) } as never }]),
    argType(/\.grad\.indices must be an Int32Array or Uint32Array, got Array$/),
  )
  t.throws(
    () => new SparseAdam([{ data: new Float32Array(4), grad: grad([0], [1], Float64Array) }]),
    argType(/\.grad\.values must be a Float32Array like its data, got Float64Array$/),
  )
  t.throws(
    () => new SparseAdam([{ data: new Float32Array(4), grad: null }], { eps: 0 }),
    outOfRange(/^invalid eps: 0 \(expected a finite eps > 0\) in options$/),
  )
})
