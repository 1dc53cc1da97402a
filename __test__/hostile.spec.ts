// Hostile input, generated. fast-check builds inputs the way a hostile caller would (getters that
// answer one thing when checked and another when used, Proxies around arrays and objects, holes,
// frozen objects, transferred and shrunk buffers, calls back into the optimizer from a getter)
// and feeds them to every public entry point. Each call must either succeed, or throw an error
// with a Node-style `code` and leave everything as it was: parameters, grads, the optimizer's
// state and options (a deep snapshot before and after).
import { join } from 'node:path'
import { setFlagsFromString } from 'node:v8'
import { runInNewContext } from 'node:vm'

import test, { type ExecutionContext } from 'ava'
import fc from 'fast-check'

import {
  Adam,
  clipGradNorm,
  clipGradValue,
  CosineAnnealingWarmRestarts,
  CyclicLR,
  decodeSafetensors,
  encodeSafetensors,
  OneCycleLR,
  SGD,
  type Optimizer,
  type Parameter,
} from '../lib'
import { damaged } from './helpers/damage'

setFlagsFromString('--expose-gc')

type AnyOptimizer = Optimizer<object>

const CODES = new Set(['ERR_INVALID_ARG_TYPE', 'ERR_INVALID_ARG_VALUE', 'ERR_OUT_OF_RANGE', 'ERR_INVALID_STATE'])

/** ES2024's resizable ArrayBuffer (the ES2022 lib types do not have it). */
type Resizable = ArrayBuffer & { resize(byteLength: number): void }
const resizable = (byteLength: number) =>
  new (ArrayBuffer as unknown as new (n: number, o: { maxByteLength: number }) => Resizable)(byteLength, {
    maxByteLength: byteLength * 2,
  })

/** The kinds of bad (or odd) array a hostile caller hands over where a Float32Array of `n` belongs. */
const ARRAYS = [
  'good',
  'int32',
  'float64',
  'proxy',
  'transferred',
  'shrunk',
  'short',
  'plain array',
  'null',
  'string',
  'shared',
] as const
type ArrayKind = (typeof ARRAYS)[number]

function makeArray(kind: ArrayKind, n: number, value: number): unknown {
  switch (kind) {
    case 'good':
      return new Float32Array(n).fill(value)
    case 'int32':
      return new Int32Array(n).fill(value)
    case 'float64':
      return new Float64Array(n).fill(value)
    case 'proxy':
      return new Proxy(new Float32Array(n).fill(value), {})
    case 'transferred': {
      const array = new Float32Array(n).fill(value)
      structuredClone(array.buffer, { transfer: [array.buffer] })
      return array
    }
    case 'shrunk': {
      const array = new Float32Array(resizable(4 * n), 0, n).fill(value)
      ;(array.buffer as Resizable).resize(0)
      return array
    }
    case 'short':
      return new Float32Array(Math.max(0, n - 1)).fill(value)
    case 'plain array':
      return Array.from({ length: n }, () => value)
    case 'null':
      return null
    case 'string':
      return 'x'.repeat(n)
    case 'shared':
      return new Float32Array(new SharedArrayBuffer(4 * n)).fill(value)
  }
}

/** How a hostile value is presented: as it is, or behind a getter, a Proxy, or a re-entrant call. */
const PRESENTATIONS = ['plain', 'good then bad', 'bad then good', 'proxy object', 'frozen', 'reentrant'] as const
type Presentation = (typeof PRESENTATIONS)[number]

interface World {
  /** The optimizer under test (set once made), for re-entrant getters. */
  opt?: AnyOptimizer
  /** Every call a re-entrant getter made, with what it threw. */
  reentered: unknown[]
}

/** A getter's re-entrant call into the optimizer: whatever it throws is recorded and swallowed. */
function reenter(world: World, what: number) {
  const opt = world.opt
  if (!opt) return
  try {
    if (what === 0) opt.step()
    else if (what === 1) opt.zeroGrad()
    else if (what === 2) opt.loadStateDict(opt.stateDict())
    else opt.addParamGroup({ params: [] })
  } catch (error) {
    world.reentered.push(error)
  }
}

/** An object `{ [key]: good or bad }` presented as `how`. */
function present(world: World, how: Presentation, key: string, good: unknown, bad: unknown, rest: object) {
  switch (how) {
    case 'plain':
      return { ...rest, [key]: bad }
    case 'good then bad':
    case 'bad then good': {
      let reads = 0
      return Object.defineProperty({ ...rest }, key, {
        enumerable: true,
        get: () => ((reads++ === 0) === (how === 'good then bad') ? good : bad),
      })
    }
    case 'proxy object':
      return new Proxy({ ...rest, [key]: good }, { get: (target, k) => (k === key ? bad : Reflect.get(target, k)) })
    case 'frozen':
      return Object.freeze({ ...rest, [key]: bad })
    case 'reentrant': {
      let reads = 0
      return Object.defineProperty({ ...rest }, key, {
        enumerable: true,
        get: () => (reenter(world, reads++ % 4), good),
      })
    }
  }
}

/** Every typed array's values, the optimizer's state and options: what a refused call must not change. */
function snapshot(params: Parameter[], opt: AnyOptimizer | undefined): string {
  const arrays = params.flatMap((p) => [p.data, p.grad]).map((a) => (a ? Array.from(a) : null))
  const plain = (_: string, v: unknown) => (ArrayBuffer.isView(v) ? Array.from(v as Float32Array) : v)
  const options = opt?.paramGroups.map((g) => Object.entries(g).filter(([k]) => k !== 'params'))
  return JSON.stringify({ arrays, state: opt?.stateDict(), options }, plain)
}

/** Calls `act`; it must succeed, or throw a coded error leaving `snapshot()` as it was. */
function coded(t: ExecutionContext, before: string, after: () => string, act: () => unknown): boolean {
  try {
    act()
    return true
  } catch (error) {
    const code = (error as { code?: unknown }).code
    if (!CODES.has(code as string)) {
      t.log(error)
      return false
    }
    return after() === before
  }
}

