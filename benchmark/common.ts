// What the benchmark scripts share: sizes, fixtures, the plain JavaScript Adam, the machine.
import { execFileSync } from 'node:child_process'
import { availableParallelism, cpus, totalmem } from 'node:os'
import { mkdirSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'

import * as fastoptim from '../lib'
import type { Optimizer, Parameter } from '../lib'

/**
 * `FASTOPTIM_BENCH_QUICK=1 npm run bench`: every scenario at tiny sizes and times, to check the
 * whole pipeline in a few minutes; its figures mean nothing, so its results, and the copies of
 * BENCHMARKS.md and README.md that report.ts fills from them, go to benchmark/results/quick/.
 */
export const QUICK = process.env.FASTOPTIM_BENCH_QUICK !== undefined

/** Where the scripts write their results. */
export const RESULTS = QUICK ? join(__dirname, 'results', 'quick') : join(__dirname, 'results')
mkdirSync(RESULTS, { recursive: true })

/** Seconds per timed case (`FASTOPTIM_BENCH_SECONDS`; 1, or 0.05 in quick mode). */
export const SECONDS = Number(process.env.FASTOPTIM_BENCH_SECONDS ?? (QUICK ? 0.05 : 1))

/** The sizes of the issue: 1K, 16K, 256K, 4M and 64M parameters (1K and 16K in quick mode). */
export const SIZES = QUICK ? [1 << 10, 1 << 14] : [1 << 10, 1 << 14, 1 << 18, 1 << 22, 1 << 26]

/** Every thread the process may use: fastoptim's default pool size. */
export const ALL_THREADS = availableParallelism()

/** fp32 Adam reads p, g, m, v and writes p, m, v: 28 bytes per parameter. */
export const ADAM_BYTES = 28

/**
 * An 8-bit Adam step reads p, g and two moments' codes and writes p and the codes: 16 bytes per
 * parameter (the absmax, 4 bytes a block of 256, left out).
 */
export const EIGHT_BIT_BYTES = 16

/** Bytes an Adam step with bfloat16 state moves per parameter: two 2-byte moments instead of 4-byte ones. */
export const BF16_BYTES = 20

export function label(n: number): string {
  if (n >= 1 << 20 && n % (1 << 20) === 0) return `${n >> 20}M`
  if (n >= 1 << 10 && n % (1 << 10) === 0) return `${n >> 10}K`
  if (n >= 1000 && n % 1000 === 0) return `${n / 1000}K`
  return String(n)
}

/** Deterministic fp32 values in (−scale, scale), built before any timing. */
export function values(n: number, seed: number, scale = 0.1): Float32Array {
  const out = new Float32Array(n)
  let x = (seed * 2654435761) >>> 0 || 1
  for (let i = 0; i < n; i++) {
    x ^= x << 13
    x ^= x >>> 17
    x ^= x << 5
    x >>>= 0
    out[i] = ((x / 2 ** 32) * 2 - 1) * scale
  }
  return out
}

/**
 * Adam as a plain JavaScript loop over Float32Arrays, with PyTorch's equations and defaults: what
 * a Node program would write without fastoptim. One pass, single-threaded.
 */
export function jsAdam(p: Float32Array, g: Float32Array, m: Float32Array, v: Float32Array, t: number): void {
  const lr = 1e-3
  const [b1, b2, eps] = [0.9, 0.999, 1e-8]
  const stepSize = lr / (1 - b1 ** t)
  const bc2Sqrt = Math.sqrt(1 - b2 ** t)
  for (let i = 0; i < p.length; i++) {
    const gi = g[i]
    const mi = (m[i] = b1 * m[i] + (1 - b1) * gi)
    const vi = (v[i] = b2 * v[i] + (1 - b2) * gi * gi)
    p[i] -= (stepSize * mi) / (Math.sqrt(vi) / bc2Sqrt + eps)
  }
}

/** Writes `data`, dated, to results/`file` as JSON. */
export function save(file: string, data: object): void {
  writeFileSync(join(RESULTS, file), JSON.stringify({ date: new Date().toISOString(), ...data }, null, 2))
}

/** One measurement of benchmark/references.ts (results/references.json). */
export interface Reference {
  scenario: 'adam' | 'train' | 'optimizers'
  contender: string
  optimizer: string
  params: number
  threads: number
  /** Best over the rounds (the median step's, in the training loop); null when it did not run. */
  usPerStep: number | null
  rounds: number[]
  /**
   * fastoptim's only, round by round: how many steps its optimizer had taken before the timed
   * steps (the best batch back to back; the first timed step in the training loop).
   */
  stepsBefore?: number[]
  /** Which of the reference's code paths ran. */
  path?: string
  error?: string
}

type AnyOptimizer = Optimizer<object>
type Ctor = new (params: Parameter[], options?: object) => AnyOptimizer

/**
 * Options other than the defaults, by name, with the case's label: SGD with its defaults keeps no
 * state and would be timed as a bare `p -= lr·g`, not as it is usually run.
 */
const OPTIONS: Record<string, { label: string; options: object }> = {
  SGD: { label: 'SGD (momentum 0.9)', options: { momentum: 0.9 } },
}

/**
 * Every optimizer of the registry, in its order, but those of sparse gradients (benchmark/sparse.ts
 * times them) and those of matrices only (Muon, whose step is matrix products growing with
 * rows·cols·min(rows, cols), not a pass over memory; `cargo bench` times it on square matrices): its name, its label, and a constructor that sets it up as the benchmark times it (an
 * optimizer with a training mode in training mode; schedule-free ones start in eval mode, as their
 * reference does).
 */
export function registry(): Array<{ name: string; label: string; make: (params: Parameter[]) => AnyOptimizer }> {
  return fastoptim
    .algorithms()
    .filter(({ sparse, matrices }) => !sparse && !matrices)
    .map(({ name }) => {
      const Class = (fastoptim as unknown as Record<string, Ctor | undefined>)[name]
      if (!Class) throw new Error(`the registry lists ${name}, but fastoptim exports no such class`)
      const { label = name, options = {} } = OPTIONS[name] ?? {}
      const make = (params: Parameter[]) => {
        const opt = new Class(params, options)
        ;(opt as { train?: () => void }).train?.()
        return opt
      }
      return { name, label, make }
    })
}

/**
 * State buffers a step only writes with the benchmark's options, stored around the caches at 64M:
 * ASGD's average is a copy of the parameter until step t0 (1e6 by default).
 */
const WRITE_ONLY: Readonly<Record<string, number>> = { ASGD: 1 }

/**
 * The arrays an optimizer of the registry moves per step, with the benchmark's options: `buffers`
 * state buffers as large as the parameter that it reads and writes, `writeOnly` of them that it
 * only writes (besides p, read and written, and g, read). Counted from its state after one step.
 */
export function trafficShape(label: string): { buffers: number; writeOnly: number } {
  const entry = registry().find((r) => r.label === label)
  if (!entry) return { buffers: NaN, writeOnly: NaN }
  const n = 8
  const opt = entry.make([{ data: new Float32Array(n).fill(0.5), grad: new Float32Array(n).fill(0.1) }])
  opt.step()
  const state = Object.values(opt.stateDict().state)[0] ?? {}
  const all = Object.values(state).filter((v) => ArrayBuffer.isView(v) && (v as Float32Array).length === n).length
  const writeOnly = WRITE_ONLY[label] ?? 0
  return { buffers: all - writeOnly, writeOnly }
}

/**
 * An optimizer's own traffic per fp32 parameter ([`trafficShape`]): 4 bytes for each array read
 * (p, g and each state buffer it reads) and each written (p and each state buffer); a buffer only
 * written counts once.
 */
export function bytesPerParam(label: string): number {
  const { buffers, writeOnly } = trafficShape(label)
  return 4 * (3 + 2 * buffers + writeOnly)
}

/** The machine, as BENCHMARKS.md states it. */
export function machine(): Record<string, string | number> {
  const lscpu = (() => {
    try {
      return execFileSync('lscpu', { encoding: 'utf8' })
    } catch {
      return ''
    }
  })()
  const field = (name: string) => lscpu.match(new RegExp(`^${name}:\\s*(.+)$`, 'm'))?.[1]?.trim() ?? 'unknown'
  return {
    cpu: field('Model name') !== 'unknown' ? field('Model name') : (cpus()[0]?.model ?? 'unknown'),
    cpusAvailable: ALL_THREADS,
    threadsPerCore: field('Thread\\(s\\) per core'),
    l2: field('L2 cache'),
    l3: field('L3 cache'),
    avx512: /\bavx512f\b/.test(lscpu) ? 'yes' : 'no',
    hypervisor: field('Hypervisor vendor'),
    memoryGiB: Math.round(totalmem() / 2 ** 30),
    node: process.version,
  }
}

/** Seconds, from the monotonic clock. */
export const now = () => Number(process.hrtime.bigint()) / 1e9

/** Steps per timed batch at `n` parameters: about 4M parameters' worth (40K in quick mode). */
export const batchSteps = (n: number) =>
  Math.max(1, Math.min(10_000, Math.floor((QUICK ? 40_000 : 4_000_000) / Math.max(n, 1))))

/**
 * µs per step back to back, by the references' protocol (benchmark/references.ts): up to 50
 * steps of warm-up, then the best batch of `batch` steps over at least 3 batches and `seconds`.
 */
export function backToBack(step: () => unknown, batch: number, seconds: number): number {
  return backToBackAt(step, batch, seconds).us
}

/**
 * `backToBack`, and how many steps were taken before the best batch began (the warm-up's
 * included): a step's work can depend on how many came before it (Adam's, where √(1 − β₂ᵗ)
 * rounds to 1).
 */
export function backToBackAt(step: () => unknown, batch: number, seconds: number): { us: number; stepsBefore: number } {
  const warmUp = Math.min(batch, 50)
  for (let k = 0; k < warmUp; k++) step()
  let best = Infinity
  let stepsBefore = warmUp
  const started = now()
  for (let batches = 0; batches < 3 || now() - started < seconds; batches++) {
    const t = now()
    for (let k = 0; k < batch; k++) step()
    const perStep = (now() - t) / batch
    if (perStep < best) [best, stepsBefore] = [perStep, warmUp + batches * batch]
  }
  return { us: best * 1e6, stepsBefore }
}
