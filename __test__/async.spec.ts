// stepAsync(): the same bits as step(), the calls it refuses while in flight, and everything
// JavaScript can do to the arrays meanwhile — transfer them (structuredClone, postMessage), shrink
// them, replace p.data, drop every reference and collect garbage — without crashing the process
// or writing freed memory. "Large" parameters have 16M elements: at a few billion elements per
// second that is several slices of about half a millisecond, so the step is still in flight when
// stepAsync() returns and the test acts between slices.
import { setFlagsFromString } from 'node:v8'
import { runInNewContext } from 'node:vm'

import test from 'ava'

import { Adam, AdamW, RMSprop, SGD, type FloatArray, type Optimizer, type Parameter, type ParamState } from '../lib'
import { detachers } from './helpers/detach'
import { fillValues } from './helpers/values'

type AnyOptimizer = Optimizer<object>

setFlagsFromString('--expose-gc')
const gc = runInNewContext('gc') as () => void

const LARGE = 1 << 24

/** Deterministic values in (−1, 1) with some zeros, as a Float32Array or Float64Array. */
function values(
  n: number,
  seed: number,
  Type: typeof Float32Array | typeof Float64Array = Float32Array,
  shared = false,
): FloatArray {
  const array = shared
    ? new Type(new SharedArrayBuffer(n * Type.BYTES_PER_ELEMENT) as unknown as ArrayBuffer)
    : new Type(n)
  return fillValues(array, seed, { zeroAt: (i) => i % 7 === 3 })
}

function param(
  n: number,
  seed: number,
  Type: typeof Float32Array | typeof Float64Array = Float32Array,
  shared = false,
): Parameter {
  return { data: values(n, seed, Type, shared), grad: values(n, seed + 1, Type, shared) }
}

/** The same parameters again, on fresh memory of the same kind. */
function twin(params: Parameter[]): Parameter[] {
  const copy = (a: FloatArray): FloatArray => {
    const shared = a.buffer instanceof SharedArrayBuffer
    const Type = a.constructor as typeof Float32Array
    const out = shared ? new Type(new SharedArrayBuffer(a.byteLength)) : new Type(a.length)
    out.set(a)
    return out
  }
  return params.map((p) => ({ data: copy(p.data), grad: p.grad && copy(p.grad) }))
}

function sameBits(t: { true(value: boolean, message?: string): void }, a: FloatArray, b: FloatArray, what: string) {
  const x = new Uint8Array(a.buffer, a.byteOffset, a.byteLength)
  const y = new Uint8Array(b.buffer, b.byteOffset, b.byteLength)
  t.true(x.length === y.length && Buffer.compare(Buffer.from(x), Buffer.from(y)) === 0, what)
}

const kinds = [
  { name: 'ordinary memory (slices)', shared: false },
  { name: 'SharedArrayBuffer memory (worker thread)', shared: true },
]

for (const { name, shared } of kinds) {
  test.serial(
    `stepAsync gives the bits of step on ${name}: groups, both dtypes, a skipped parameter, 3 steps`,
    async (t) => {
      const params = [
        param(LARGE, 1, Float32Array, shared),
        param(1001, 3, Float64Array, shared),
        param(37, 5, Float32Array, shared),
        { data: values(50, 7, Float32Array, shared), grad: null },
        param(0, 9, Float32Array, shared),
      ]
      const sync = twin(params)
      const groups = (ps: Parameter[]) => [{ params: [ps[0], ps[1]] }, { params: ps.slice(2), lr: 1e-2, amsgrad: true }]
      const a = new Adam(groups(params), { weightDecay: 0.01 })
      const b = new Adam(groups(sync), { weightDecay: 0.01 })
      for (let step = 0; step < 3; step++) {
        await a.stepAsync()
        b.step()
      }
      params.forEach((p, i) => sameBits(t, p.data, sync[i].data, `param ${i}`))
      params.forEach((p, i) => {
        const [x, y]: Array<ParamState | undefined> = [a.getState(p), b.getState(sync[i])]
        t.deepEqual(Object.keys(x ?? {}), Object.keys(y ?? {}))
        for (const [key, value] of Object.entries(x ?? {})) {
          if (typeof value === 'number') t.is(value, y![key] as number, `param ${i} ${key}`)
          else sameBits(t, value, y![key] as FloatArray, `param ${i} ${key}`)
        }
      })
    },
  )
}

