// Schedule-Free AdamW and SGD against the schedulefree package's trajectories
// (__test__/fixtures/schedulefree.json, made by scripts/gen_fixtures_schedulefree.py): both dtypes,
// every option, two groups, skipped gradients, warmup and weight decay, with eval() and train()
// in the middle of each trajectory and the evaluation point checked; the final state of every
// parameter and group; the defaults against the package's signatures and initial group state;
// steps refused in eval mode; the modes and the group state through a checkpoint.
import { mkdtempSync, readFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'

import test from 'ava'

import {
  AdamWScheduleFree,
  loadStateDict,
  saveStateDict,
  SGDScheduleFree,
  type FloatArray,
  type Parameter,
  type ParamState,
} from '../lib'
import { type FixtureCase, loadCases, makeParams, maxRelativeError, maxUlps, feedGrads } from './helpers/fixtures'
import { checkTrajectories } from './helpers/torch-optim'

const file = 'schedulefree.json'
type Case = Omit<FixtureCase, 'steps'> & {
  steps: Array<FixtureCase['steps'][number] & { eval?: number[][]; train?: number[][] }>
  finalGroups: Array<Record<string, number | boolean>>
}
const cases = loadCases(file) as Case[]
const header = JSON.parse(readFileSync(join(__dirname, 'fixtures', file), 'utf8'))
const classes = { AdamWScheduleFree, SGDScheduleFree } as const
type Name = keyof typeof classes
type AnySchedule = AdamWScheduleFree | SGDScheduleFree

/** The tolerances: float32 within 1e-4 relative, float64 within 1e-10. */
const tolerance = (dtype: FixtureCase['dtype']) => (dtype === 'float32' ? 1e-4 : 1e-10)

function build(c: Case, params: Parameter[]): AnySchedule {
  const groups = c.groups.map((g) => ({ params: g.params.map((i) => params[i]), ...g.options }))
  return new classes[c.optimizer as Name](groups as never)
}

/** How many elements of `got` have exactly the bits of `want`, in `dtype`. */
function identical(got: ArrayLike<number>, want: ArrayLike<number>, dtype: FixtureCase['dtype']): number {
  const round = dtype === 'float32' ? Math.fround : (x: number) => x
  let count = 0
  for (let i = 0; i < want.length; i++) if (Object.is(got[i], round(want[i]))) count++
  return count
}

test('the fixture covers both optimizers and dtypes, two groups, skipped grads, warmup, decay, 20+ steps, every option and mid-run switches', (t) => {
  for (const name of Object.keys(classes)) {
    const mine = cases.filter((c) => c.optimizer === name)
    checkTrajectories(t, mine, name)
    // A switch to eval and back in the middle of every trajectory, and eval at the end.
    t.true(
      mine.every((c) => c.steps.slice(0, -1).some((s) => s.eval && s.train) && c.steps.at(-1)!.eval !== undefined),
      name,
    )
    const options = mine.flatMap((c) => c.groups.map((g) => g.options))
    for (const [key, value] of Object.entries(header.defaults[name])) {
      t.true(
        options.some((o) => JSON.stringify(o[key]) !== JSON.stringify(value)),
        `${name}: some case sets ${key} away from its default`,
      )
    }
  }
})

/** Largest relative error and elements bit-identical, per dtype, over every case and point. */
const tally: Record<FixtureCase['dtype'], { worst: number; elements: number; identical: number }> = {
  float32: { worst: 0, elements: 0, identical: 0 },
  float64: { worst: 0, elements: 0, identical: 0 },
}

for (const c of cases) {
  test(`matches schedulefree's ${c.optimizer}: ${c.name}`, (t) => {
    const params = makeParams(c)
    const opt = build(c, params)
    opt.train()
    let worstUlps = 0
    const compare = (want: number[][], what: string) => {
      params.forEach((p, i) => {
        const error = maxRelativeError(p.data, want[i])
        t.true(error <= tolerance(c.dtype), `${what}, param ${i}: relative error ${error}`)
        worstUlps = Math.max(worstUlps, maxUlps(p.data, want[i], c.dtype))
        tally[c.dtype].worst = Math.max(tally[c.dtype].worst, error)
        tally[c.dtype].elements += p.data.length
        tally[c.dtype].identical += identical(p.data, want[i], c.dtype)
      })
    }
    c.steps.forEach((step, s) => {
      feedGrads(c, params, s)
      opt.step()
      compare(step.params, `step ${s + 1}`)
      if (step.eval) {
        opt.eval()
        compare(step.eval, `eval() after step ${s + 1}`)
      }
      if (step.train) {
        opt.train()
        compare(step.train, `train() after step ${s + 1}`)
      }
    })
    c.finalState.forEach((want, i) => {
      const got = opt.getState(params[i])
      if (!want) return t.is(got, undefined, `param ${i} has no state in the package`)
      if (!got) return t.fail(`param ${i} has no state`)
      t.deepEqual(
        Object.keys(got).sort(),
        ['step', ...Object.keys(want)].sort(),
        `param ${i}: the package's state, and a step count`,
      )
      for (const [key, values] of Object.entries(want)) {
        const error = maxRelativeError((got as ParamState)[key] as FloatArray, values as number[])
        t.true(error <= tolerance(c.dtype), `param ${i} ${key}: relative error ${error}`)
      }
    })
    // The group state: every group took every step, whichever parameters had gradients.
    c.finalGroups.forEach((want, g) => {
      const got = opt.paramGroups[g] as unknown as Record<string, number | boolean>
      t.is(got.k, want.k, `group ${g} k`)
      t.is(got.trainMode, want.trainMode, `group ${g} trainMode`)
      for (const key of ['weightSum', 'lrMax', 'scheduledLr']) {
        t.true(
          Math.abs((got[key] as number) - (want[key] as number)) <= 1e-14 * Math.abs(want[key] as number),
          `group ${g} ${key}: ${got[key]} vs ${want[key]}`,
        )
      }
    })
    t.log(`largest difference from schedulefree over ${c.steps.length} steps and their switches: ${worstUlps} ulp`)
  })
}

test.after('agreement with schedulefree, per dtype', (t) => {
  for (const [dtype, { worst, elements, identical }] of Object.entries(tally)) {
    if (elements === 0) continue
    t.log(
      `${dtype}: largest relative error ${worst.toExponential(2)}; ${identical} of ${elements} elements bit-identical`,
    )
  }
})

test('defaults are the package’s signatures, and its initial group state', (t) => {
  for (const [name, Class] of Object.entries(classes)) {
    t.deepEqual({ ...Class.defaults }, { ...header.defaults[name], ...header.groupState[name] }, name)
    t.true(Object.isFrozen(Class.defaults), name)
  }
  const state = { k: 0, trainMode: false, weightSum: 0, lrMax: -1, scheduledLr: 0 }
  t.deepEqual(
    { ...AdamWScheduleFree.defaults },
    { lr: 0.0025, betas: [0.9, 0.999], eps: 1e-8, weightDecay: 0, warmupSteps: 0, r: 0, weightLrPower: 2, ...state },
  )
  t.deepEqual(
    { ...SGDScheduleFree.defaults },
    { lr: 1, momentum: 0.9, weightDecay: 0, warmupSteps: 0, r: 0, weightLrPower: 2, ...state },
  )
})

const param = (): Parameter => ({ data: Float64Array.of(1, -2, 3), grad: Float64Array.of(0.5, 0.25, -1) })
const snapshot = (opt: AnySchedule, params: Parameter[]) =>
  JSON.stringify({
    data: params.map((p) => Array.from(p.data)),
    state: params.map(
      (p) =>
        opt.getState(p) &&
        Object.entries(opt.getState(p)!).map(([k, v]) => [k, typeof v === 'number' ? v : Array.from(v)]),
    ),
    groups: opt.paramGroups.map((g) => ({ ...g, params: g.params.length })),
  })

for (const Class of [AdamWScheduleFree, SGDScheduleFree]) {
  test(`${Class.name}: a step in eval mode is refused with ERR_INVALID_STATE and changes nothing`, async (t) => {
    const params = [param(), param()]
    const opt = new Class([{ params: [params[0]] }, { params: [params[1]], lr: 0.1 }])
    const refused = (what: string, group: number) => ({
      instanceOf: Error,
      code: 'ERR_INVALID_STATE',
      message: `${what} was called in eval mode (paramGroups[${group}].trainMode is false): call train() before training steps, and eval() before evaluating or saving`,
    })
    // A new optimizer is in eval mode, as the package's is.
    let before = snapshot(opt, params)
    t.throws(() => opt.step(), refused('step()', 0))
    await t.throwsAsync(opt.stepAsync(), refused('stepAsync()', 0))
    t.is(snapshot(opt, params), before)

    opt.train()
    t.is(
      snapshot(opt, params).replace(/"trainMode":true/g, '"trainMode":false'),
      before,
      'train() before any step moves nothing',
    )
    opt.step()
    opt.eval()
    before = snapshot(opt, params)
    t.throws(() => opt.step(), refused('step()', 0))
    t.is(snapshot(opt, params), before)

    // A group added later starts in eval mode (the package's default): its steps wait for train().
    opt.train()
    const late = param()
    opt.addParamGroup({ params: [late] })
    t.throws(() => opt.step(), refused('step()', 2))
    opt.train()
    t.deepEqual(Array.from(late.data), [1, -2, 3], 'a parameter with no state does not move')
    t.true(opt.step())
    t.deepEqual(
      opt.paramGroups.map((g) => [g.k, g.trainMode]),
      [
        [2, true],
        [2, true],
        [1, true],
      ],
    )
  })

  test(`${Class.name}: eval() and train() move each parameter once, between y and x, and only where it has state`, (t) => {
    const params = [param(), param()]
    const opt = new Class([params[0], params[1]])
    opt.train()
    params[1].grad = null
    for (let s = 0; s < 3; s++) opt.step()
    const y = Array.from(params[0].data)
    const z = Array.from(opt.getState(params[0])!.z as FloatArray)
    const beta =
      opt instanceof AdamWScheduleFree ? opt.paramGroups[0].betas[0] : (opt as SGDScheduleFree).paramGroups[0].momentum
    opt.eval()
    const x = Array.from(params[0].data)
    x.forEach((xi, i) => t.true(Math.abs(xi - (y[i] - (1 - beta) * z[i]) / beta) < 1e-12, `x[${i}]`))
    opt.eval()
    t.deepEqual(Array.from(params[0].data), x, 'eval() in eval mode moves nothing')
    t.deepEqual(Array.from(params[1].data), [1, -2, 3], 'a parameter that never stepped stays')
    opt.train()
    Array.from(params[0].data).forEach((yi, i) => t.true(Math.abs(yi - y[i]) < 1e-12, `y[${i}]`))
    opt.train()
    Array.from(params[0].data).forEach((yi, i) => t.true(Math.abs(yi - y[i]) < 1e-12, `y[${i}] once`))
  })

  test(`${Class.name}: a checkpoint saved in eval mode resumes exactly, modes and group state included`, (t) => {
    const c = cases.find((x) => x.optimizer === Class.name && x.groups.length === 2 && x.dtype === 'float32')!
    const run = (from: number, to: number, opt: AnySchedule, params: Parameter[]) => {
      for (let s = from; s < to; s++) {
        feedGrads(c, params, s)
        opt.step()
      }
    }
    const straight = makeParams(c)
    const reference = build(c, straight)
    reference.train()
    run(0, 22, reference, straight)

    for (const form of ['object', 'safetensors'] as const) {
      const first = makeParams(c)
      const before = build(c, first)
      before.train()
      run(0, 9, before, first)
      before.eval() // as the package asks before saving: the parameters hold x
      let saved = before.stateDict()
      t.deepEqual(
        saved.paramGroups.map((g) => [g.k, g.trainMode]),
        [
          [9, false],
          [9, false],
        ],
      )
      if (form === 'safetensors') {
        const path = join(mkdtempSync(join(tmpdir(), 'fastoptim-')), 'state.safetensors')
        saveStateDict(path, saved)
        saved = loadStateDict(path) as typeof saved
      }
      const resumed = first.map((p) => ({ data: p.data.slice(), grad: null }))
      const after = build(c, resumed)
      after.loadStateDict(saved as never)
      t.deepEqual(
        after.paramGroups.map((g) => g.trainMode),
        [false, false],
        form,
      )
      t.throws(() => after.step(), { code: 'ERR_INVALID_STATE' })
      after.train()
      run(9, 22, after, resumed)
      resumed.forEach((p, i) => t.deepEqual(p.data, straight[i].data, `${form}: param ${i}`))
      t.deepEqual(after.stateDict(), reference.stateDict(), form)
    }
  })

  test(`${Class.name}: stepAsync gives step's numbers and group state; a skipped step advances nothing`, async (t) => {
    const make = () => {
      const params = [param(), param()]
      const opt = new Class([{ params: [params[0]] }, { params: [params[1]], lr: 0.05, warmupSteps: 3 }])
      opt.train()
      return { params, opt }
    }
    const sync = make()
    const async = make()
    for (let s = 0; s < 4; s++) {
      sync.opt.step()
      t.true(await async.opt.stepAsync())
    }
    const groupsOf = (opt: AnySchedule) => JSON.stringify(opt.paramGroups.map((g) => ({ ...g, params: undefined })))
    t.deepEqual(
      async.params.map((p) => Array.from(p.data)),
      sync.params.map((p) => Array.from(p.data)),
    )
    t.is(groupsOf(async.opt), groupsOf(sync.opt))
    t.is(sync.opt.paramGroups[1].k, 4)
    t.is(sync.opt.paramGroups[1].scheduledLr, 0.05)

    const groups = groupsOf(sync.opt)
    sync.params[0].grad = Float64Array.of(NaN, 0, 0)
    t.false(sync.opt.step({ skipNonFinite: true }))
    t.false(await sync.opt.stepAsync({ skipNonFinite: true }))
    t.is(groupsOf(sync.opt), groups, 'a skipped step leaves k and the sums')
    t.false(sync.opt.step())
    t.is(sync.opt.paramGroups[0].k, 5, 'a step that went ahead with a NaN counts')
    t.false(await sync.opt.stepAsync())
    t.is(sync.opt.paramGroups[0].k, 6, 'a stepAsync that went ahead with a NaN counts')
  })

  test(`${Class.name}: stepAsync advances only the group state; options set while it runs are kept`, async (t) => {
    const shared = () => {
      const data = new Float64Array(new SharedArrayBuffer(3 * 8))
      data.set([0.5, -1, 2])
      const grad = new Float64Array(new SharedArrayBuffer(3 * 8))
      grad.set([0.1, 0.2, -0.3])
      return { data, grad }
    }
    const opt = new Class([shared()], { lr: 0.01 })
    opt.train()
    const pending = opt.stepAsync()
    opt.paramGroups[0].lr = 0.02
    t.true(await pending)
    t.is(opt.paramGroups[0].k, 1)
    t.is(opt.paramGroups[0].lr, 0.02, 'the option set during the step')
    t.is(opt.paramGroups[0].scheduledLr, 0.01, "the schedule of the step's own options")
    const before = JSON.stringify(opt.paramGroups.map((g) => ({ ...g, params: undefined })))
    opt.paramGroups[0].warmupSteps = -1
    await t.throwsAsync(opt.stepAsync(), { code: 'ERR_OUT_OF_RANGE' })
    opt.paramGroups[0].warmupSteps = 0
    t.is(
      JSON.stringify(opt.paramGroups.map((g) => ({ ...g, params: undefined }))),
      before,
      'a refused step advances nothing',
    )
  })

  test(`${Class.name}: train() and eval() check the arrays first and change nothing on error`, (t) => {
    const params = [param(), param()]
    const opt = new Class([params[0], params[1]])
    opt.train()
    opt.step()
    params[1].data = new Float64Array(4)
    const before = snapshot(opt, params)
    t.throws(() => opt.eval(), {
      instanceOf: RangeError,
      code: 'ERR_OUT_OF_RANGE',
      message: 'paramGroups[0].params[1].data has length 4, but its optimizer state has length 3',
    })
    params[1].data = new Float32Array(3)
    t.throws(() => opt.eval(), {
      instanceOf: TypeError,
      code: 'ERR_INVALID_ARG_TYPE',
      message: 'paramGroups[0].params[1].data is a Float32Array, but its optimizer state is float64',
    })
    params[1].data = params[0].data.subarray(0)
    t.throws(() => opt.eval(), {
      instanceOf: TypeError,
      code: 'ERR_INVALID_ARG_VALUE',
      message: /^paramGroups\[0\]\.params\[0\]\.data and paramGroups\[0\]\.params\[1\]\.data share memory/,
    })
    params[1].data = new Float64Array(4)
    t.is(snapshot(opt, params), before)
    t.true(opt.paramGroups[0].trainMode)
  })

  test(`${Class.name}: train() and eval() refuse re-entrant calls and calls during stepAsync(), as every method does`, async (t) => {
    const params = [param(), param()]
    const opt = new Class([params[0], params[1]])
    opt.train()
    opt.step()
    // A getter on a parameter's data makes one call into the optimizer the next time it is read.
    const data = params[1].data
    let inner: (() => unknown) | undefined
    const refusals: unknown[] = []
    Object.defineProperty(params[1], 'data', {
      get() {
        const call = inner
        inner = undefined
        if (call) {
          try {
            call()
            refusals.push('not refused')
          } catch (error) {
            refusals.push(error)
          }
        }
        return data
      },
    })
    const cases: Array<[string, () => unknown, string, () => unknown]> = [
      ['eval()', () => opt.eval(), 'train()', () => opt.train()],
      ['train()', () => opt.train(), 'eval()', () => opt.eval()],
      ['step()', () => opt.step(), 'eval()', () => opt.eval()],
      // The getter runs before eval() switches the mode, so the step is refused as re-entrant.
      ['eval()', () => opt.eval(), 'step()', () => opt.step()],
      ['train()', () => opt.train(), 'train()', () => opt.train()],
      ['eval()', () => opt.eval(), 'zeroGrad()', () => opt.zeroGrad()],
    ]
    for (const [outerName, outer, innerName, call] of cases) {
      // A twin without the getter, in the same state, makes the outer call alone.
      const twins = params.map((p) => ({ data: Float64Array.from(p.data), grad: Float64Array.from(p.grad!) }))
      const twin = new Class(twins)
      twin.loadStateDict(opt.stateDict() as never)
      const method = outerName.slice(0, -2) as 'eval' | 'train' | 'step'
      twin[method]()
      refusals.length = 0
      inner = call
      outer()
      t.is(refusals.length, 1, `${innerName} during ${outerName} ran`)
      const error = refusals[0] as Error & { code?: string }
      t.is(error.code, 'ERR_INVALID_STATE', `${innerName} during ${outerName}`)
      t.is(error.message, `${innerName} was called from JavaScript run by ${outerName} of the same optimizer`)
      t.is(snapshot(opt, params), snapshot(twin, twins), `${outerName} did what it does alone`)
    }

    // While a stepAsync() is in flight: on SharedArrayBuffers the step runs on another thread, and
    // is still in flight when stepAsync() returns its promise.
    const onShared = (values: FloatArray) => {
      const shared = new Float64Array(new SharedArrayBuffer(values.byteLength))
      shared.set(values)
      return shared
    }
    const busy = new Class([param(), param()].map((p) => ({ data: onShared(p.data), grad: onShared(p.grad!) })))
    busy.train()
    const pending = busy.stepAsync()
    for (const [name, call] of [
      ['train()', () => busy.train()],
      ['eval()', () => busy.eval()],
    ] as const) {
      t.throws(call, {
        code: 'ERR_INVALID_STATE',
        message: `${name} was called while stepAsync() is in flight; await the promise stepAsync() returned first`,
      })
    }
    await pending
    busy.eval()
    t.false(busy.paramGroups[0].trainMode)
  })
}

test('bad options: β₁ and the momentum must be above 0, as leaving training divides by them', (t) => {
  const range = (message: string) => ({ instanceOf: RangeError, code: 'ERR_OUT_OF_RANGE', message })
  t.throws(
    () => new SGDScheduleFree([param()], { momentum: 0 }),
    range('invalid momentum: 0 (expected a finite momentum > 0) in options'),
  )
  t.throws(
    () => new SGDScheduleFree([param()], { momentum: 1 }),
    range('invalid momentum: 1 (expected 0 <= momentum < 1) in options'),
  )
  t.throws(
    () => new AdamWScheduleFree([param()], { betas: [0, 0.999] }),
    range('invalid betas[0]: 0 (expected a finite betas[0] > 0) in options'),
  )
  t.throws(
    () => new AdamWScheduleFree([param()], { warmupSteps: -1 }),
    range('invalid warmupSteps: -1 (expected a finite warmupSteps >= 0) in options'),
  )
  const opt = new AdamWScheduleFree([param()])
  opt.train()
  opt.paramGroups[0].k = -1
  t.throws(() => opt.step(), range('invalid k: -1 (expected a finite k >= 0) in paramGroups[0]'))
})
