/**
 * `npm run demo:distributed`: data-parallel MNIST with ShardedOptimizer(Adam) on 1, 2 and 4
 * ranks, over MPI (`mpirun -np N`, when the optional package is built) or over worker threads
 * (otherwise, or with --engine workers), with the same global batch; prints a table of the
 * final numbers, state memory per rank and time per step per rank. `-- --help` for options.
 */
import { execFileSync } from 'node:child_process'
import { mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { parseArgs } from 'node:util'

import { loadMpiBinding, runWorkers } from '../lib/distributed'
import type { DemoConfig, RankReport } from './distributed-rank'

const HELP = `Usage: npm run demo:distributed -- [options]

Options:
  --ranks LIST     comma-separated rank counts (default 1,2,4)
  --engine NAME    mpi, workers, or auto (default: mpi when mpirun and the MPI package are there)
  --epochs N       epochs (default 3)
  --batch-size N   global batch size, split evenly over the ranks (default 64)
  --seed N         weights, split and batch order (default 1)
  -h, --help       this text
`

const RANK_SCRIPT = join(__dirname, 'distributed-rank.ts')

function mpiAvailable(): boolean {
  try {
    execFileSync('mpirun', ['--version'], { stdio: 'pipe' })
    loadMpiBinding()
    return true
  } catch {
    return false
  }
}

function onMpi(size: number, config: DemoConfig): RankReport[] {
  const dir = mkdtempSync(join(tmpdir(), 'fastoptim-demo-'))
  try {
    const out = join(dir, 'rank')
    execFileSync(
      'mpirun',
      [
        '--oversubscribe',
        '--allow-run-as-root',
        '-np',
        String(size),
        process.execPath,
        '--import=tsx',
        RANK_SCRIPT,
      ].concat([JSON.stringify(config), out]),
      { stdio: 'inherit' },
    )
    return Array.from({ length: size }, (_, r) => JSON.parse(readFileSync(`${out}.${r}.json`, 'utf8')) as RankReport)
  } finally {
    rmSync(dir, { recursive: true, force: true })
  }
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      ranks: { type: 'string', default: '1,2,4' },
      engine: { type: 'string', default: 'auto' },
      epochs: { type: 'string', default: '3' },
      'batch-size': { type: 'string', default: '64' },
      seed: { type: 'string', default: '1' },
      help: { type: 'boolean', short: 'h', default: false },
    },
  })
  if (values.help) return void process.stdout.write(HELP)
  const ranks = values.ranks.split(',').map(Number)
  const config: DemoConfig = {
    epochs: Number(values.epochs),
    batchSize: Number(values['batch-size']),
    hiddenSize: 128,
    seed: Number(values.seed),
    lr: 1e-3,
  }
  const engine = values.engine === 'auto' ? (mpiAvailable() ? 'mpi' : 'workers') : values.engine
  if (engine !== 'mpi' && engine !== 'workers') throw new Error(`--engine must be mpi, workers or auto, got ${engine}`)
  const rows = [
    '| ranks | engine | test accuracy | train loss | Adam state per rank (bytes) | step per rank (ms) | gradient share per rank (ms) |',
  ]
  rows.push('|---:|---|---:|---:|---:|---:|---:|')
  for (const size of ranks) {
    process.stderr.write(`${size} rank(s) on ${engine}...\n`)
    const reports =
      engine === 'mpi'
        ? onMpi(size, config)
        : await runWorkers<RankReport>(size, RANK_SCRIPT, { workerData: { config }, preload: ['tsx/cjs'] })
    const [first] = reports
    const mean = (f: (r: RankReport) => number) => reports.reduce((s, r) => s + f(r), 0) / reports.length
    rows.push(
      `| ${size} | ${engine} | ${(100 * first.testAccuracy).toFixed(2)}% | ${first.trainLoss.toFixed(4)} | ` +
        `${reports.map((r) => r.stateBytes).join(' / ')} | ${mean((r) => r.stepMs).toFixed(2)} | ${mean((r) => r.gradientMs).toFixed(2)} |`,
    )
  }
  process.stdout.write(
    `Adam (lr ${config.lr}), 784-${config.hiddenSize}-10 MLP, ${config.epochs} epochs, global batch ${config.batchSize}, seed ${config.seed}\n\n${rows.join('\n')}\n`,
  )
}

main().catch((error) => {
  console.error(error)
  process.exitCode = 1
})
