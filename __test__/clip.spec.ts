// Gradient clipping against PyTorch: fixtures/clip.json was made by scripts/gen_fixtures_clip.py
// with torch.nn.utils.clip_grad_norm_ / clip_grad_value_ (foreach=False).
import { readFileSync } from 'node:fs'
import { join } from 'node:path'

import test from 'ava'

import { clipGradNorm, clipGradValue, type FloatArray, type Parameter } from '../lib'
import { native } from '../lib/native'

type Encoded = number | 'NaN' | 'Infinity' | '-Infinity'
type Dtype = 'float32' | 'float64'

interface Case {
  name: string
  kind: 'norm' | 'value'
  maxNorm?: number
  normType?: Encoded
  clipValue?: number
  grads: Array<null | { dtype: Dtype; values?: Encoded[]; wave?: number }>
  total?: Encoded
  /** The total norm computed in float64 from the same gradients (see the script). */
  reference?: Encoded
  after: Array<null | { indices?: number[]; values: Encoded[] }>
}

const cases = (JSON.parse(readFileSync(join(__dirname, 'fixtures', 'clip.json'), 'utf8')) as { cases: Case[] }).cases

const decode = (x: Encoded): number => (typeof x === 'number' ? x : Number(x))

function array(dtype: Dtype, values: ArrayLike<number>): FloatArray {
  return dtype === 'float32' ? Float32Array.from(values) : Float64Array.from(values)
}

/** The fixture's long gradient, rebuilt exactly: ((i·7919) mod 2001 − 1000)/256. */
function wave(length: number): number[] {
  return Array.from({ length }, (_, i) => (((i * 7919) % 2001) - 1000) / 256)
}

function paramsOf(c: Case): Parameter[] {
  return c.grads.map((g) => {
    if (g === null) return { data: new Float32Array(3), grad: null }
    const grad = array(g.dtype, g.wave !== undefined ? wave(g.wave) : g.values!.map(decode))
    return { data: grad.slice(), grad }
  })
}

/** f32 within 1e-6, f64 within 1e-12; a float32 gradient anywhere puts its rounding into the norm and the coefficient. */
function tolerance(c: Case): number {
  return c.grads.some((g) => g?.dtype === 'float32') ? 1e-6 : 1e-12
}

function relative(got: number, want: number): number {
  if (Object.is(got, want) || (Number.isNaN(got) && Number.isNaN(want)) || got === want) return 0
  return Math.abs(got - want) / Math.max(Math.abs(want), 1e-300)
}

for (const c of cases) {
  test(`${c.kind === 'norm' ? 'clipGradNorm' : 'clipGradValue'} matches PyTorch: ${c.name}`, (t) => {
    const params = paramsOf(c)
    let tol = tolerance(c)
    let worst = 0
    if (c.kind === 'norm') {
      const total = clipGradNorm(params, c.maxNorm!, { normType: decode(c.normType!) })
      const reference = decode(c.reference!)
      // PyTorch sums float32 tensors in float32: on long ones its total strays from the exact
      // one by more than 1e-6 (1.04e-6 on the wave). Allow it that, and hold ours to the exact one.
      tol += relative(decode(c.total!), reference)
      const exact = c.grads.every((g) => g === null || g.dtype === 'float32') ? 2 ** -23 : 1e-13
      t.true(relative(total, reference) <= exact, `total norm ${total} is not the float64 reference ${reference}`)
      const error = relative(total, decode(c.total!))
      worst = error
      t.true(error <= tol, `total norm ${total} is not PyTorch's ${c.total} (relative error ${error})`)
    } else {
      clipGradValue(params, c.clipValue!)
    }
    c.after.forEach((want, i) => {
      const grad = params[i].grad
      if (want === null) return t.is(grad, null)
      const indices = want.indices ?? want.values.map((_, k) => k)
      t.is(indices.length, want.values.length)
      indices.forEach((index, k) => {
        const error = relative(grad![index], decode(want.values[k]))
        worst = Math.max(worst, error)
        if (!(error <= tol))
          t.fail(`grad ${i}[${index}]: ${grad![index]} is not PyTorch's ${want.values[k]} (relative error ${error})`)
      })
    })
    t.log(`largest relative difference from PyTorch: ${worst.toExponential(2)}`)
    t.pass()
  })
}

test('a hand-derived case: grads (3, 4) clipped to norm 1', (t) => {
  const p: Parameter = { data: new Float64Array(2), grad: Float64Array.of(3, 4) }
  t.is(clipGradNorm([p], 1), 5)
  // PyTorch's coefficient is (1 / (5 + 1e-6)) · 1, rounded after each operation.
  const c = 1 / (5 + 1e-6)
  t.deepEqual(p.grad, Float64Array.of(3 * c, 4 * c))
})

/** Several large gradients of both dtypes, spanning many reduction chunks. */
function largeParams(): Parameter[] {
  return [200_003, 65_537, 16_384, 0, 99_991].map((length, i) => {
    const values = Array.from({ length }, (_, k) => Math.sin(k * 0.37 + i) * (1 + (k % 13)) * 10 ** ((k % 7) - 3))
    const grad = i % 2 === 0 ? Float32Array.from(values) : Float64Array.from(values)
    return { data: grad.slice(), grad }
  })
}