async function codedAsync(t: ExecutionContext, before: string, after: () => string, act: () => Promise<unknown>) {
  try {
    await act()
    return true
  } catch (error) {
    if (!CODES.has((error as { code?: string }).code ?? '')) {
      t.log(error)
      return false
    }
    return after() === before
  }
}

/** Two good parameters, an Adam over them that has stepped once, and a world for re-entrant getters. */
function setup() {
  const a: Parameter = { data: new Float32Array(8).fill(1), grad: new Float32Array(8).fill(0.5) }
  const b: Parameter = { data: new Float32Array(5).fill(2), grad: new Float32Array(5).fill(0.25) }
  const world: World = { reentered: [] }
  const opt = new Adam([{ params: [a] }, { params: [b], lr: 0.01 }]) as unknown as AnyOptimizer
  opt.step()
  world.opt = opt
  return { a, b, world, opt }
}

const arrayKind = fc.constantFrom(...ARRAYS)
const presentation = fc.constantFrom(...PRESENTATIONS)
const runs = { numRuns: 150 }

test('step() and stepAsync() over a parameter whose data or grad is hostile: coded error and nothing changed, or success', async (t) => {
  await fc.assert(
    fc.asyncProperty(
      arrayKind,
      presentation,
      fc.constantFrom('data', 'grad'),
      fc.boolean(),
      async (kind, how, key, async) => {
        const { a, b, world, opt } = setup()
        const good = key === 'data' ? new Float32Array(5).fill(2) : new Float32Array(5).fill(0.25)
        const c = present(world, how, key, good, makeArray(kind, 5, 3), {
          [key === 'data' ? 'grad' : 'data']: key === 'data' ? new Float32Array(5) : new Float32Array(5),
        }) as Parameter
        // The hostile parameter joins through addParamGroup (which may refuse it: then it is not in).
        const before = snapshot([a, b], opt)
        const joined = coded(
          t,
          before,
          () => snapshot([a, b], opt),
          () => opt.addParamGroup({ params: [c] }),
        )
        if (!joined) return false
        const now = snapshot([a, b], opt)
        if (async)
          return codedAsync(
            t,
            now,
            () => snapshot([a, b], opt),
            () => opt.stepAsync(),
          )
        return coded(
          t,
          now,
          () => snapshot([a, b], opt),
          () => opt.step(),
        )
      },
    ),
    runs,
  )
  t.pass()
})

test('the constructor and addParamGroup() over hostile options, params lists and parameters', (t) => {
  const badOptions = fc.constantFrom<unknown>(-7, NaN, Infinity, 'x', null, [0.5], undefined)
  fc.assert(
    fc.property(presentation, badOptions, fc.integer({ min: 0, max: 4 }), (how, bad, shape) => {
      const { a, b, world, opt } = setup()
      // For the constructor, getters call into no optimizer (the new one cannot be reached yet).
      const group = (w: World) => {
        const param = { data: new Float32Array(3), grad: new Float32Array(3) }
        const lists: unknown[] = [
          [param, , { data: new Float32Array(2), grad: null }], // a hole
          new Proxy([param], {}),
          [param, param],
          Object.freeze([Object.freeze(param)]),
          [present(w, how, 'data', param.data, new Int32Array(3), { grad: null })],
        ]
        return present(w, how, 'lr', 0.5, bad, { params: lists[shape] }) as { params: unknown }
      }
      const before = snapshot([a, b], opt)
      const after = () => snapshot([a, b], opt)
      const added = coded(t, before, after, () => opt.addParamGroup(group(world) as never))
      const made = coded(t, before, after, () => {
        const { params, ...options } = group({ reentered: [] })
        return new SGD(params as never, options as never)
      })
      // An option checked as 0.5 and used as `bad` must not reach the optimizer.
      const lrs = opt.paramGroups.map((g) => (g as unknown as { lr: number }).lr)
      return added && made && lrs.every((lr) => typeof lr === 'number' && lr >= 0)
    }),
    runs,
  )
  t.pass()
})

test('zeroGrad() over frozen parameters, transferred, shrunk and Proxy grads: all cleared, or none', (t) => {
  fc.assert(
    fc.property(arrayKind, presentation, fc.boolean(), (kind, how, setToNone) => {
      const { a, b, world, opt } = setup()
      const c = present(world, how, 'grad', new Float32Array(4).fill(1), makeArray(kind, 4, 1), {
        data: new Float32Array(4),
      }) as Parameter
      const before = snapshot([a, b], opt)
      const joined = coded(
        t,
        before,
        () => snapshot([a, b], opt),
        () => opt.addParamGroup({ params: [c] }),
      )
      const now = snapshot([a, b], opt)
      const grads = () => [a.grad, b.grad]
      const was = grads()
      let cleared = false
      const ok = coded(
        t,
        now,
        () => snapshot([a, b], opt),
        () => {
          opt.zeroGrad(setToNone)
          cleared = true
        },
      )
      // Refused: a and b keep their very grads, values and all. Done: every grad is cleared.
      const kept = grads().every((g, i) => g === was[i])
      const done = setToNone ? grads().every((g) => g === null) : kept && was.every((g) => g!.every((x) => x === 0))
      return joined && ok && (cleared ? done : kept)
    }),
    runs,
  )
  t.pass()
})

