// `step(closure)`, as PyTorch's: the closure runs once, before the update, which then uses the
// gradients it wrote; the step returns what it returned. A closure that throws or returns a
// promise, bad options, and Schedule-Free's eval mode all leave everything as it was.
import test from 'ava'

import { Adam, Adam8bit, AdamWScheduleFree, Lion, SGD, type Parameter } from '../lib'

const param = (n: number, at: number): Parameter => ({
  data: Float32Array.from({ length: n }, (_, i) => Math.sin(i + at)),
  grad: null,
})

/** The gradient a closure writes on call `k`: different on every call, so a step is tied to it. */
const gradient = (n: number, k: number) => Float32Array.from({ length: n }, (_, i) => Math.cos(i * 0.3 + k) * 0.1)

for (const [name, make] of [
  ['SGD', (ps: Parameter[]) => new SGD(ps, { lr: 0.1, momentum: 0.9 })],
  ['Adam', (ps: Parameter[]) => new Adam(ps, { lr: 0.01 })],
  ['Lion', (ps: Parameter[]) => new Lion(ps, { lr: 0.01 })],
  [
    'AdamWScheduleFree',
    (ps: Parameter[]) => {
      const opt = new AdamWScheduleFree(ps, { lr: 0.01 })
      opt.train()
      return opt
    },
  ],
] as const) {
  test(`${name}: step(closure) calls it once first, updates from the grads it wrote, and returns its value`, (t) => {
    const [viaClosure, viaCalls] = [
      [param(37, 0), param(5, 1)],
      [param(37, 0), param(5, 1)],
    ]
    const [a, b] = [make(viaClosure), make(viaCalls)]
    for (let k = 0; k < 4; k++) {
      let calls = 0
      const loss = a.step(() => {
        calls++
        // What a closure does in PyTorch: zero the grads, then the backward pass fills them.
        a.zeroGrad(true)
        viaClosure.forEach((p) => (p.grad = gradient(p.data.length, k)))
        return { loss: 1 / (k + 1) }
      })
      t.is(calls, 1)
      t.deepEqual(loss, { loss: 1 / (k + 1) })
      viaCalls.forEach((p) => (p.grad = gradient(p.data.length, k)))
      t.true(b.step())
      viaClosure.forEach((p, i) => t.deepEqual(p.data, viaCalls[i].data, `step ${k}, parameter ${i}`))
    }
    t.notDeepEqual(viaClosure[0].data, param(37, 0).data)
  })
}

test('step(closure, { skipNonFinite: true }) returns the loss and skips the step when a grad is not finite', (t) => {
  const p = param(9, 0)
  const opt = new Adam([p])
  const before = p.data.slice()
  const loss = opt.step(
    () => {
      p.grad = new Float32Array(9).fill(0.1)
      p.grad[4] = Number.NaN
      return 2.5
    },
    { skipNonFinite: true },
  )
  t.is(loss, 2.5)
  t.deepEqual(p.data, before)
  t.is(opt.getState(p), undefined)
})

test('a closure that throws: ERR_CLOSURE_FAILED with it as the cause, and nothing stepped', (t) => {
  const p = { data: new Float32Array(8).fill(1), grad: new Float32Array(8).fill(0.5) }
  const opt = new Adam([p])
  opt.step()
  const [data, state] = [p.data.slice(), opt.getState(p)]
  const thrown = new Error('out of memory in the forward pass')
  const error = t.throws(
    () =>
      opt.step(() => {
        p.grad.fill(0.25)
        throw thrown
      }),
    { code: 'ERR_CLOSURE_FAILED', message: 'Adam.step: the closure threw: out of memory in the forward pass' },
  )
  t.is(error?.cause, thrown)
  t.deepEqual(p.data, data)
  t.deepEqual(opt.getState(p), state)
  // The optimizer is usable after it.
  t.true(opt.step())
})

