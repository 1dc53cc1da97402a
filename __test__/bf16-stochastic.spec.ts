// Stochastic rounding of bfloat16 state (`stateRounding: 'stochastic'`): the errors, that its
// results depend on nothing but the inputs (runs, thread counts, step or stepAsync, a checkpoint in
// between), that it differs from rounding to nearest, and what it is for: a second moment that
// decays by β₂ = 0.999 a step, which rounding to nearest leaves where it is.
import test from 'ava'

import { Adam, NAdam, SGD, getNumThreads, setNumThreads, type Parameter } from '../lib'

const widen = (bits: number) => new Float32Array(new Uint32Array([bits << 16]).buffer)[0]

/** Two parameters (one across the parallel threshold) with gradients made from `seed` and `step`. */
function params(): Array<Parameter & { data: Float32Array; grad: Float32Array }> {
  return [20_011, 37].map((n, k) => {
    const data = new Float32Array(n)
    for (let i = 0; i < n; i++) data[i] = Math.sin(i * 0.37 + k)
    return { data, grad: new Float32Array(n) }
  })
}

function setGrads(ps: ReturnType<typeof params>, step: number): void {
  ps.forEach((p, k) => {
    for (let i = 0; i < p.grad.length; i++) p.grad[i] = 0.01 * Math.cos(i * 0.71 + step * 1.3 + k)
  })
}

/** Parameters and raw bfloat16 state after `steps` steps of Adam (stepAsync's when `async`). */
async function run(rounding: 'nearest' | 'stochastic', steps: number, async = false) {
  const ps = params()
  const opt = new Adam(ps, { lr: 1e-2, stateDtype: 'bfloat16', stateRounding: rounding })
  for (let s = 1; s <= steps; s++) {
    setGrads(ps, s)
    if (async) await opt.stepAsync()
    else opt.step()
  }
  const state = ps.map((p) => {
    const st = opt.getState(p)!
    return [Array.from(st.expAvg as unknown as Uint16Array), Array.from(st.expAvgSq as unknown as Uint16Array)]
  })
  return { data: ps.map((p) => Array.from(p.data)), state, opt, ps }
}

test('stateRounding is refused, with a coded error naming it, its value and what it takes, where it does not apply', (t) => {
  const p = () => ({ data: new Float32Array(3), grad: new Float32Array(3) })
  t.throws(() => new Adam([p()], { stateRounding: 'stochastic' }), {
    code: 'ERR_INVALID_ARG_VALUE',
    message:
      'invalid stateRounding: "stochastic" rounds bfloat16 state, but the optimizer keeps its state in the parameters\' dtype (no stateDtype) (expected stateDtype: "bfloat16" with it, or stateRounding "nearest")',
  })
  t.throws(() => new SGD([p()], { momentum: 0.9, stateDtype: 'float32', stateRounding: 'stochastic' }), {
    code: 'ERR_INVALID_ARG_VALUE',
    message:
      'invalid stateRounding: "stochastic" rounds bfloat16 state, but the optimizer keeps its state in float32 (stateDtype "float32") (expected stateDtype: "bfloat16" with it, or stateRounding "nearest")',
  })
  t.throws(() => new Adam([p()], { stateDtype: 'bfloat16', stateRounding: 'up' as never }), {
    code: 'ERR_INVALID_ARG_VALUE',
    message: 'invalid stateRounding: "up" (expected "nearest" or "stochastic")',
  })
  t.throws(() => new Adam([p()], { stateDtype: 'bfloat16', stateRounding: 1 as never }), {
    code: 'ERR_INVALID_ARG_TYPE',
    message: 'options.stateRounding must be "nearest" or "stochastic", got a number',
  })
  // Not a group option.
  t.throws(() => new Adam([{ params: [p()], stateRounding: 'stochastic' } as never], { stateDtype: 'bfloat16' }), {
    code: 'ERR_INVALID_ARG_VALUE',
  })
  // Rounding to nearest asks for nothing.
  t.notThrows(() => new Adam([p()], { stateRounding: 'nearest' }))
})

