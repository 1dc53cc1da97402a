// Adam8bit, AdamW8bit and Lion8bit against bitsandbytes 0.50's CPU backend
// (__test__/fixtures/eightbit.json and checkpoints/adam8bit-bnb.safetensors, made by
// scripts/gen_fixtures_eightbit.py): trajectories, codes after the first step, the maps,
// checkpoints both ways, state bytes, and bad options and bad checkpoints refused, changing nothing.
//
// Tolerances. The update does bitsandbytes' float32 operations in its order, with PyTorch's
// rounding (its vectorised `add` with alpha and `addcmul` are fused multiply-adds), and codes come
// from bitsandbytes' quantizer's own steps, so after one step every parameter, code and absmax
// equals bitsandbytes'. Over 15 steps a last-bit difference can still arise where PyTorch's kernels
// round a tensor's scalar tail differently, and one before a requantization moves a code by one;
// the issue asks trajectories within 0.1% of bitsandbytes' (distance between the two, over the
// distance moved), where fp32 Adam lands 0.7-1.2% away (fixture). We test 1e-4, ten times tighter,
// and that at least 99% of codes are equal after the last step.
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'

import test from 'ava'

import {
  Adam8bit,
  AdamW8bit,
  decodeSafetensors,
  encodeSafetensors,
  Lion8bit,
  loadStateDict,
  type EightBitState,
  type Parameter,
} from '../lib'

interface Snapshot {
  params: string[]
  state: Array<Record<string, string | number>>
}
interface Case {
  name: string
  optimizer: 'Adam8bit' | 'AdamW8bit' | 'Lion8bit'
  options: Record<string, unknown>
  seed: number
  sizes: number[]
  steps: number
  fp32Distance: number | null
  first: Snapshot
  final: Snapshot
}
const fixture = JSON.parse(readFileSync(join(__dirname, 'fixtures', 'eightbit.json'), 'utf8'))
const cases: Case[] = fixture.cases
const classes = { Adam8bit, AdamW8bit, Lion8bit }

/** scripts/gen_fixtures_eightbit.py's `series`: a 32-bit xorshift, k/2^23 − 1 times 2^exponent. */
function series(seed: number, n: number, exponent: number): Float32Array {
  let x = Math.imul(seed, 2654435761) >>> 0 || 1
  const out = new Float32Array(n)
  for (let i = 0; i < n; i++) {
    x = (x ^ (x << 13)) >>> 0
    x = (x ^ (x >>> 17)) >>> 0
    x = (x ^ (x << 5)) >>> 0
    out[i] = (((x >>> 8) - 2 ** 23) / 2 ** 23) * 2 ** exponent
  }
  return out
}
const gradExponent = (step: number) => -3 - ((step * 7) % 3)
const gradsFor = (seed: number, step: number, sizes: number[]) =>
  sizes.map((n, i) => series(1000 * seed + 100 * step + i, n, gradExponent(step)))
const paramsFor = (seed: number, sizes: number[]): Parameter<Float32Array>[] =>
  sizes.map((n, i) => ({ data: series(seed + i, n, 0), grad: null }))

/** The bits of a float32 as an integer, so that neighbours differ by 1. */
const bitsOf = (x: number) => new Int32Array(Float32Array.of(x).buffer)[0]
const bytes = (b64: string) => new Uint8Array(Buffer.from(b64, 'base64'))
const floats = (b64: string) => {
  const raw = bytes(b64)
  return new Float32Array(raw.buffer, raw.byteOffset, raw.byteLength / 4)
}
const toB64 = (a: ArrayBufferView) => Buffer.from(a.buffer, a.byteOffset, a.byteLength).toString('base64')

/** ‖a − b‖ / ‖b − start‖ over all tensors. */
function distance(got: Float32Array[], want: Float32Array[], start: Float32Array[]): number {
  let diff = 0
  let moved = 0
  got.forEach((g, t) => {
    for (let i = 0; i < g.length; i++) {
      diff += (g[i] - want[t][i]) ** 2
      moved += (want[t][i] - start[t][i]) ** 2
    }
  })
  return Math.sqrt(diff / moved)
}

function run(c: Case, steps: number) {
  const params = paramsFor(c.seed, c.sizes)
  const opt = new classes[c.optimizer](params, c.options as never)
  for (let step = 1; step <= steps; step++) {
    gradsFor(c.seed, step, c.sizes).forEach((g, i) => (params[i].grad = g))
    opt.step()
  }
  return { params, opt }
}

