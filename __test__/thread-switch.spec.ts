// After setNumThreads, steps run on the new pool as they would in a fresh process: every step of
// a large tensor is joined by all of the pool's workers (counted by the internal export
// `__lastStepThreads`, not timed), and the threads of the pools before it are gone.
import { readdirSync, readFileSync } from 'node:fs'
import { availableParallelism } from 'node:os'
import { join } from 'node:path'

import test from 'ava'

import { Adam, getNumThreads, setNumThreads } from '../lib'
import { fillValues } from './helpers/values'

const internal = require(join(__dirname, '..', 'native', 'index.js')) as { __lastStepThreads(): number }

/**
 * 32M parameters: a step long enough for a sleeping worker to wake and join it even while other
 * processes (the other test files) keep the processors busy.
 */
const N = 1 << 25

function values(n: number, seed: number): Float32Array {
  return fillValues(new Float32Array(n), seed)
}

/** The pool's worker threads alive in this process (Linux only), by their names. */
function workerThreads(): string[] | undefined {
  try {
    return readdirSync('/proc/self/task')
      .map((id) => {
        try {
          return readFileSync(`/proc/self/task/${id}/comm`, 'utf8').trim()
        } catch {
          return '' // ended meanwhile
        }
      })
      .filter((name) => name.startsWith('fastoptim-'))
      .sort()
  } catch {
    return undefined
  }
}

// Pools of 3 and 4 threads have several workers, which is where a worker could once be started
// twice and spin on after its pool was replaced; the sequence also goes up and down by more than
// one thread, and back to a count used before.
const SEQUENCE = [2, 1, 2, 3, 1, 3, 2, 4, 1, 2, 4, 3, 2]

/**
 * The pools whose steps are counted: those with no more threads than the machine has CPUs. In a
 * larger one the threads take turns on the processors, and a worker may get none before the step
 * ends, however the pool behaves; such pools still come and go in between.
 */
const COUNTED = (n: number) => n > 1 && n <= availableParallelism()

test.serial("after every setNumThreads, each step of a large tensor is joined by all of the pool's workers", (t) => {
  const before = getNumThreads()
  const opt = new Adam([{ data: values(N, 1), grad: values(N, 2) }])
  opt.step()
  const misses: string[] = []
  let counted = 0
  try {
    for (const [phase, n] of SEQUENCE.entries()) {
      setNumThreads(n)
      for (let step = 0; step < 6; step++) {
        opt.step()
        if (!COUNTED(n)) continue
        counted++
        const joined = internal.__lastStepThreads()
        if (joined !== n) misses.push(`phase ${phase} (${n} threads), step ${step}: ${joined} threads`)
      }
    }
  } finally {
    setNumThreads(before)
  }
  t.deepEqual(misses, [])
  if (availableParallelism() >= 2) t.true(counted >= 24, `${counted} steps counted`)
})

test.serial('the threads of a replaced pool are gone once setNumThreads returns', (t) => {
  const before = getNumThreads()
  if (workerThreads() === undefined) {
    t.pass('no /proc/self/task on this platform')
    return
  }
  const opt = new Adam([{ data: values(1 << 20, 3), grad: values(1 << 20, 4) }])
  try {
    for (const n of SEQUENCE) {
      setNumThreads(n)
      for (let step = 0; step < 5; step++) opt.step()
      const expected = Array.from({ length: n - 1 }, (_, i) => `fastoptim-${i + 1}`)
      t.deepEqual(workerThreads(), expected, `after setNumThreads(${n}) and 5 steps`)
    }
  } finally {
    setNumThreads(before)
  }
})
