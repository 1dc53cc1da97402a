// fastoptim/distributed over MPI: the same scenarios as distributed.spec.ts, each rank a process
// started by `mpirun --oversubscribe -np 2` and `-np 4` on localhost. Skipped, with a note, where
// mpirun or the optional package packages/distributed-mpi (built by .ci/run) is missing. Open MPI's
// sums can run in another order than the shared-memory communicator's, so only the exact
// scenarios (gradients that are multiples of 1/64) are compared bit for bit.
import { join } from 'node:path'

import test from 'ava'

import type { RankResult, Scenario } from './helpers/distributed-rank'
import { expectedCollectives, trainAlone } from './helpers/distributed-reference'
import { mpiMissing, mpirun as launch, type MpiRun } from './helpers/mpi'

const RANK_SCRIPT = join(__dirname, 'helpers', 'distributed-rank.ts')

const absent = mpiMissing()
const mpiTest = absent === undefined ? test.serial : test.skip
if (absent !== undefined)
  test('MPI tests are skipped', (t) => {
    t.log(`skipped: ${absent}`)
    t.pass()
  })

/** Runs the scenario on `size` MPI ranks; resolves when mpirun ends, however it ends. */
function mpirun(size: number, scenario: Scenario): Promise<MpiRun<RankResult>> {
  return launch<RankResult>(size, RANK_SCRIPT, [scenario])
}

const bits = (values: number[]) => values.map((v) => (Object.is(v, -0) ? '-0' : v.toString()))

for (const size of [2, 4]) {
  mpiTest(`MPI, ${size} ranks: every collective gives the single-process result`, async (t) => {
    const { code, output, results } = await mpirun(size, 'collectives')
    t.is(code, 0, output)
    t.is(results.length, size)
    for (const { rank, collectives } of results)
      t.deepEqual(collectives, expectedCollectives(rank, size), `rank ${rank}`)
  })

  mpiTest(
    `MPI, ${size} ranks: ShardedOptimizer(Adam) ends with the single process's parameters, bit for bit`,
    async (t) => {
      const alone = trainAlone('adam', size)
      const { code, output, results } = await mpirun(size, 'adam')
      t.is(code, 0, output)
      t.is(results.length, size)
      for (const result of results)
        t.deepEqual(result.params!.map(bits), alone.params!.map(bits), `rank ${result.rank}`)
      t.is(
        results.reduce((sum, r) => sum + r.stateBytes!, 0),
        alone.stateBytes,
      )
      t.log(
        `state bytes per rank: ${results.map((r) => r.stateBytes).join(', ')} of ${alone.stateBytes} in one process`,
      )
    },
  )
}

for (const scenario of ['peer-exits', 'peer-killed'] as const) {
  const how = scenario === 'peer-exits' ? 'exits with code 3' : 'is killed (SIGKILL)'
  mpiTest(`MPI, 4 ranks: a rank that ${how} mid-run ends the job with an error, and no rank hangs`, async (t) => {
    const { code, output, results } = await mpirun(4, scenario)
    t.not(code, 0)
    t.is(results.length, 0, 'no rank finished')
    // Open MPI's report of how the job ended (its wording varies, and under an abort Open MPI 4.1
    // sometimes prints only an internal error log instead).
    t.log(output.split('\n').find((line) => line.trim() !== '' && !line.startsWith('-')))
  })
}