test('the maps are bitsandbytes\u2019 create_dynamic_map, bit for bit', (t) => {
  const params = paramsFor(1, [5000])
  const opt = new Adam8bit(params)
  params[0].grad = gradsFor(1, 1, [5000])[0]
  opt.step()
  const state = opt.getState(params[0])!
  for (const [key, name] of [
    ['qmap1', 'signed'],
    ['qmap2', 'unsigned'],
  ] as const) {
    const theirs = floats(fixture.qmaps[name])
    const ours = state[key]!
    t.is(ours.length, 256)
    t.deepEqual(Array.from(ours), Array.from(theirs))
  }
})

for (const c of cases) {
  test(`${c.name}: the first step gives bitsandbytes\u2019 codes and absmax exactly, and its parameters`, (t) => {
    const { params, opt } = run(c, 1)
    params.forEach((p, i) => {
      // Bit for bit, but for a few elements in the cases with weight decay (6 of
      // 13,095 in adam8bit-decay and adamw8bit, one ulp of the update apart, 2 of the result after
      // cancellation; the decayed parameter is multiplied and updated as
      // bitsandbytes does, and where its last bit comes from is still open).
      const want = floats(c.first.params[i])
      let identical = 0
      for (let k = 0; k < want.length; k++) {
        if (Object.is(p.data[k], want[k])) identical++
        else t.true(Math.abs(bitsOf(p.data[k]) - bitsOf(want[k])) <= 4, `parameter ${i}[${k}]: more than 4 ulps apart`)
      }
      t.true(identical >= 0.999 * want.length, `parameter ${i}: ${identical} of ${want.length} identical`)
      const state = opt.getState(p)!
      const theirs = c.first.state[i]
      t.is(state.step, theirs.step as number)
      for (const key of ['state1', 'state2', 'absmax1', 'absmax2'] as const) {
        if (theirs[key] === undefined) {
          t.is(state[key], undefined)
          continue
        }
        const ours = state[key]!
        const want = ours instanceof Uint8Array ? bytes(theirs[key] as string) : floats(theirs[key] as string)
        t.deepEqual(Array.from(ours), Array.from(want), `${key} of parameter ${i}`)
      }
    })
  })

  test(`${c.name}: ${c.steps} steps land within 1e-4 of bitsandbytes\u2019 trajectory, codes equal`, (t) => {
    const { params, opt } = run(c, c.steps)
    const want = c.final.params.map(floats)
    const start = paramsFor(c.seed, c.sizes).map((p) => p.data as Float32Array)
    const d = distance(
      params.map((p) => p.data as Float32Array),
      want,
      start,
    )
    t.log(
      `${c.name}: ${(d * 100).toExponential(2)}% away from bitsandbytes (fp32 Adam: ${c.fp32Distance === null ? 'n/a' : `${(c.fp32Distance * 100).toFixed(2)}%`})`,
    )
    t.true(d <= 1e-4, `distance ${d}`)
    params.forEach((p, i) => {
      const state = opt.getState(p)!
      const theirs = c.final.state[i]
      t.is(state.step, c.steps)
      for (const key of ['state1', 'state2'] as const) {
        if (theirs[key] === undefined) continue
        const ours = state[key]!
        if (ours instanceof Uint8Array) {
          const codes = bytes(theirs[key] as string)
          const equal = codes.filter((code, k) => code === ours[k]).length
          t.true(equal >= 0.99 * codes.length, `${key} of parameter ${i}: ${equal} of ${codes.length} codes equal`)
        }
      }
    })
  })
}

test('fp32 Adam is 1% or more away from bitsandbytes\u2019 8-bit trajectory: the target is meaningful', (t) => {
  const distances = cases.flatMap((c) => (c.fp32Distance === null ? [] : [c.fp32Distance]))
  t.true(distances.length >= 3)
  t.true(distances.every((d) => d > 1e-3))
})

