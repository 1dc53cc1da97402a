// stepAsync() of Adam8bit, AdamW8bit and Lion8bit: the bits of step() on either kind of memory, the
// calls refused while a step is in flight, bad and non-finite input, and an array detached or
// collected while the step runs in slices. "Large" parameters have 4M elements: at well under a
// billion elements per second that is several slices of about half a millisecond, so the step is
// still in flight when stepAsync() returns and the test acts between slices.
import { setFlagsFromString } from 'node:v8'
import { runInNewContext } from 'node:vm'

import test from 'ava'

import { Adam8bit, AdamW8bit, Lion8bit, type EightBitState } from '../lib'
import { detachers } from './helpers/detach'
import { fillValues } from './helpers/values'

setFlagsFromString('--expose-gc')
const gc = runInNewContext('gc') as () => void

const LARGE = 1 << 22
const classes = { Adam8bit, AdamW8bit, Lion8bit }
type AnyEightBit = Adam8bit | AdamW8bit | Lion8bit
/** A parameter of an 8-bit optimizer: Float32Arrays. */
type P = { data: Float32Array; grad: Float32Array | null }

function values(n: number, seed: number, shared = false, scale = 1): Float32Array {
  const array = shared ? new Float32Array(new SharedArrayBuffer(4 * n)) : new Float32Array(n)
  return fillValues(array, seed, { scale, zeroAt: (i) => i % 7 === 3 })
}

function param(n: number, seed: number, shared = false): P {
  return { data: values(n, seed, shared), grad: values(n, seed + 1, shared, 0.1) }
}

/** The same parameters again, on fresh memory of the same kind. */
function twin(params: P[]): P[] {
  const copy = (a: Float32Array): Float32Array => {
    const out =
      a.buffer instanceof SharedArrayBuffer
        ? new Float32Array(new SharedArrayBuffer(a.byteLength))
        : new Float32Array(a.length)
    out.set(a)
    return out
  }
  return params.map((p) => ({ data: copy(p.data), grad: p.grad && copy(p.grad) }))
}

const bytes = (a: ArrayBufferView) => Buffer.from(a.buffer, a.byteOffset, a.byteLength)
const sameBits = (a: ArrayBufferView, b: ArrayBufferView) => Buffer.compare(bytes(a), bytes(b)) === 0

/** Whether two states are equal byte for byte: step count, codes or float32 moments, absmax. */
function sameState(a: EightBitState | undefined, b: EightBitState | undefined): boolean {
  if (a === undefined || b === undefined) return a === b
  const keys = ['state1', 'state2', 'absmax1', 'absmax2'] as const
  return a.step === b.step && keys.every((k) => (a[k] && b[k] ? sameBits(a[k]!, b[k]!) : a[k] === b[k]))
}

const kinds = [
  { name: 'ordinary memory (slices)', shared: false },
  { name: 'SharedArrayBuffer memory (worker thread)', shared: true },
]

for (const [className, Class] of Object.entries(classes)) {
  test.serial(
    `${className}.stepAsync gives the bits of step over thousands of tensors, its slices starting part way through the list`,
    async (t) => {
      // About 13M elements in 3,000 tensors of 0 to 8,999 elements, 8-bit state from 4,096 on:
      // slices of half a millisecond each start and end among them. Every eleventh has no grad.
      const params: P[] = Array.from({ length: 3000 }, (_, k) => {
        const p = param((k * 2741) % 9000, 100 + k)
        return k % 11 === 10 ? { data: p.data, grad: null } : p
      })
      const sync = twin(params)
      const a = new Class(params) as AnyEightBit
      const b = new Class(sync) as AnyEightBit
      for (let step = 0; step < 2; step++) {
        await a.stepAsync()
        b.step()
      }
      t.true(
        params.every((p, i) => sameBits(p.data, sync[i].data) && sameState(a.getState(p), b.getState(sync[i]))),
        'every parameter and its state as step() left its twin',
      )
    },
  )
}