test('loadStateDict() of hostile state dicts: getters, Proxies, holes, bad buffers, limits', (t) => {
  const damage = fc.constantFrom(
    'lr getter',
    'params hole',
    'buffer',
    'step 2^53',
    'step 2^53 - 1',
    'proxy',
    'inherited',
    'reentrant',
  )
  fc.assert(
    fc.property(damage, arrayKind, presentation, (what, kind, how) => {
      const { a, b, world, opt } = setup()
      const good = opt.stateDict() as unknown as { state: Record<number, object>; paramGroups: object[] }
      const groups = good.paramGroups.map((g) => ({ ...g }))
      let dict: unknown
      switch (what) {
        case 'lr getter':
          dict = { ...good, paramGroups: [present(world, how, 'lr', 0.5, -7, groups[0]), groups[1]] }
          break
        case 'params hole':
          dict = { ...good, paramGroups: [{ ...groups[0], params: [, 1] }, groups[1]] }
          break
        case 'buffer':
          dict = {
            ...good,
            state: {
              ...good.state,
              0: present(world, how, 'expAvg', new Float32Array(8), makeArray(kind, 8, 1), good.state[0]),
            },
          }
          break
        case 'step 2^53':
        case 'step 2^53 - 1':
          dict = {
            ...good,
            state: { ...good.state, 1: { ...good.state[1], step: what === 'step 2^53' ? 2 ** 53 : 2 ** 53 - 1 } },
          }
          break
        case 'proxy':
          dict = new Proxy(good, {})
          break
        case 'inherited':
          dict = Object.create(good)
          break
        case 'reentrant':
          dict = present(world, 'reentrant', 'state', good.state, good.state, { paramGroups: groups })
          break
      }
      const before = snapshot([a, b], opt)
      const after = () => snapshot([a, b], opt)
      if (!coded(t, before, after, () => opt.loadStateDict(dict as never))) return false
      // The options the optimizer holds are ones that were checked: never the getter's -7.
      if (opt.paramGroups.some((g) => (g as unknown as { lr: number }).lr < 0)) return false
      // A state at the largest step count round-trips, and stepping it on is refused, changing nothing.
      const now = snapshot([a, b], opt)
      return coded(t, now, after, () => opt.step()) && coded(t, now, after, () => opt.loadStateDict(opt.stateDict()))
    }),
    runs,
  )
  t.pass()
})

test('getState(), stateDict() and re-entrant calls from a step: coded, never the binding’s own borrow error', (t) => {
  fc.assert(
    fc.property(fc.integer({ min: 0, max: 3 }), (what) => {
      const { a, b, world, opt } = setup()
      let reads = 0
      const c = Object.defineProperty({ data: new Float32Array(2) }, 'grad', {
        enumerable: true,
        get: () => (reads++ > 0 && reenter(world, what), new Float32Array(2).fill(1)),
      }) as Parameter
      opt.addParamGroup({ params: [c] })
      world.reentered = []
      const before = snapshot([a, b], opt)
      const stepped = coded(
        t,
        before,
        () => snapshot([a, b], opt),
        () => opt.step(),
      )
      const codes = world.reentered.map((e) => (e as { code?: string }).code)
      return (
        stepped &&
        codes.length > 0 &&
        codes.every((code) => code === 'ERR_INVALID_STATE') &&
        coded(
          t,
          before,
          () => before,
          () => opt.getState(new Proxy(a, {})),
        ) &&
        coded(
          t,
          before,
          () => before,
          () => opt.getState(null as never),
        )
      )
    }),
    { numRuns: 20 },
  )
  t.pass()
})

test('encodeSafetensors() and decodeSafetensors(): hostile state dicts and damaged bytes give coded errors', (t) => {
  const { opt } = setup()
  const good = encodeSafetensors(opt.stateDict())
  fc.assert(
    fc.property(damaged(good), (bytes) =>
      coded(
        t,
        '',
        () => '',
        () => decodeSafetensors(bytes),
      ),
    ),
    { numRuns: 500 },
  )
  const values = fc.constantFrom<unknown>(
    null,
    'x',
    [1, 2],
    new Int32Array(2),
    new Float32Array(2),
    new Uint8Array(3),
    new Uint16Array(2),
    new BigInt64Array(1),
    makeArray('transferred', 2, 1),
    makeArray('shrunk', 2, 1),
    new Proxy(new Float32Array(2), {}),
    Infinity,
  )
  fc.assert(
    fc.property(values, presentation, (value, how) => {
      const dict = opt.stateDict()
      const world: World = { reentered: [] }
      const state = present(world, how, 'expAvg', new Float32Array(8), value, dict.state[0])
      const inputs = [
        { ...dict, state: { ...dict.state, 0: state } },
        { ...dict, paramGroups: [present(world, how, 'lr', 0.1, value, dict.paramGroups[0])] },
        value,
      ]
      return inputs.every((input) =>
        coded(
          t,
          '',
          () => '',
          () => {
            const bytes = encodeSafetensors(input as never)
            // What is written reads back.
            decodeSafetensors(bytes)
          },
        ),
      )
    }),
    runs,
  )
  t.throws(() => decodeSafetensors(null as never), { code: 'ERR_INVALID_ARG_TYPE' })
  t.throws(() => encodeSafetensors(null as never), { code: 'ERR_INVALID_ARG_TYPE' })
})

test('clipGradNorm() and clipGradValue() over hostile grads and lists', (t) => {
  fc.assert(
    fc.property(arrayKind, presentation, fc.constantFrom(1, -1, NaN, 'x'), (kind, how, limit) => {
      const world: World = { reentered: [] }
      const a: Parameter = { data: new Float32Array(4), grad: new Float32Array(4).fill(3) }
      const c = present(world, how, 'grad', new Float32Array(4), makeArray(kind, 4, 2), {
        data: new Float32Array(4),
      }) as Parameter
      const before = snapshot([a], undefined)
      const after = () => snapshot([a], undefined)
      return (
        coded(t, before, after, () => clipGradNorm([a, c], limit as number)) &&
        coded(t, after(), after, () => clipGradValue([a, c], limit as number))
      )
    }),
    runs,
  )
  t.pass()
})

test('OneCycleLR and CyclicLR refuse totals above 2^53 - 1 and non-finite bounds, changing nothing', (t) => {
  const oneCycle = (options: object) => (opt: AnyOptimizer) => new OneCycleLR(opt as never, { maxLr: 0.1, ...options })
  const cyclic = (options: object) => (opt: AnyOptimizer) =>
    new CyclicLR(opt as never, { baseLr: 1e-4, maxLr: 1e-3, ...options })
  fc.assert(
    fc.property(
      fc.constantFrom(
        oneCycle({ epochs: 2 ** 30, stepsPerEpoch: 2 ** 30 }),
        oneCycle({ totalSteps: 10, baseMomentum: NaN }),
        oneCycle({ totalSteps: 10, maxMomentum: Infinity }),
        oneCycle({ totalSteps: 10, baseMomentum: [-Infinity] }),
        cyclic({ baseLr: NaN }),
        cyclic({ maxLr: [0.1, -Infinity] }),
        cyclic({ baseMomentum: NaN }),
        cyclic({ maxMomentum: [Infinity, 0.9] }),
        cyclic({ stepSizeUp: 2 ** 53 }),
        cyclic({ gamma: -Infinity }),
      ),
      (build) => {
        const { a, b, opt } = setup()
        const before = snapshot([a, b], opt)
        let threw: unknown
        try {
          build(opt)
        } catch (error) {
          threw = error
        }
        return CODES.has((threw as { code?: string })?.code ?? '') && snapshot([a, b], opt) === before
      },
    ),
    // Enough runs that every one of the ten cases is all but sure to come up.
    { numRuns: 100 },
  )
  t.pass()
})

