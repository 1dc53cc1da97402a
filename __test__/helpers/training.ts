// A deterministic training run, the same on any thread: for workers.spec.ts, which runs it in
// worker threads on shared memory and again on the main thread, and compares the bits.
import { Adam, NAdam, RMSprop, SGD, type FloatArray, type Optimizer, type Parameter } from '../../lib'

export interface Job {
  algorithm: 'Adam' | 'SGD' | 'RMSprop' | 'NAdam'
  /** Each parameter's data and grad, views of SharedArrayBuffers (or of ordinary memory). */
  params: Array<{ data: FloatArray; grad: FloatArray }>
  steps: number
  seed: number
}

const MAKE = {
  Adam: (p: Parameter[]) => new Adam(p, { lr: 1e-2, amsgrad: true }),
  SGD: (p: Parameter[]) => new SGD(p, { lr: 1e-2, momentum: 0.9, nesterov: true }),
  RMSprop: (p: Parameter[]) => new RMSprop(p, { lr: 1e-3, centered: true, momentum: 0.5 }),
  NAdam: (p: Parameter[]) => new NAdam(p, { lr: 2e-3, weightDecay: 0.01 }),
}

/**
 * Steps a quadratic toward a moving target: grad = p − sin(seed + step + i/7), so every step's
 * gradient depends on the parameters the last one wrote. Returns how many steps saw finite grads.
 */
export function train(job: Job): { finiteSteps: number } {
  const opt = MAKE[job.algorithm](job.params) as unknown as Optimizer<object>
  let finiteSteps = 0
  for (let step = 0; step < job.steps; step++) {
    for (const { data, grad } of job.params) {
      for (let i = 0; i < data.length; i++) grad[i] = data[i] - Math.sin(job.seed + step + i / 7)
    }
    if (opt.step()) finiteSteps++
  }
  return { finiteSteps }
}
