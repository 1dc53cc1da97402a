// Non-finite gradients. By default a step goes ahead as PyTorch's does (NaN and ∞ reach the
// parameters and the state) and reports that it saw them; with { skipNonFinite: true } a step whose
// gradients hold NaN or ±∞ changes nothing at all. Both for step() and stepAsync(), on the first
// read of the arrays and on the fast path that steps the same arrays again, on one thread and many.
import test from 'ava'

import {
  Adagrad,
  Adam,
  getNumThreads,
  RMSprop,
  setNumThreads,
  SGD,
  type FloatArray,
  type Optimizer,
  type Parameter,
} from '../lib'

type AnyOptimizer = Optimizer<object>

const BIG = 2 ** 15 + 5 // over the parallel threshold, so the step is cut into pieces

/** Three parameters in two groups, float32 and float64, one of them large. */
function model(): Parameter[] {
  const fill = (array: FloatArray, seed: number) => array.map((_, i) => Math.sin(seed + i))
  return [
    { data: fill(new Float32Array(BIG), 1), grad: fill(new Float32Array(BIG), 2) },
    { data: fill(new Float64Array(7), 3), grad: fill(new Float64Array(7), 4) },
    { data: fill(new Float32Array(33), 5), grad: fill(new Float32Array(33), 6) },
  ]
}

const build = (params: Parameter[]) =>
  new Adam([{ params: params.slice(0, 2) }, { params: params.slice(2), lr: 0.01, amsgrad: true }], {
    lr: 0.1,
  }) as unknown as AnyOptimizer

function snapshot(opt: AnyOptimizer, params: Parameter[]) {
  return JSON.stringify(
    params.map((p) => [
      Array.from(p.data),
      opt.getState(p) &&
        Object.entries(opt.getState(p)!).map(([k, v]) => [k, typeof v === 'number' ? v : Array.from(v)]),
    ]),
  )
}

const POISONS: Array<[string, number]> = [
  ['NaN', NaN],
  ['+Infinity', Infinity],
  ['-Infinity', -Infinity],
]
const PLACES: Array<[string, number, (n: number) => number]> = [
  ['first element of the large parameter', 0, () => 0],
  ['last element of the large parameter', 0, (n) => n - 1],
  ['middle of a float64 parameter', 1, (n) => n >> 1],
  ['last element of the second group', 2, (n) => n - 1],
]

for (const threads of [1, 3]) {
  for (const [poison, value] of POISONS) {
    for (const [place, index, at] of PLACES) {
      test(`${threads} thread(s): a ${poison} at the ${place} skips the whole step with skipNonFinite, on the first and the repeated path`, (t) => {
        const before = getNumThreads()
        setNumThreads(threads)
        try {
          const params = model()
          const opt = build(params)
          t.true(opt.step({ skipNonFinite: true }), 'finite gradients: the step ran')
          t.true(opt.step({ skipNonFinite: true }), 'again, over the same arrays')
          const grad = params[index].grad!
          const kept = grad[at(grad.length)]
          grad[at(grad.length)] = value
          const state = snapshot(opt, params)
          t.false(opt.step({ skipNonFinite: true }), 'same arrays, poisoned in place: skipped')
          t.is(snapshot(opt, params), state, 'nothing changed')
          params[index].grad = grad.slice()
          t.false(opt.step({ skipNonFinite: true }), 'a new grad array, poisoned: skipped')
          t.is(snapshot(opt, params), state, 'nothing changed')
          // Once the gradient is clean again, the step is the third real one, as if none was skipped.
          params[index].grad![at(grad.length)] = kept
          t.true(opt.step({ skipNonFinite: true }))
          const twin = model()
          const reference = build(twin)
          for (let i = 0; i < 3; i++) reference.step()
          t.is(snapshot(opt, params), snapshot(reference, twin))
        } finally {
          setNumThreads(before)
        }
      })
    }
  }

  test(`${threads} thread(s): by default a non-finite gradient is reported and propagates, as in PyTorch`, (t) => {
    const before = getNumThreads()
    setNumThreads(threads)
    try {
      const params = model()
      const opt = build(params)
      t.true(opt.step())
      params[0].grad![BIG - 1] = NaN
      params[1].grad![2] = Infinity
      t.false(opt.step(), 'reported')
      t.true(Number.isNaN(params[0].data[BIG - 1]), 'NaN reached the parameter')
      t.true(Number.isNaN(params[1].data[2]), 'Adam turns ∞ into NaN (∞/∞)')
      t.true(Number.isNaN((opt.getState(params[0])!.expAvg as FloatArray)[BIG - 1]), 'and the state')
      t.false(Number.isNaN(params[0].data[0]), 'the other elements were updated normally')
      t.is(opt.getState(params[2])!.step, 2, 'the step happened everywhere')
      params[0].grad![BIG - 1] = 0
      params[1].grad![2] = 0
      t.true(opt.step(), 'finite again: reported finite, even though parameters now hold NaN')
    } finally {
      setNumThreads(before)
    }
  })
}