for (const { name, shared } of kinds) {
  for (const [className, Class] of Object.entries(classes)) {
    test.serial(
      `${className}.stepAsync gives the bits of step on ${name}: groups, 8-bit and float32 state, partial blocks, a skipped and an empty parameter, 3 steps`,
      async (t) => {
        const params = [
          param(LARGE, 1, shared),
          param(3 * 4096 + 7, 3, shared),
          param(100, 5, shared),
          { data: values(5000, 7, shared), grad: null },
          param(0, 9, shared),
          param(300_001, 11, shared),
        ]
        const sync = twin(params)
        const groups = (ps: P[]) => [
          { params: [ps[0], ps[1], ps[2]] },
          { params: ps.slice(3), lr: 1e-2, weightDecay: 0.1 },
        ]
        const a = new Class(groups(params)) as AnyEightBit
        const b = new Class(groups(sync)) as AnyEightBit
        for (let step = 0; step < 3; step++) {
          if (step === 1) params[1].grad = sync[1].grad = null
          if (step === 2) {
            params[1].grad = values(3 * 4096 + 7, 13, shared)
            sync[1].grad = values(3 * 4096 + 7, 13, shared)
          }
          const pending = a.stepAsync()
          t.true(b.step())
          t.true(await pending)
        }
        params.forEach((p, i) => {
          t.true(sameBits(p.data, sync[i].data), `param ${i}`)
          t.true(sameState(a.getState(p), b.getState(sync[i])), `state of param ${i}`)
        })
        t.is(a.getState(params[0])!.step, 3)
        t.is(a.getState(params[1])!.step, 2)
        t.is(a.getState(params[3]), undefined, 'never stepped')
        t.true(a.getState(params[1])!.absmax1 !== undefined && a.getState(params[2])!.absmax1 === undefined)
      },
    )
  }
}

test.serial(
  'calls made while an 8-bit stepAsync is in flight are refused with ERR_INVALID_STATE and change nothing',
  async (t) => {
    for (const shared of [false, true]) {
      const params = [param(LARGE, 21, shared)]
      const sync = twin(params)
      const opt = new Adam8bit(params)
      const saved = new Adam8bit(twin(params)).stateDict()
      const pending = opt.stepAsync()
      const refused = (what: string) => ({
        instanceOf: Error,
        code: 'ERR_INVALID_STATE',
        message: new RegExp(`^${what.replace(/[()]/g, '\\$&')} was called while stepAsync\\(\\) is in flight`),
      })
      t.throws(() => opt.step(), refused('step()'))
      let closureRan = false
      t.throws(() => opt.step(() => (closureRan = true)), refused('step()'))
      t.false(closureRan, 'the closure did not run')
      t.throws(() => opt.zeroGrad(), refused('zeroGrad()'))
      t.throws(() => opt.getState(params[0]), refused('getState()'))
      t.throws(() => opt.stateBytes(params[0]), refused('stateBytes()'))
      t.throws(() => opt.stateDict(), refused('stateDict()'))
      t.throws(() => opt.loadStateDict(saved), refused('loadStateDict()'))
      t.throws(() => opt.addParamGroup({ params: [param(10, 23)] }), refused('addParamGroup()'))
      await t.throwsAsync(opt.stepAsync(), refused('stepAsync()'))
      t.not(params[0].grad, null, 'zeroGrad changed nothing')
      t.true(await pending)
      const reference = new Adam8bit(sync)
      reference.step()
      t.true(sameBits(params[0].data, sync[0].data), 'the step counted once')
      t.true(sameState(opt.getState(params[0]), reference.getState(sync[0])))
      t.is(opt.paramGroups.length, 1)
      await opt.stepAsync()
      t.is(opt.getState(params[0])!.step, 2, 'usable again once settled')
      opt.step()
      t.is(opt.getState(params[0])!.step, 3)
    }
  },
)

test.serial('the event loop runs while an 8-bit step is in flight, on either kind of memory', async (t) => {
  for (const shared of [false, true]) {
    const opt = new Lion8bit([param(LARGE, 31, shared)])
    let inFlight = false
    const pending = opt.stepAsync()
    await new Promise<void>((resolve) =>
      setImmediate(() => {
        try {
          opt.zeroGrad(false)
        } catch {
          inFlight = true
        }
        resolve()
      }),
    )
    await pending
    t.true(
      inFlight,
      `${shared ? 'shared' : 'ordinary'} memory: the step was still in flight when the event loop turned`,
    )
  }
})

test.serial('bad input rejects before anything changes, and the 8-bit optimizer stays usable', async (t) => {
  const params = [param(5000, 41), param(10, 43)]
  const before = twin(params)
  const opt = new AdamW8bit(params)
  params[1].grad = new Float32Array(3)
  await t.throwsAsync(opt.stepAsync(), {
    instanceOf: RangeError,
    code: 'ERR_OUT_OF_RANGE',
    message: /params\[1\]\.grad has length 3, expected 10/,
  })
  params[1].grad = before[1].grad
  opt.paramGroups[0].lr = -1
  await t.throwsAsync(opt.stepAsync(), { instanceOf: RangeError, code: 'ERR_OUT_OF_RANGE', message: /invalid lr: -1/ })
  opt.paramGroups[0].lr = 1e-3
  await t.throwsAsync(opt.stepAsync({ skipNonFinite: 1 } as never), { code: 'ERR_INVALID_ARG_TYPE' })
  t.true(sameBits(params[0].data, before[0].data), 'nothing written')
  t.is(opt.getState(params[0]), undefined)
  t.true(await opt.stepAsync())
  t.is(opt.getState(params[0])!.step, 1)
})