test.serial(
  'stochastic rounding gives the same bits from run to run, on 1 and 2 threads, with step and stepAsync',
  async (t) => {
    const before = getNumThreads()
    try {
      setNumThreads(1)
      const one = await run('stochastic', 4)
      const again = await run('stochastic', 4)
      setNumThreads(2)
      const two = await run('stochastic', 4)
      const async = await run('stochastic', 4, true)
      for (const [other, what] of [
        [again, 'a second run'],
        [two, '2 threads'],
        [async, 'stepAsync'],
      ] as const) {
        t.deepEqual(other.data, one.data, what)
        t.deepEqual(other.state, one.state, what)
      }
    } finally {
      setNumThreads(before)
    }
  },
)

test('stochastic rounding differs from rounding to nearest, each element by at most one bfloat16 step', async (t) => {
  const stochastic = await run('stochastic', 1)
  const nearest = await run('nearest', 1)
  // After one step both round the same float32 values: each element is the nearest bfloat16 or
  // its neighbour on the other side of the value.
  let differ = 0
  let total = 0
  stochastic.state.forEach((buffers, k) =>
    buffers.forEach((bits, b) =>
      bits.forEach((x, i) => {
        const y = nearest.state[k][b][i]
        total++
        if (x !== y) {
          differ++
          t.true(Math.abs(x - y) === 1, `${k}.${b}[${i}]: ${x} against ${y}`)
        }
      }),
    ),
  )
  t.true(differ > total / 10, `${differ} of ${total} differ`)
})

test('a checkpoint in between changes nothing: the step count and the parameter place pick the bits', async (t) => {
  const whole = await run('stochastic', 6)
  const first = await run('stochastic', 3)
  const ps = params()
  ps.forEach((p, k) => p.data.set(first.ps[k].data))
  const resumed = new Adam(ps, { lr: 1e-2, stateDtype: 'bfloat16', stateRounding: 'stochastic' })
  resumed.loadStateDict(first.opt.stateDict())
  for (let s = 4; s <= 6; s++) {
    setGrads(ps, s)
    resumed.step()
  }
  t.deepEqual(
    ps.map((p) => Array.from(p.data)),
    whole.data,
  )
  t.deepEqual(
    ps.map((p) => Array.from(resumed.getState(p)!.expAvgSq as unknown as Uint16Array)),
    whole.state.map((s) => s[1]),
  )
})

test('a second moment decays by β₂ each step with stochastic rounding, and not at all to nearest', (t) => {
  // With zero gradients v ← 0.999·v: a relative change of 10⁻³, below half a bfloat16 ulp
  // (2⁻⁹ ≈ 1.95·10⁻³), so rounding to nearest gives v back every step. Stochastic rounding keeps
  // the change in expectation: after 2000 steps the mean is 0.999²⁰⁰⁰ ≈ 0.135 of the start.
  const n = 8192
  const steps = 2000
  const mean = (rounding: 'nearest' | 'stochastic' | undefined) => {
    const p = { data: new Float32Array(n), grad: new Float32Array(n) }
    const opt = new NAdam([p], {
      lr: 0,
      ...(rounding === undefined ? {} : { stateDtype: 'bfloat16' as const, stateRounding: rounding }),
    })
    p.grad.fill(1)
    opt.step()
    p.grad.fill(0)
    for (let s = 0; s < steps; s++) opt.step()
    const v = opt.getState(p)!.expAvgSq
    let sum = 0
    for (let i = 0; i < n; i++) sum += rounding === undefined ? v[i] : widen((v as unknown as Uint16Array)[i])
    return sum / n
  }
  const start = 0.001 // (1 − β₂)·1² after the first step
  const expected = start * 0.999 ** steps
  const f32 = mean(undefined)
  const nearest = mean('nearest')
  const stochastic = mean('stochastic')
  t.true(Math.abs(f32 / expected - 1) < 1e-3, `float32 state: ${f32} against ${expected}`)
  t.true(Math.abs(nearest / start - 1) < 0.01, `to nearest: ${nearest} stays at ${start}`)
  t.true(Math.abs(stochastic / expected - 1) < 0.05, `stochastic: ${stochastic} against ${expected}`)
})