test('a bitsandbytes checkpoint loads and continues as bitsandbytes continues it', (t) => {
  const ck = fixture.checkpoint
  const dict = loadStateDict(join(__dirname, 'fixtures', 'checkpoints', 'adam8bit-bnb.safetensors'))
  const params: Parameter<Float32Array>[] = ck.paramsAtSave.map((p: string) => ({
    data: floats(p).slice(),
    grad: null,
  }))
  const opt = new Adam8bit(params)
  opt.loadStateDict(dict)
  t.deepEqual(opt.paramGroups[0].betas, ck.options.betas)
  t.is(opt.paramGroups[0].weightDecay, ck.options.weightDecay)
  for (let step = ck.before + 1; step <= ck.before + ck.after; step++) {
    gradsFor(ck.seed, step, ck.sizes).forEach((g: Float32Array, i: number) => (params[i].grad = g))
    opt.step()
  }
  const want = ck.final.params.map(floats)
  const start = ck.paramsAtSave.map(floats)
  const d = distance(
    params.map((p) => p.data as Float32Array),
    want,
    start,
  )
  t.log(`continued from bitsandbytes' checkpoint: ${d.toExponential(2)} of the distance moved away`)
  t.true(d <= 1e-4)
})

test('a checkpoint written here has bitsandbytes\u2019 names, dtypes and sizes', (t) => {
  const ck = fixture.checkpoint
  const params: Parameter<Float32Array>[] = ck.paramsAtSave.map((p: string) => ({
    data: floats(p).slice(),
    grad: null,
  }))
  const opt = new Adam8bit(params, { lr: ck.options.lr, betas: ck.options.betas, weightDecay: ck.options.weightDecay })
  gradsFor(ck.seed, 1, ck.sizes).forEach((g, i) => (params[i].grad = g))
  opt.step()
  const ours = decodeSafetensors(encodeSafetensors(opt.stateDict()))
  const theirs = loadStateDict(join(__dirname, 'fixtures', 'checkpoints', 'adam8bit-bnb.safetensors'))
  const shape = (d: typeof ours) =>
    Object.fromEntries(
      Object.entries(d.state).map(([id, s]) => [
        id,
        Object.fromEntries(
          Object.entries(s).map(([k, v]) => [
            k,
            typeof v === 'number' ? 'number' : `${v.constructor.name}(${v.length})`,
          ]),
        ),
      ]),
    )
  t.deepEqual(shape(ours), shape(theirs))
})

test('a checkpoint written here continues in bitsandbytes (file for scripts/gen_fixtures_eightbit.py --continue)', (t) => {
  // The Python side cannot run in the tests: this writes the file and its expected result, and
  // checks that reloading it here continues bit for bit; `--continue` replays it in bitsandbytes.
  const ck = fixture.checkpoint
  const params: Parameter<Float32Array>[] = ck.paramsAtSave.map((p: string) => ({
    data: floats(p).slice(),
    grad: null,
  }))
  const opt = new Adam8bit(params, { lr: ck.options.lr, betas: ck.options.betas, weightDecay: ck.options.weightDecay })
  for (let step = 1; step <= ck.before; step++) {
    gradsFor(ck.seed + 1, step, ck.sizes).forEach((g, i) => (params[i].grad = g))
    opt.step()
  }
  const dir = mkdtempSync(join(tmpdir(), 'eightbit-'))
  const file = join(dir, 'adam8bit-fastoptim.safetensors')
  writeFileSync(file, encodeSafetensors(opt.stateDict()))
  const paramsAtSave = params.map((p) => toB64(p.data.slice()))
  const copies: Parameter<Float32Array>[] = params.map((p) => ({ data: p.data.slice(), grad: null }))
  const reloaded = new Adam8bit(copies)
  reloaded.loadStateDict(loadStateDict(file))
  for (let step = ck.before + 1; step <= ck.before + ck.after; step++) {
    const grads = gradsFor(ck.seed, step, ck.sizes)
    grads.forEach((g, i) => ((params[i].grad = g), (copies[i].grad = g)))
    opt.step()
    reloaded.step()
  }
  params.forEach((p, i) => t.deepEqual(Array.from(copies[i].data), Array.from(p.data)))
  writeFileSync(
    `${file}.json`,
    JSON.stringify({
      sizes: ck.sizes,
      seed: ck.seed,
      before: ck.before,
      after: ck.after,
      paramsAtSave,
      finalParams: params.map((p) => toB64(p.data)),
    }),
  )
  t.log(`python3 scripts/gen_fixtures_eightbit.py --continue ${file}`)
})

