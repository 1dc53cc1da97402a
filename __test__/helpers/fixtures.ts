// Reading the PyTorch fixtures made by scripts/gen_fixtures*.py, and comparing numbers.
import { readFileSync } from 'node:fs'
import { join } from 'node:path'

import type { FloatArray, Parameter } from '../../lib'

export interface FixtureGroup {
  params: number[]
  options: Record<string, unknown>
}

export interface FixtureCase {
  name: string
  optimizer: string
  dtype: 'float32' | 'float64'
  groups: FixtureGroup[]
  init: number[][]
  steps: Array<{ grads: Array<number[] | null>; params: number[][] }>
  finalState: Array<Record<string, number | number[]> | null>
}

export function loadCases(file: string): FixtureCase[] {
  return JSON.parse(readFileSync(join(__dirname, '..', 'fixtures', file), 'utf8')).cases
}

export function typed(dtype: FixtureCase['dtype'], values: number[]): FloatArray {
  return dtype === 'float32' ? Float32Array.from(values) : Float64Array.from(values)
}

/** The fixture's parameters as fresh `{ data, grad: null }` objects. */
export function makeParams(c: FixtureCase): Parameter[] {
  return c.init.map((values) => ({ data: typed(c.dtype, values), grad: null }))
}

/** Tolerances of the foundation issue: f32 within 1e-5 relative, f64 within 1e-12. */
export function tolerance(dtype: FixtureCase['dtype']): number {
  return dtype === 'float32' ? 1e-5 : 1e-12
}

/**
 * The largest relative difference between `got` and `want`, measured against max(|want|, floor)
 * so that elements that pass near zero are compared on the scale of the step, not of themselves.
 */
export function maxRelativeError(got: ArrayLike<number>, want: ArrayLike<number>, floor = 1e-6): number {
  if (got.length !== want.length) return Infinity
  let worst = 0
  for (let i = 0; i < got.length; i++) {
    const error = Math.abs(got[i] - want[i]) / Math.max(Math.abs(want[i]), floor)
    if (!(error <= worst)) worst = Number.isNaN(error) ? Infinity : Math.max(worst, error)
  }
  return worst
}

/** How many units in the last place `got` is from `want`, at most, in `dtype`. */
export function maxUlps(got: ArrayLike<number>, want: ArrayLike<number>, dtype: FixtureCase['dtype']): number {
  const bits = (x: number) => {
    if (dtype === 'float32') {
      const i = new Int32Array(Float32Array.of(x).buffer)[0]
      return BigInt(i < 0 ? -0x80000000 - i : i)
    }
    const i = new BigInt64Array(Float64Array.of(x).buffer)[0]
    return i < 0n ? -0x8000000000000000n - i : i
  }
  let worst = 0n
  for (let i = 0; i < got.length; i++) {
    const d = bits(got[i]) - bits(want[i])
    const abs = d < 0n ? -d : d
    if (abs > worst) worst = abs
  }
  return Number(worst)
}

/** Sets each parameter's gradient to the fixture's for step `s` (null where PyTorch had none). */
export function feedGrads(c: Pick<FixtureCase, 'dtype' | 'steps'>, params: Parameter[], s: number): void {
  params.forEach((p, i) => {
    const grad = c.steps[s].grads[i]
    p.grad = grad === null ? null : typed(c.dtype, grad)
  })
}

/**
 * Replays a fixture's steps on `opt`: feeds each step's gradients, steps, then calls `check` with
 * each parameter, what the reference's parameter held after that step, the step's index and the
 * parameter's.
 */
export function replay(
  c: Pick<FixtureCase, 'dtype' | 'steps'>,
  params: Parameter[],
  opt: { step(): unknown },
  check: (p: Parameter, want: number[], s: number, i: number) => void,
): void {
  c.steps.forEach((step, s) => {
    feedGrads(c, params, s)
    opt.step()
    params.forEach((p, i) => check(p, step.params[i], s, i))
  })
}
