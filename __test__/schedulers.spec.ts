// Learning-rate schedulers against PyTorch: the sequences in fixtures/schedulers.json were made by
// scripts/gen_fixtures_schedulers.py with torch.optim.lr_scheduler over a real torch optimizer.
import { readFileSync } from 'node:fs'
import { join } from 'node:path'

import test from 'ava'

import {
  Adagrad,
  Adam,
  ChainedScheduler,
  ConstantLR,
  CosineAnnealingLR,
  CosineAnnealingWarmRestarts,
  CyclicLR,
  ExponentialLR,
  LambdaLR,
  LinearLR,
  MultiplicativeLR,
  MultiStepLR,
  OneCycleLR,
  PolynomialLR,
  ReduceLROnPlateau,
  SequentialLR,
  SGD,
  StepLR,
  type LRScheduler,
  type LrLambda,
  type Parameter,
} from '../lib'

interface SchedulerSpec {
  scheduler: string
  args: Record<string, unknown>
}

interface Case extends SchedulerSpec {
  name: string
  optimizer: 'SGD' | 'Adam'
  groups: Array<Record<string, unknown>>
  steps: number
  resumeAfter?: number
  metrics?: number[]
  /** CosineAnnealingWarmRestarts: each step's `step(epoch)`, or null for `step()`. */
  epochs?: Array<number | null>
  lrs: number[][]
  momentums?: number[][]
}

const fixture = JSON.parse(readFileSync(join(__dirname, 'fixtures', 'schedulers.json'), 'utf8')) as {
  lambdas: Record<string, string>
  cases: Case[]
}

/** The fixture's lambdas (their Python source is in the fixture), written in JavaScript. */
const LAMBDAS: Record<string, LrLambda> = {
  exp095: (epoch) => 0.95 ** epoch,
  stair30: (epoch) => Math.floor(epoch / 30),
  warmup10: (epoch) => Math.min(1.0, (epoch + 1) / 10),
  inverse: (epoch) => 1 / (1 + 0.1 * epoch),
  constant095: () => 0.95,
  slowdown: (epoch) => 1 - 0.002 * epoch,
}

test('the fixture lambdas are the ones written here', (t) => {
  t.deepEqual(Object.keys(fixture.lambdas).sort(), Object.keys(LAMBDAS).sort())
})

type AnyOptimizer = SGD | Adam
type Scheduler = LRScheduler | ReduceLROnPlateau

const CLASSES = {
  StepLR,
  MultiStepLR,
  ExponentialLR,
  CosineAnnealingLR,
  LinearLR,
  LambdaLR,
  OneCycleLR,
  ReduceLROnPlateau,
  SequentialLR,
  ConstantLR,
  PolynomialLR,
  CosineAnnealingWarmRestarts,
  MultiplicativeLR,
  CyclicLR,
} as const

function makeOptimizer(c: Case): AnyOptimizer {
  const groups = c.groups.map((options, i) => ({
    params: [{ data: new Float64Array(3 - i), grad: null }] as Parameter[],
    ...options,
  }))
  return c.optimizer === 'SGD' ? new SGD(groups) : new Adam(groups as never)
}

function build(opt: AnyOptimizer, spec: SchedulerSpec, extra: Record<string, unknown> = {}): Scheduler {
  const args: Record<string, unknown> = { ...spec.args, ...extra }
  for (const key of ['lrLambda', 'scaleFn']) {
    if (typeof args[key] === 'string') args[key] = LAMBDAS[args[key]]
    if (Array.isArray(args[key])) args[key] = args[key].map((name: string) => LAMBDAS[name])
  }
  if (spec.scheduler === 'SequentialLR' || spec.scheduler === 'ChainedScheduler')
    args.schedulers = (args.schedulers as SchedulerSpec[]).map((inner) => build(opt, inner))
  if (spec.scheduler === 'ChainedScheduler')
    return new ChainedScheduler(args.schedulers as LRScheduler[], args.optimizer ? opt : undefined)
  const Class = CLASSES[spec.scheduler as keyof typeof CLASSES] as unknown as new (
    o: AnyOptimizer,
    a: unknown,
  ) => Scheduler
  return new Class(opt, args)
}

/** The scheduler the case records: the one it builds, or the one resuming after `resumeAfter` steps. */
function start(c: Case, opt: AnyOptimizer): Scheduler {
  const first = build(opt, c)
  if (c.resumeAfter === undefined) return first
  for (let i = 0; i < c.resumeAfter; i++) (first as LRScheduler).step()
  return build(opt, c, { lastEpoch: c.resumeAfter })
}

function advance(c: Case, sched: Scheduler, step: number): void {
  const epoch = c.epochs?.[step]
  if (sched instanceof ReduceLROnPlateau) sched.step(c.metrics![step])
  else if (epoch !== undefined && epoch !== null) (sched as CosineAnnealingWarmRestarts).step(epoch)
  else sched.step()
}

const groupsOf = (opt: AnyOptimizer) => opt.paramGroups as unknown as Array<Record<string, unknown> & { lr: number }>
const lrsOf = (opt: AnyOptimizer) => groupsOf(opt).map((g) => g.lr)
const momentumsOf = (opt: AnyOptimizer) => groupsOf(opt).map((g) => (Array.isArray(g.betas) ? g.betas[0] : g.momentum))

/** Relative difference, with an absolute floor far below any learning rate in the fixtures. */
function relative(got: number, want: number): number {
  if (got === want) return 0
  return Math.abs(got - want) / Math.max(Math.abs(want), 1e-15)
}

const TOLERANCE = 1e-12