test('the total norm has the same bits on 1, 2, 3 and 8 threads, and equals what clipGradNorm returns', (t) => {
  for (const normType of [2, 1, 3, Infinity]) {
    const params = largeParams()
    const [first, ...rest] = [1, 2, 3, 8].map((threads) =>
      native.gradNormOnThreads(
        params.map((p) => p.grad),
        normType,
        threads,
      ),
    )
    for (const norm of rest) t.true(Object.is(norm, first), `normType ${normType}: ${norm} vs ${first}`)
    t.true(Object.is(clipGradNorm(params, Infinity, { normType }), first))
  }
})

test('a single parameter, an iterable and grads that are views of one buffer are accepted', (t) => {
  const buffer = new Float32Array(10).fill(2)
  const a: Parameter = { data: new Float32Array(4), grad: buffer.subarray(0, 4) }
  const b: Parameter = { data: new Float32Array(6), grad: buffer.subarray(4) }
  t.is(clipGradNorm(new Set([a, b]), 1e9), Math.fround(Math.sqrt(40)))
  clipGradValue(a, 0.5)
  t.deepEqual([...buffer], [0.5, 0.5, 0.5, 0.5, 2, 2, 2, 2, 2, 2])
})

test('with no gradients the norm is 0 and nothing is touched', (t) => {
  t.is(clipGradNorm([{ data: new Float32Array(2), grad: null }], 1), 0)
  t.is(clipGradNorm([], 1, { errorIfNonfinite: true }), 0)
})

test('a zero-size gradient has infinity-norm 0 (where PyTorch refuses it)', (t) => {
  const params: Parameter[] = [
    { data: new Float64Array(0), grad: new Float64Array(0) },
    { data: new Float64Array(2), grad: Float64Array.of(-3, 1) },
  ]
  t.is(clipGradNorm(params, Infinity, { normType: Infinity }), 3)
})

// ---------------------------------------------------------------------------------- bad input

interface Row {
  name: string
  /** Plants what the row needs in the gradients, before they are snapshotted. */
  prepare?: (params: Parameter[]) => void
  act: (params: Parameter[]) => unknown
  error: { instanceOf: ErrorConstructor | TypeErrorConstructor | RangeErrorConstructor; code: string; message: RegExp }
}

const typeError = (message: RegExp) => ({ instanceOf: TypeError, code: 'ERR_INVALID_ARG_TYPE', message })
const valueError = (message: RegExp) => ({ instanceOf: TypeError, code: 'ERR_INVALID_ARG_VALUE', message })
const rangeError = (message: RegExp) => ({ instanceOf: RangeError, code: 'ERR_OUT_OF_RANGE', message })
const stateError = (message: RegExp) => ({ instanceOf: Error, code: 'ERR_INVALID_STATE', message })

