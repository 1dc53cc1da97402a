// Bad input, as a table: each row builds an optimizer (or changes one that has stepped) in a way
// that must be refused, and asserts the error class, its code and message, and that no
// parameter, gradient or optimizer state changed.
import test from 'ava'

import { Adam, AdamW, type FloatArray, type Optimizer, type Parameter } from '../lib'

interface World {
  a: Parameter
  b: Parameter
}

interface Row {
  name: string
  /** Optional: an optimizer that has already stepped, made before the snapshot. */
  prepare?: (w: World) => Optimizer<object>
  /** The bad call; it must throw. */
  act: (w: World, opt: Optimizer<object> | undefined) => unknown
  error: { instanceOf: ErrorConstructor | TypeErrorConstructor | RangeErrorConstructor; code: string; message: RegExp }
}

const param = (n: number, value: number): Parameter => ({
  data: new Float32Array(n).fill(value),
  grad: new Float32Array(n).fill(0.5),
})

/** An Adam over a and b (b in a second group) that has taken one step. */
function stepped(w: World): Optimizer<object> {
  const opt = new Adam([{ params: [w.a] }, { params: [w.b], lr: 1e-2 }])
  opt.step()
  return opt as unknown as Optimizer<object>
}

const construction: Row[] = [
  {
    name: 'empty parameter list',
    act: () => new Adam([]),
    error: { instanceOf: TypeError, code: 'ERR_INVALID_ARG_VALUE', message: /^params is empty/ },
  },
  {
    name: 'params not an array',
    act: () => new Adam(42 as never),
    error: {
      instanceOf: TypeError,
      code: 'ERR_INVALID_ARG_TYPE',
      message: /^params must be an array .* got a number$/,
    },
  },
  {
    name: 'a parameter given twice',
    act: ({ a }) => new Adam([a, a]),
    error: {
      instanceOf: TypeError,
      code: 'ERR_INVALID_ARG_VALUE',
      message: /paramGroups\[0\]\.params\[1\] appears more than once/,
    },
  },
  {
    name: 'a parameter in two groups',
    act: ({ a, b }) => new Adam([{ params: [a, b] }, { params: [b] }]),
    error: {
      instanceOf: TypeError,
      code: 'ERR_INVALID_ARG_VALUE',
      message: /paramGroups\[1\]\.params\[0\] appears more than once/,
    },
  },
  {
    name: 'Int32Array data',
    act: () => new Adam([{ data: new Int32Array(3) as never, grad: null }]),
    error: {
      instanceOf: TypeError,
      code: 'ERR_INVALID_ARG_TYPE',
      message: /^paramGroups\[0\]\.params\[0\]\.data must be a Float32Array or Float64Array, got Int32Array$/,
    },
  },
  {
    name: 'plain array data',
    act: () => new Adam([{ data: [1, 2] as never, grad: null }]),
    error: {
      instanceOf: TypeError,
      code: 'ERR_INVALID_ARG_TYPE',
      message: /data must be a Float32Array or Float64Array, got Array$/,
    },
  },
  {
    name: 'a parameter that is not an object',
    act: ({ a }) => new Adam([a, 'w' as never]),
    error: {
      instanceOf: TypeError,
      code: 'ERR_INVALID_ARG_TYPE',
      message: /params\[1\] must be an object with data and grad, got a string/,
    },
  },
  {
    name: 'grad of another dtype',
    act: () => new Adam([{ data: new Float32Array(2), grad: new Float64Array(2) }]),
    error: {
      instanceOf: TypeError,
      code: 'ERR_INVALID_ARG_TYPE',
      message: /grad must be a Float32Array like its data, or null, got Float64Array/,
    },
  },
  {
    name: 'grad of another length',
    act: () => new Adam([{ data: new Float32Array(3), grad: new Float32Array(2) }]),
    error: { instanceOf: RangeError, code: 'ERR_OUT_OF_RANGE', message: /grad has length 2, expected 3 like its data/ },
  },
  {
    name: 'unknown option',
    act: ({ a }) => new Adam([a], { lrr: 1 } as never),
    error: {
      instanceOf: TypeError,
      code: 'ERR_INVALID_ARG_VALUE',
      message: /^options\.lrr is not an option of Adam \(expected one of lr, betas, eps/,
    },
  },
  {
    name: 'unknown option in a group',
    act: ({ a }) => new AdamW([{ params: [a], decoupledWeightDecay: true }] as never),
    error: {
      instanceOf: TypeError,
      code: 'ERR_INVALID_ARG_VALUE',
      message: /^paramGroups\[0\]\.decoupledWeightDecay is not an option of AdamW/,
    },
  },
  {
    name: 'negative lr',
    act: ({ a }) => new Adam([a], { lr: -1 }),
    error: {
      instanceOf: RangeError,
      code: 'ERR_OUT_OF_RANGE',
      message: /^invalid lr: -1 \(expected a finite lr >= 0\) in options$/,
    },
  },
  {
    name: 'beta1 of 1.2',
    act: ({ a }) => new Adam([a], { betas: [1.2, 0.999] }),
    error: {
      instanceOf: RangeError,
      code: 'ERR_OUT_OF_RANGE',
      message: /^invalid betas\[0\]: 1\.2 \(expected 0 <= betas\[0\] < 1\) in options$/,
    },
  },
  {
    name: 'beta2 of 1',
    act: ({ a }) => new AdamW([a], { betas: [0.9, 1] }),
    error: {
      instanceOf: RangeError,
      code: 'ERR_OUT_OF_RANGE',
      message: /^invalid betas\[1\]: 1 \(expected 0 <= betas\[1\] < 1\)/,
    },
  },
  {
    name: 'NaN eps',
    act: ({ a }) => new Adam([a], { eps: NaN }),
    error: { instanceOf: RangeError, code: 'ERR_OUT_OF_RANGE', message: /^invalid eps: NaN/ },
  },
  {
    name: 'infinite weight decay',
    act: ({ a }) => new AdamW([a], { weightDecay: Infinity }),
    error: {
      instanceOf: RangeError,
      code: 'ERR_OUT_OF_RANGE',
      message: /^invalid weightDecay: Infinity \(expected a finite weightDecay >= 0\)/,
    },
  },
  {
    name: 'negative lr in the second group',
    act: ({ a, b }) => new Adam([{ params: [a] }, { params: [b], lr: -0.5 }]),
    error: { instanceOf: RangeError, code: 'ERR_OUT_OF_RANGE', message: /^invalid lr: -0\.5 .* in paramGroups\[1\]$/ },
  },
  {
    name: 'lr as a string',
    act: ({ a }) => new Adam([a], { lr: '0.1' as never }),
    error: {
      instanceOf: TypeError,
      code: 'ERR_INVALID_ARG_TYPE',
      message: /^options\.lr must be a number, got a string$/,
    },
  },
  {
    name: 'amsgrad as a number',
    act: ({ a }) => new Adam([a], { amsgrad: 1 as never }),
    error: {
      instanceOf: TypeError,
      code: 'ERR_INVALID_ARG_TYPE',
      message: /^options\.amsgrad must be a boolean, got a number$/,
    },
  },
  {
    name: 'one beta',
    act: ({ a }) => new Adam([a], { betas: [0.9] as never }),
    error: {
      instanceOf: TypeError,
      code: 'ERR_INVALID_ARG_TYPE',
      message: /^options\.betas must be an array of 2 numbers, got Array$/,
    },
  },
]

const atStep: Row[] = [
  {
    name: 'the second group’s grad replaced by one of another length',
    prepare: stepped,
    act: (w, opt) => {
      w.b.grad = new Float32Array(2)
      opt!.step()
    },
    error: {
      instanceOf: RangeError,
      code: 'ERR_OUT_OF_RANGE',
      message: /^paramGroups\[1\]\.params\[0\]\.grad has length 2, expected 5 like its data$/,
    },
  },
  {
    name: 'a live lr set out of range',
    prepare: stepped,
    act: (w, opt) => {
      ;(opt as unknown as Adam).paramGroups[1].lr = -1
      opt!.step()
    },
    error: {
      instanceOf: RangeError,
      code: 'ERR_OUT_OF_RANGE',
      message: /^invalid lr: -1 \(expected a finite lr >= 0\) in paramGroups\[1\]$/,
    },
  },
  {
    name: 'a live beta set to a string',
    prepare: stepped,
    act: (w, opt) => {
      ;(opt as unknown as Adam).paramGroups[0].betas[1] = 'x' as never
      opt!.step()
    },
    error: {
      instanceOf: TypeError,
      code: 'ERR_INVALID_ARG_TYPE',
      message: /^paramGroups\[0\]\.betas\[1\] must be a number, got a string$/,
    },
  },
  {
    name: 'a new group with an unknown option',
    prepare: stepped,
    act: (_w, opt) => opt!.addParamGroup({ params: [param(3, 0)], nesterov: true } as never),
    error: {
      instanceOf: TypeError,
      code: 'ERR_INVALID_ARG_VALUE',
      message: /^paramGroups\[2\]\.nesterov is not an option of Adam/,
    },
  },
  {
    name: 'two parameters sharing memory',
    prepare: stepped,
    act: (w, opt) => {
      w.b.data = new Float32Array(w.a.data.buffer, 4, 5)
      opt!.step()
    },
    error: {
      instanceOf: TypeError,
      code: 'ERR_INVALID_ARG_VALUE',
      message: /paramGroups\[0\]\.params\[0\]\.data and paramGroups\[1\]\.params\[0\]\.data share memory/,
    },
  },
  {
    name: 'a grad that is its own data',
    prepare: stepped,
    act: (w, opt) => {
      w.b.grad = w.b.data
      opt!.step()
    },
    error: {
      instanceOf: TypeError,
      code: 'ERR_INVALID_ARG_VALUE',
      message: /paramGroups\[1\]\.params\[0\]\.(data|grad) and paramGroups\[1\]\.params\[0\]\.(data|grad) share memory/,
    },
  },
  {
    name: 'a grad whose buffer was transferred',
    prepare: stepped,
    act: (w, opt) => {
      const buffer = (w.b.grad as Float32Array).buffer as ArrayBuffer
      structuredClone(buffer, { transfer: [buffer] })
      opt!.step()
    },
    error: {
      instanceOf: Error,
      code: 'ERR_INVALID_STATE',
      message: /^paramGroups\[1\]\.params\[0\]\.grad is detached/,
    },
  },
  {
    name: 'data replaced by an array of another length',
    prepare: stepped,
    act: (w, opt) => {
      w.b.data = new Float32Array(4)
      w.b.grad = new Float32Array(4)
      opt!.step()
    },
    error: {
      instanceOf: RangeError,
      code: 'ERR_OUT_OF_RANGE',
      message: /^paramGroups\[1\]\.params\[0\]\.data has length 4, but its optimizer state has length 5$/,
    },
  },
  {
    name: 'data replaced by a Float64Array after float32 steps',
    prepare: stepped,
    act: (w, opt) => {
      w.b.data = new Float64Array(5)
      w.b.grad = new Float64Array(5)
      opt!.step()
    },
    error: {
      instanceOf: TypeError,
      code: 'ERR_INVALID_ARG_TYPE',
      message: /^paramGroups\[1\]\.params\[0\]\.data is a Float64Array, but its optimizer state is float32$/,
    },
  },
  {
    name: 'data replaced by a Uint8Array',
    prepare: stepped,
    act: (w, opt) => {
      w.b.data = new Uint8Array(5) as never
      opt!.step()
    },
    error: {
      instanceOf: TypeError,
      code: 'ERR_INVALID_ARG_TYPE',
      message: /^paramGroups\[1\]\.params\[0\]\.data must be a Float32Array or Float64Array, got Uint8Array$/,
    },
  },
]

/**
 * Everything a failed call must leave as it was: the contents of the arrays the parameters held
 * before the call (an array detached by the call itself has none left to compare) and the state.
 */
function snapshot(arrays: Array<FloatArray | null>, w: World, opt: Optimizer<object> | undefined): unknown {
  return {
    arrays: arrays.map((x) => (x === null || x.buffer.byteLength === 0 ? null : Array.from(x))),
    state:
      opt &&
      [w.a, w.b].map((p) => {
        const state = opt.getState(p)
        return (
          state &&
          Object.fromEntries(Object.entries(state).map(([k, v]) => [k, typeof v === 'number' ? v : Array.from(v)]))
        )
      }),
  }
}

for (const row of [...construction, ...atStep]) {
  test(`refused: ${row.name}`, (t) => {
    const w: World = { a: param(8, 1), b: param(5, 2) }
    const opt = row.prepare?.(w)
    const arrays = [w.a.data, w.a.grad, w.b.data, w.b.grad]
    const before = snapshot(arrays, w, opt)
    const error = t.throws(() => row.act(w, opt), { instanceOf: row.error.instanceOf, message: row.error.message })
    if (row.error.code) t.is((error as Error & { code?: string }).code, row.error.code)
    const detached = arrays.map((x) => x !== null && x.buffer.byteLength === 0)
    const expected = snapshot(arrays, w, opt) as { arrays: unknown[] }
    t.deepEqual(
      expected.arrays.map((x, i) => (detached[i] ? null : x)),
      (before as { arrays: unknown[] }).arrays.map((x, i) => (detached[i] ? null : x)),
      'no array changed',
    )
    t.deepEqual((expected as { state?: unknown }).state, (before as { state?: unknown }).state, 'no state changed')
  })
}