for (const c of fixture.cases) {
  test(`${c.scheduler} matches PyTorch: ${c.name}`, (t) => {
    const opt = makeOptimizer(c)
    const sched = start(c, opt)
    let worst = 0
    let inexact = 0
    const check = (step: number) => {
      const got = [...lrsOf(opt), ...(c.momentums ? momentumsOf(opt) : [])]
      const want = [...c.lrs[step], ...(c.momentums ? c.momentums[step] : [])]
      got.forEach((x, i) => {
        const error = relative(x, want[i])
        if (error > 0) inexact++
        worst = Math.max(worst, error)
        t.true(
          error <= TOLERANCE,
          `step ${step}, value ${i}: ${x} is not PyTorch's ${want[i]} (relative error ${error})`,
        )
      })
      t.deepEqual(sched.getLastLr(), lrsOf(opt))
    }
    check(0)
    for (let step = 1; step <= c.steps; step++) {
      // The optimizer accepts what the scheduler wrote (PyTorch's linear OneCycleLR overshoots
      // below zero on its last step; the optimizer refuses a negative lr, as it should).
      if (c.lrs[step - 1].every((lr) => lr >= 0)) opt.step()
      advance(c, sched, step - 1)
      check(step)
    }
    t.log(
      `${inexact} of ${(c.steps + 1) * c.lrs[0].length * (c.momentums ? 2 : 1)} values differ from PyTorch's bits, by at most ${worst.toExponential(2)} relative`,
    )
  })

  test(`${c.scheduler} stateDict round trip: ${c.name}`, (t) => {
    const opt = makeOptimizer(c)
    const sched = start(c, opt)
    const k = Math.floor(c.steps / 3)
    for (let step = 1; step <= k; step++) advance(c, sched, step - 1)
    const saved = structuredClone({ opt: opt.stateDict(), sched: sched.stateDict() })

    const opt2 = makeOptimizer(c)
    const sched2 = build(opt2, c)
    opt2.loadStateDict(saved.opt as never)
    sched2.loadStateDict(saved.sched)
    t.deepEqual(sched2.stateDict(), sched.stateDict())
    t.deepEqual(sched2.getLastLr(), sched.getLastLr())
    for (let step = k + 1; step <= c.steps; step++) {
      advance(c, sched, step - 1)
      advance(c, sched2, step - 1)
      t.deepEqual(lrsOf(opt2), lrsOf(opt), `step ${step}`)
      t.deepEqual(momentumsOf(opt2), momentumsOf(opt), `step ${step}`)
    }
  })
}

test('a second scheduler takes the initial lr the first recorded, not the lr the first set', (t) => {
  const opt = new SGD([{ data: new Float64Array(1), grad: null }], { lr: 0.1 })
  const warmup = new LinearLR(opt, { startFactor: 0.5 })
  t.is(opt.paramGroups[0].lr, 0.05)
  const cosine = new CosineAnnealingLR(opt, { tMax: 10 })
  t.deepEqual(warmup.baseLrs, [0.1])
  t.deepEqual(cosine.baseLrs, [0.1])
})

test('getLastLr and baseLrs return copies', (t) => {
  const opt = new SGD([{ data: new Float64Array(1), grad: null }], { lr: 0.1 })
  const sched = new StepLR(opt, { stepSize: 1, gamma: 0.5 })
  sched.getLastLr()[0] = 7
  sched.baseLrs[0] = 7
  sched.step()
  t.deepEqual(sched.getLastLr(), [0.05])
  t.deepEqual(sched.baseLrs, [0.1])
})

test('LambdaLR, MultiplicativeLR and CyclicLR leave their functions out of stateDict, as PyTorch does', (t) => {
  const opt = new SGD([{ data: new Float64Array(1), grad: null }], { lr: 0.1, momentum: 0.9 })
  const progress = { lastEpoch: 0, stepCount: 1, baseLrs: [0.1], lastLr: [0.1] }
  t.deepEqual(new LambdaLR(opt, { lrLambda: LAMBDAS.exp095 }).stateDict(), progress)
  t.deepEqual(new MultiplicativeLR(opt, { lrLambda: LAMBDAS.constant095 }).stateDict(), progress)
  const cyclic = new CyclicLR(opt, { baseLr: 0.01, maxLr: 0.1, scaleFn: LAMBDAS.exp095 }).stateDict()
  t.false('scaleFn' in cyclic)
  // baseLr is saved once, as baseLrs (PyTorch's base_lrs).
  t.false('baseLr' in cyclic)
  t.deepEqual(cyclic.baseLrs, [0.01])
})

// PyTorch 2.15: SGD(lr=0.1, momentum=0.9), StepLR(step_size=5), then
// CyclicLR(base_lr=0.01, max_lr=0.1, step_size_up=4): lr 0.1 after construction, 0.0325 after a step.
test('CyclicLR starts from the initial lr a scheduler recorded before, then cycles from baseLr, as PyTorch', (t) => {
  const opt = new SGD([{ data: new Float64Array(1), grad: null }], { lr: 0.1, momentum: 0.5 })
  new StepLR(opt, { stepSize: 5 })
  const cyclic = new CyclicLR(opt, { baseLr: 0.01, maxLr: 0.1, stepSizeUp: 4 })
  // Step 0 is baseLrs + 0 · amplitude, with baseLrs still the recorded initial lr; momentum maxMomentum.
  t.deepEqual([opt.paramGroups[0].lr, opt.paramGroups[0].momentum], [0.1, 0.9])
  t.deepEqual(cyclic.baseLrs, [0.01])
  cyclic.step()
  // x = 1/4 of the way up: 0.01 + (0.1 − 0.01)·0.25, momentum 0.9 − (0.9 − 0.8)·0.25.
  t.deepEqual([opt.paramGroups[0].lr, opt.paramGroups[0].momentum], [0.0325, 0.875])
})

// PyTorch 2.15: CosineAnnealingWarmRestarts(SGD(lr=0.1), T_0=4, T_mult=2), step(2), step(6), step().
test('CosineAnnealingWarmRestarts: step(epoch) jumps into the cycle the epoch falls in', (t) => {
  const opt = new SGD([{ data: new Float64Array(1), grad: null }], { lr: 0.1 })
  const sched = new CosineAnnealingWarmRestarts(opt, { t0: 4, tMult: 2 })
  sched.step(2)
  // Half way through the first cycle: 0.1·(1 + cos(π/2))/2.
  t.is(opt.paramGroups[0].lr, 0.05)
  sched.step(6)
  // n = ⌊log₂(6/4·(2 − 1) + 1)⌋ = 1: the second cycle, T_i = 8, T_cur = 6 − 4·(2 − 1)/(2 − 1) = 2.
  t.is(opt.paramGroups[0].lr, (0.1 * (1 + Math.cos((Math.PI * 2) / 8))) / 2)
  t.like(sched.stateDict(), { lastEpoch: 6, tCur: 2, tI: 8 })
  sched.step()
  t.is(opt.paramGroups[0].lr, (0.1 * (1 + Math.cos((Math.PI * 3) / 8))) / 2)
  t.like(sched.stateDict(), { lastEpoch: 7, tCur: 3, tI: 8 })
  sched.step(4.5)
  t.like(sched.stateDict(), { lastEpoch: 4, tCur: 0.5, tI: 8 })
})