test.serial(
  'stepAsync gives the bits of step over thousands of tensors, its slices starting part way through the list',
  async (t) => {
    // About 7M elements in 3,000 tensors of 0 to 4,999 elements: slices of half a millisecond
    // each start and end among them. Every fifth is float64, every eleventh has no grad.
    const params: Parameter[] = Array.from({ length: 3000 }, (_, k) => {
      const n = (k * 2741) % 5000
      const p = param(n, 100 + k, k % 5 === 4 ? Float64Array : Float32Array)
      return k % 11 === 10 ? { data: p.data, grad: null } : p
    })
    const sync = twin(params)
    const groups = (ps: Parameter[]) => [{ params: ps.slice(0, 1700) }, { params: ps.slice(1700), lr: 1e-2 }]
    const a = new Adam(groups(params), { amsgrad: true })
    const b = new Adam(groups(sync), { amsgrad: true })
    for (let step = 0; step < 2; step++) {
      await a.stepAsync()
      b.step()
    }
    t.true(
      params.every((p, i) => Buffer.compare(Buffer.from(p.data.buffer), Buffer.from(sync[i].data.buffer)) === 0),
      'every parameter as step() left its twin',
    )
  },
)

test.serial('stepAsync gives the bits of step for other optimizers too', async (t) => {
  const makers: Array<(ps: Parameter[]) => AnyOptimizer> = [
    (ps) => new SGD(ps, { lr: 0.1, momentum: 0.9, nesterov: true }) as unknown as AnyOptimizer,
    (ps) => new RMSprop(ps, { centered: true, momentum: 0.5 }) as unknown as AnyOptimizer,
    (ps) => new AdamW(ps) as unknown as AnyOptimizer,
  ]
  for (const make of makers) {
    const params = [param(1 << 22, 11), param(333, 12)]
    const sync = twin(params)
    const a = make(params)
    const b = make(sync)
    await a.stepAsync()
    await a.stepAsync()
    b.step()
    b.step()
    params.forEach((p, i) => sameBits(t, p.data, sync[i].data, `param ${i}`))
  }
})

test.serial(
  'calls made while a stepAsync is in flight are refused with ERR_INVALID_STATE and change nothing',
  async (t) => {
    for (const shared of [false, true]) {
      const params = [param(LARGE, 21, Float32Array, shared)]
      const sync = twin(params)
      const opt = new Adam(params)
      const pending = opt.stepAsync()
      const refused = { instanceOf: Error, code: 'ERR_INVALID_STATE' }
      t.throws(() => opt.step(), { ...refused, message: /^step\(\) was called while stepAsync\(\) is in flight/ })
      t.throws(() => opt.zeroGrad(), { ...refused, message: /^zeroGrad\(\) was called/ })
      t.throws(() => opt.getState(params[0]), { ...refused, message: /^getState\(\) was called/ })
      const second = opt.stepAsync()
      await t.throwsAsync(second, { ...refused, message: /^stepAsync\(\) was called while stepAsync\(\) is in flight/ })
      t.not(params[0].grad, null, 'zeroGrad changed nothing')
      await pending
      new Adam(sync).step()
      sameBits(t, params[0].data, sync[0].data, 'the step counted once')
      t.is(opt.getState(params[0])!.step, 1)
      await opt.stepAsync()
      t.is(opt.getState(params[0])!.step, 2, 'usable again once settled')
    }
  },
)