test('only gradients count: NaN in data, or in the grad of a skipped parameter, is not reported', (t) => {
  const a = { data: Float32Array.of(NaN, 1), grad: Float32Array.of(1, 1) }
  const b = { data: Float32Array.of(1), grad: null as FloatArray | null }
  const opt = new SGD([a, b], { lr: 0.5 })
  t.true(opt.step({ skipNonFinite: true }))
  t.true(Number.isNaN(a.data[0]))
  t.is(a.data[1], 0.5)
  b.grad = null
  t.true(opt.step())
})

test('every optimizer reports: SGD with momentum, RMSprop, Adagrad', (t) => {
  for (const make of [
    (p: Parameter[]) => new SGD(p, { lr: 0.1, momentum: 0.9 }),
    (p: Parameter[]) => new RMSprop(p, { centered: true }),
    (p: Parameter[]) => new Adagrad(p),
  ]) {
    const p = { data: new Float64Array(100).fill(1), grad: new Float64Array(100).fill(0.25) }
    const opt = make([p]) as unknown as AnyOptimizer
    t.true(opt.step())
    p.grad[99] = -Infinity
    const state = snapshot(opt, [p])
    t.false(opt.step({ skipNonFinite: true }))
    t.is(snapshot(opt, [p]), state)
    t.false(opt.step())
    t.true(p.data.some(Number.isNaN) || p.data.some((x) => !Number.isFinite(x)))
  }
})

test('stepAsync reports and skips as step does, on ordinary and on shared memory', async (t) => {
  for (const shared of [false, true]) {
    const make = (n: number, v: number) => {
      const array = shared ? new Float32Array(new SharedArrayBuffer(4 * n)) : new Float32Array(n)
      return array.fill(v)
    }
    const p = { data: make(BIG, 1), grad: make(BIG, 0.5) }
    const opt = new Adam([p], { lr: 0.1 })
    t.true(await opt.stepAsync())
    p.grad[BIG - 2] = NaN
    const state = snapshot(opt as unknown as AnyOptimizer, [p])
    t.false(await opt.stepAsync({ skipNonFinite: true }), 'skipped')
    t.is(snapshot(opt as unknown as AnyOptimizer, [p]), state, 'nothing changed')
    t.false(await opt.stepAsync(), 'reported, and the update went ahead')
    t.true(Number.isNaN(p.data[BIG - 2]))
    t.is(opt.getState(p)!.step, 2)
    p.grad[BIG - 2] = 0.5
    t.true(await opt.stepAsync())
  }
})

test('step options are checked', (t) => {
  const p = { data: Float32Array.of(1), grad: Float32Array.of(1) }
  const opt = new SGD([p], { lr: 0.5 })
  const cases: Array<[unknown, ErrorConstructor, string, RegExp]> = [
    [
      'yes',
      TypeError,
      'ERR_INVALID_ARG_TYPE',
      /^step: options must be an object such as \{ skipNonFinite: true \}, got a string$/,
    ],
    [
      { skip: true },
      TypeError,
      'ERR_INVALID_ARG_VALUE',
      /^step: options\.skip is not an option of step\(\) \(expected skipNonFinite\)$/,
    ],
    [
      { skipNonFinite: 1 },
      TypeError,
      'ERR_INVALID_ARG_TYPE',
      /^step: options\.skipNonFinite must be a boolean, got a number$/,
    ],
  ]
  for (const [options, instanceOf, code, message] of cases) {
    const error = t.throws(() => opt.step(options as never), { instanceOf, message })
    t.is((error as Error & { code?: string }).code, code)
  }
  t.is(p.data[0], 1, 'no refused call stepped')
  t.true(opt.step({}))
  t.is(p.data[0], 0.5)
})

test('stepAsync refuses bad options by rejecting, having changed nothing', async (t) => {
  const p = { data: Float32Array.of(1), grad: Float32Array.of(1) }
  const opt = new SGD([p], { lr: 0.5 })
  await t.throwsAsync(opt.stepAsync({ skipNonFinite: 'no' } as never), {
    instanceOf: TypeError,
    message: /^stepAsync: options\.skipNonFinite must be a boolean, got a string$/,
  })
  t.is(p.data[0], 1)
})
