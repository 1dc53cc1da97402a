// SparseAdam's step costs what its rows cost: one benny suite times a step of SparseAdam whose
// gradient names 64 rows of a 1M x 64 fp32 embedding table (with a row named twice, so that the
// gradient is coalesced) against a step of dense Adam over the whole table, on every thread, and
// prints the ratio of their times (the target: under 1%). Each SparseAdam step names other rows,
// taken from 1024 gradients made beforehand, so that its rows come from memory as a training
// loop's would, not from cache. Fixtures are built on a case's first call, outside the timed loop.
//
//   npx tsx benchmark/sparse.ts            (FASTOPTIM_BENCH_SECONDS sets each case's time, 1 s)
//
// Results: benchmark/results/sparse.json (a 64K-row table in quick mode).
import { writeFileSync } from 'node:fs'
import { join } from 'node:path'

import b from 'benny'

import { Adam, getNumThreads, SparseAdam, type Parameter, type SparseGrad } from '../lib'
import { QUICK, RESULTS, SECONDS, values } from './common'

const ROWS = QUICK ? 1 << 16 : 1 << 20
const WIDTH = 64
const NAMED = 64
const GRADIENTS = 1024

const options = { minSamples: QUICK ? 2 : 5, maxTime: SECONDS }

function lazy<T>(make: () => T): () => T {
  let value: T | undefined
  return () => (value ??= make())
}

/** The table, shared by both optimizers (each keeps its own state; the values do not matter). */
const data = lazy(() => values(ROWS * WIDTH, 1))

const sparse = lazy(() => {
  let seed = 12345
  const next = () => (seed = (Math.imul(seed, 1103515245) + 12345) >>> 0)
  const grads: SparseGrad[] = Array.from({ length: GRADIENTS }, (_, k) => {
    const indices = Int32Array.from({ length: NAMED }, () => next() % ROWS)
    indices[NAMED - 1] = indices[0]
    return { indices, values: values(NAMED * WIDTH, k + 2) }
  })
  const table: Parameter<SparseGrad> = { data: data(), grad: grads[0], shape: [ROWS, WIDTH] }
  return { table, grads, opt: new SparseAdam([table]), step: 0 }
})

const dense = lazy(() => {
  const param = { data: data(), grad: values(ROWS * WIDTH, 3), shape: [ROWS, WIDTH] }
  return new Adam([param])
})

const times: Record<string, number> = {}

async function main() {
  await b.suite(
    `SparseAdam: ${NAMED} rows of a ${ROWS / (1 << 20)}M x ${WIDTH} fp32 table, against dense Adam over the table (${getNumThreads()} threads)`,
    b.configure({ cases: options }),
    b.add(`SparseAdam, ${NAMED} rows`, () => () => {
      const f = sparse()
      f.table.grad = f.grads[f.step++ % GRADIENTS]
      f.opt.step()
    }),
    b.add('Adam, every row', () => () => {
      dense().step()
    }),
    b.cycle((result: { name: string; ops: number; margin: number }) => {
      times[result.name] = 1 / result.ops
      return `  ${result.name}: ${(1e6 / result.ops).toFixed(2)} us a step (±${result.margin}%)`
    }),
    b.complete(() => {
      const [sparseTime, denseTime] = Object.values(times)
      console.log(
        `SparseAdam's step takes ${((100 * sparseTime) / denseTime).toFixed(4)}% of dense Adam's (target: under 1%)`,
      )
      const result = { rows: ROWS, width: WIDTH, named: NAMED, threads: getNumThreads(), sparseTime, denseTime }
      writeFileSync(
        join(RESULTS, 'sparse.json'),
        JSON.stringify({ date: new Date().toISOString(), ...result }, null, 2),
      )
    }),
  )
}

void main()