test('an 8-bit tensor keeps at most 2.1 bytes of state per parameter in its stateDict', (t) => {
  for (const [Class, n] of [
    [Adam8bit, 1 << 16],
    [AdamW8bit, 4097],
    [Lion8bit, 1 << 16],
  ] as const) {
    const params = [{ data: series(3, n, 0), grad: series(4, n, -4) }]
    const opt = new Class(params)
    opt.step()
    const state = opt.stateDict().state[0]
    const stateBytes = Object.entries(state)
      .filter(([key]) => !key.startsWith('qmap') && key !== 'step')
      .reduce((sum, [, v]) => sum + (v as ArrayBufferView).byteLength, 0)
    t.true(stateBytes / n <= 2.1, `${Class.name}: ${stateBytes / n} bytes per parameter`)
    t.is(opt.stateBytes(params[0]), stateBytes)
  }
})

test('tensors under minEightBitSize keep float32 state, as bitsandbytes', (t) => {
  const params = [
    { data: series(1, 4095, 0), grad: series(2, 4095, -3) },
    { data: series(3, 4096, 0), grad: series(4, 4096, -3) },
  ]
  const opt = new Adam8bit(params)
  opt.step()
  const small = opt.getState(params[0])!
  const big = opt.getState(params[1])!
  t.true(small.state1 instanceof Float32Array && small.absmax1 === undefined && small.qmap1 === undefined)
  t.true(big.state1 instanceof Uint8Array && big.absmax1!.length === 16 && big.qmap2!.length === 256)
  const all8 = new Adam8bit([{ data: series(1, 10, 0), grad: series(2, 10, -3) }], { minEightBitSize: 0 })
  all8.step()
  t.true(all8.stateDict().state[0].state1 instanceof Uint8Array)
})

test('group lr is read at every step (schedulers set it)', (t) => {
  const params = [{ data: new Float32Array(5000).fill(1), grad: new Float32Array(5000).fill(0.5) }]
  const opt = new Lion8bit(params, { lr: 0.1 })
  opt.step()
  t.is(params[0].data[0], Math.fround(1 - 0.1))
  opt.paramGroups[0].lr = 0.25
  opt.step()
  t.is(params[0].data[0], Math.fround(Math.fround(1 - 0.1) - 0.25))
})

test('each group steps with its own options, as the same parameters alone under those options', (t) => {
  const sizes = [5000, 300, 4100]
  const fresh = () => sizes.map((n, i) => ({ data: series(10 + i, n, 0), grad: series(20 + i, n, -3) }))
  const options = [
    { lr: 0.01, betas: [0.8, 0.95] as [number, number], eps: 1e-6, weightDecay: 0.1 },
    { lr: 0.002, betas: [0.5, 0.9] as [number, number], eps: 1e-3, weightDecay: 0 },
  ]
  for (const Class of [Adam8bit, AdamW8bit, Lion8bit]) {
    const lion = Class === Lion8bit
    const pick = (o: (typeof options)[number]) => (lion ? { lr: o.lr, betas: o.betas, weightDecay: o.weightDecay } : o)
    const grouped = fresh()
    const opt = new Class([
      { params: grouped.slice(0, 2), ...pick(options[0]) },
      { params: [] },
      { params: grouped.slice(2), ...pick(options[1]) },
    ])
    const alone = fresh()
    const first = new Class(alone.slice(0, 2), pick(options[0]))
    const second = new Class(alone.slice(2), pick(options[1]))
    for (let step = 0; step < 3; step++) {
      opt.step()
      first.step()
      second.step()
    }
    grouped.forEach((p, i) => t.deepEqual(p.data, alone[i].data, `${Class.name} params[${i}]`))
  }
})

test('parameters whose arrays share memory are refused natively, naming both, and change nothing', (t) => {
  const buffer = new Float32Array(12000)
  const a = { data: buffer.subarray(0, 5000), grad: series(2, 5000, -3) }
  const b = { data: series(3, 5000, 0), grad: series(4, 5000, -3) }
  const opt = new Adam8bit([{ params: [a] }, { params: [b] }])
  opt.step()
  const before = [a.data.slice(), b.data.slice()]
  const state = opt.stateDict()
  b.data = buffer.subarray(4999, 9999)
  t.throws(() => opt.step(), {
    code: 'ERR_INVALID_ARG_VALUE',
    message:
      /^paramGroups\[0\]\.params\[0\]\.data and paramGroups\[1\]\.params\[0\]\.data share memory; a parameter's data must not overlap any other array of the step$/,
  })
  b.data = before[1].slice()
  a.grad = new Float32Array(buffer.buffer, 4, 5000)
  t.throws(() => opt.step(), {
    code: 'ERR_INVALID_ARG_VALUE',
    message: /^paramGroups\[0\]\.params\[0\]\.data and paramGroups\[0\]\.params\[0\]\.grad share memory/,
  })
  t.deepEqual(a.data, before[0])
  t.deepEqual(opt.stateDict().state, state.state)
})