test.serial('the event loop runs between the slices of a step on ordinary memory', async (t) => {
  const params = [param(LARGE, 31)]
  const opt = new Adam(params)
  let turns = 0
  let busyDuringTurn = false
  const pending = opt.stepAsync()
  await new Promise<void>((resolve) =>
    setImmediate(() => {
      turns++
      try {
        opt.zeroGrad(false)
      } catch {
        busyDuringTurn = true
      }
      resolve()
    }),
  )
  await pending
  t.is(turns, 1)
  t.true(busyDuringTurn, 'the step was still in flight when the event loop turned')
})

test.serial('bad input rejects before anything changes, and the optimizer stays usable', async (t) => {
  const params = [param(100, 41), param(10, 43)]
  const before = twin(params)
  const opt = new Adam(params)
  params[1].grad = new Float32Array(3)
  await t.throwsAsync(opt.stepAsync(), {
    instanceOf: RangeError,
    code: 'ERR_OUT_OF_RANGE',
    message: /params\[1\]\.grad has length 3, expected 10/,
  })
  sameBits(t, params[0].data, before[0].data, 'nothing written')
  t.is(opt.getState(params[0]), undefined)
  params[1].grad = before[1].grad
  await opt.stepAsync()
  t.is(opt.getState(params[0])!.step, 1)
})

for (const [how, detach] of detachers) {
  for (const which of ['data', 'grad'] as const) {
    test.serial(`${which} detached by ${how} during stepAsync: rejects with ERR_INVALID_STATE, no crash`, async (t) => {
      const params = [param(LARGE, 51), param(LARGE, 53)]
      const opt = new Adam(params)
      const pending = opt.stepAsync()
      detach(params[1][which]!.buffer as ArrayBuffer)
      t.is(params[1][which]!.length, 0)
      const error = await t.throwsAsync(pending, {
        instanceOf: Error,
        code: 'ERR_INVALID_STATE',
        message: new RegExp(
          `^paramGroups\\[0\\]\\.params\\[1\\]\\.${which} was detached or resized while stepAsync\\(\\) was running`,
        ),
      })
      t.truthy(error)
      // Whatever the new owner does with the memory now (here: drop it and collect), nothing
      // of fastoptim touches it.
      for (let i = 0; i < 3; i++) gc()
      // The optimizer is usable again, with arrays of the same length.
      params[1] = param(LARGE, 55)
      const again = new Adam(params)
      await again.stepAsync()
      t.is(again.getState(params[1])!.step, 1)
      t.throws(() => opt.step(), {
        code: 'ERR_INVALID_STATE',
        message: /paramGroups\[0\]\.params\[1\]\.data is detached|is detached/,
      })
    })
  }
}

test.serial(
  'a step stopped by a detached array keeps what its slices wrote before: every step count, and the elements up to where it stopped',
  async (t) => {
    const params = [param(LARGE, 61), param(LARGE, 63)]
    const before = twin(params)
    const full = twin(params)
    const reference = new Adam(full)
    reference.step()
    const opt = new Adam(params)
    const pending = opt.stepAsync()
    const [, detach] = detachers[0]
    detach(params[1].grad!.buffer as ArrayBuffer)
    await t.throwsAsync(pending, { code: 'ERR_INVALID_STATE', message: /params\[1\]\.grad was detached/ })
    // The elements of both parameters in step order: updated up to a cut, untouched from there.
    const at = (list: FloatArray[], i: number) => list[Math.floor(i / LARGE)][i % LARGE]
    const got = params.map((p) => p.data)
    const want = full.map((p) => p.data)
    let cut = 0
    while (cut < 2 * LARGE && Object.is(at(got, cut), at(want, cut))) cut++
    t.true(cut > 0, 'the first slice ran before stepAsync() returned')
    t.true(cut < 2 * LARGE, 'the step stopped before the end')
    const original = before.map((p) => p.data)
    let untouched = true
    for (let i = cut; i < 2 * LARGE && untouched; i++) untouched = Object.is(at(got, i), at(original, i))
    t.true(untouched, `every element from ${cut} on is as it was`)
    // The state likewise, and the step count of every parameter has advanced.
    const state = params.map((p) => opt.getState(p)!)
    const wantState = full.map((p) => reference.getState(p)!)
    t.deepEqual(
      state.map((s) => s.step),
      [1, 1],
    )
    const moments = state.map((s) => s.expAvg)
    const wantMoments = wantState.map((s) => s.expAvg)
    let stateMatches = true
    for (let i = 0; i < 2 * LARGE && stateMatches; i++) {
      stateMatches = i < cut ? Object.is(at(moments, i), at(wantMoments, i)) : at(moments, i) === 0
    }
    t.true(stateMatches, 'expAvg holds the update before the cut and its initial zeros after it')
  },
)