test('CosineAnnealingWarmRestarts refuses an epoch that is not a number from 0 to 2^53 - 1, changing nothing', (t) => {
  fc.assert(
    fc.property(
      fc.constantFrom<unknown>(NaN, -Infinity, Infinity, -1e-300, 2 ** 53, '1', null, { valueOf: () => 2 }),
      (epoch) => {
        const { a, b, opt } = setup()
        const sched = new CosineAnnealingWarmRestarts(opt as never, { t0: 3, tMult: 2 })
        sched.step(4.5)
        const state = () => snapshot([a, b], opt) + JSON.stringify(sched.stateDict())
        const before = state()
        return coded(t, before, state, () => sched.step(epoch as number)) && state() === before
      },
    ),
    { numRuns: 20 },
  )
  t.pass()
})

test('a step count of 2^53 - 1 round-trips, and the step that would pass it is refused, changing nothing', (t) => {
  const { a, b, opt } = setup()
  const dict = opt.stateDict()
  opt.loadStateDict({ ...dict, state: { ...dict.state, 1: { ...dict.state[1], step: 2 ** 53 - 1 } } } as never)
  const before = snapshot([a, b], opt)
  t.throws(() => opt.step(), { code: 'ERR_OUT_OF_RANGE', message: /2\^53 - 1 steps/ })
  t.is(snapshot([a, b], opt), before)
  opt.loadStateDict(opt.stateDict())
  t.is(opt.getState(b)!.step, 2 ** 53 - 1)
  t.throws(
    () => opt.loadStateDict({ ...dict, state: { ...dict.state, 1: { ...dict.state[1], step: 2 ** 53 } } } as never),
    {
      code: 'ERR_OUT_OF_RANGE',
    },
  )
})

test('an option read as 0.5 when checked and -7 after is loaded as 0.5, once read', (t) => {
  const { opt } = setup()
  const dict = opt.stateDict()
  let reads = 0
  const group = Object.defineProperty({ ...dict.paramGroups[0] }, 'lr', {
    enumerable: true,
    get: () => (reads++ === 0 ? 0.5 : -7),
  })
  opt.loadStateDict({ ...dict, paramGroups: [group, dict.paramGroups[1]] } as never)
  t.is((opt.paramGroups[0] as unknown as { lr: number }).lr, 0.5)
  t.is(reads, 1)
})

test('zeroGrad() over a frozen parameter after a good one clears neither', (t) => {
  const { a, b, opt } = setup()
  const frozen = Object.freeze({ data: new Float32Array(2), grad: new Float32Array(2).fill(1) })
  opt.addParamGroup({ params: [frozen] })
  const grads = [a.grad, b.grad]
  t.throws(() => opt.zeroGrad(), {
    code: 'ERR_INVALID_ARG_VALUE',
    message: /paramGroups\[2\]\.params\[0\]\.grad cannot be assigned/,
  })
  t.deepEqual([a.grad, b.grad], grads)
  const transferred = { data: new Float32Array(2), grad: new Float32Array(2).fill(1) }
  const { opt: other } = setup()
  other.addParamGroup({ params: [transferred] })
  a.grad!.fill(0.5)
  structuredClone(transferred.grad.buffer, { transfer: [transferred.grad.buffer] })
  t.throws(() => other.zeroGrad(false), { code: 'ERR_INVALID_STATE', message: /is detached/ })
  t.true(a.grad!.every((x) => x === 0.5))
})