test('options bitsandbytes has but these do not implement are refused with a coded error', (t) => {
  const params = () => [{ data: new Float32Array(8), grad: null }]
  for (const [options, code, pattern] of [
    [{ amsgrad: true }, 'ERR_INVALID_ARG_VALUE', /amsgrad is true, which Adam8bit does not support/],
    [{ optimBits: 8 }, 'ERR_INVALID_ARG_VALUE', /optimBits is 8/],
    [{ isPaged: true }, 'ERR_INVALID_ARG_VALUE', /isPaged/],
    [{ percentileClipping: 5 }, 'ERR_INVALID_ARG_VALUE', /percentileClipping is not an option of Adam8bit/],
    [{ blockWise: false }, 'ERR_INVALID_ARG_VALUE', /blockWise is not an option/],
    [{ betas: [0.9, 1] }, 'ERR_OUT_OF_RANGE', /invalid beta parameter at index 1: 1/],
    [{ lr: -1 }, 'ERR_OUT_OF_RANGE', /invalid lr: -1/],
    [{ minEightBitSize: 1.5 }, 'ERR_OUT_OF_RANGE', /invalid minEightBitSize: 1.5/],
  ] as const) {
    t.throws(() => new Adam8bit(params(), options as never), { code, message: pattern }, JSON.stringify(options))
  }
  t.throws(() => new Lion8bit(params(), { eps: 1e-8 } as never), {
    code: 'ERR_INVALID_ARG_VALUE',
    message: /eps is not an option of Lion8bit/,
  })
})

test('a step refuses a group option changed to a bad value, naming the group, and changes nothing', (t) => {
  const first = { data: series(1, 5000, 0), grad: series(2, 5000, -3) }
  const second = { data: series(3, 300, 0), grad: series(4, 300, -3) }
  for (const [key, value, code, message] of [
    ['lr', -1, 'ERR_OUT_OF_RANGE', 'invalid lr: -1 (expected a finite number >= 0) in paramGroups[1]'],
    ['lr', '0.1', 'ERR_INVALID_ARG_TYPE', 'paramGroups[1].lr must be a number, got a string'],
    ['betas', [0.9], 'ERR_INVALID_ARG_TYPE', /^paramGroups\[1\]\.betas must be an array of two numbers/],
    ['betas', new Float64Array([0.9, 0.99]), 'ERR_INVALID_ARG_TYPE', /^paramGroups\[1\]\.betas must be an array/],
    ['betas', [0.9, 1], 'ERR_OUT_OF_RANGE', /^invalid beta parameter at index 1: 1 .* in paramGroups\[1\]$/],
    ['eps', Number.NaN, 'ERR_OUT_OF_RANGE', 'invalid eps: NaN (expected a finite number >= 0) in paramGroups[1]'],
    ['weightDecay', Infinity, 'ERR_OUT_OF_RANGE', /^invalid weightDecay: Infinity .* in paramGroups\[1\]$/],
  ] as const) {
    const opt = new Adam8bit([{ params: [first] }, { params: [second] }])
    opt.step()
    const [a, b] = [first.data.slice(), second.data.slice()]
    const state = opt.getState(first)!.step
    ;(opt.paramGroups[1] as unknown as Record<string, unknown>)[key] = value
    t.throws(() => opt.step(), { code, message }, `${key} = ${String(value)}`)
    t.deepEqual([first.data, second.data], [a, b])
    t.is(opt.getState(first)!.step, state)
  }
})

test("a step reads a group's betas once: their length, then each element", (t) => {
  const param = { data: series(1, 300, 0), grad: series(2, 300, -3) }
  const opt = new Adam8bit([param])
  const reads: string[] = []
  const betas = new Proxy([0.9, 0.999], {
    get: (target, key, receiver) => {
      if (typeof key === 'string') reads.push(key)
      return Reflect.get(target, key, receiver) as unknown
    },
  })
  opt.paramGroups[0].betas = betas as unknown as [number, number]
  opt.step()
  t.deepEqual(reads, ['length', '0', '1'])
  t.is(opt.getState(param)!.step, 1)
})

