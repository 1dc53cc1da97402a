// bfloat16 optimizer state (`stateDtype: 'bfloat16'`): trajectories against PyTorch with its state
// held in torch.bfloat16 (__test__/fixtures/bf16.json, made by scripts/gen_fixtures_bf16.py), the
// bytes a checkpoint holds, checkpoints both ways (and into PyTorch, where it is installed), the
// conversions loadStateDict makes, and the errors.
import { spawnSync } from 'node:child_process'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'

import test from 'ava'

import {
  Adagrad,
  Adam,
  AdamW,
  Adamax,
  NAdam,
  RAdam,
  SGD,
  decodeSafetensors,
  encodeSafetensors,
  loadStateDict,
  saveStateDict,
  type Optimizer,
  type Parameter,
} from '../lib'
import { loadCases, makeParams, maxRelativeError } from './helpers/fixtures'

const cases = loadCases('bf16.json')
const classes = { Adam, AdamW, NAdam, RAdam, Adamax, SGD } as const
type Name = keyof typeof classes

function build(c: (typeof cases)[number], params: Parameter[]): Optimizer<object> {
  const Class = classes[c.optimizer as Name]
  const groups = c.groups.map((g) => ({ params: g.params.map((i) => params[i]), ...g.options }))
  return new Class(groups as never, { stateDtype: 'bfloat16' })
}

/** The float32 value of bfloat16 bits. */
const widen = (bits: number) => new Float32Array(new Uint32Array([bits << 16]).buffer)[0]

test('the fixture covers the Adam family and SGD momentum (Nesterov on and off), two groups, 10+ steps', (t) => {
  t.deepEqual(new Set(cases.map((c) => c.optimizer)), new Set(Object.keys(classes)))
  t.true(cases.some((c) => c.optimizer === 'Adam' && c.groups[0].options.amsgrad === true))
  t.true(cases.some((c) => c.optimizer === 'Adam' && c.groups[0].options.amsgrad === undefined))
  const nesterov = cases.filter((c) => c.optimizer === 'SGD').map((c) => c.groups[0].options.nesterov === true)
  t.deepEqual(nesterov.sort(), [false, true])
  for (const c of cases) {
    t.true(c.steps.length >= 10 && c.groups.length === 2, c.name)
    t.true(
      c.init.some((p) => p.length > 1 && p.length % 2 === 1),
      c.name,
    )
  }
})

for (const c of cases) {
  test(`${c.name}: parameters within 1e-6 of PyTorch's with bfloat16 state, state bit for bit`, (t) => {
    const params = makeParams(c)
    const opt = build(c, params)
    let worst = 0
    c.steps.forEach((step, s) => {
      params.forEach((p, i) => (p.grad = step.grads[i] === null ? null : Float32Array.from(step.grads[i]!)))
      opt.step()
      params.forEach((p, i) => {
        const error = maxRelativeError(p.data, step.params[i])
        worst = Math.max(worst, error)
        t.true(error <= 1e-6, `step ${s + 1}, parameter ${i}: ${error}`)
      })
    })
    params.forEach((p, i) => {
      const got = opt.getState(p)!
      const want = c.finalState[i]!
      // PyTorch's SGD keeps no step count.
      if (c.optimizer !== 'SGD') t.is(got.step, want.step as number)
      for (const [name, value] of Object.entries(want)) {
        if (!Array.isArray(value)) continue
        const bits = got[name] as unknown as Uint16Array
        t.true(bits instanceof Uint16Array, `${name} of parameter ${i}`)
        t.deepEqual(Array.from(bits), value, `${name} of parameter ${i}`)
      }
    })
    t.log(`worst parameter error ${worst.toExponential(2)}`)
  })
}

/** An Adam over two float32 parameters of odd sizes, stepped `steps` times with fixed gradients. */
function adam(stateDtype: 'float32' | 'bfloat16' | undefined, steps = 3) {
  const w = { data: Float32Array.from({ length: 1031 }, (_, i) => Math.sin(i)), grad: null as Float32Array | null }
  const b = { data: Float32Array.from({ length: 7 }, (_, i) => i / 7), grad: null as Float32Array | null }
  const opt = new Adam([w, b], stateDtype === undefined ? { lr: 1e-2 } : { lr: 1e-2, stateDtype })
  const run = (n: number, from = 0) => {
    for (let s = from; s < from + n; s++) {
      w.grad = Float32Array.from(w.data, (_, i) => Math.cos(i * (s + 1)))
      b.grad = Float32Array.from(b.data, (_, i) => i - s)
      opt.step()
    }
  }
  run(steps)
  return { opt, w, b, run }
}