test('CosineAnnealingWarmRestarts refuses a bad epoch and changes nothing', (t) => {
  const rows: Array<[unknown, Row['error']]> = [
    [-1, rangeError(/^CosineAnnealingWarmRestarts: invalid epoch: -1 \(expected a number from 0 to 2\^53 - 1\)$/)],
    [NaN, rangeError(/^CosineAnnealingWarmRestarts: invalid epoch: NaN /)],
    [Infinity, rangeError(/^CosineAnnealingWarmRestarts: invalid epoch: Infinity /)],
    [2 ** 53, rangeError(/^CosineAnnealingWarmRestarts: invalid epoch: 9007199254740992 /)],
    ['3', typeError(/^CosineAnnealingWarmRestarts: epoch must be a number, got a string$/)],
  ]
  const opt = new SGD([{ data: new Float64Array(1), grad: null }], { lr: 0.1 })
  const sched = new CosineAnnealingWarmRestarts(opt, { t0: 4, tMult: 2 })
  sched.step(5.5)
  for (const [epoch, expected] of rows) {
    const before = { lr: opt.paramGroups[0].lr, state: sched.stateDict() }
    const error = t.throws(() => sched.step(epoch as number), {
      instanceOf: expected.instanceOf,
      message: expected.message,
    })
    t.is((error as Error & { code?: string }).code, expected.code)
    t.deepEqual({ lr: opt.paramGroups[0].lr, state: sched.stateDict() }, before)
  }
})

test('ChainedScheduler puts every scheduler and group back when one refuses to step', (t) => {
  const opt = new SGD([{ data: new Float64Array(1), grad: null }], { lr: 0.1, momentum: 0.9 })
  const chain = new ChainedScheduler([
    new ExponentialLR(opt, { gamma: 0.5 }),
    new CyclicLR(opt, { baseLr: 0.01, maxLr: 0.1, stepSizeUp: 3 }),
    new OneCycleLR(opt, { maxLr: 0.2, totalSteps: 4, cycleMomentum: false }),
  ])
  for (let i = 0; i < 4; i++) chain.step()
  const before = { groups: JSON.stringify(opt.paramGroups), state: chain.stateDict() }
  const error = t.throws(() => chain.step(), { message: /^OneCycleLR: tried to step 5 times, but totalSteps is 4$/ })
  t.is((error as Error & { code?: string }).code, 'ERR_INVALID_STATE')
  t.deepEqual({ groups: JSON.stringify(opt.paramGroups), state: chain.stateDict() }, before)
  t.is(chain.lastEpoch, 4)
})

test('ChainedScheduler takes the first scheduler’s optimizer, changes nothing when built, and counts its steps', (t) => {
  const opt = new SGD([{ data: new Float64Array(1), grad: null }], { lr: 0.1 })
  const constant = new ConstantLR(opt, { factor: 0.5, totalIters: 2 })
  const exponential = new ExponentialLR(opt, { gamma: 0.9 })
  const chain = new ChainedScheduler([constant, exponential])
  t.is(chain.optimizer, opt)
  t.deepEqual(chain.schedulers, [constant, exponential])
  t.deepEqual([chain.lastEpoch, opt.paramGroups[0].lr, constant.lastEpoch], [0, 0.05, 0])
  chain.step()
  chain.step()
  // Epoch 2: ConstantLR takes its factor off, ExponentialLR has decayed twice.
  t.deepEqual([chain.lastEpoch, constant.lastEpoch, exponential.lastEpoch], [2, 2, 2])
  t.is(opt.paramGroups[0].lr, 0.05 * 0.9 * 0.9 * (1.0 / 0.5))
  t.deepEqual(chain.getLastLr(), [opt.paramGroups[0].lr])
})

// ---------------------------------------------------------------------------------- bad input

interface World {
  sgd: SGD
  adam: Adam
}

interface Row {
  name: string
  act: (w: World) => unknown
  error: { instanceOf: ErrorConstructor | TypeErrorConstructor | RangeErrorConstructor; code: string; message: RegExp }
}

const typeError = (message: RegExp) => ({ instanceOf: TypeError, code: 'ERR_INVALID_ARG_TYPE', message })
const valueError = (message: RegExp) => ({ instanceOf: TypeError, code: 'ERR_INVALID_ARG_VALUE', message })
const rangeError = (message: RegExp) => ({ instanceOf: RangeError, code: 'ERR_OUT_OF_RANGE', message })

