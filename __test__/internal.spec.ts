// The internal export the benchmark's training loop times the engine with (`__adamTrainingLoop`):
// it steps on the pool as configured, answers a time, and refuses bad input by name. Its times
// are figures of `npm run bench`, not checked here.
import { join } from 'node:path'

import test from 'ava'

import { setNumThreads } from '../lib'

const internal = require(join(__dirname, '..', 'native', 'index.js')) as {
  __adamTrainingLoop(params: number, steps: number, evictBytes: number): number
  __lastStepThreads(): number
}

test.serial('the engine-alone training loop steps on the configured pool and answers a median in µs', (t) => {
  setNumThreads(1)
  const small = internal.__adamTrainingLoop(4096, 5, 1 << 16)
  t.true(Number.isFinite(small) && small > 0, `median ${small} µs`)
  setNumThreads(2)
  // 4M elements, steps back to back: the pool's worker wakes for the first and joins those after
  // it, unless other processes keep it from a processor for a whole call; so up to 10 calls.
  let threads = 0
  for (let call = 0; call < 10 && threads < 2; call++) {
    const large = internal.__adamTrainingLoop(1 << 22, 8, 0)
    t.true(Number.isFinite(large) && large > 0, `median ${large} µs`)
    threads = internal.__lastStepThreads()
  }
  t.is(threads, 2, 'the last step of a call was joined by the worker')
})

test('the engine-alone training loop refuses bad input, naming the field, the value and the range', (t) => {
  const cases: Array<[number, number, number, RegExp]> = [
    [0, 1, 0, /params is 0; expected a whole number from 1 to 67108864/],
    [1.5, 1, 0, /params is 1\.5; expected a whole number/],
    [2 ** 27, 1, 0, /params is 134217728; expected a whole number from 1 to 67108864/],
    [16, 0, 0, /steps is 0; expected a whole number from 1 to 100000/],
    [16, Number.NaN, 0, /steps is NaN/],
    [16, 1, -1, /evictBytes is -1; expected a whole number from 0 to 1073741824/],
    [16, 1, Number.POSITIVE_INFINITY, /evictBytes is Infinity; expected a whole number/],
  ]
  for (const [params, steps, evictBytes, message] of cases) {
    const error = t.throws(() => internal.__adamTrainingLoop(params, steps, evictBytes), { instanceOf: RangeError })
    t.regex(error.message, message)
    t.is((error as NodeJS.ErrnoException).code, 'ERR_OUT_OF_RANGE')
  }
})