test("a bfloat16 Adam's stateDict holds 4 bytes of state per parameter, as BF16 tensors in a checkpoint", (t) => {
  const { opt, w, b } = adam('bfloat16')
  const sd = opt.stateDict()
  let bytes = 0
  for (const entry of Object.values(sd.state)) {
    for (const [name, value] of Object.entries(entry)) {
      if (name === 'step') continue
      t.true(value instanceof Uint16Array, name)
      bytes += (value as unknown as Uint16Array).byteLength
    }
  }
  t.is(bytes, 4 * (w.data.length + b.data.length))
  const decoded = decodeSafetensors(encodeSafetensors(sd))
  t.true(decoded.state[0].expAvg instanceof Uint16Array)
  t.deepEqual(decoded.state[0].expAvgSq, sd.state[0].expAvgSq)
  // fp32 state: twice the bytes.
  const f32 = adam(undefined).opt.stateDict()
  t.is((f32.state[0].expAvg as Float32Array).byteLength, 4 * w.data.length)
})

test('bfloat16 state is the float32 update of the widened state, rounded to nearest even', (t) => {
  // One step by hand: Adam's float32 step from the widened bfloat16 state, then rounded.
  const bf = adam('bfloat16', 2)
  const f32 = adam('float32', 2)
  // Give the float32 optimizer the bfloat16 one's state, widened (loadStateDict converts exactly).
  f32.opt.loadStateDict(bf.opt.stateDict())
  f32.w.data.set(bf.w.data)
  f32.b.data.set(bf.b.data)
  bf.run(1, 2)
  f32.run(1, 2)
  t.deepEqual(bf.w.data, f32.w.data, 'the same float32 update, bit for bit')
  const round = (x: Float32Array) => {
    const bits = new Uint32Array(x.buffer, x.byteOffset, x.length)
    return Uint16Array.from(bits, (u) => {
      if ((u & 0x7fffffff) > 0x7f800000) return 0x7fc0
      return ((u + 0x7fff + ((u >>> 16) & 1)) >>> 16) & 0xffff
    })
  }
  t.deepEqual(bf.opt.getState(bf.w)!.expAvg, round(f32.opt.getState(f32.w)!.expAvg as Float32Array))
  t.deepEqual(bf.opt.getState(bf.w)!.expAvgSq, round(f32.opt.getState(f32.w)!.expAvgSq as Float32Array))
})

test('a bfloat16 checkpoint loads back and continues bit for bit; stepAsync gives the same bits as step', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'fastoptim-bf16-'))
  try {
    const straight = adam('bfloat16', 5)
    const resumed = adam('bfloat16', 3)
    saveStateDict(join(dir, 'opt.safetensors'), resumed.opt.stateDict())
    const fresh = adam('bfloat16', 0)
    fresh.w.data.set(resumed.w.data)
    fresh.b.data.set(resumed.b.data)
    fresh.opt.loadStateDict(loadStateDict(join(dir, 'opt.safetensors')))
    fresh.run(2, 3)
    t.deepEqual(fresh.w.data, straight.w.data)
    t.deepEqual(fresh.opt.stateDict().state, straight.opt.stateDict().state)
    // stepAsync, the same two steps.
    const later = adam('bfloat16', 3)
    for (let s = 3; s < 5; s++) {
      later.w.grad = Float32Array.from(later.w.data, (_, i) => Math.cos(i * (s + 1)))
      later.b.grad = Float32Array.from(later.b.data, (_, i) => i - s)
      await later.opt.stepAsync()
    }
    t.deepEqual(later.w.data, straight.w.data)
    t.deepEqual(later.opt.stateDict().state, straight.opt.stateDict().state)
  } finally {
    rmSync(dir, { recursive: true, force: true })
  }
})

test('loadStateDict converts: float32 state into a bfloat16 optimizer is rounded, bfloat16 into float32 widened', (t) => {
  const f32 = adam(undefined)
  const bf = adam('bfloat16', 0)
  bf.opt.loadStateDict(f32.opt.stateDict())
  const f32State = f32.opt.getState(f32.w)!.expAvg as Float32Array
  const rounded = bf.opt.getState(bf.w)!.expAvg as unknown as Uint16Array
  t.true(rounded instanceof Uint16Array)
  for (let i = 0; i < f32State.length; i++) {
    const back = widen(rounded[i])
    // The nearest bfloat16: within half a bfloat16 ulp (2^-8 relative).
    t.true(Math.abs(back - f32State[i]) <= 2 ** -8 * Math.abs(f32State[i]), `${i}`)
  }
  const again = adam('float32', 0)
  again.opt.loadStateDict(bf.opt.stateDict())
  t.deepEqual(again.opt.getState(again.w)!.expAvg, Float32Array.from(rounded, widen))
})