const badArguments: Row[] = [
  {
    name: 'not an optimizer',
    act: () => new StepLR({} as never, { stepSize: 1 }),
    error: typeError(/^StepLR: optimizer must be an optimizer with paramGroups, got Object$/),
  },
  {
    name: 'no options',
    act: ({ sgd }) => new StepLR(sgd, undefined as never),
    error: typeError(/^StepLR: options must be an object, got undefined$/),
  },
  {
    name: 'a required option left out',
    act: ({ sgd }) => new StepLR(sgd, {} as never),
    error: typeError(/^StepLR: options\.stepSize must be a number, got undefined$/),
  },
  {
    name: 'PyTorch’s snake_case name',
    act: ({ sgd }) => new StepLR(sgd, { step_size: 3 } as never),
    error: valueError(
      /^StepLR: options\.step_size is not an option of StepLR \(expected one of stepSize, gamma, lastEpoch\)$/,
    ),
  },
  {
    name: 'stepSize 0',
    act: ({ sgd }) => new StepLR(sgd, { stepSize: 0 }),
    error: rangeError(/^StepLR: invalid options\.stepSize: 0 \(expected an integer >= 1\)$/),
  },
  {
    name: 'fractional stepSize',
    act: ({ sgd }) => new StepLR(sgd, { stepSize: 2.5 }),
    error: rangeError(/^StepLR: invalid options\.stepSize: 2\.5 /),
  },
  {
    name: 'stepSize as a string',
    act: ({ sgd }) => new StepLR(sgd, { stepSize: '3' as never }),
    error: typeError(/^StepLR: options\.stepSize must be a number, got a string$/),
  },
  {
    name: 'negative gamma',
    act: ({ sgd }) => new StepLR(sgd, { stepSize: 3, gamma: -0.1 }),
    error: rangeError(/^StepLR: invalid options\.gamma: -0\.1 \(expected a finite number >= 0\)$/),
  },
  {
    name: 'lastEpoch -2',
    act: ({ sgd }) => new StepLR(sgd, { stepSize: 3, lastEpoch: -2 }),
    error: rangeError(/^StepLR: invalid options\.lastEpoch: -2 \(expected an integer >= -1\)$/),
  },
  {
    name: 'resuming with no initial lr',
    act: ({ sgd }) => new StepLR(sgd, { stepSize: 3, lastEpoch: 5 }),
    error: valueError(/^StepLR: paramGroups\[0\] has no initial learning rate, which resuming with lastEpoch 5 needs/),
  },
  {
    name: 'milestones not an array',
    act: ({ sgd }) => new MultiStepLR(sgd, { milestones: 30 as never }),
    error: typeError(/^MultiStepLR: options\.milestones must be an array, got a number$/),
  },
  {
    name: 'a negative milestone',
    act: ({ sgd }) => new MultiStepLR(sgd, { milestones: [10, -2] }),
    error: rangeError(/^MultiStepLR: invalid options\.milestones\[1\]: -2 \(expected an integer >= 0\)$/),
  },
  {
    name: 'ExponentialLR without gamma',
    act: ({ sgd }) => new ExponentialLR(sgd, {} as never),
    error: typeError(/^ExponentialLR: options\.gamma must be a number, got undefined$/),
  },
  {
    name: 'NaN gamma',
    act: ({ sgd }) => new ExponentialLR(sgd, { gamma: NaN }),
    error: rangeError(/^ExponentialLR: invalid options\.gamma: NaN/),
  },
  {
    name: 'tMax 0',
    act: ({ sgd }) => new CosineAnnealingLR(sgd, { tMax: 0 }),
    error: rangeError(/^CosineAnnealingLR: invalid options\.tMax: 0 \(expected an integer >= 1\)$/),
  },
  {
    name: 'PyTorch’s T_max',
    act: ({ sgd }) => new CosineAnnealingLR(sgd, { T_max: 10 } as never),
    error: valueError(
      /options\.T_max is not an option of CosineAnnealingLR \(expected one of tMax, etaMin, lastEpoch\)/,
    ),
  },
  {
    name: 'negative etaMin',
    act: ({ sgd }) => new CosineAnnealingLR(sgd, { tMax: 10, etaMin: -1e-3 }),
    error: rangeError(/^CosineAnnealingLR: invalid options\.etaMin: -0\.001/),
  },
  {
    name: 'startFactor 0',
    act: ({ sgd }) => new LinearLR(sgd, { startFactor: 0 }),
    error: rangeError(/^LinearLR: invalid options\.startFactor: 0 \(expected 0 < startFactor <= 1\)$/),
  },
  {
    name: 'startFactor 1.5',
    act: ({ sgd }) => new LinearLR(sgd, { startFactor: 1.5 }),
    error: rangeError(/^LinearLR: invalid options\.startFactor: 1\.5 /),
  },
  {
    name: 'endFactor 1.2',
    act: ({ sgd }) => new LinearLR(sgd, { endFactor: 1.2 }),
    error: rangeError(/^LinearLR: invalid options\.endFactor: 1\.2 \(expected 0 <= endFactor <= 1\)$/),
  },
  {
    name: 'totalIters 0',
    act: ({ sgd }) => new LinearLR(sgd, { totalIters: 0 }),
    error: rangeError(/^LinearLR: invalid options\.totalIters: 0/),
  },
  {
    name: 'lrLambda not a function',
    act: ({ sgd }) => new LambdaLR(sgd, { lrLambda: 0.5 as never }),
    error: typeError(/^LambdaLR: options\.lrLambda must be a function, got a number$/),
  },
  {
    name: 'one lrLambda for two groups',
    act: ({ sgd }) => new LambdaLR(sgd, { lrLambda: [LAMBDAS.exp095] }),
    error: valueError(/^LambdaLR: options\.lrLambda has 1 values, expected 2, one per param group$/),
  },
  {
    name: 'lrLambda returning a string',
    act: ({ sgd }) => new LambdaLR(sgd, { lrLambda: () => '1' as never }),
    error: typeError(/^LambdaLR: lrLambda\(0\) must return a number, got a string$/),
  },
  {
    name: 'OneCycleLR without a length',
    act: ({ sgd }) => new OneCycleLR(sgd, { maxLr: 0.1, epochs: 3 }),
    error: valueError(/^OneCycleLR: options must give totalSteps, or epochs and stepsPerEpoch$/),
  },
  {
    name: 'totalSteps 0',
    act: ({ sgd }) => new OneCycleLR(sgd, { maxLr: 0.1, totalSteps: 0 }),
    error: rangeError(/^OneCycleLR: invalid options\.totalSteps: 0 \(expected an integer >= 1\)$/),
  },
  {
    name: 'fractional epochs',
    act: ({ sgd }) => new OneCycleLR(sgd, { maxLr: 0.1, epochs: 2.5, stepsPerEpoch: 10 }),
    error: rangeError(/^OneCycleLR: invalid options\.epochs: 2\.5/),
  },
  {
    name: 'pctStart 1.2',
    act: ({ sgd }) => new OneCycleLR(sgd, { maxLr: 0.1, totalSteps: 100, pctStart: 1.2 }),
    error: rangeError(/^OneCycleLR: invalid options\.pctStart: 1\.2 \(expected 0 <= pctStart <= 1\)$/),
  },
  {
    name: 'a cycle with an empty phase',
    act: ({ sgd }) => new OneCycleLR(sgd, { maxLr: 0.1, totalSteps: 10, pctStart: 0.1 }),
    error: rangeError(
      /^OneCycleLR: invalid options\.pctStart: 0\.1 \(with totalSteps 10, phase 1 of the cycle would be empty/,
    ),
  },
  {
    name: 'unknown annealStrategy',
    act: ({ sgd }) => new OneCycleLR(sgd, { maxLr: 0.1, totalSteps: 100, annealStrategy: 'cosine' as never }),
    error: valueError(/^OneCycleLR: invalid options\.annealStrategy: "cosine" \(expected "cos" or "linear"\)$/),
  },
  {
    name: 'maxLr per group of the wrong length',
    act: ({ sgd }) => new OneCycleLR(sgd, { maxLr: [0.1, 0.2, 0.3], totalSteps: 100 }),
    error: valueError(/^OneCycleLR: options\.maxLr has 3 values, expected 2/),
  },
  {
    name: 'cycling momentum of an optimizer that has none',
    act: () =>
      new OneCycleLR(new Adagrad([{ data: new Float64Array(1), grad: null }]), { maxLr: 0.1, totalSteps: 100 }),
    error: valueError(
      /^OneCycleLR: cycleMomentum needs an optimizer with momentum or betas; pass cycleMomentum: false$/,
    ),
  },
  {
    name: 'factor 1',
    act: ({ sgd }) => new ReduceLROnPlateau(sgd, { factor: 1 }),
    error: rangeError(/^ReduceLROnPlateau: invalid options\.factor: 1 \(expected 0 <= factor < 1\)$/),
  },
  {
    name: 'unknown mode',
    act: ({ sgd }) => new ReduceLROnPlateau(sgd, { mode: 'minimum' as never }),
    error: valueError(/^ReduceLROnPlateau: invalid options\.mode: "minimum" \(expected "min" or "max"\)$/),
  },
  {
    name: 'unknown thresholdMode',
    act: ({ sgd }) => new ReduceLROnPlateau(sgd, { thresholdMode: 'relative' as never }),
    error: valueError(/options\.thresholdMode: "relative" \(expected "rel" or "abs"\)$/),
  },
  {
    name: 'negative patience',
    act: ({ sgd }) => new ReduceLROnPlateau(sgd, { patience: -1 }),
    error: rangeError(/^ReduceLROnPlateau: invalid options\.patience: -1 \(expected an integer >= 0\)$/),
  },
  {
    name: 'minLr for three groups',
    act: ({ sgd }) => new ReduceLROnPlateau(sgd, { minLr: [0, 0, 0] }),
    error: valueError(/^ReduceLROnPlateau: options\.minLr has 3 values, expected 2, one per param group$/),
  },
  {
    name: 'a metric that is a string',
    act: ({ sgd }) => new ReduceLROnPlateau(sgd).step('0.5' as never),
    error: typeError(/^ReduceLROnPlateau: metric must be a number, got a string$/),
  },
  {
    name: 'SequentialLR of nothing',
    act: ({ sgd }) => new SequentialLR(sgd, { schedulers: [], milestones: [] }),
    error: valueError(/^SequentialLR: options\.schedulers is empty/),
  },
  {
    name: 'SequentialLR with too many milestones',
    act: ({ sgd }) =>
      new SequentialLR(sgd, {
        schedulers: [new LinearLR(sgd), new ExponentialLR(sgd, { gamma: 0.9 })],
        milestones: [5, 10],
      }),
    error: valueError(
      /^SequentialLR: options\.milestones has 2 values for 2 schedulers; it needs one fewer than the schedulers$/,
    ),
  },
  {
    name: 'SequentialLR with decreasing milestones',
    act: ({ sgd }) =>
      new SequentialLR(sgd, {
        schedulers: [new LinearLR(sgd), new LinearLR(sgd), new LinearLR(sgd)],
        milestones: [10, 5],
      }),
    error: rangeError(
      /^SequentialLR: invalid options\.milestones\[1\]: 5 \(expected more than options\.milestones\[0\], 10\)$/,
    ),
  },
  {
    name: 'SequentialLR over another optimizer’s scheduler',
    act: ({ sgd, adam }) =>
      new SequentialLR(sgd, { schedulers: [new LinearLR(sgd), new LinearLR(adam)], milestones: [5] }),
    error: valueError(/^SequentialLR: options\.schedulers\[1\] \(LinearLR\) belongs to another optimizer/),
  },
  {
    name: 'SequentialLR over a ReduceLROnPlateau',
    act: ({ sgd }) =>
      new SequentialLR(sgd, { schedulers: [new LinearLR(sgd), new ReduceLROnPlateau(sgd) as never], milestones: [5] }),
    error: valueError(/^SequentialLR: options\.schedulers\[1\] is a ReduceLROnPlateau, which SequentialLR cannot run/),
  },
  {
    name: 'ConstantLR factor 0',
    act: ({ sgd }) => new ConstantLR(sgd, { factor: 0 }),
    error: rangeError(/^ConstantLR: invalid options\.factor: 0 \(expected 0 < factor <= 1\)$/),
  },
  {
    name: 'ConstantLR factor 2',
    act: ({ sgd }) => new ConstantLR(sgd, { factor: 2 }),
    error: rangeError(/^ConstantLR: invalid options\.factor: 2 \(expected 0 < factor <= 1\)$/),
  },
  {
    name: 'ConstantLR totalIters -1',
    act: ({ sgd }) => new ConstantLR(sgd, { totalIters: -1 }),
    error: rangeError(/^ConstantLR: invalid options\.totalIters: -1 \(expected an integer >= 0\)$/),
  },
  {
    name: 'PolynomialLR totalIters 0',
    act: ({ sgd }) => new PolynomialLR(sgd, { totalIters: 0 }),
    error: rangeError(/^PolynomialLR: invalid options\.totalIters: 0 \(expected an integer >= 1\)$/),
  },
  {
    name: 'PolynomialLR negative power',
    act: ({ sgd }) => new PolynomialLR(sgd, { power: -1 }),
    error: rangeError(/^PolynomialLR: invalid options\.power: -1 \(expected a finite number >= 0\)$/),
  },
  {
    name: 'PolynomialLR power as a string',
    act: ({ sgd }) => new PolynomialLR(sgd, { power: '2' as never }),
    error: typeError(/^PolynomialLR: options\.power must be a number, got a string$/),
  },
  {
    name: 'CosineAnnealingWarmRestarts without t0',
    act: ({ sgd }) => new CosineAnnealingWarmRestarts(sgd, {} as never),
    error: typeError(/^CosineAnnealingWarmRestarts: options\.t0 must be a number, got undefined$/),
  },
  {
    name: 'PyTorch’s T_0',
    act: ({ sgd }) => new CosineAnnealingWarmRestarts(sgd, { T_0: 10 } as never),
    error: valueError(
      /^CosineAnnealingWarmRestarts: options\.T_0 is not an option of CosineAnnealingWarmRestarts \(expected one of t0, tMult, etaMin, lastEpoch\)$/,
    ),
  },
  {
    name: 't0 0',
    act: ({ sgd }) => new CosineAnnealingWarmRestarts(sgd, { t0: 0 }),
    error: rangeError(/^CosineAnnealingWarmRestarts: invalid options\.t0: 0 \(expected an integer >= 1\)$/),
  },
  {
    name: 'fractional tMult',
    act: ({ sgd }) => new CosineAnnealingWarmRestarts(sgd, { t0: 5, tMult: 1.5 }),
    error: rangeError(/^CosineAnnealingWarmRestarts: invalid options\.tMult: 1\.5 \(expected an integer >= 1\)$/),
  },
  {
    name: 'CosineAnnealingWarmRestarts negative etaMin',
    act: ({ sgd }) => new CosineAnnealingWarmRestarts(sgd, { t0: 5, etaMin: -1e-3 }),
    error: rangeError(
      /^CosineAnnealingWarmRestarts: invalid options\.etaMin: -0\.001 \(expected a finite number >= 0\)$/,
    ),
  },
  {
    name: 'MultiplicativeLR lrLambda not a function',
    act: ({ sgd }) => new MultiplicativeLR(sgd, { lrLambda: 0.95 as never }),
    error: typeError(/^MultiplicativeLR: options\.lrLambda must be a function, got a number$/),
  },
  {
    name: 'MultiplicativeLR lrLambda for three groups',
    act: ({ sgd }) => new MultiplicativeLR(sgd, { lrLambda: [() => 1, () => 1, () => 1] }),
    error: valueError(/^MultiplicativeLR: options\.lrLambda has 3 values, expected 2, one per param group$/),
  },
  {
    name: 'MultiplicativeLR lrLambda returning a string',
    act: ({ sgd }) => new MultiplicativeLR(sgd, { lrLambda: [() => 0.9, () => '1' as never] }).step(),
    error: typeError(/^MultiplicativeLR: lrLambda\[1\]\(1\) must return a number, got a string$/),
  },
  {
    name: 'CyclicLR without maxLr',
    act: ({ sgd }) => new CyclicLR(sgd, { baseLr: 0.01 } as never),
    error: typeError(/^CyclicLR: options\.maxLr must be a number, got undefined$/),
  },
  {
    name: 'CyclicLR negative baseLr',
    act: ({ sgd }) => new CyclicLR(sgd, { baseLr: -0.01, maxLr: 0.1 }),
    error: rangeError(/^CyclicLR: invalid options\.baseLr: -0\.01 \(expected a finite number >= 0\)$/),
  },
  {
    name: 'CyclicLR maxLr for three groups',
    act: ({ sgd }) => new CyclicLR(sgd, { baseLr: 0.01, maxLr: [0.1, 0.1, 0.1] }),
    error: valueError(/^CyclicLR: options\.maxLr has 3 values, expected 2, one per param group$/),
  },
  {
    name: 'CyclicLR stepSizeUp 0',
    act: ({ sgd }) => new CyclicLR(sgd, { baseLr: 0.01, maxLr: 0.1, stepSizeUp: 0 }),
    error: rangeError(/^CyclicLR: invalid options\.stepSizeUp: 0 \(expected an integer >= 1\)$/),
  },
  {
    name: 'CyclicLR negative stepSizeDown',
    act: ({ sgd }) => new CyclicLR(sgd, { baseLr: 0.01, maxLr: 0.1, stepSizeDown: -1 }),
    error: rangeError(/^CyclicLR: invalid options\.stepSizeDown: -1 \(expected an integer >= 0\)$/),
  },
  {
    name: 'CyclicLR unknown mode',
    act: ({ sgd }) => new CyclicLR(sgd, { baseLr: 0.01, maxLr: 0.1, mode: 'exp' as never }),
    error: valueError(
      /^CyclicLR: invalid options\.mode: "exp" \(expected "triangular" or "triangular2" or "exp_range"\)$/,
    ),
  },
  {
    name: 'CyclicLR unknown scaleMode',
    act: ({ sgd }) => new CyclicLR(sgd, { baseLr: 0.01, maxLr: 0.1, scaleMode: 'iteration' as never }),
    error: valueError(/^CyclicLR: invalid options\.scaleMode: "iteration" \(expected "cycle" or "iterations"\)$/),
  },
  {
    name: 'CyclicLR scaleFn not a function',
    act: ({ sgd }) => new CyclicLR(sgd, { baseLr: 0.01, maxLr: 0.1, scaleFn: 'exp' as never }),
    error: typeError(/^CyclicLR: options\.scaleFn must be a function, got a string$/),
  },
  {
    name: 'CyclicLR scaleFn returning a string',
    act: ({ sgd }) => new CyclicLR(sgd, { baseLr: 0.01, maxLr: 0.1, scaleFn: () => '1' as never }),
    error: typeError(/^CyclicLR: scaleFn\(1\) must return a number, got a string$/),
  },
  {
    name: 'CyclicLR NaN baseMomentum',
    act: ({ sgd }) => new CyclicLR(sgd, { baseLr: 0.01, maxLr: 0.1, baseMomentum: NaN }),
    error: rangeError(/^CyclicLR: invalid options\.baseMomentum: NaN \(expected a finite number\)$/),
  },
  {
    name: 'CyclicLR cycling momentum of an optimizer that has none',
    act: () => new CyclicLR(new Adagrad([{ data: new Float64Array(1), grad: null }]), { baseLr: 0.01, maxLr: 0.1 }),
    error: valueError(/^CyclicLR: cycleMomentum needs an optimizer with momentum or betas; pass cycleMomentum: false$/),
  },
  {
    name: 'ChainedScheduler of nothing',
    act: () => new ChainedScheduler([]),
    error: valueError(/^ChainedScheduler: schedulers is empty; it needs at least one scheduler$/),
  },
  {
    name: 'ChainedScheduler of one scheduler not in an array',
    act: ({ sgd }) => new ChainedScheduler(new ExponentialLR(sgd, { gamma: 0.9 }) as never),
    error: typeError(/^ChainedScheduler: schedulers must be an array of schedulers, got ExponentialLR$/),
  },
  {
    name: 'ChainedScheduler of something else',
    act: ({ sgd }) => new ChainedScheduler([new ExponentialLR(sgd, { gamma: 0.9 }), {} as never]),
    error: typeError(
      /^ChainedScheduler: schedulers\[1\] must be an epoch-based scheduler \(an LRScheduler\), got Object$/,
    ),
  },
  {
    name: 'ChainedScheduler over a ReduceLROnPlateau',
    act: ({ sgd }) => new ChainedScheduler([new ReduceLROnPlateau(sgd) as never]),
    error: valueError(/^ChainedScheduler: schedulers\[0\] is a ReduceLROnPlateau, which ChainedScheduler cannot run/),
  },
  {
    name: 'ChainedScheduler over another optimizer’s scheduler',
    act: ({ sgd, adam }) =>
      new ChainedScheduler([new ExponentialLR(sgd, { gamma: 0.9 }), new StepLR(adam, { stepSize: 3 })]),
    error: valueError(/^ChainedScheduler: schedulers\[1\] \(StepLR\) belongs to another optimizer/),
  },
  {
    name: 'ChainedScheduler given another optimizer than its schedulers’',
    act: ({ sgd, adam }) => new ChainedScheduler([new ExponentialLR(sgd, { gamma: 0.9 })], adam),
    error: valueError(/^ChainedScheduler: schedulers\[0\] \(ExponentialLR\) belongs to another optimizer/),
  },
  {
    name: 'ChainedScheduler given something else as its optimizer',
    act: ({ sgd }) => new ChainedScheduler([new ExponentialLR(sgd, { gamma: 0.9 })], 3 as never),
    error: typeError(/^ChainedScheduler: optimizer must be an optimizer with paramGroups, got a number$/),
  },
  {
    name: 'SequentialLR with a ChainedScheduler after the first',
    act: ({ sgd }) =>
      new SequentialLR(sgd, {
        schedulers: [new LinearLR(sgd), new ChainedScheduler([new ExponentialLR(sgd, { gamma: 0.9 })])],
        milestones: [5],
      }),
    error: valueError(
      /^SequentialLR: options\.schedulers\[1\] is a ChainedScheduler, which SequentialLR can only run first: it has no learning rate of its own to start from at a milestone$/,
    ),
  },
  {
    name: 'SequentialLR over a SequentialLR',
    act: ({ sgd }) =>
      new SequentialLR(sgd, {
        schedulers: [new SequentialLR(sgd, { schedulers: [new LinearLR(sgd)], milestones: [] })],
        milestones: [],
      }),
    error: valueError(/^SequentialLR: options\.schedulers\[0\] is a SequentialLR, which SequentialLR cannot run/),
  },
]

function world(): World {
  const param = (): Parameter => ({ data: new Float64Array(2), grad: null })
  return {
    sgd: new SGD([
      { params: [param()], lr: 0.1, momentum: 0.9 },
      { params: [param()], lr: 0.01, momentum: 0.5 },
    ]),
    adam: new Adam([param()]),
  }
}

/** Everything a scheduler could have written: every option of every group. */
const snapshot = (w: World) => JSON.stringify([w.sgd.paramGroups, w.adam.paramGroups])

for (const row of badArguments) {
  test(`refused: ${row.name}`, (t) => {
    const w = world()
    const before = snapshot(w)
    const error = t.throws(() => row.act(w), { instanceOf: row.error.instanceOf, message: row.error.message })
    t.is((error as Error & { code?: string }).code, row.error.code)
    // Schedulers built on the way (SequentialLR's) may write; the refused one must not.
    if (!row.name.startsWith('SequentialLR')) t.is(snapshot(w), before)
  })
}

test('SequentialLR refused changes nothing its schedulers did not', (t) => {
  const w = world()
  const schedulers = [new LinearLR(w.sgd), new ExponentialLR(w.sgd, { gamma: 0.9 })]
  const before = snapshot(w)
  t.throws(() => new SequentialLR(w.sgd, { schedulers, milestones: [] }), { code: 'ERR_INVALID_ARG_VALUE' } as never)
  t.is(snapshot(w), before)
  t.deepEqual(
    schedulers.map((s) => s.lastEpoch),
    [0, 0],
  )
})

test('OneCycleLR refuses to step past totalSteps and changes nothing', (t) => {
  const { adam } = world()
  const sched = new OneCycleLR(adam, { maxLr: 0.01, totalSteps: 4 })
  for (let i = 0; i < 4; i++) sched.step()
  const before = { groups: JSON.stringify(adam.paramGroups), state: sched.stateDict() }
  const error = t.throws(() => sched.step(), {
    instanceOf: Error,
    message: /^OneCycleLR: tried to step 5 times, but totalSteps is 4$/,
  })
  t.is((error as Error & { code?: string }).code, 'ERR_INVALID_STATE')
  t.deepEqual({ groups: JSON.stringify(adam.paramGroups), state: sched.stateDict() }, before)
})

test('a param group added after the scheduler was built is refused at the next step', (t) => {
  const { sgd } = world()
  const sched = new ExponentialLR(sgd, { gamma: 0.5 })
  sgd.addParamGroup({ params: [{ data: new Float64Array(1), grad: null }] })
  const error = t.throws(() => sched.step(), {
    message: /^ExponentialLR: the optimizer has 3 param groups, but the scheduler was built for 2$/,
  })
  t.is((error as Error & { code?: string }).code, 'ERR_INVALID_STATE')
  t.is(sched.lastEpoch, 0)
})

const badStates: Array<{
  name: string
  build: (w: World) => Scheduler
  edit: (s: Record<string, unknown>) => unknown
  error: Row['error']
}> = [
  {
    name: 'not an object',
    build: ({ sgd }) => new StepLR(sgd, { stepSize: 2 }),
    edit: () => 7,
    error: typeError(/^StepLR: stateDict must be an object, got a number$/),
  },
  {
    name: 'a key missing',
    build: ({ sgd }) => new StepLR(sgd, { stepSize: 2 }),
    edit: ({ gamma: _, ...s }) => s,
    error: valueError(/^StepLR: stateDict\.gamma is missing$/),
  },
  {
    name: 'an unknown key',
    build: ({ sgd }) => new StepLR(sgd, { stepSize: 2 }),
    edit: (s) => ({ ...s, last_epoch: 3 }),
    error: valueError(/^StepLR: stateDict\.last_epoch is not saved by StepLR/),
  },
  {
    name: 'lastEpoch as a string',
    build: ({ sgd }) => new StepLR(sgd, { stepSize: 2 }),
    edit: (s) => ({ ...s, lastEpoch: '3' }),
    error: typeError(/^StepLR: stateDict\.lastEpoch must be a number, got a string$/),
  },
  {
    name: 'baseLrs for one group',
    build: ({ sgd }) => new CosineAnnealingLR(sgd, { tMax: 5 }),
    edit: (s) => ({ ...s, baseLrs: [0.1] }),
    error: valueError(/^CosineAnnealingLR: stateDict\.baseLrs has 1 values, expected 2, one per param group$/),
  },
  {
    name: 'a bad argument',
    build: ({ sgd }) => new LinearLR(sgd),
    edit: (s) => ({ ...s, startFactor: 2 }),
    error: rangeError(/^LinearLR: invalid stateDict\.startFactor: 2/),
  },
  {
    name: 'OneCycleLR without totalSteps',
    build: ({ adam }) => new OneCycleLR(adam, { maxLr: 0.1, totalSteps: 50 }),
    edit: (s) => ({ ...s, totalSteps: null }),
    error: typeError(/^OneCycleLR: stateDict\.totalSteps must be a number, got null$/),
  },
  {
    name: 'ReduceLROnPlateau with a bad best',
    build: ({ sgd }) => new ReduceLROnPlateau(sgd),
    edit: (s) => ({ ...s, best: 'low' }),
    error: typeError(/^ReduceLROnPlateau: stateDict\.best must be a number, got a string$/),
  },
  {
    name: 'SequentialLR with a bad inner state',
    build: ({ sgd }) =>
      new SequentialLR(sgd, { schedulers: [new LinearLR(sgd), new StepLR(sgd, { stepSize: 3 })], milestones: [4] }),
    edit: (s) => ({
      ...s,
      lastEpoch: 9,
      schedulers: [
        (s.schedulers as object[])[0],
        { ...(s.schedulers as Array<Record<string, unknown>>)[1], stepSize: 0 },
      ],
    }),
    error: rangeError(/^StepLR: invalid stateDict\.schedulers\[1\]\.stepSize: 0/),
  },
  {
    name: 'CosineAnnealingWarmRestarts with tI 0',
    build: ({ sgd }) => new CosineAnnealingWarmRestarts(sgd, { t0: 5 }),
    edit: (s) => ({ ...s, tI: 0 }),
    error: rangeError(/^CosineAnnealingWarmRestarts: invalid stateDict\.tI: 0 \(expected a finite number > 0\)$/),
  },
  {
    name: 'CosineAnnealingWarmRestarts without tCur',
    build: ({ sgd }) => new CosineAnnealingWarmRestarts(sgd, { t0: 5 }),
    edit: ({ tCur: _, ...s }) => s,
    error: valueError(/^CosineAnnealingWarmRestarts: stateDict\.tCur is missing$/),
  },
  {
    name: 'CyclicLR with stepSizeUp 0',
    build: ({ adam }) => new CyclicLR(adam, { baseLr: 1e-4, maxLr: 1e-3 }),
    edit: (s) => ({ ...s, stepSizeUp: 0 }),
    error: rangeError(/^CyclicLR: invalid stateDict\.stepSizeUp: 0 \(expected an integer >= 1\)$/),
  },
  {
    name: 'PolynomialLR with a negative power',
    build: ({ sgd }) => new PolynomialLR(sgd),
    edit: (s) => ({ ...s, power: -2 }),
    error: rangeError(/^PolynomialLR: invalid stateDict\.power: -2/),
  },
  {
    name: 'ChainedScheduler with one state for two schedulers',
    build: ({ sgd }) => new ChainedScheduler([new ConstantLR(sgd), new ExponentialLR(sgd, { gamma: 0.9 })]),
    edit: (s) => ({ ...s, schedulers: [(s.schedulers as object[])[0]] }),
    error: valueError(
      /^ChainedScheduler: stateDict\.schedulers must be an array of 2 state dicts, one per chained scheduler, got Array of 1$/,
    ),
  },
  {
    name: 'ChainedScheduler with a bad inner state',
    build: ({ sgd }) => new ChainedScheduler([new ConstantLR(sgd), new ExponentialLR(sgd, { gamma: 0.9 })]),
    edit: (s) => ({
      ...s,
      schedulers: [
        { ...(s.schedulers as Array<Record<string, unknown>>)[0], factor: 0 },
        (s.schedulers as object[])[1],
      ],
    }),
    error: rangeError(/^ConstantLR: invalid stateDict\.schedulers\[0\]\.factor: 0 /),
  },
]

for (const row of badStates) {
  test(`loadStateDict refuses ${row.name} and changes nothing`, (t) => {
    const w = world()
    const sched = row.build(w)
    if (sched instanceof ReduceLROnPlateau) sched.step(0.5)
    else sched.step()
    const before = sched.stateDict()
    const error = t.throws(() => sched.loadStateDict(row.edit(structuredClone(before)) as never), {
      instanceOf: row.error.instanceOf,
      message: row.error.message,
    })
    t.is((error as Error & { code?: string }).code, row.error.code)
    t.deepEqual(sched.stateDict(), before)
  })
}