const bad: Row[] = [
  {
    name: 'params a number',
    act: () => clipGradNorm(42 as never, 1),
    error: typeError(
      /^clipGradNorm: params must be an array of parameters, an iterable of them, or a parameter, got a number$/,
    ),
  },
  {
    name: 'a parameter that is a string',
    act: (p) => clipGradNorm([p[0], 'w' as never], 1),
    error: typeError(/^clipGradNorm: params\[1\] must be an object with a grad, got a string$/),
  },
  {
    name: 'an Int32Array grad',
    act: (p) => clipGradNorm([...p, { data: new Float32Array(2), grad: new Int32Array(2) as never }], 1),
    error: typeError(
      /^clipGradNorm: params\[3\]\.grad must be a Float32Array or Float64Array, or null, got Int32Array$/,
    ),
  },
  {
    name: 'a plain-array grad',
    act: (p) => clipGradValue([...p, { data: new Float32Array(2), grad: [1, 2] as never }], 1),
    error: typeError(/^clipGradValue: params\[3\]\.grad must be a Float32Array or Float64Array, or null, got Array$/),
  },
  {
    name: 'one grad twice',
    act: (p) => clipGradNorm([p[0], p[1], { data: new Float32Array(5), grad: p[0].grad }], 1),
    error: valueError(
      /^clipGradNorm: params\[0\]\.grad and params\[2\]\.grad share memory; every gradient must have its own$/,
    ),
  },
  {
    name: 'overlapping grads',
    act: (p) => {
      const shared = new Float64Array(8)
      return clipGradValue(
        [
          p[0],
          { data: new Float64Array(5), grad: shared.subarray(0, 5) },
          { data: new Float64Array(5), grad: shared.subarray(3) },
        ],
        1,
      )
    },
    error: valueError(/^clipGradValue: params\[1\]\.grad and params\[2\]\.grad share memory/),
  },
  {
    name: 'a detached grad',
    act: (p) => {
      const grad = new Float32Array(4)
      structuredClone(grad.buffer, { transfer: [grad.buffer] })
      return clipGradNorm([...p, { data: new Float32Array(4), grad }], 1)
    },
    error: stateError(/^clipGradNorm: params\[3\]\.grad is detached/),
  },
  {
    name: 'a grad detached by a later getter',
    act: (p) => {
      const grad = new Float32Array(4)
      const thief = {
        data: new Float32Array(1),
        get grad() {
          structuredClone(grad.buffer, { transfer: [grad.buffer] })
          return null
        },
      }
      return clipGradNorm([...p, { data: new Float32Array(4), grad }, thief as never], 1)
    },
    // The facade reads every grad (running the getter) before the native side reads any.
    error: stateError(/^clipGradNorm: params\[3\]\.grad is detached \(its ArrayBuffer was transferred\)$/),
  },
  {
    name: 'a grad detached by a getter of the list, the binding called directly',
    act: (p) => {
      const grad = new Float32Array(4)
      const grads: unknown[] = [...p.map((q) => q.grad), grad]
      Object.defineProperty(grads, 4, {
        get() {
          structuredClone(grad.buffer, { transfer: [grad.buffer] })
          return null
        },
      })
      return native.clipGradNorm(grads, 1, 2, false)
    },
    error: stateError(/^clipGradNorm: params\[3\]\.grad was detached or replaced while the gradients were being read$/),
  },
  {
    name: 'maxNorm as a string',
    act: (p) => clipGradNorm(p, '1' as never),
    error: typeError(/^clipGradNorm: maxNorm must be a number, got a string$/),
  },
  {
    name: 'negative maxNorm',
    act: (p) => clipGradNorm(p, -1),
    error: rangeError(/^clipGradNorm: invalid maxNorm: -1 \(expected a number >= 0, or Infinity\)$/),
  },
  { name: 'NaN maxNorm', act: (p) => clipGradNorm(p, NaN), error: rangeError(/^clipGradNorm: invalid maxNorm: NaN/) },
  {
    name: 'normType 0',
    act: (p) => clipGradNorm(p, 1, { normType: 0 }),
    error: rangeError(/^clipGradNorm: invalid normType: 0 \(expected a number > 0, or Infinity\)$/),
  },
  {
    name: 'normType -Infinity',
    act: (p) => clipGradNorm(p, 1, { normType: -Infinity }),
    error: rangeError(/^clipGradNorm: invalid normType: -Infinity/),
  },
  {
    name: 'normType as a string',
    act: (p) => clipGradNorm(p, 1, { normType: 'inf' as never }),
    error: typeError(/^clipGradNorm: options\.normType must be a number, got a string$/),
  },
  {
    name: 'PyTorch’s snake_case option',
    act: (p) => clipGradNorm(p, 1, { norm_type: 1 } as never),
    error: valueError(
      /^clipGradNorm: options\.norm_type is not an option of clipGradNorm \(expected normType or errorIfNonfinite\)$/,
    ),
  },
  {
    name: 'errorIfNonfinite as a number',
    act: (p) => clipGradNorm(p, 1, { errorIfNonfinite: 1 as never }),
    error: typeError(/^clipGradNorm: options\.errorIfNonfinite must be a boolean, got a number$/),
  },
  {
    name: 'a NaN gradient with errorIfNonfinite',
    prepare: (p) => (p[1].grad![2] = NaN),
    act: (p) => clipGradNorm(p, 1, { errorIfNonfinite: true }),
    error: rangeError(
      /^clipGradNorm: the total norm of order 2 of the gradients is NaN, so it cannot be clipped; to scale the gradients by the non-finite norm anyway, set errorIfNonfinite to false$/,
    ),
  },
  {
    name: 'an infinite gradient with errorIfNonfinite and normType 1',
    prepare: (p) => (p[0].grad![0] = -Infinity),
    act: (p) => clipGradNorm(p, 1, { normType: 1, errorIfNonfinite: true }),
    error: rangeError(/^clipGradNorm: the total norm of order 1 of the gradients is Infinity/),
  },
  {
    name: 'negative clipValue',
    act: (p) => clipGradValue(p, -0.5),
    error: rangeError(/^clipGradValue: invalid clipValue: -0\.5 \(expected a number >= 0, or Infinity\)$/),
  },
  {
    name: 'clipValue as a string',
    act: (p) => clipGradValue(p, '1' as never),
    error: typeError(/^clipGradValue: clipValue must be a number, got a string$/),
  },
]

for (const row of bad) {
  test(`refused: ${row.name}`, (t) => {
    const params: Parameter[] = [
      { data: new Float32Array(3), grad: Float32Array.of(10, -20, 30) },
      { data: new Float64Array(4), grad: Float64Array.of(1, 2, 3, 4) },
      { data: new Float32Array(2), grad: null },
    ]
    row.prepare?.(params)
    const before = params.map((p) => (p.grad ? [...p.grad] : null))
    const error = t.throws(() => row.act(params), { instanceOf: row.error.instanceOf, message: row.error.message })
    t.is((error as Error & { code?: string }).code, row.error.code)
    t.deepEqual(
      params.map((p) => (p.grad ? [...p.grad] : null)),
      before,
    )
  })
}