test('stateDtype is refused, with a coded error naming it and its value, where it does not apply', (t) => {
  const p = () => ({ data: new Float32Array(3), grad: new Float32Array(3) })
  const wide = () => ({ data: new Float64Array(3), grad: new Float64Array(3) })
  t.throws(() => new Adagrad([p()], { stateDtype: 'bfloat16' } as never), {
    code: 'ERR_INVALID_ARG_VALUE',
    message:
      'invalid stateDtype: "bfloat16" (Adagrad keeps its state in the parameters\' dtype; bfloat16 state is for SGD, Adam, AdamW, Adamax, NAdam, RAdam)',
  })
  t.throws(() => new Adam([p()], { stateDtype: 'float16' as never }), {
    code: 'ERR_INVALID_ARG_VALUE',
    message: 'invalid stateDtype: "float16" (expected "float32" or "bfloat16")',
  })
  t.throws(() => new Adam([p()], { stateDtype: 16 as never }), { code: 'ERR_INVALID_ARG_TYPE' })
  for (const stateDtype of ['bfloat16', 'float32'] as const) {
    t.throws(() => new SGD([wide()], { momentum: 0.9, stateDtype }), {
      code: 'ERR_INVALID_ARG_TYPE',
      message: `paramGroups[0].params[0].data is a Float64Array, but the optimizer was made with stateDtype "${stateDtype}", which is for float32 parameters only`,
    })
  }
  const opt = new Adam([p()], { stateDtype: 'bfloat16' })
  t.throws(() => opt.addParamGroup({ params: [wide()] }), { code: 'ERR_INVALID_ARG_TYPE' })
  // A parameter whose data became a Float64Array after it joined: the step refuses, changing nothing.
  const q = p()
  const opt2 = new Adam([q], { stateDtype: 'bfloat16' })
  ;(q as { data: Float32Array | Float64Array }).data = new Float64Array(3)
  q.grad = new Float64Array(3).fill(1) as never
  t.throws(() => opt2.step(), { code: 'ERR_INVALID_ARG_TYPE', message: /stateDtype "bfloat16"/ })
  t.is(opt2.getState(q), undefined)
  // A stateDtype is not a group option.
  t.throws(() => new Adam([{ params: [p()], stateDtype: 'bfloat16' } as never]), { code: 'ERR_INVALID_ARG_VALUE' })
})

const probe = spawnSync('python3', ['-c', 'import torch, safetensors'], { encoding: 'utf8' })
const withTorch = probe.status === 0 ? test.serial : test.serial.skip
const note = probe.status === 0 ? '' : ' (skipped: python3 with torch and safetensors is not installed)'

withTorch(`a bfloat16 checkpoint loads into torch.optim.Adam, which casts its state to float32${note}`, (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'fastoptim-bf16-'))
  try {
    const { opt, w } = adam('bfloat16')
    saveStateDict(join(dir, 'opt.safetensors'), opt.stateDict())
    const code = `
import json, torch
from safetensors import safe_open
params = [torch.nn.Parameter(torch.zeros(1031)), torch.nn.Parameter(torch.zeros(7))]
opt = torch.optim.Adam(params, lr=1e-2)
with safe_open("opt.safetensors", "pt") as f:
    state = {}
    for key in f.keys():
        _, index, name = key.split(".", 2)
        state.setdefault(int(index), {})[name] = f.get_tensor(key)
    groups = json.loads(f.metadata()["param_groups"])
dtypes = sorted({str(t.dtype) for s in state.values() for t in s.values()})
opt.load_state_dict({"state": state, "param_groups": groups})
s = opt.state[params[0]]
print(json.dumps({"file": dtypes, "loaded": str(s["exp_avg"].dtype), "exp_avg": s["exp_avg"].tolist()}))
`
    const run = spawnSync('python3', ['-c', code], { cwd: dir, encoding: 'utf8' })
    t.is(run.status, 0, run.stderr)
    const got = JSON.parse(run.stdout.trim().split('\n').pop()!)
    t.deepEqual(got.file, ['torch.bfloat16', 'torch.float32'])
    t.is(got.loaded, 'torch.float32')
    t.deepEqual(got.exp_avg, Array.from(opt.getState(w)!.expAvg as unknown as Uint16Array, widen))
  } finally {
    rmSync(dir, { recursive: true, force: true })
  }
})