test('Float64Array parameters are refused, naming the parameter', (t) => {
  t.throws(
    () => new Adam8bit([{ data: new Float32Array(4), grad: null }, { data: new Float64Array(4), grad: null } as never]),
    {
      code: 'ERR_INVALID_ARG_TYPE',
      message: 'paramGroups[0].params[1].data is a Float64Array: Adam8bit takes Float32Array parameters only',
    },
  )
  const param = { data: new Float32Array(4), grad: new Float64Array(4) as unknown as Float32Array }
  const opt = new Adam8bit([param])
  t.throws(() => opt.step(), {
    code: 'ERR_INVALID_ARG_TYPE',
    message: /paramGroups\[0\].params\[0\].grad must be a Float32Array/,
  })
})

test('a step with one bad input changes nothing', (t) => {
  const good = { data: series(1, 5000, 0), grad: series(2, 5000, -3) }
  const bad = { data: new Float32Array(10), grad: new Float32Array(9) }
  const opt = new Adam8bit([good, bad])
  const before = good.data.slice()
  t.throws(() => opt.step(), { code: 'ERR_OUT_OF_RANGE' })
  t.deepEqual(good.data, before)
  t.is(opt.getState(good), undefined)
})

/** An Adam8bit stepped 3 times over an 8-bit tensor and a small one, and its stateDict. */
function stepped() {
  const params = [
    { data: series(1, 5000, 0), grad: series(2, 5000, -3) },
    { data: series(3, 100, 0), grad: series(4, 100, -3) },
  ]
  const opt = new Adam8bit(params)
  for (let i = 0; i < 3; i++) opt.step()
  return { params, opt, dict: opt.stateDict() }
}