test.serial('a non-finite gradient: stepAsync resolves false, and with skipNonFinite changes nothing', async (t) => {
  for (const shared of [false, true]) {
    const params = [param(LARGE, 45, shared), param(1000, 47, shared)]
    params[1].grad![999] = Number.POSITIVE_INFINITY
    const before = twin(params)
    const opt = new Adam8bit(params)
    t.false(await opt.stepAsync({ skipNonFinite: true }))
    t.true(sameBits(params[0].data, before[0].data) && sameBits(params[1].data, before[1].data), 'skipped')
    t.is(opt.getState(params[0]), undefined, 'no state made')
    t.false(await opt.stepAsync())
    t.true(Number.isNaN(params[1].data[999]), 'the update went ahead')
    t.is(opt.getState(params[0])!.step, 1)
  }
})

for (const [how, detach] of detachers) {
  for (const which of ['data', 'grad'] as const) {
    test.serial(
      `${which} detached by ${how} during an 8-bit stepAsync: rejects with ERR_INVALID_STATE, no crash`,
      async (t) => {
        const params = [param(LARGE, 51), param(LARGE, 53)]
        const opt = new Adam8bit(params)
        const pending = opt.stepAsync()
        detach(params[1][which]!.buffer as ArrayBuffer)
        await t.throwsAsync(pending, {
          instanceOf: Error,
          code: 'ERR_INVALID_STATE',
          message: new RegExp(
            `^paramGroups\\[0\\]\\.params\\[1\\]\\.${which} was detached or resized while stepAsync\\(\\) was running`,
          ),
        })
        for (let i = 0; i < 3; i++) gc()
        // The optimizer answers again, and refuses the detached array as step() does.
        t.is(opt.getState(params[0])!.step, 1)
        t.throws(() => opt.step(), { code: 'ERR_INVALID_STATE', message: /is detached/ })
      },
    )
  }
}

test.serial(
  'an 8-bit step stopped by a detached array keeps what its slices wrote: every step count, and whole units up to where it stopped',
  async (t) => {
    const params = [param(LARGE, 61), param(LARGE, 63)]
    const before = twin(params)
    const full = twin(params)
    const reference = new Adam8bit(full)
    reference.step()
    const opt = new Adam8bit(params)
    const pending = opt.stepAsync()
    detachers[0][1](params[1].grad!.buffer as ArrayBuffer)
    await t.throwsAsync(pending, { code: 'ERR_INVALID_STATE', message: /params\[1\]\.grad was detached/ })
    const at = (list: Float32Array[], i: number) => list[Math.floor(i / LARGE)][i % LARGE]
    const [got, want, original] = [params, full, before].map((ps) => ps.map((p) => p.data))
    let cut = 0
    while (cut < 2 * LARGE && Object.is(at(got, cut), at(want, cut))) cut++
    t.true(cut > 0, 'the first slice ran before stepAsync() returned')
    t.true(cut < 2 * LARGE, 'the step stopped before the end')
    // A slice ends on a unit (4096 elements); the first step leaves an element with a zero
    // gradient as it was, so the first difference may come one element after the slice's end.
    const stoppedAt = cut % 4096 === 1 && ((cut - 1) % LARGE) % 7 === 3 ? cut - 1 : cut
    t.is(stoppedAt % 4096, 0, `the step stopped at ${cut}, the end of a unit`)
    let untouched = true
    for (let i = cut; i < 2 * LARGE && untouched; i++) untouched = Object.is(at(got, i), at(original, i))
    t.true(untouched, `every element from ${cut} on is as it was`)
    t.deepEqual(
      params.map((p) => opt.getState(p)!.step),
      [1, 1],
    )
    const state = opt.getState(params[0])!
    const wantState = reference.getState(full[0])!
    const block = Math.floor(Math.min(cut, LARGE) / 256)
    t.true(sameBits(state.absmax1!.subarray(0, block), wantState.absmax1!.subarray(0, block)), 'absmax before the cut')
  },
)

test.serial(
  'every reference dropped and garbage collected during an 8-bit stepAsync: the step completes',
  async (t) => {
    for (const shared of [false, true]) {
      let pending: Promise<boolean>
      {
        const opt = new Lion8bit([param(LARGE, 81, shared), param(1000, 83, shared)])
        pending = opt.stepAsync()
      }
      for (let i = 0; i < 5; i++) {
        gc()
        await new Promise((resolve) => setImmediate(resolve))
      }
      t.true(await pending)
    }
  },
)
