// Weight averaging (EMA, SWA) and SWALR against PyTorch: fixtures/averaging.json and
// fixtures/averaging.safetensors were made by scripts/gen_fixtures_averaging.py with
// torch.optim.swa_utils (AveragedModel, get_ema_multi_avg_fn, SWALR).
import { mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'

import test from 'ava'
import fc from 'fast-check'

import { EMA, getNumThreads, setNumThreads, SGD, SWA, SWALR, type FloatArray, type Parameter } from '../lib'
import { damaged } from './helpers/damage'

interface AveragingCase {
  name: string
  strategy: 'EMA' | 'SWA'
  decay?: number
  dtype: 'float32' | 'float64'
  shapes: number[][]
  init: number[][]
  nAveraged: number
  steps: Array<{ params: number[][]; averaged: number[][] }>
}

interface SwalrCase {
  name: string
  groups: Array<{ lr: number }>
  args: { swaLr: number | number[]; annealEpochs: number; annealStrategy: 'cos' | 'linear' }
  steps: number[][]
}

const fixture = JSON.parse(readFileSync(join(__dirname, 'fixtures', 'averaging.json'), 'utf8')) as {
  cases: AveragingCase[]
  swalr: SwalrCase[]
  checkpoint: { decay: number; shapes: number[][]; fed: number[][][]; nAveraged: number; averaged: number[][] }
}

const arrayOf = (dtype: 'float32' | 'float64', values: number[]): FloatArray =>
  dtype === 'float32' ? Float32Array.from(values) : Float64Array.from(values)

function averager(c: AveragingCase, params: Array<{ data: FloatArray; shape: number[] }>): EMA | SWA {
  return c.strategy === 'EMA' ? new EMA(params, { decay: c.decay }) : new SWA(params)
}

/** Bits equal, or (tolerance > 0) within `tolerance` relative to the larger magnitude. */
function close(actual: ArrayLike<number>, expected: ArrayLike<number>, tolerance: number): string | undefined {
  if (actual.length !== expected.length) return `length ${actual.length}, expected ${expected.length}`
  for (let i = 0; i < actual.length; i++) {
    const [a, e] = [actual[i], expected[i]]
    if (Object.is(a, e)) continue
    if (Math.abs(a - e) <= tolerance * Math.max(Math.abs(a), Math.abs(e))) continue
    return `element ${i}: ${a}, expected ${e}`
  }
  return undefined
}

for (const c of fixture.cases) {
  test(`${c.name}: every update's averages equal PyTorch's AveragedModel bit for bit`, (t) => {
    const params = c.init.map((values, i) => ({ data: arrayOf(c.dtype, values), shape: c.shapes[i] }))
    const avg = averager(c, params)
    t.is(avg.nAveraged, 0)
    c.steps.forEach((step, k) => {
      step.params.forEach((values, i) => params[i].data.set(values))
      avg.update()
      avg.averaged().forEach((a, i) => {
        // PyTorch's float32 values, exactly representable: the comparison is on bits.
        const expected = arrayOf(c.dtype, step.averaged[i])
        t.is(close(a, expected, 0), undefined, `update ${k + 1}, parameter ${i}`)
      })
    })
    t.is(avg.nAveraged, c.nAveraged)
  })
}

test('results do not depend on the thread count (large tensors, cut into pieces)', (t) => {
  const before = getNumThreads()
  const run = (threads: number, make: (p: Parameter[]) => EMA | SWA) => {
    setNumThreads(threads)
    const params: Parameter[] = [300_001, 70_000, 5].map((n, j) => ({
      data: Float32Array.from({ length: n }, (_, i) => Math.sin(i * 0.37 + j)),
      grad: null,
    }))
    const avg = make(params)
    for (let k = 0; k < 5; k++) {
      params.forEach((p, j) => p.data.forEach((x, i) => (p.data[i] = x + Math.cos(i + k * 7 + j) * 0.1)))
      avg.update()
    }
    return avg.averaged()
  }
  try {
    for (const make of [(p: Parameter[]) => new EMA(p, { decay: 0.9 }), (p: Parameter[]) => new SWA(p)]) {
      const one = run(1, make)
      const two = run(2, make)
      const four = run(4, make)
      one.forEach((a, i) => {
        t.is(close(two[i], a, 0), undefined)
        t.is(close(four[i], a, 0), undefined)
      })
    }
  } finally {
    setNumThreads(before)
  }
})

test('swap() exchanges parameters and averages, withAveraged() swaps back, copyTo() copies', async (t) => {
  const p = { data: Float64Array.of(1, 2, 3), grad: null }
  const q = { data: Float32Array.of(10), grad: null }
  const ema = new EMA([p, q], { decay: 0.5 })
  ema.update() // copies: averages 1, 2, 3 and 10
  p.data.set([3, 4, 5])
  q.data.set([20])
  ema.update() // fma(0.5, p − a, p) from the nearer end: 2, 3, 4 and 15
  t.deepEqual([...ema.averaged()[0]], [2, 3, 4])
  ema.swap()
  t.true(ema.swapped)
  t.deepEqual([...p.data], [2, 3, 4])
  t.deepEqual([...q.data], [15])
  t.deepEqual([...ema.stateDict().averaged[0]], [2, 3, 4], 'stateDict gives the averages while swapped')
  for (const refusedCall of [() => ema.update(), () => ema.copyTo([new Float64Array(3), new Float32Array(1)])]) {
    const refused = t.throws(refusedCall)
    t.is((refused as Error & { code: string }).code, 'ERR_INVALID_STATE')
  }
  ema.swap()
  t.deepEqual([...p.data], [3, 4, 5])
  t.deepEqual([...q.data], [20])

  const seen = ema.withAveraged(() => [...p.data])
  t.deepEqual(seen, [2, 3, 4])
  t.deepEqual([...p.data], [3, 4, 5])
  const seenLater = await ema.withAveraged(async () => {
    await new Promise((resolve) => setImmediate(resolve))
    return q.data[0]
  })
  t.is(seenLater, 15)
  t.is(q.data[0], 20)
  t.throws(() =>
    ema.withAveraged(() => {
      throw new Error('evaluation failed')
    }),
  )
  t.false(ema.swapped)
  t.deepEqual([...p.data], [3, 4, 5])

  const target = [new Float64Array(3), { data: new Float32Array(1) }]
  ema.copyTo(target)
  t.deepEqual([...(target[0] as Float64Array)], [2, 3, 4])
  ema.copyTo()
  t.deepEqual([...p.data], [2, 3, 4])
})

test('stateDict and loadStateDict round-trip, and safetensors files too', (t) => {
  const make = () => [{ data: Float32Array.of(1, 2, 3, 4, 5, 6), shape: [2, 3] }, { data: Float64Array.of(7) }]
  const params = make()
  const swa = new SWA(params)
  for (let k = 0; k < 3; k++) {
    params[0].data.forEach((x, i) => (params[0].data[i] = x * 1.5 + i))
    params[1].data[0] += k
    swa.update()
  }
  const saved = swa.stateDict()
  const other = new SWA(make())
  other.loadStateDict(saved)
  t.deepEqual(other.stateDict(), saved)
  const dir = mkdtempSync(join(tmpdir(), 'fastoptim-averaging-'))
  try {
    swa.save(join(dir, 'swa.safetensors'))
    const third = new SWA(make())
    third.load(join(dir, 'swa.safetensors'))
    t.deepEqual(third.stateDict(), saved)
    // The header names and shapes are PyTorch's.
    const bytes = readFileSync(join(dir, 'swa.safetensors'))
    const header = JSON.parse(bytes.subarray(8, 8 + Number(bytes.readBigUInt64LE(0))).toString('utf8'))
    t.deepEqual(header.n_averaged.dtype, 'I64')
    t.deepEqual(header['module.0'].shape, [2, 3])
    t.deepEqual(header['module.1'].shape, [1])
  } finally {
    rmSync(dir, { recursive: true, force: true })
  }
})

test("PyTorch's AveragedModel checkpoint loads, and updates continue from it as PyTorch's would", (t) => {
  const c = fixture.checkpoint
  const params = c.shapes.map((shape) => ({ data: new Float32Array(shape.reduce((a, b) => a * b, 1)), shape }))
  const ema = new EMA(params, { decay: c.decay })
  ema.load(join(__dirname, 'fixtures', 'averaging.safetensors'))
  t.is(ema.nAveraged, c.nAveraged)
  ema.averaged().forEach((a, i) => t.is(close(a, Float32Array.from(c.averaged[i]), 0), undefined))
  // The same three updates made here give the same file's averages.
  const fresh = new EMA(params, { decay: c.decay })
  for (const fed of c.fed) {
    fed.forEach((values, i) => params[i].data.set(values))
    fresh.update()
  }
  t.deepEqual(fresh.stateDict(), ema.stateDict())
})

const codeOf = (t: { throws: (f: () => unknown) => unknown }, f: () => unknown) =>
  (t.throws(f) as (Error & { code?: string }) | undefined)?.code

test('bad input gets a coded error naming what is wrong, and changes nothing', (t) => {
  const p = { data: Float32Array.of(1, 2), grad: null }
  const ema = new EMA([p], { decay: 0.9 })
  ema.update()
  const before = ema.stateDict()
  const cases: Array<[string, () => unknown, string, RegExp]> = [
    ['decay above 1', () => new EMA([p], { decay: 1.5 }), 'ERR_OUT_OF_RANGE', /decay.*1\.5/],
    ['decay NaN', () => new EMA([p], { decay: NaN }), 'ERR_OUT_OF_RANGE', /decay/],
    ['decay a string', () => new EMA([p], { decay: '0.9' as never }), 'ERR_INVALID_ARG_TYPE', /decay/],
    ['decay null', () => new EMA([p], { decay: null as never }), 'ERR_INVALID_ARG_TYPE', /decay/],
    ['unknown option', () => new EMA([p], { beta: 0.9 } as never), 'ERR_INVALID_ARG_VALUE', /beta/],
    ['params not an array', () => new SWA(p as never), 'ERR_INVALID_ARG_TYPE', /params/],
    ['an Int32Array', () => new SWA([new Int32Array(2) as never]), 'ERR_INVALID_ARG_TYPE', /params\[0\]/],
    ['a shape that does not fit', () => new SWA([{ data: p.data, shape: [3] }]), 'ERR_OUT_OF_RANGE', /shape/],
    ['a negative shape', () => new SWA([{ data: new Float32Array(6), shape: [-2, -3] }]), 'ERR_OUT_OF_RANGE', /shape/],
    ['copyTo a wrong length', () => ema.copyTo([new Float32Array(3)]), 'ERR_OUT_OF_RANGE', /length 3/],
    ['copyTo a wrong dtype', () => ema.copyTo([new Float64Array(2)]), 'ERR_INVALID_ARG_TYPE', /Float64Array/],
    ['copyTo too many', () => ema.copyTo([p.data, p.data]), 'ERR_INVALID_ARG_VALUE', /2 parameters/],
    ['load a count', () => ema.loadStateDict({ nAveraged: -1, averaged: [p.data] }), 'ERR_OUT_OF_RANGE', /nAveraged/],
    [
      'load a wrong length',
      () => ema.loadStateDict({ nAveraged: 3, averaged: [new Float32Array(5)] }),
      'ERR_OUT_OF_RANGE',
      /averaged\[0\]/,
    ],
    [
      'load an unknown key',
      () => ema.loadStateDict({ ...before, extra: 1 } as never),
      'ERR_INVALID_ARG_VALUE',
      /extra/,
    ],
    ['load garbage bytes', () => ema.loadSafetensors(Uint8Array.of(1, 2, 3)), 'ERR_INVALID_ARG_VALUE', /not a valid/],
  ]
  for (const [name, f, code, message] of cases) {
    const error = t.throws(f, undefined, name) as Error & { code?: string }
    t.is(error?.code, code, name)
    t.regex(error?.message ?? '', message, name)
  }
  t.deepEqual(ema.stateDict(), before)
  t.deepEqual([...p.data], [1, 2])

  // A parameter whose array was transferred, or replaced by one of another length: refused whole.
  const q = { data: new Float32Array(2), grad: null }
  const swa = new SWA([p, q])
  swa.update()
  const kept = swa.stateDict()
  q.data = new Float32Array(4)
  t.is(
    codeOf(t, () => swa.update()),
    'ERR_OUT_OF_RANGE',
  )
  q.data = new Float32Array(2)
  structuredClone(q.data.buffer, { transfer: [q.data.buffer] })
  t.is(
    codeOf(t, () => swa.update()),
    'ERR_INVALID_STATE',
  )
  t.deepEqual(swa.stateDict(), kept)
  // Arrays written by swap() must not overlap.
  const shared = new Float32Array(4)
  const twins = new SWA([shared.subarray(0, 2), shared.subarray(1, 3)])
  t.is(
    codeOf(t, () => twins.swap()),
    'ERR_INVALID_ARG_VALUE',
  )
  t.false(twins.swapped)
})

for (const c of fixture.swalr) {
  test(`SWALR ${c.name}: every lr equals PyTorch's`, (t) => {
    const opt = new SGD(
      c.groups.map((g) => ({ params: [{ data: new Float64Array(1), grad: null }] as Parameter[], lr: g.lr })),
      { momentum: 0.9 },
    )
    const scheduler = new SWALR(opt, c.args)
    const lrs = [opt.paramGroups.map((g) => g.lr)]
    for (let k = 1; k < c.steps.length; k++) {
      scheduler.step()
      lrs.push(opt.paramGroups.map((g) => g.lr))
    }
    // Bit for bit (Math.cos agrees with Python's math.cos on every value these cases reach).
    lrs.forEach((row, k) => t.is(close(row, c.steps[k], 0), undefined, `step ${k}`))
    t.deepEqual(scheduler.getLastLr(), lrs[lrs.length - 1])
  })
}

test('SWALR checks its options, and its stateDict resumes the schedule', (t) => {
  const opt = new SGD([{ data: new Float64Array(1), grad: null }], { lr: 0.1 })
  const bad: Array<[object, string, RegExp]> = [
    [{}, 'ERR_INVALID_ARG_TYPE', /swaLr/],
    [{ swaLr: -1 }, 'ERR_OUT_OF_RANGE', /swaLr/],
    [{ swaLr: 0.1, annealEpochs: 1.5 }, 'ERR_OUT_OF_RANGE', /annealEpochs/],
    [{ swaLr: 0.1, annealStrategy: 'exp' }, 'ERR_INVALID_ARG_VALUE', /annealStrategy/],
    [{ swaLr: [0.1, 0.2] }, 'ERR_INVALID_ARG_VALUE', /swaLr/],
  ]
  for (const [options, code, message] of bad) {
    const error = t.throws(() => new SWALR(opt, options as never)) as Error & { code?: string }
    t.is(error?.code, code)
    t.regex(error?.message ?? '', message)
  }
  t.is(opt.paramGroups[0].lr, 0.1, 'a refused scheduler writes nothing')
  const a = new SWALR(opt, { swaLr: 0.01, annealEpochs: 20, annealStrategy: 'linear' })
  for (let k = 0; k < 7; k++) a.step()
  const saved = a.stateDict()
  t.is(saved.annealStrategy, 'linear')
  const opt2 = new SGD([{ data: new Float64Array(1), grad: null }], { lr: opt.paramGroups[0].lr })
  const b = new SWALR(opt2, { swaLr: 0.5 })
  b.loadStateDict(saved)
  for (let k = 0; k < 5; k++) {
    a.step()
    b.step()
    t.is(opt2.paramGroups[0].lr, opt.paramGroups[0].lr)
  }
})

test('weight-average checkpoints go through the binding codec: hostile bytes are refused coded, changing nothing', (t) => {
  const params = [{ data: Float32Array.of(1, 2, 3, 4, 5, 6), shape: [2, 3] }, { data: Float32Array.of(7) }]
  const ema = new EMA(params, { decay: 0.5 })
  ema.update()
  params[0].data[0] = 9
  ema.update()
  const good = ema.toSafetensors()
  const state = () =>
    JSON.stringify(ema.stateDict(), (_, v) => (ArrayBuffer.isView(v) ? Array.from(v as FloatArray) : v))
  const before = state()
  const codes = new Set(['ERR_INVALID_ARG_TYPE', 'ERR_INVALID_ARG_VALUE', 'ERR_OUT_OF_RANGE', 'ERR_INVALID_STATE'])
  // Damaged bytes: loaded (a change in the data only), or refused coded with nothing changed.
  fc.assert(
    fc.property(damaged(good), (bytes) => {
      try {
        ema.loadSafetensors(bytes)
      } catch (error) {
        const code = (error as { code?: string }).code ?? ''
        if (!codes.has(code)) t.log(error)
        return codes.has(code) && state() === before
      }
      ema.loadSafetensors(good)
      return state() === before
    }),
    { numRuns: 500 },
  )

  /** A safetensors file of `header` (JSON) and `data` bytes. */
  const file = (header: object, data: number[]) => {
    const json = Buffer.from(JSON.stringify(header))
    const out = new Uint8Array(8 + json.length + data.length)
    new DataView(out.buffer).setBigUint64(0, BigInt(json.length), true)
    out.set(json, 8)
    out.set(data, 8 + json.length)
    return out
  }
  const i64 = (n: bigint) => [...new Uint8Array(BigInt64Array.of(n).buffer)]
  const f32 = (...values: number[]) => [...new Uint8Array(Float32Array.from(values).buffer)]
  const tensor = (dtype: string, shape: number[], from: number, to: number) => ({
    dtype,
    shape,
    data_offsets: [from, to],
  })
  const modules = { 'module.0': tensor('F32', [2, 3], 8, 32), 'module.1': tensor('F32', [1], 32, 36) }
  const data = [...i64(2n), ...f32(1, 2, 3, 4, 5, 6), ...f32(7)]
  const cases: Array<[string, unknown, string, RegExp]> = [
    ['a string', 'bytes', 'ERR_INVALID_ARG_TYPE', /must be a Uint8Array, got a string/],
    ['a plain array', [...good], 'ERR_INVALID_ARG_TYPE', /must be a Uint8Array/],
    ['an Int32Array', new Int32Array(good.buffer.slice(0, 8)), 'ERR_INVALID_ARG_TYPE', /must be a Uint8Array/],
    ['null', null, 'ERR_INVALID_ARG_TYPE', /must be a Uint8Array, got null/],
    ['three bytes', Uint8Array.of(1, 2, 3), 'ERR_INVALID_ARG_VALUE', /^not a valid weight-average checkpoint: 3 bytes/],
    [
      'an optimizer checkpoint name',
      file({ n_averaged: tensor('I64', [], 0, 8), 'state.0.exp_avg': tensor('F32', [1], 8, 12) }, [
        ...i64(1n),
        ...f32(1),
      ]),
      'ERR_INVALID_ARG_VALUE',
      /tensor "state\.0\.exp_avg" is not named n_averaged or module\.<n>/,
    ],
    [
      'a second spelling of a position',
      file(
        { n_averaged: tensor('I64', [], 0, 8), 'module.0': modules['module.0'], 'module.01': modules['module.1'] },
        data,
      ),
      'ERR_INVALID_ARG_VALUE',
      /"module\.01" is not named/,
    ],
    [
      'offsets running backwards',
      file(
        {
          n_averaged: tensor('I64', [], 0, 8),
          'module.0': tensor('F32', [2, 3], 32, 8),
          'module.1': modules['module.1'],
        },
        data,
      ),
      'ERR_INVALID_ARG_VALUE',
      /do not fit/,
    ],
    [
      'n_averaged of shape [1]',
      file({ n_averaged: tensor('I64', [1], 0, 8), ...modules }, data),
      'ERR_INVALID_ARG_VALUE',
      /n_averaged has shape \[1\] \(expected a scalar\)/,
    ],
    [
      'n_averaged beyond 2^53',
      file({ n_averaged: tensor('I64', [], 0, 8), ...modules }, [...i64(2n ** 60n), ...data.slice(8)]),
      'ERR_INVALID_ARG_VALUE',
      /n_averaged is 1152921504606846976, beyond the integers a number holds exactly/,
    ],
    [
      'a module of integers',
      file(
        {
          n_averaged: tensor('I64', [], 0, 8),
          'module.0': tensor('I32', [2, 3], 8, 32),
          'module.1': modules['module.1'],
        },
        data,
      ),
      'ERR_INVALID_ARG_VALUE',
      /module\.0 has dtype I32 \(expected F32 or F64\)/,
    ],
    [
      'a module missing',
      file({ n_averaged: tensor('I64', [], 0, 8) }, i64(2n)),
      'ERR_INVALID_ARG_VALUE',
      /module\.0 is missing/,
    ],
  ]
  for (const [what, bytes, code, message] of cases) {
    t.throws(() => ema.loadSafetensors(bytes as Uint8Array), { code, message }, what)
    t.is(state(), before, `${what}: nothing changed`)
  }
  // The well-formed file those cases damage loads.
  ema.loadSafetensors(file({ n_averaged: tensor('I64', [], 0, 8), ...modules }, data))
  t.is(ema.nAveraged, 2)
  t.deepEqual(Array.from(ema.averaged()[0]), [1, 2, 3, 4, 5, 6])
})