const corrupt: Array<[string, (s: Record<string, EightBitState>) => void, string, RegExp]> = [
  [
    'codes too short',
    (s) => (s[0].state1 = new Uint8Array(4999)),
    'ERR_OUT_OF_RANGE',
    /state\[0\].state1 has length 4999, expected 5000/,
  ],
  [
    'codes as float32',
    (s) => (s[0].state2 = new Float32Array(5000)),
    'ERR_INVALID_ARG_TYPE',
    /state\[0\].state2 must be a Uint8Array/,
  ],
  [
    'absmax too long',
    (s) => (s[0].absmax1 = new Float32Array(21)),
    'ERR_OUT_OF_RANGE',
    /absmax1 has length 21, expected 20/,
  ],
  [
    'absmax as float64',
    (s) => (s[0].absmax2 = new Float64Array(20) as never),
    'ERR_INVALID_ARG_TYPE',
    /absmax2 must be a Float32Array/,
  ],
  ['absmax missing', (s) => delete s[0].absmax1, 'ERR_INVALID_ARG_TYPE', /absmax1 must be a Float32Array/],
  ['map of 255', (s) => (s[0].qmap1 = new Float32Array(255)), 'ERR_OUT_OF_RANGE', /qmap1 has length 255, expected 256/],
  [
    'another map',
    (s) => (s[0].qmap2 = s[0].qmap1!.slice()),
    'ERR_INVALID_ARG_VALUE',
    /qmap2 is not bitsandbytes' dynamic map/,
  ],
  [
    '8-bit state for a small tensor',
    (s) => (s[1].state1 = new Uint8Array(100)),
    'ERR_INVALID_ARG_TYPE',
    /state\[1\].state1 must be a Float32Array \(float32 state/,
  ],
  [
    'absmax for a small tensor',
    (s) => (s[1].absmax1 = new Float32Array(1)),
    'ERR_INVALID_ARG_VALUE',
    /absmax1 is given, but a parameter of 100 elements/,
  ],
  [
    'unknown name',
    (s) => ((s[0] as unknown as Record<string, unknown>).expAvg = new Float32Array(5000)),
    'ERR_INVALID_ARG_VALUE',
    /expAvg is not state of Adam8bit/,
  ],
]

for (const [what, change, code, message] of corrupt) {
  test(`a checkpoint with ${what} is refused and changes nothing`, (t) => {
    const { params, opt, dict } = stepped()
    const before = opt.stateDict()
    const groups = JSON.stringify(opt.paramGroups.map(({ params: _, ...o }) => o))
    const broken = decodeSafetensors(encodeSafetensors(dict)) as unknown as {
      state: Record<string, EightBitState>
      paramGroups: Array<Record<string, unknown>>
    }
    broken.paramGroups[0].lr = 0.5
    change(broken.state)
    t.throws(() => opt.loadStateDict(broken), { code, message })
    t.deepEqual(opt.stateDict(), before)
    t.is(JSON.stringify(opt.paramGroups.map(({ params: _, ...o }) => o)), groups)
    t.truthy(params)
  })
}

test('stateDict round-trips through safetensors and continues bit for bit', (t) => {
  const { params, opt, dict } = stepped()
  const copies = params.map((p) => ({ data: p.data.slice(), grad: p.grad }))
  const other = new Adam8bit(copies)
  other.loadStateDict(decodeSafetensors(encodeSafetensors(dict)))
  opt.step()
  other.step()
  params.forEach((p, i) => t.deepEqual(copies[i].data, p.data))
  t.deepEqual(other.stateDict(), opt.stateDict())
})

test('zeroGrad clears or zero-fills gradients', (t) => {
  const params = [{ data: new Float32Array(4), grad: new Float32Array([1, 2, 3, 4]) as Float32Array | null }]
  const opt = new AdamW8bit(params)
  opt.zeroGrad(false)
  t.deepEqual(Array.from(params[0].grad!), [0, 0, 0, 0])
  opt.zeroGrad()
  t.is(params[0].grad, null)
})

test('step() reports a NaN or ±∞ in any gradient, and updates as bitsandbytes does', (t) => {
  // An 8-bit tensor (several units of 4096 elements, a partial last block) and a float32-state one.
  const sizes = [3 * 4096 + 100, 600]
  for (const Optimizer of [Adam8bit, Lion8bit]) {
    for (const bad of [Number.NaN, Infinity, -Infinity]) {
      for (const [p, at] of [
        [0, 0],
        [0, 5000],
        [0, sizes[0] - 1],
        [1, 0],
        [1, 599],
      ]) {
        const params = sizes.map((n, j) => ({
          data: Float32Array.from({ length: n }, (_, i) => Math.sin(i + j)),
          grad: Float32Array.from({ length: n }, (_, i) => Math.cos(i * 0.7 + j) * 0.01),
        }))
        const opt = new Optimizer(params)
        t.true(opt.step(), 'finite gradients')
        params[p].grad[at] = bad
        t.false(opt.step(), `${Optimizer.name}: ${bad} at parameter ${p}, element ${at}`)
        t.is(opt.getState(params[p])?.step, 2, 'the update went ahead')
        params[p].grad[at] = 0
        // The largest finite values are not reported.
        params[p].grad[at] = 3.4028234663852886e38
        params[1 - p].grad[0] = -3.4028234663852886e38
        t.true(new Optimizer(params).step())
      }
    }
  }
})

test('step({ skipNonFinite: true }) skips the whole step when a gradient is not finite, changing nothing', (t) => {
  const params = [4096 * 2, 300].map((n, j) => ({
    data: Float32Array.from({ length: n }, (_, i) => Math.sin(i + j)),
    grad: Float32Array.from({ length: n }, (_, i) => Math.cos(i * 0.7 + j) * 0.01),
  }))
  const opt = new AdamW8bit(params)
  t.true(opt.step({ skipNonFinite: true }))
  const before = { data: params.map((p) => p.data.slice()), dict: JSON.stringify(Object.values(opt.stateDict())) }
  params[1].grad[299] = Number.NaN
  t.false(opt.step({ skipNonFinite: true }))
  t.deepEqual(
    params.map((p) => p.data),
    before.data,
  )
  t.is(JSON.stringify(Object.values(opt.stateDict())), before.dict)
  t.is(opt.getState(params[0])?.step, 1)
  // A first step that is skipped makes no state.
  const fresh = [{ data: new Float32Array(5000), grad: new Float32Array(5000).fill(Infinity) }]
  const other = new Adam8bit(fresh)
  t.false(other.step({ skipNonFinite: true }))
  t.is(other.getState(fresh[0]), undefined)
  t.throws(() => other.step({ skipNonFinite: 1 } as never), {
    code: 'ERR_INVALID_ARG_TYPE',
    message: 'step: options.skipNonFinite must be a boolean, got a number',
  })
  t.throws(() => other.step({ skip: true } as never), { code: 'ERR_INVALID_ARG_VALUE' })
})
