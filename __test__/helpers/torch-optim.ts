// What the specs that hold a family of optimizers to torch.optim's trajectories share: the
// fixture's cases and the defaults it read from torch.optim's signatures, a case's optimizer, the
// checks of its coverage and final state, and the tests every such family takes.
import { readFileSync } from 'node:fs'
import { join } from 'node:path'

import test, { type ExecutionContext } from 'ava'

import type { Optimizer, Parameter } from '../../lib'
import { loadCases, maxRelativeError, type FixtureCase } from './fixtures'

/** An optimizer class, as these specs construct it. */
export interface OptimizerClass {
  new (params: never, options?: never): Optimizer<object>
  readonly name: string
  readonly defaults: object
}

/** A fixture of scripts/gen_fixtures_{family,torch_more}.py: its cases, and torch.optim's defaults. */
export function loadTorchFixture(file: string): {
  cases: FixtureCase[]
  torchDefaults: Record<string, Record<string, unknown>>
} {
  const torchDefaults = JSON.parse(readFileSync(join(__dirname, '..', 'fixtures', file), 'utf8')).defaults
  return { cases: loadCases(file), torchDefaults }
}

/** Case `c`'s optimizer: its groups as the fixture gives them, camelCase options passed through. */
export function build(classes: Record<string, OptimizerClass>, c: FixtureCase, params: Parameter[]): Optimizer<object> {
  const groups = c.groups.map((g) => ({ params: g.params.map((i) => params[i]), ...g.options }))
  return new classes[c.optimizer](groups as never)
}

/** Checks that one optimizer's cases cover both dtypes, two groups, skipped grads and 20+ steps. */
export function checkCoverage(t: ExecutionContext, mine: FixtureCase[], name: string): void {
  t.true(mine.length >= 6, name)
  checkTrajectories(t, mine, name)
}

/** Checks that one optimizer's trajectories take both dtypes, two groups, skipped grads and 20+ steps. */
export function checkTrajectories(
  t: ExecutionContext,
  mine: Array<Pick<FixtureCase, 'dtype' | 'groups' | 'steps'>>,
  name: string,
): void {
  t.deepEqual(new Set(mine.map((c) => c.dtype)), new Set(['float32', 'float64']), name)
  t.true(
    mine.some((c) => c.groups.length === 2 && c.groups[0].options.lr !== c.groups[1].options.lr),
    name,
  )
  t.true(
    mine.some((c) => c.steps.some((s) => s.grads.includes(null))),
    name,
  )
  t.true(
    mine.every((c) => c.steps.length >= 20),
    name,
  )
}

/**
 * Checks parameter `i`'s state against PyTorch's `want`: the step count where PyTorch keeps one,
 * scalars exactly (float32 in PyTorch, rounded the same way here), buffers within `tolerance`.
 */
export function checkState(
  t: ExecutionContext,
  got: Record<string, unknown>,
  want: Record<string, number | number[]>,
  i: number,
  tolerance: number,
): void {
  if ('step' in want) t.is(got.step, want.step, `param ${i} step count`)
  for (const [key, values] of Object.entries(want)) {
    if (key === 'step') continue
    if (typeof values === 'number') {
      t.is(got[key], values, `param ${i} ${key}`)
      continue
    }
    const error = maxRelativeError(got[key] as ArrayLike<number>, values)
    t.true(error <= tolerance, `param ${i} ${key}: relative error ${error}`)
  }
}

/** Checks that each of `classes` has exactly the defaults of torch.optim's signature, frozen. */
export function checkTorchDefaults(
  t: ExecutionContext,
  classes: Record<string, OptimizerClass>,
  torchDefaults: Record<string, Record<string, unknown>>,
): void {
  for (const [name, Class] of Object.entries(classes)) {
    t.deepEqual({ ...Class.defaults }, torchDefaults[name], name)
    t.true(Object.isFrozen(Class.defaults), name)
  }
}

/** Bad options for the optimizer `Name`, with the error class, code and message they must give. */
export type BadOptions<Name extends string> = Array<
  [Name, Record<string, unknown>, typeof TypeError | typeof RangeError, string, string | RegExp]
>

/** A fresh float32 parameter of three elements, with its gradient. */
export const param = () => ({ data: Float32Array.of(1, -2, 3), grad: Float32Array.of(0.5, 0.25, -1) })

/** One test per row of `rows`: the constructor throws that error, and leaves the parameter alone. */
export function testBadOptions<Name extends string>(
  classes: Record<Name, OptimizerClass>,
  rows: BadOptions<Name>,
): void {
  for (const [name, options, instanceOf, code, message] of rows) {
    const shown = Object.entries(options).map(
      ([key, value]) => `${key}: ${Array.isArray(value) ? `[${value}]` : String(value)}`,
    )
    test(`${name} rejects { ${shown.join(', ')} }`, (t) => {
      const data = Float32Array.from(param().data)
      const w = param()
      t.throws(() => new classes[name]([w] as never, options as never), { instanceOf, code, message })
      t.deepEqual(w.data, data)
    })
  }
}

/** The test that each of `classes` steps a zero-length parameter and passes over one with grad null. */
export function testIdleParameters(classes: Record<string, OptimizerClass>): void {
  test('every optimizer accepts parameters with grad null and zero-length parameters', (t) => {
    for (const Class of Object.values(classes)) {
      const empty = { data: new Float32Array(0), grad: new Float32Array(0) }
      const idle = { data: Float64Array.of(1, 2), grad: null }
      const opt = new Class([empty, idle] as never)
      opt.step()
      t.is(opt.getState(empty)?.step, 1, Class.name)
      t.is(opt.getState(idle), undefined, Class.name)
      t.deepEqual([...idle.data], [1, 2])
    }
  })
}