test('a closure that returns a promise is refused, and nothing is stepped', (t) => {
  const p = { data: new Float32Array(8).fill(1), grad: new Float32Array(8).fill(0.5) }
  const opt = new Adam([p])
  const data = p.data.slice()
  t.throws(() => opt.step(async () => 1), {
    instanceOf: TypeError,
    code: 'ERR_INVALID_RETURN_VALUE',
    message: /^Adam\.step: the closure returned a promise, and a step runs synchronously/,
  })
  t.deepEqual(p.data, data)
  t.is(opt.getState(p), undefined)
})

test('bad options are refused before the closure runs; a second argument needs a closure first', (t) => {
  const p = { data: new Float32Array(8).fill(1), grad: new Float32Array(8).fill(0.5) }
  const opt = new Adam([p])
  let calls = 0
  t.throws(() => opt.step(() => calls++, { skipNonFinite: 1 } as never), {
    instanceOf: TypeError,
    code: 'ERR_INVALID_ARG_TYPE',
    message: 'step: options.skipNonFinite must be a boolean, got a number',
  })
  t.is(calls, 0)
  const step = opt.step.bind(opt) as (...args: unknown[]) => unknown
  t.throws(() => step({}, { skipNonFinite: true }), {
    instanceOf: TypeError,
    code: 'ERR_INVALID_ARG_TYPE',
    message: 'step: a second argument follows a closure only, got Object after Object',
  })
  t.is(opt.getState(p), undefined)
})

test('Schedule-Free in eval mode refuses step(closure) without calling it', (t) => {
  const p = { data: new Float32Array(8).fill(1), grad: new Float32Array(8).fill(0.5) }
  const opt = new AdamWScheduleFree([p])
  let calls = 0
  t.throws(() => opt.step(() => calls++), { code: 'ERR_INVALID_STATE', message: /^step\(\) was called in eval mode/ })
  t.is(calls, 0)
})

test('a closure may call step() itself: that step runs, then the outer one', (t) => {
  const make = () => {
    const p = { data: new Float32Array(4).fill(1), grad: new Float32Array(4).fill(0.5) }
    return { p, opt: new SGD([p], { lr: 0.1 }) }
  }
  const [a, b] = [make(), make()]
  t.true(a.opt.step(() => a.opt.step()))
  b.opt.step()
  b.opt.step()
  t.deepEqual(a.p.data, b.p.data)
  t.notDeepEqual(a.p.data, make().p.data)
})

test('8-bit optimizers: step(closure) runs it first and returns its value; bad options are refused first', (t) => {
  const make = () => {
    const p = { data: Float32Array.from({ length: 5000 }, (_, i) => Math.sin(i)), grad: null as Float32Array | null }
    return { p, opt: new Adam8bit([p], { lr: 0.01 }) }
  }
  const [a, b] = [make(), make()]
  for (let k = 0; k < 3; k++) {
    const loss = a.opt.step(() => {
      a.p.grad = gradient(5000, k)
      return k
    })
    t.is(loss, k)
    b.p.grad = gradient(5000, k)
    b.opt.step()
    t.deepEqual(a.p.data, b.p.data)
  }
  const step = a.opt.step.bind(a.opt) as (...args: unknown[]) => unknown
  const data = a.p.data.slice()
  t.throws(() => step(5), {
    instanceOf: TypeError,
    code: 'ERR_INVALID_ARG_TYPE',
    message: 'step: options must be an object such as { skipNonFinite: true }, got a number',
  })
  let calls = 0
  t.throws(() => step(() => calls++, { skipNonFinite: 'yes' }), {
    code: 'ERR_INVALID_ARG_TYPE',
    message: 'step: options.skipNonFinite must be a boolean, got a string',
  })
  t.is(calls, 0)
  t.throws(
    () =>
      a.opt.step(() => {
        throw new Error('no')
      }),
    { code: 'ERR_CLOSURE_FAILED', message: 'Adam8bit.step: the closure threw: no' },
  )
  t.deepEqual(a.p.data, data)
})
