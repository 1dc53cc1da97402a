// `npm run bench`, 8-bit state: Adam8bit, AdamW8bit and Lion8bit (and Adam with bfloat16 state)
// against fp32 Adam, the memory baseline for their bytes and bitsandbytes' CPU Adam8bit.
//
// At each size (1K to 64M fp32 parameters; a tensor under 4096 elements keeps fp32 state, as in
// bitsandbytes) and on 1 and every thread, fp32 Adam, the three 8-bit optimizers and the engine's
// memory-traffic kernel (`__memoryTraffic`: Adam's 28 bytes per parameter with trivial arithmetic)
// are timed in turn, round by round, each the best of several batches of steps back to back.
// An 8-bit Adam step moves 16 bytes per parameter (p read and written, g read, two codes read and
// written; the absmax, 8 bytes per 256, left out), so its memory limit is the traffic kernel's
// time × 16/28; Adam with bfloat16 state (`stateDtype: 'bfloat16'`) moves 20 (two 2-byte moments
// read and written), its limit the traffic kernel's time × 20/28. bitsandbytes' CPU Adam8bit is timed by benchmark/bnb_adam8bit.py when python3
// has it (skipped with a note otherwise). The state's bytes per parameter are read from each
// optimizer's stateDict. Results: benchmark/results/eightbit.json.
import { execFileSync } from 'node:child_process'
import { join } from 'node:path'

import { Adam, Adam8bit, AdamW8bit, Lion8bit, setNumThreads, type Parameter } from '../lib'
import { native } from '../lib/native'
import {
  ADAM_BYTES,
  ALL_THREADS,
  backToBack,
  BF16_BYTES,
  batchSteps,
  EIGHT_BIT_BYTES,
  label,
  QUICK,
  save,
  SECONDS,
  SIZES,
  values,
} from './common'

const internal = native as unknown as {
  __memoryTraffic(p: Float32Array, g: Float32Array, m: Float32Array, v: Float32Array): void
}

const ROUNDS = QUICK ? 1 : 3
const THREADS = [...new Set([1, ALL_THREADS])]

interface Row {
  contender: string
  params: number
  threads: number
  usPerStep: number
}

type Stepper = { step(): unknown; stateDict?(): { state: Record<string, Record<string, unknown>> } }

/** Bytes of state per parameter in `opt`'s stateDict (typed arrays and numbers). */
function stateBytes(opt: Stepper, n: number): number {
  let bytes = 0
  for (const entry of Object.values(opt.stateDict!().state))
    for (const value of Object.values(entry)) bytes += ArrayBuffer.isView(value) ? value.byteLength : 8
  return bytes / n
}

/** bitsandbytes' Adam8bit and fused torch Adam µs per step by size, or why there are none. */
function bitsandbytes(threads: number): { rows: Row[]; note: string } {
  try {
    const out = execFileSync('python3', [join(__dirname, 'bnb_adam8bit.py'), ...SIZES.map(String)], {
      encoding: 'utf8',
      env: { ...process.env, FASTOPTIM_THREADS: String(threads) },
      stdio: ['ignore', 'pipe', 'pipe'],
    })
    const rows = out
      .trim()
      .split('\n')
      .map((line) => JSON.parse(line) as { optimizer: string; params: number; seconds: number })
      .map((r) => ({
        contender: r.optimizer === 'Adam8bit' ? 'bitsandbytes Adam8bit' : 'PyTorch Adam (fused)',
        params: r.params,
        threads,
        usPerStep: r.seconds * 1e6,
      }))
    const version = execFileSync(
      'python3',
      ['-c', 'import bitsandbytes as b, torch; print(b.__version__, torch.__version__)'],
      { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] },
    ).trim()
    const [bnb, torch] = version.split(' ')
    return { rows, note: `bitsandbytes ${bnb} (CPU), PyTorch ${torch}` }
  } catch (error) {
    return { rows: [], note: `bitsandbytes skipped: ${String(error).split('\n')[0]}` }
  }
}

async function main() {
  const rows: Row[] = []
  const bytes: Record<string, number> = {}
  for (const n of SIZES) {
    const p = values(n, 1)
    const g = values(n, 2)
    const fresh = (): Parameter<Float32Array>[] => [{ data: p.slice(), grad: g }]
    const contenders: Array<[string, Stepper]> = [
      ['Adam (fp32)', new Adam(fresh())],
      ['Adam8bit', new Adam8bit(fresh())],
      ['AdamW8bit', new AdamW8bit(fresh())],
      ['Lion8bit', new Lion8bit(fresh())],
      ['Adam (bf16 state)', new Adam(fresh(), { stateDtype: 'bfloat16' })],
    ]
    const m = new Float32Array(n)
    const v = new Float32Array(n)
    const traffic = { step: () => internal.__memoryTraffic(p, g, m, v) }
    for (const [name, opt] of contenders) {
      opt.step()
      if (n === SIZES[SIZES.length - 1]) bytes[name] = stateBytes(opt, n)
    }
    for (const threads of THREADS) {
      setNumThreads(threads)
      const best: Record<string, number> = {}
      for (let round = 0; round < ROUNDS; round++) {
        for (const [name, opt] of [...contenders, ['memory traffic (28 B/param)', traffic] as [string, Stepper]]) {
          const us = backToBack(() => opt.step(), batchSteps(n), SECONDS / 4)
          best[name] = Math.min(best[name] ?? Infinity, us)
        }
      }
      for (const [contender, usPerStep] of Object.entries(best)) rows.push({ contender, params: n, threads, usPerStep })
      const line = Object.entries(best)
        .map(([name, us]) => `${name} ${us.toFixed(2)} µs`)
        .join(', ')
      console.log(`${label(n)}, ${threads} thr: ${line}`)
    }
  }
  let bnbNote = ''
  for (const threads of THREADS) {
    const { rows: theirs, note } = bitsandbytes(threads)
    rows.push(...theirs)
    bnbNote = note
    for (const r of theirs)
      console.log(`${r.contender} ${label(r.params)}, ${threads} thr: ${r.usPerStep.toFixed(2)} µs`)
  }
  console.log(bnbNote)
  console.log(`state bytes per parameter at ${label(SIZES[SIZES.length - 1])}: ${JSON.stringify(bytes)}`)
  save('eightbit.json', {
    quick: QUICK,
    rounds: ROUNDS,
    eightBitBytes: EIGHT_BIT_BYTES,
    bf16Bytes: BF16_BYTES,
    adamBytes: ADAM_BYTES,
    bitsandbytes: bnbNote,
    stateBytesPerParam: bytes,
    rows,
  })
}

main().catch((error) => {
  console.error(error)
  process.exit(1)
})