test('a hole, a Proxy around a Float32Array, and null bytes give coded errors', (t) => {
  const p = { data: new Float32Array(2), grad: null }
  // eslint-disable-next-line no-sparse-arrays
  t.throws(() => new Adam([p, , { data: new Float32Array(2), grad: null }] as never), {
    code: 'ERR_INVALID_ARG_TYPE',
    message: /params\[1\] must be an object with data and grad, got undefined/,
  })
  t.throws(() => new Adam([{ data: new Proxy(new Float32Array(2), {}), grad: null }] as never), {
    code: 'ERR_INVALID_ARG_TYPE',
    message: /data must be a Float32Array or Float64Array, got an object that is not a Float32Array \(a Proxy/,
  })
  t.throws(() => encodeSafetensors(null as never), { code: 'ERR_INVALID_ARG_TYPE' })
})

/** The binding as a caller reaching it by file path sees it, with what these tests use of it. */
interface NativeStep {
  step(params: unknown, groupOf: Uint32Array, packed: Float64Array, seen?: unknown[], skip?: boolean): number
  exportState(index: number): { step: number; buffers: Array<Float32Array | null> } | null
  startStep(params: unknown, groupOf: Uint32Array, packed: Float64Array, skip?: boolean): number
  stepSlice(budgetMicros: number): boolean
  finishStep(): boolean
}
const binding = require(join(__dirname, '..', 'native', 'index.js')) as {
  NativeOptimizer: new (algorithm: string) => NativeStep
  algorithms(): Array<{ name: string; options: Array<{ default: number }> }>
  stepAgainOf(
    optimizer: NativeStep,
  ): (packedBuffer: ArrayBufferLike, skipNonFinite?: boolean, grads?: unknown) => number | undefined | null
  stepOffThread(optimizer: NativeStep): Promise<void>
  StartedStep: { InSlices: number; OffThread: number; Skipped: number }
}

test('a stepAsync on ordinary memory reached by file path cannot be handed to a worker thread', (t) => {
  const packed = Float64Array.from(binding.algorithms().find((a) => a.name === 'Adam')!.options, (o) => o.default)
  const opt = new binding.NativeOptimizer('Adam')
  const p = { data: new Float32Array(1 << 16).fill(1), grad: new Float32Array(1 << 16).fill(0.5) }
  t.is(opt.startStep([p], Uint32Array.of(0), packed, false), binding.StartedStep.InSlices)
  // A worker thread would write memory that JavaScript can detach and free meanwhile.
  t.throws(() => binding.stepOffThread(opt), { code: 'ERR_INVALID_STATE', message: /not all on SharedArrayBuffers/ })
  while (!opt.stepSlice(100));
  t.false(opt.finishStep())
  t.is(opt.exportState(0)!.step, 1)
})
const stepAgain = (opt: NativeStep, packed: Float64Array, skip: boolean) =>
  binding.stepAgainOf(opt)(packed.buffer, skip)

test('stepAgain reached by file path checks the arrays of the last step natively: null and nothing written', (t) => {
  const packed = Float64Array.from(binding.algorithms().find((a) => a.name === 'Adam')!.options, (o) => o.default)
  const plain = (_: string, v: unknown) => (ArrayBuffer.isView(v) ? Array.from(v as Float32Array) : v)
  const states = (opt: NativeStep) =>
    JSON.stringify(
      [0, 1].map((i) => opt.exportState(i)),
      plain,
    )
  /** A NativeOptimizer of the test's own that has stepped twice over two parameters (the second on a resizable buffer). */
  const make = (tracking = false) => {
    const buffer = resizable(16)
    const p = { data: Float32Array.of(1, 2), grad: Float32Array.of(0.5, -0.5) }
    const q = {
      data: tracking ? new Float32Array(buffer) : new Float32Array(buffer, 0, 4),
      grad: Float32Array.of(0.1, 0.2, 0.3, 0.4),
    }
    q.data.set([3, 4, 5, 6])
    const opt = new binding.NativeOptimizer('Adam')
    const seen: unknown[] = []
    opt.step([p, q], Uint32Array.of(0, 0), packed, seen, false)
    t.is(stepAgain(opt, packed, false), null, 'one step is not yet worth repeating')
    opt.step([p, q], Uint32Array.of(0, 0), packed, seen, false)
    t.is(stepAgain(opt, packed, false), undefined, 'an untouched step steps again (StepReport.Finite, as undefined)')
    return { opt, p, q, buffer }
  }
  const cases: Array<[string, (w: ReturnType<typeof make>) => ArrayBufferLike | undefined, boolean?]> = [
    ['data transferred', (w) => structuredClone(w.q.data.buffer, { transfer: [w.q.data.buffer] })],
    ['grad transferred', (w) => structuredClone(w.p.grad.buffer, { transfer: [w.p.grad.buffer] })],
    ['data shrunk below', (w) => (w.buffer.resize(8), undefined)],
    ['length-tracking data grown', (w) => (w.buffer.resize(24), undefined), true],
  ]
  for (const [what, act, tracking] of cases) {
    const w = make(tracking)
    const before = states(w.opt)
    const contents = [w.p.data, w.p.grad, w.q.data, w.q.grad].map((a) => Array.from(a))
    const moved = act(w)
    // What the transferred memory holds now, read through its new owner.
    const movedBefore = moved && Array.from(new Float32Array(moved))
    t.is(stepAgain(w.opt, packed, false), null, `${what}: nothing to step again`)
    t.is(states(w.opt), before, `${what}: the state is unchanged`)
    if (moved)
      t.deepEqual(Array.from(new Float32Array(moved)), movedBefore, `${what}: nothing written to the moved memory`)
    // Every array still readable (not detached, not out of bounds) holds what it held.
    const now = [w.p.data, w.p.grad, w.q.data, w.q.grad].map((a) => (a.length > 0 ? Array.from(a) : []))
    now.forEach((values, i) => {
      if (values.length === contents[i].length) t.deepEqual(values, contents[i], `${what}: array ${i} unchanged`)
    })
  }
  // Shrunk and grown back: the same memory again (V8 keeps a resizable buffer in place), so it steps.
  const w = make()
  w.buffer.resize(8)
  t.is(stepAgain(w.opt, packed, false), null)
  w.buffer.resize(16)
  const before = Array.from(w.q.data)
  t.is(stepAgain(w.opt, packed, false), undefined)
  t.notDeepEqual(Array.from(w.q.data), before)
  t.is(w.opt.exportState(1)!.step, 4)
  // Grown under a view of fixed length: the buffer is no longer as the step saw it, but the array
  // is (attached, in place, of its length), so it steps.
  const g = make()
  g.buffer.resize(24)
  const grown = Array.from(g.q.data)
  t.is(stepAgain(g.opt, packed, false), undefined)
  t.notDeepEqual(Array.from(g.q.data), grown)
  t.is(g.opt.exportState(1)!.step, 4)
})

test('stepAgain reports as step does: Finite as undefined, the others as numbers, skipping only when asked', (t) => {
  const packed = Float64Array.from(binding.algorithms().find((a) => a.name === 'Adam')!.options, (o) => o.default)
  const { StepReport } = require(join(__dirname, '..', 'native', 'index.js')) as {
    StepReport: { Finite: number; NonFinite: number; Skipped: number }
  }
  const p = { data: Float32Array.of(1, 2), grad: Float32Array.of(0.5, -0.5) }
  const opt = new binding.NativeOptimizer('Adam')
  const seen: unknown[] = []
  opt.step([p], Uint32Array.of(0), packed, seen, false)
  opt.step([p], Uint32Array.of(0), packed, seen, false)
  const again = binding.stepAgainOf(opt)
  // The options come as their ArrayBuffer: anything else is refused, changing nothing.
  const detached = new ArrayBuffer(packed.byteLength)
  structuredClone(detached, { transfer: [detached] })
  const wrong: Array<[string, unknown]> = [
    ['the Float64Array itself', packed],
    ['a SharedArrayBuffer', new SharedArrayBuffer(packed.byteLength)],
    ['a detached ArrayBuffer', detached],
    ['an ArrayBuffer of 12 bytes', new ArrayBuffer(12)],
    ['an empty ArrayBuffer', new ArrayBuffer(0)],
    ['a number', 3],
  ]
  for (const [what, value] of wrong) {
    const data = Array.from(p.data)
    t.throws(
      () => again(value as ArrayBuffer),
      {
        code: 'ERR_INVALID_ARG_TYPE',
        message: /^stepAgain: packed must be the ArrayBuffer of a Float64Array of the options, got /,
      },
      what,
    )
    t.deepEqual(Array.from(p.data), data, `${what}: nothing written`)
    t.is(opt.exportState(0)!.step, 2, `${what}: no step counted`)
  }
  const buffer = packed.buffer
  t.is(again(buffer), undefined)
  t.is(opt.exportState(0)!.step, 3)
  p.grad[1] = NaN
  const before = Array.from(p.data)
  // Skipping is asked by `true` alone: omitted, false or any other value steps.
  for (const skip of [undefined, false, 1, 'true']) {
    const steps = opt.exportState(0)!.step
    t.is(again(buffer, skip as boolean), StepReport.NonFinite, `skip ${String(skip)}`)
    t.is(opt.exportState(0)!.step, steps + 1)
  }
  const data = Array.from(p.data)
  t.notDeepEqual(data, before)
  t.is(again(buffer, true), StepReport.Skipped)
  t.deepEqual(Array.from(p.data), data, 'a skipped step writes nothing')
  t.is(opt.exportState(0)!.step, 7)
})

test('stepAgain with new gradients reached by file path: checked natively, getters run before, nothing written when refused', (t) => {
  const packed = Float64Array.from(binding.algorithms().find((a) => a.name === 'Adam')!.options, (o) => o.default)
  /** Two full reads of the same data (new gradients each time), so that the data is remembered. */
  const make = () => {
    const p = { data: Float32Array.of(1, 2, 3), grad: Float32Array.of(0.5, -0.5, 0.25) }
    const q = { data: Float32Array.of(4, 5), grad: Float32Array.of(1, 2) }
    const opt = new binding.NativeOptimizer('Adam')
    opt.step([p, q], Uint32Array.of(0, 0), packed, [], false)
    p.grad = Float32Array.from(p.grad)
    opt.step([p, q], Uint32Array.of(0, 0), packed, [], false)
    return { p, q, opt, again: binding.stepAgainOf(opt) }
  }
  // The numbers of a full read with the same gradients.
  const w = make()
  const r = make()
  const g = Float32Array.of(0.3, 0.2, 0.1)
  t.is(w.again(packed.buffer, undefined, [g, undefined]), undefined, 'stepped (Finite)')
  r.p.grad = Float32Array.from(g)
  r.opt.step([r.p, r.q], Uint32Array.of(0, 0), packed, [], false)
  t.deepEqual([Array.from(w.p.data), Array.from(w.q.data)], [Array.from(r.p.data), Array.from(r.q.data)])
  t.deepEqual(w.opt.exportState(0), r.opt.exportState(0))
  t.deepEqual(w.opt.exportState(1), r.opt.exportState(1))
  // Refused by a TypeError, changing nothing: grads that is not an array, or of another length.
  for (const [what, grads] of [
    ['a number', 3],
    ['an array of 1 for 2 parameters', [g]],
    ['an array of 3 for 2 parameters', [g, undefined, undefined]],
  ] as const) {
    const v = make()
    const before = [Array.from(v.p.data), Array.from(v.q.data)]
    t.throws(
      () => v.again(packed.buffer, undefined, grads),
      { code: 'ERR_INVALID_ARG_TYPE', message: /^stepAgain: grads/ },
      what,
    )
    t.deepEqual([Array.from(v.p.data), Array.from(v.q.data)], before, `${what}: nothing written`)
    t.is(v.opt.exportState(0)!.step, 2, `${what}: no step counted`)
  }
  // Answered null, changing nothing: a gradient that does not fit (the full read says why).
  const misfits: Array<[string, (v: ReturnType<typeof make>) => unknown[]]> = [
    ['too short', () => [Float32Array.of(1, 2), undefined]],
    ['a Float64Array', () => [Float64Array.of(1, 2, 3), undefined]],
    ['null', () => [null, undefined]],
    ['a plain array', () => [[1, 2, 3], undefined]],
    ['overlapping the other data', (v) => [undefined, v.p.data.subarray(0, 2)]],
    ['overlapping its own data', (v) => [v.p.data.subarray(0, 3), undefined]],
    [
      'detached',
      () => {
        const a = Float32Array.of(1, 2, 3)
        structuredClone(a.buffer, { transfer: [a.buffer] })
        return [a, undefined]
      },
    ],
    [
      'unchanged, but its array since detached',
      (v) => {
        structuredClone(v.p.grad.buffer, { transfer: [v.p.grad.buffer] })
        return [undefined, Float32Array.of(1, 1)]
      },
    ],
    [
      'a getter that detaches a data array',
      (v) => {
        const grads = [undefined, undefined]
        Object.defineProperty(grads, 0, {
          get: () => (structuredClone(v.q.data.buffer, { transfer: [v.q.data.buffer] }), Float32Array.of(1, 1, 1)),
        })
        return grads
      },
    ],
  ]
  for (const [what, grads] of misfits) {
    const v = make()
    const before = [Array.from(v.p.data), Array.from(v.q.data)]
    t.is(v.again(packed.buffer, undefined, grads(v)), null, what)
    // A detached array reads as empty; every other one holds what it held.
    const now = [v.p.data, v.q.data].map((a, i) => (a.length > 0 ? Array.from(a) : before[i]))
    t.deepEqual(now, before, `${what}: nothing written`)
    t.deepEqual([v.opt.exportState(0)!.step, v.opt.exportState(1)!.step], [2, 2], `${what}: no step counted`)
  }
  // A getter that steps the same optimizer runs before this call takes it: two steps, each whole.
  const v = make()
  const grads = [undefined, undefined]
  Object.defineProperty(grads, 1, { get: () => (v.again(packed.buffer), Float32Array.of(1, 1)) })
  t.is(v.again(packed.buffer, undefined, grads), undefined)
  t.deepEqual([v.opt.exportState(0)!.step, v.opt.exportState(1)!.step], [4, 4])
})

test('a bound stepAgain that outlives its optimizer refuses instead of touching freed memory', async (t) => {
  const packed = Float64Array.from(binding.algorithms().find((a) => a.name === 'Adam')!.options, (o) => o.default)
  const p = { data: Float32Array.of(1, 2), grad: Float32Array.of(0.5, -0.5) }
  const bind = () => {
    const opt = new binding.NativeOptimizer('Adam')
    const seen: unknown[] = []
    opt.step([p], Uint32Array.of(0), packed, seen, false)
    opt.step([p], Uint32Array.of(0), packed, seen, false)
    const again = binding.stepAgainOf(opt)
    t.is(again(packed.buffer, false), undefined, 'steps while its optimizer lives')
    return again
  }
  const again = bind()
  const gc = runInNewContext('gc') as () => void
  let refused: unknown
  let before: number[] = []
  for (let round = 0; round < 50 && refused === undefined; round++) {
    gc()
    await new Promise((resolve) => setImmediate(resolve))
    before = Array.from(p.data)
    try {
      again(packed.buffer, false)
    } catch (error) {
      refused = error
    }
  }
  t.like(refused, { code: 'ERR_INVALID_STATE', message: 'stepAgain: its optimizer was collected' })
  t.deepEqual(Array.from(p.data), before, 'the refused call wrote nothing')
  t.throws(() => binding.stepAgainOf({} as NativeStep), {
    code: 'ERR_INVALID_ARG_TYPE',
    message: 'stepAgainOf: optimizer must be a NativeOptimizer',
  })
})

/** The 8-bit optimizers' native class and bound step, as a caller reaching the binding by file path sees them. */
interface NativeEightBitStep {
  setLabels(labels: string[]): void
  exportState(index: number): { step: number } | null
  stepSlice(budgetMicros: number): boolean
  finishStep(): boolean
}
const eightBit = binding as unknown as {
  NativeEightBit: new (algorithm: string, min8BitSize: number) => NativeEightBitStep
  eightBitStepOf(optimizer: NativeEightBitStep): (...args: unknown[]) => unknown
  eightBitStartOf(optimizer: NativeEightBitStep): (...args: unknown[]) => unknown
  eightBitStepOffThread(optimizer: unknown): Promise<void>
}

test('the 8-bit step reached by file path refuses bad arguments, a getter cannot run in it, and it outlives its optimizer safely', async (t) => {
  const hyper = Float64Array.of(1e-3, 0.9, 0.999, 1e-8, 0)
  const make = () => {
    const opt = new eightBit.NativeEightBit('adam', 4096)
    opt.setLabels(['p'])
    return { opt, step: eightBit.eightBitStepOf(opt) }
  }
  const { opt, step } = make()
  const data = new Float32Array(8).fill(1)
  const grad = new Float32Array(8).fill(0.5)
  const refused: Array<[string, unknown[], Record<string, unknown>]> = [
    [
      'too few arguments',
      [hyper, data],
      {
        code: 'ERR_INVALID_ARG_VALUE',
        message:
          'step: expected 3 arguments (hyper, then data and grad for each of 1 parameters, then optionally skipNonFinite), got 2',
      },
    ],
    [
      'too many arguments',
      [hyper, data, grad, true, true],
      {
        code: 'ERR_INVALID_ARG_VALUE',
        message:
          'step: expected 3 arguments (hyper, then data and grad for each of 1 parameters, then optionally skipNonFinite), got 5',
      },
    ],
    [
      'hyper not a Float64Array',
      [Array.from(hyper), data, grad],
      { code: 'ERR_INVALID_ARG_TYPE', message: 'step: hyper must be a Float64Array, got an Array' },
    ],
    [
      'hyper of the wrong length',
      [hyper.subarray(0, 4), data, grad],
      { code: 'ERR_INVALID_ARG_VALUE', message: 'step: expected 5 options, got 4' },
    ],
    [
      'grad of another type',
      [hyper, data, new Int32Array(8)],
      { code: 'ERR_INVALID_ARG_TYPE', message: 'p.grad must be a Float32Array, got Int32Array' },
    ],
    // A Proxy's class name is not read: that would run its getter inside the step.
    [
      'data behind a Proxy',
      [hyper, new Proxy(data, { get: () => t.fail('a getter ran') }), grad],
      { code: 'ERR_INVALID_ARG_TYPE', message: 'p.data must be a Float32Array, got an object' },
    ],
    ['grad overlapping data', [hyper, data, data.subarray(0, 8)], { code: 'ERR_INVALID_ARG_VALUE' }],
  ]
  for (const [what, args, error] of refused) {
    t.throws(() => step(...args), error, what)
    t.is(opt.exportState(0), null, `${what}: nothing stepped`)
    t.deepEqual(Array.from(data), new Array(8).fill(1), `${what}: data unchanged`)
  }
  t.is(step(hyper, data, grad, true), 0, 'StepReport.Finite')
  t.is(opt.exportState(0)!.step, 1)
  t.throws(() => eightBit.eightBitStepOf({} as NativeEightBitStep), {
    code: 'ERR_INVALID_ARG_TYPE',
    message: 'eightBitStepOf: optimizer must be a NativeEightBit',
  })
  // The bound step keeps no optimizer alive, and once it is collected refuses.
  let bound: ((...args: unknown[]) => void) | undefined = make().step
  const gc = runInNewContext('gc') as () => void
  let error: unknown
  for (let round = 0; round < 50 && error === undefined; round++) {
    gc()
    await new Promise((resolve) => setImmediate(resolve))
    try {
      bound(hyper, data, grad)
    } catch (caught) {
      error = caught
    }
  }
  bound = undefined
  t.like(error, { code: 'ERR_INVALID_STATE', message: 'step: its optimizer was collected' })
})

test('the 8-bit stepAsync start reached by file path refuses bad arguments, and the calls that would touch a step in flight', (t) => {
  const hyper = Float64Array.of(1e-3, 0.9, 0.999, 1e-8, 0)
  const opt = new eightBit.NativeEightBit('adam', 16)
  opt.setLabels(['p'])
  const [start, step] = [eightBit.eightBitStartOf(opt), eightBit.eightBitStepOf(opt)]
  const data = new Float32Array(1 << 16).fill(1)
  const grad = new Float32Array(1 << 16).fill(0.5)
  const refused: Array<[string, unknown[], Record<string, unknown>]> = [
    [
      'too many arguments',
      [hyper, data, grad, true, true],
      {
        code: 'ERR_INVALID_ARG_VALUE',
        message:
          'stepAsync: expected 3 arguments (hyper, then data and grad for each of 1 parameters, then optionally skipNonFinite), got 5',
      },
    ],
    [
      'hyper not a Float64Array',
      [[1], data, grad],
      { code: 'ERR_INVALID_ARG_TYPE', message: 'stepAsync: hyper must be a Float64Array, got an Array' },
    ],
    [
      'data behind a Proxy',
      [hyper, new Proxy(data, { get: () => t.fail('a getter ran') }), grad],
      { code: 'ERR_INVALID_ARG_TYPE', message: 'p.data must be a Float32Array, got an object' },
    ],
    ['grad the same memory as data', [hyper, data, data], { code: 'ERR_INVALID_ARG_VALUE' }],
  ]
  for (const [what, args, error] of refused) {
    t.throws(() => start(...args), error, what)
    t.is(opt.exportState(0), null, `${what}: nothing started`)
  }
  t.throws(() => opt.stepSlice(500), { code: 'ERR_INVALID_STATE', message: 'stepSlice: no step is waiting to run' })
  t.throws(() => eightBit.eightBitStepOffThread(opt), { code: 'ERR_INVALID_STATE' })
  t.throws(() => eightBit.eightBitStartOf({} as NativeEightBitStep), {
    code: 'ERR_INVALID_ARG_TYPE',
    message: 'eightBitStartOf: optimizer must be a NativeEightBit',
  })
  t.throws(() => eightBit.eightBitStepOffThread({}), {
    code: 'ERR_INVALID_ARG_TYPE',
    message: 'eightBitStepOffThread: optimizer must be a NativeEightBit',
  })
  // Started on ordinary memory: the step runs in slices, and nothing else may touch the state.
  t.is(start(hyper, data, grad), binding.StartedStep.InSlices)
  const busy = { code: 'ERR_INVALID_STATE', message: /while stepAsync\(\) is in flight/ }
  t.throws(() => step(hyper, data, grad), busy)
  t.throws(() => start(hyper, data, grad), busy)
  t.throws(() => opt.exportState(0), busy)
  t.throws(() => opt.setLabels(['p', 'q']), busy)
  t.throws(() => eightBit.eightBitStepOffThread(opt), {
    code: 'ERR_INVALID_STATE',
    message: /not all on SharedArrayBuffers/,
  })
  while (!opt.stepSlice(100));
  t.false(opt.finishStep(), 'finite')
  t.is(opt.exportState(0)!.step, 1)
  t.is(step(hyper, data, grad), 0)
  t.is(opt.exportState(0)!.step, 2)
})

test('a resizable buffer shrunk below its parameter before the first step is refused, and steps once grown back', async (t) => {
  for (const key of ['data', 'grad'] as const) {
    for (const async of [false, true]) {
      const buffer = resizable(24)
      const shrinking = new Float32Array(buffer, 0, 6).fill(key === 'data' ? 1 : 0.5)
      const other = new Float32Array(6).fill(key === 'data' ? 0.5 : 1)
      const p: Parameter = key === 'data' ? { data: shrinking, grad: other } : { data: other, grad: shrinking }
      const q: Parameter = { data: Float32Array.of(1, 2), grad: Float32Array.of(0.1, 0.2) }
      const opt = new Adam([q, p])
      buffer.resize(0)
      // Everything but the shrunk array, which reads as nothing while it is out of bounds.
      const view = () =>
        JSON.stringify([q.data, q.grad, other, opt.stateDict()], (_, v) =>
          ArrayBuffer.isView(v) ? Array.from(v as Float32Array) : v,
        )
      const before = view()
      const refused = {
        code: 'ERR_INVALID_STATE',
        message: `paramGroups[0].params[1].${key} is out of bounds (its resizable ArrayBuffer shrank below it)`,
      }
      if (async) await t.throwsAsync(() => opt.stepAsync(), refused)
      else t.throws(() => opt.step(), refused)
      t.is(view(), before, 'nothing changed')
      t.is(opt.getState(p), undefined, 'no zero-length state was made')
      buffer.resize(24)
      t.true(async ? await opt.stepAsync() : opt.step())
      t.is(opt.getState(p)!.step, 1)
      t.is(opt.getState(q)!.step, 1)
      t.is(opt.getState(p)!.expAvg.length, 6)
    }
  }

  // Shrunk by a getter the step itself runs, after the array was read: refused as well.
  const buffer = resizable(16)
  const a: Parameter = { data: new Float32Array(buffer, 0, 4).fill(1), grad: new Float32Array(4).fill(0.5) }
  const bData = new Float32Array(3).fill(2)
  let shrink = false
  const b = {
    get data() {
      if (shrink) buffer.resize(0)
      return bData
    },
    grad: new Float32Array(3).fill(0.25),
  }
  const opt = new Adam([a, b as Parameter])
  shrink = true
  t.throws(() => opt.step(), {
    code: 'ERR_INVALID_STATE',
    message: 'paramGroups[0].params[0].data is out of bounds (its resizable ArrayBuffer shrank below it)',
  })
  t.is(opt.getState(a), undefined)
  t.is(opt.getState(b as Parameter), undefined)
  // A true empty array still steps, as in PyTorch: its count advances.
  const empty: Parameter = { data: new Float32Array(resizable(8), 8, 0), grad: new Float32Array(0) }
  const e = new Adam([empty])
  t.true(e.step())
  t.is(e.getState(empty)!.step, 1)
})
