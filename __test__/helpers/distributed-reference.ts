// What the distributed scenarios of distributed-rank.ts must give, computed in one process: the
// collectives' results from every rank's input, and the training run on the mean gradient.
import { clipGradNorm, StepLR, type FloatArray } from '../../lib'
import {
  collectiveInput,
  gradOf,
  groupsOf,
  makeParams,
  optimizerOf,
  STEPS,
  type RankResult,
  type Scenario,
} from './distributed-rank'

/** The collectives' results every rank must report, for `size` ranks. */
export function expectedCollectives(rank: number, size: number): Record<string, number[]> {
  const out: Record<string, number[]> = {}
  for (const Type of [Float32Array, Float64Array]) {
    const ranks = Array.from({ length: size }, (_, r) => r)
    const sum = (n: number) => {
      const total = new Type(n)
      for (const r of ranks) collectiveInput(r, n, Type).forEach((v, i) => (total[i] += v))
      return total
    }
    const mean = (n: number) => sum(n).map((v) => v / size)
    out[`${Type.name}.allReduce.sum`] = [...sum(23)]
    out[`${Type.name}.allReduce.mean`] = [...mean(23)]
    out[`${Type.name}.reduceScatter.mean`] = [...mean(5 * size).subarray(5 * rank, 5 * rank + 5)]
    out[`${Type.name}.allGather`] = ranks.flatMap((r) => [r, r + 0.5, -r - 0.25])
    out[`${Type.name}.broadcast`] = [...collectiveInput(99, 9, Type)]
  }
  return out
}

/** The scenario trained by one process on the mean of the `size` ranks' gradients. */
export function trainAlone(scenario: Scenario, size: number): RankResult & { stateBytes: number } {
  const params = makeParams()
  const { Algorithm, options } = optimizerOf(scenario)
  const opt = new Algorithm(groupsOf(params), options)
  const scheduler = new StepLR(opt, { stepSize: 2, gamma: 0.5 })
  const finite: boolean[] = []
  const norms: number[] = []
  for (let s = 0; s < STEPS; s++) {
    params.forEach((p, k) => {
      const grads = Array.from({ length: size }, (_, r) => gradOf(s, r, k))
      if (grads.every((g) => g === null)) return void (p.grad = null)
      const mean = new (p.data.constructor as Float32ArrayConstructor | Float64ArrayConstructor)(p.data.length)
      for (const g of grads) g?.forEach((v, i) => (mean[i] += v / size))
      p.grad = mean as FloatArray
    })
    if (scenario === 'clip') norms.push(clipGradNorm(params, 0.05))
    finite.push(opt.step())
    scheduler.step()
  }
  let stateBytes = 0
  for (const entry of Object.values(opt.stateDict().state))
    for (const value of Object.values(entry)) if (ArrayBuffer.isView(value)) stateBytes += value.byteLength
  return { rank: 0, size: 1, params: params.map((p) => [...p.data]), finite, norms, stateBytes }
}