test.serial('a resizable ArrayBuffer shrunk during stepAsync: rejects with ERR_INVALID_STATE, no crash', async (t) => {
  type Resizable = ArrayBuffer & { resize(byteLength: number): void }
  const buffer = new (ArrayBuffer as unknown as new (n: number, o: { maxByteLength: number }) => Resizable)(LARGE * 4, {
    maxByteLength: LARGE * 4,
  })
  const data = new Float32Array(buffer)
  data.set(values(LARGE, 61))
  const params = [param(LARGE, 63), { data, grad: values(LARGE, 65) }]
  const opt = new Adam(params)
  const pending = opt.stepAsync()
  buffer.resize(16)
  await t.throwsAsync(pending, { code: 'ERR_INVALID_STATE', message: /params\[1\]\.data was detached or resized/ })
})

test.serial(
  'p.data replaced during stepAsync: the array the step started with is updated, the new one untouched',
  async (t) => {
    for (const shared of [false, true]) {
      const params = [param(LARGE, 71, Float32Array, shared)]
      const sync = twin(params)
      const opt = new Adam(params)
      const original = params[0].data
      const pending = opt.stepAsync()
      const replacement = new Float32Array(LARGE).fill(7)
      params[0].data = replacement
      await pending
      new Adam(sync).step()
      sameBits(t, original, sync[0].data, 'the original array has the step')
      t.true(
        replacement.every((x) => x === 7),
        'the replacement is untouched',
      )
    }
  },
)

test.serial('every reference dropped and garbage collected during stepAsync: the step completes', async (t) => {
  for (const shared of [false, true]) {
    let pending: Promise<boolean>
    {
      // Nothing outside this block refers to the arrays or the optimizer once it ends.
      const opt = new Adam([param(LARGE, 81, Float32Array, shared), param(1000, 83, Float32Array, shared)])
      pending = opt.stepAsync()
    }
    for (let i = 0; i < 5; i++) {
      gc()
      await new Promise((resolve) => setImmediate(resolve))
    }
    await pending
    t.pass()
  }
})

test.serial('SharedArrayBuffer memory cannot be transferred, so a step on it is never cut short', async (t) => {
  const params = [param(LARGE, 91, Float32Array, true)]
  const sync = twin(params)
  const opt = new Adam(params)
  const pending = opt.stepAsync()
  t.throws(() =>
    structuredClone(params[0].data.buffer, { transfer: [params[0].data.buffer as unknown as ArrayBuffer] }),
  )
  await pending
  new Adam(sync).step()
  sameBits(t, params[0].data, sync[0].data, 'complete')
})

test.serial('two optimizers step asynchronously at once, on either kind of memory', async (t) => {
  const a = [param(LARGE, 101, Float32Array, true)]
  const b = [param(LARGE, 103)]
  const [ta, tb] = [twin(a), twin(b)]
  const [oa, ob] = [new Adam(a), new Adam(b)]
  await Promise.all([oa.stepAsync(), ob.stepAsync(), oa.stepAsync().catch((e: { code?: string }) => e.code)])
  new Adam(ta).step()
  new Adam(tb).step()
  sameBits(t, a[0].data, ta[0].data, 'shared')
  sameBits(t, b[0].data, tb[0].data, 'ordinary')
})
