// `npm run bench`, last part: the tables of BENCHMARKS.md, from one run's results.
//
// Reads benchmark/results/throughput.json (suite.ts), references.json, event-loop.json,
// memory.json, thread-switch.json, sparse.json, eightbit.json, any targets-*.json (other scripts' targets:
// `{ issue, rows: [{ target, measured, met }] }`) and the committed benchmark/design-choices.json;
// writes results/summary.md; and replaces, from this run's figures alone, the parts of
// BENCHMARKS.md between `<!-- results:start -->` and `<!-- results:end -->` and between
// `<!-- design:start -->` and `<!-- design:end -->`, and of README.md between `<!-- speed:start -->`
// and `<!-- speed:end -->`.
import { copyFileSync, existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'

import { ADAM_BYTES, batchSteps, bytesPerParam, label, QUICK, type Reference, RESULTS, SIZES } from './common'

interface Row {
  suite: string
  case: string
  params: number
  tensors: number
  threads: number | null
  opsPerSecond: number
  marginPercent: number
  samples: number
  error?: string
}
const read = <T>(file: string): T | undefined => {
  const path = join(RESULTS, file)
  return existsSync(path) ? (JSON.parse(readFileSync(path, 'utf8')) as T) : undefined
}

const throughput = read<{
  date: string
  machine: Record<string, string | number>
  allThreads: number
  seconds: number
  rows: Row[]
}>('throughput.json')
if (!throughput) throw new Error('no results/throughput.json: run `npm run bench` first')
const references = read<{
  quick: boolean
  rounds: number
  /** Rounds of the training loop (absent from runs that gave it `rounds`). */
  trainRounds?: number
  secondsPerCase: number
  evictBytes: number
  /**
   * The work between training steps: 'add' reads and writes each float64 (absent from earlier
   * runs, which wrote over the buffer with a fill).
   */
  evictWork?: 'add'
  trainSteps: number
  c: string
  torch: string
  /** Adam's kernel over arrays in L1 on one thread (absent from runs before it was measured). */
  adamInCache?: { elements: number; secondsPerElement: number }
  seconds: number
  results: Reference[]
}>('references.json')
const sparse = read<{
  rows: number
  width: number
  named: number
  threads: number
  sparseTime: number
  denseTime: number
}>('sparse.json')
const eightbit = read<{
  eightBitBytes: number
  bf16Bytes?: number
  adamBytes: number
  bitsandbytes: string
  stateBytesPerParam: Record<string, number>
  rows: Array<{ contender: string; params: number; threads: number; usPerStep: number }>
}>('eightbit.json')
const otherTargets = readdirSync(RESULTS)
  .filter((file) => /^targets-.+\.json$/.test(file))
  .map((file) => read<{ issue: string; rows: Array<{ target: string; measured: string; met: boolean }> }>(file)!)
const design = JSON.parse(readFileSync(join(__dirname, 'design-choices.json'), 'utf8')) as Array<{
  choice: string
  why: string
  measured: string
  how: string
}>
const eventLoop = read<{
  threads: number
  rows: Array<{
    /** Absent from runs before Adam8bit was measured too: then Adam. */
    optimizer?: string
    mode: string
    params: number
    msPerStep: number
    /** The first step's, which makes the state; absent from runs before it was timed. */
    firstStepMs?: number
    gbPerSecond: number
    delayMs: { p50: number; p99: number; max: number }
    timerTicksPerSecond: number
  }>
}>('event-loop.json')
const memory = read<{
  rows: Array<{
    model: string
    threads: number
    steps: number
    allocationsPerStep: number
    bytesAllocatedPerStep: number
    rssMiB: { first: number; last: number; min: number; max: number }
  }>
}>('memory.json')

interface SwitchPhase {
  threads: number
  bestMs: number
  firstMs: number
  joinedMin: number | null
  othersCpu: number | null
  cpuPressure: number | null
  poolThreads?: number | null
  cycle?: number
}
const threadSwitch = read<{
  allThreads: number
  cycles: number
  batches: number
  stepsPerBatch: number
  sizes: Array<{
    params: number
    fresh: Array<{ threads: number; bestMs: number; runs: Array<SwitchPhase & { afterCycle?: number }> }>
    phases: Array<SwitchPhase & { cycle: number }>
    /** A fresh process for each phase on every thread, its batches taken in turns with the phase's. */
    turns?: Array<SwitchPhase & { cycle: number }>
    /** A process that never switched (as old as the switching one), in the same turns. */
    steadyTurns?: Array<SwitchPhase & { cycle: number }>
  }>
}>('thread-switch.json')

const ALL = throughput.allThreads
const rows = throughput.rows

function find(suite: string, name: string): Row | undefined {
  return rows.find((r) => r.suite === suite && r.case === name)
}
const gparam = (r: Row | undefined) => (r ? (r.opsPerSecond * r.params) / 1e9 : NaN)
const us = (r: Row | undefined) => (r ? 1e6 / r.opsPerSecond : NaN)
const fmt = (x: number, digits = 2) => (Number.isFinite(x) ? x.toFixed(digits) : '–')
const threadsLabel = (t: number) => `${t} thread${t > 1 ? 's' : ''}`
/** A reference measurement of the run, if it has it. */
const refOf = (
  scenario: Reference['scenario'],
  contender: string,
  params: number,
  threads: number,
  optimizer = 'Adam',
) =>
  references?.results.find(
    (r) =>
      r.scenario === scenario &&
      r.contender === contender &&
      r.optimizer === optimizer &&
      r.params === params &&
      r.threads === threads,
  )
/** µs per step of `contender` in a scenario of references.json (NaN when it has none). */
const refUs = (...of: Parameters<typeof refOf>) => refOf(...of)?.usPerStep ?? NaN
/** The times of each round of a reference measurement (Adam's), in the order the rounds ran. */
const refRounds = (scenario: Reference['scenario'], contender: string, params: number, threads: number) =>
  refOf(scenario, contender, params, threads)?.rounds ?? []
/**
 * Round by round, `contender`'s time over fastoptim's in the same round (the two measured minutes
 * apart at most, in one turn of the contenders), on 1 and on every thread: how far a ratio of the
 * best rounds moves with the machine's state between rounds. Empty where a side has no rounds.
 */
const roundRatios = (scenario: Reference['scenario'], contender: string, params: number) =>
  [1, ALL].map((t) =>
    roundPairs(scenario, contender, 'fastoptim', params, t)
      .map(([other, ours]) => other / ours)
      .filter(Number.isFinite),
  )
/**
 * The times of `a` and `b` paired round by round, each pair measured in one turn of the
 * contenders; empty where the two have not run the same number of rounds.
 */
function roundPairs(scenario: Reference['scenario'], a: string, b: string, params: number, threads: number) {
  const [xs, ys] = [refRounds(scenario, a, params, threads), refRounds(scenario, b, params, threads)]
  return xs.length === ys.length ? xs.map((x, k): [number, number] => [x, ys[k]]) : []
}
/** `roundRatios` as "lo-hi / lo-hi", or '' where a side has fewer than two rounds. */
const roundRange = (ratios: number[][]) =>
  ratios.every((xs) => xs.length > 1)
    ? ratios.map((xs) => `${fmt(Math.min(...xs), 2)}-${fmt(Math.max(...xs), 2)}`).join(' / ')
    : ''
/** The first step at which √(1 − β₂ᵗ) rounds to 1 in float32 with β₂ = 0.999: Adam's kernel skips its division from there. */
const UNIT_STEP = (() => {
  let t = 1
  while (Math.fround(Math.sqrt(1 - 0.999 ** t)) !== 1) t++
  return t
})()
/**
 * Which side of `UNIT_STEP` fastoptim's best batch back to back fell on at each of `sizes`, as a
 * sentence; undefined for a run that did not record its steps.
 */
function stepRegimes(sizes: number[]): string | undefined {
  const where = (n: number, t: number) => {
    const r = refOf('adam', 'fastoptim', n, t)
    if (!r?.stepsBefore || r.stepsBefore.length !== r.rounds.length || r.usPerStep === null) return undefined
    const first = r.stepsBefore[r.rounds.indexOf(r.usPerStep)]
    const last = first + batchSteps(n)
    return last <= UNIT_STEP ? 'before' : first >= UNIT_STEP ? 'after' : 'across'
  }
  const found = sizes.flatMap((n) => [1, ALL].map((t) => ({ n, t, side: where(n, t) })))
  if (found.some((f) => f.side === undefined)) return undefined
  const sides = (['after', 'before', 'across'] as const)
    .map((side) => {
      const cases = found.filter((f) => f.side === side)
      if (cases.length === 0) return ''
      const sizesOf = [...new Set(cases.map((c) => c.n))].map((n) => {
        const ts = cases.filter((c) => c.n === n).map((c) => c.t)
        return ts.length === 2 ? label(n) : `${label(n)} (${threadsLabel(ts[0])})`
      })
      const text = { after: 'after it', before: 'before it', across: 'across it' }[side]
      return `${text} at ${sizesOf.join(', ')}`
    })
    .filter(Boolean)
  return `fastoptim's Adam skips its division by √(1 − β₂ᵗ) once that rounds to 1 in float32, from step ${UNIT_STEP.toLocaleString('en-US')} with β₂ = 0.999 (dividing by 1 changes no bits); the C Adam kernel and PyTorch divide at every step. Each measurement starts a new optimizer, and in this run fastoptim's best batches came ${sides.join('; ')}.`
}
/** Optimizers that run in stages over whole tensors (not elementwise: issue 10's memory target leaves them out). */
const STAGED = new Set(['Adafactor'])

const hasTorch = references?.results.some((r) => r.contender === 'PyTorch' && r.usPerStep !== null) ?? false
const hasC = references?.results.some((r) => r.contender.startsWith('C ') && r.usPerStep !== null) ?? false
/** The least fraction of the in-engine memory baseline's speed Adam's step is held to at `n`, if any. */
const baselineNeed = (n: number) => (n >= 1 << 22 ? 0.95 : n >= 1 << 18 ? 0.8 : undefined)
/** The least fraction of the C same-traffic kernel's speed Adam's step is held to at `n`, if any. */
const trafficNeed = (n: number) => (n >= 1 << 22 ? 0.95 : n === 1 << 18 ? 0.85 : undefined)
/** The size whose targets the report sets beside Adam's arithmetic alone. */
const FLOOR_SIZE = 1 << 18
/**
 * The least time, in µs, each thread's share of an Adam step over `params` takes on 1 and on every
 * thread: Adam's kernel over arrays in L1 (`__adamInCache`, timed in the references' run), if timed.
 */
const arithmeticFloors = (params: number): number[] | undefined => {
  const inCache = references?.adamInCache
  return inCache && [1, ALL].map((t) => inCache.secondsPerElement * Math.ceil(params / t) * 1e6)
}
/** The thread counts (1, every thread) whose floor is above the time the target allows. */
const floorAbove = (floors: number[], allowed: number[]) =>
  [1, ALL].filter((_, i) => floors[i] > allowed[i]).map(threadsLabel)
/** A verdict: met, or how far from `need` the worst of `xs` (ratios where higher is better) is. */
const verdict = (xs: number[], need: number) => {
  const worst = Math.min(...xs)
  const short = (1 - worst / need) * 100
  // A miss too small to show in whole percents (or in the two digits the ratios are given in)
  // shows the ratio to four.
  return worst >= need
    ? 'met'
    : Number.isFinite(worst)
      ? short >= 0.5
        ? `missed by ${fmt(short, 0)}%`
        : `missed by ${fmt(short, 2)}% (${fmt(worst, 4)})`
      : 'not measured'
}
const pair = (xs: number[], digits = 2) => `${xs.map((x) => fmt(x, digits)).join(' / ')}`
const ratioTarget = (issue: string, what: string, xs: number[], need: number, unit = '×', rounds = '') =>
  targets.push([
    issue,
    what,
    `${pair(xs)}${unit} (1 / ${ALL} thr)${rounds ? `; round by round ${rounds}` : ''}`,
    verdict(xs, need),
    Math.min(...xs) >= need,
  ])

const lines: string[] = []
const out = (line = '') => lines.push(line)

const m = throughput.machine
out(
  `Run of ${throughput.date.slice(0, 16).replace('T', ' ')} UTC on ${m.cpu} (${m.cpusAvailable} CPUs available to the process, ${m.threadsPerCore} thread per core, L2 ${m.l2}, L3 ${m.l3}, AVX-512 ${m.avx512}, ${m.hypervisor} guest), ${m.memoryGiB} GiB of memory, Node ${m.node}; ${references ? `${references.c}; ${references.torch}` : 'no references in this run (benchmark/references.ts did not run)'}. The suite took ${Math.round(throughput.seconds)} s${references ? `, the references ${Math.round(references.seconds)} s` : ''}.${references?.quick ? ' **Quick mode: tiny sizes and times, to check the pipeline; the figures mean nothing.**' : ''}`,
)
out()
out(`### Adam, fp32: parameters per second (Gparam/s), ${threadsLabel(1)} and ${threadsLabel(ALL)}`)
out()
out(
  `Each cell is one benny case of one run; fastoptim and the memory baseline ran in the same process, on the same arrays' sizes and threads. "Fraction of the limit" is fastoptim's speed over the memory baseline's on the same threads: both move ${ADAM_BYTES} bytes per parameter.`,
)
out()
out(
  `| params | plain JS loop | tfjs cpu | tfjs wasm | PyTorch fused, 1 / ${ALL} thr | fastoptim, 1 / ${ALL} thr | µs per step, 1 / ${ALL} thr | GB/s, 1 / ${ALL} thr | memory baseline GB/s, 1 / ${ALL} thr | fraction of the limit, 1 / ${ALL} thr | × plain JS (${ALL} thr) | × PyTorch, 1 / ${ALL} thr |`,
)
out('|---|---|---|---|---|---|---|---|---|---|---|---|')
/** Each target of the issues, with what this run measured: [issue, target, measured, verdict, met]. */
const targets: Array<[string, string, string, string, boolean]> = []
for (const n of SIZES) {
  const suite = `adam-${label(n)}`
  if (!rows.some((r) => r.suite === suite)) continue
  const js = find(suite, 'plain JS loop (1 thread)')
  const cpu = find(suite, 'tfjs cpu (1 thread)')
  const wasm = find(suite, 'tfjs wasm (1 thread)')
  const fo = [1, ALL].map((t) => find(suite, `fastoptim Adam (${threadsLabel(t)})`))
  const base = [1, ALL].map((t) => find(suite, `memory baseline (${threadsLabel(t)})`))
  const pt = [1, ALL].map((t) => n / refUs('adam', 'PyTorch', n, t) / 1e3)
  const frac = fo.map((r, i) => gparam(r) / gparam(base[i]))
  const vsTorch = fo.map((r, i) => gparam(r) / pt[i])
  const gb = (r: Row | undefined) => gparam(r) * ADAM_BYTES
  const tfjsCell = (r: Row | undefined) =>
    r?.error ? r.error : `${fmt(gparam(r), 3)}${r && r.samples === 1 ? ' (1 step)' : ''}`
  out(
    `| ${label(n)} | ${fmt(gparam(js), 3)} | ${tfjsCell(cpu)} | ${tfjsCell(wasm)} | ${fmt(pt[0])} / ${fmt(pt[1])} | **${fmt(gparam(fo[0]))} / ${fmt(gparam(fo[1]))}** | ${fmt(us(fo[0]))} / ${fmt(us(fo[1]))} | ${fmt(gb(fo[0]), 1)} / ${fmt(gb(fo[1]), 1)} | ${fmt(gb(base[0]), 1)} / ${fmt(gb(base[1]), 1)} | ${fmt(frac[0])} / ${fmt(frac[1])} | ${fmt(gparam(fo[1]) / gparam(js), 1)} | ${fmt(vsTorch[0], 1)} / ${fmt(vsTorch[1], 1)} |`,
  )
  const need = baselineNeed(n)
  if (need !== undefined) {
    targets.push([
      'earlier',
      `≥ ${need}× the memory baseline at ${label(n)}`,
      `${fmt(frac[0])} (1 thr), ${fmt(frac[1])} (${ALL} thr)`,
      frac[1] >= need ? 'met' : `missed by ${fmt((1 - frac[1] / need) * 100, 0)}% (${ALL} thr)`,
      frac[1] >= need,
    ])
  }
  if (n >= 1 << 14) {
    const x = gparam(fo[1]) / gparam(js)
    targets.push([
      'earlier',
      `≥ 10× the plain JS loop at ${label(n)}`,
      `${fmt(x, 1)}×`,
      x >= 10 ? 'met' : `missed by ${fmt((1 - x / 10) * 100, 0)}%`,
      x >= 10,
    ])
  }
  if (n === 1 << 10) {
    const t = Math.min(us(fo[0]), us(fo[1]))
    targets.push([
      'earlier',
      '≤ 2 µs per step at 1K, Node-API call included',
      `${fmt(t)} µs`,
      t <= 2 ? 'met' : `missed by ${fmt(t - 2)} µs`,
      t <= 2,
    ])
  }
}
// The floor under the 256K memory-baseline target: Adam's arithmetic alone, which the references
// time in their own run (`__adamInCache`).
const floorSuite = `adam-${label(FLOOR_SIZE)}`
const baselineFloors = arithmeticFloors(FLOOR_SIZE)
if (baselineFloors && rows.some((r) => r.suite === floorSuite)) {
  const base = [1, ALL].map((t) => us(find(floorSuite, `memory baseline (${threadsLabel(t)})`)))
  const need = baselineNeed(FLOOR_SIZE)!
  const allowed = base.map((b) => b / need)
  const above = floorAbove(baselineFloors, allowed)
  out()
  out(
    `At ${label(FLOOR_SIZE)} the memory baseline's step took ${pair(base, 1)} µs (${threadsLabel(1)} / ${threadsLabel(ALL)}), so ${need}× its speed allows Adam at most ${pair(allowed, 1)} µs. Adam's arithmetic alone (its kernel over arrays in L1, below) takes each thread's share at least ${pair(baselineFloors, 1)} µs.${above.length ? ` On ${above.join(' and ')} that is more than the target allows.` : ''}`,
  )
}
out()

const model = [1, ALL].map((t) => ({
  t,
  many: find('adam-200x1K', `fastoptim Adam, 200 x 1K (${threadsLabel(t)})`),
  one: find('adam-200x1K', `fastoptim Adam, 1 x 200K (${threadsLabel(t)})`),
  fresh: find('adam-200x1K', `fastoptim Adam, 200 x 1K, new gradient arrays (${threadsLabel(t)})`),
}))
if (model.some((x) => x.many)) {
  out('### 200 tensors of 1K against one tensor of 200K (Adam, fp32)')
  out()
  out(
    '| | µs per step, 200 × 1K | µs per step, 200 × 1K, new gradient arrays each step | µs per step, 1 × 200K | ratio (200 × 1K / 1 × 200K) |',
  )
  out('|---|---|---|---|---|')
  const js = find('adam-200x1K', 'plain JS loop, 200 x 1K (1 thread)')
  const cpu = find('adam-200x1K', 'tfjs cpu, 200 x 1K (1 thread)')
  out(`| plain JS loop | ${fmt(us(js), 1)} | | | |`)
  out(`| tfjs cpu | ${fmt(us(cpu), 1)} | | | |`)
  for (const { t, many, one, fresh } of model) {
    const ratio = us(many) / us(one)
    out(
      `| fastoptim, ${threadsLabel(t)} | ${fmt(us(many), 1)} | ${fresh ? fmt(us(fresh), 1) : '–'} | ${fmt(us(one), 1)} | **${fmt(ratio)}** |`,
    )
    targets.push([
      'earlier',
      `200 tensors × 1K ≤ 1.25× one 200K tensor, ${threadsLabel(t)}`,
      `${fmt(ratio)}×`,
      ratio <= 1.25 ? 'met' : `missed by ${fmt((ratio / 1.25 - 1) * 100, 0)}%`,
      ratio <= 1.25,
    ])
  }
  out()
}

if (memory) {
  out('### Memory per step (Adam, fp32)')
  out()
  out(
    '| model | threads | steps | Rust allocations per step | bytes allocated per step | resident MiB: first sample / last / min / max |',
  )
  out('|---|---|---|---|---|---|')
  for (const r of memory.rows) {
    out(
      `| ${r.model} | ${r.threads} | ${r.steps.toLocaleString('en')} | ${r.allocationsPerStep} | ${r.bytesAllocatedPerStep} | ${r.rssMiB.first} / ${r.rssMiB.last} / ${r.rssMiB.min} / ${r.rssMiB.max} |`,
    )
    // Flat: no growth from the first sample to the last (the heap may shrink after a collection).
    const flat = r.rssMiB.last - r.rssMiB.first < 4
    const ok = r.bytesAllocatedPerStep === 0 && flat
    targets.push([
      'earlier',
      `0 bytes allocated per step, resident memory flat over ${r.steps.toLocaleString('en')} steps (${r.model}, ${threadsLabel(r.threads)})`,
      `${r.bytesAllocatedPerStep} B/step; RSS ${r.rssMiB.first} → ${r.rssMiB.last} MiB`,
      ok ? 'met' : flat ? `missed by ${r.bytesAllocatedPerStep} B/step (RSS flat)` : 'missed',
      ok,
    ])
  }
  out()
}

if (eventLoop) {
  const n = eventLoop.rows[0]?.params ?? 0
  const optimizerOf = (r: (typeof eventLoop.rows)[number]) => r.optimizer ?? 'Adam'
  const names = [...new Set(eventLoop.rows.map(optimizerOf))]
  out(
    `### Event-loop delay while ${label(n)} parameters step (${names.join(', ')}; ${threadsLabel(eventLoop.threads)})`,
  )
  out()
  out(
    'The first step of each mode makes the state and is left out of the other columns; its own time is in "first step". ' +
      'step() maps the new state pages by writing them on the pool before the update reads them; stepAsync() does the same part by part, in its slices or on its worker thread, so that the event loop stays free.',
  )
  out()
  out(
    'GB/s counts the bytes each step moves per parameter: 28 for Adam (fp32 state), 16 for Adam8bit (its codes, without the absmax of each block of 256).',
  )
  out()
  out(
    '| optimizer | mode | first step (ms) | ms per step | GB/s | delay p50 / p99 / max (ms) | 1 ms timer ticks per second |',
  )
  out('|---|---|---|---|---|---|---|')
  for (const r of eventLoop.rows)
    out(
      `| ${optimizerOf(r)} | ${r.mode} | ${r.firstStepMs ?? '-'} | ${r.msPerStep} | ${r.gbPerSecond} | ${r.delayMs.p50} / ${r.delayMs.p99} / ${r.delayMs.max} | ${r.timerTicksPerSecond} |`,
    )
  for (const r of eventLoop.rows.filter((r) => r.mode.startsWith('stepAsync'))) {
    targets.push([
      optimizerOf(r) === 'Adam' ? '12' : '13',
      `event-loop delay p99 ≤ 2 ms during ${optimizerOf(r)}'s stepAsync() over ${label(n)}: ${r.mode.replace('stepAsync(), ', '')}`,
      `${r.delayMs.p99} ms`,
      r.delayMs.p99 <= 2 ? 'met' : `missed by ${fmt(r.delayMs.p99 - 2)} ms`,
      r.delayMs.p99 <= 2,
    ])
  }
  out()
}

if (threadSwitch) {
  const all = threadSwitch.allThreads
  const busy = (p: SwitchPhase) => (p.othersCpu ?? 0) > 0.1
  const median = (xs: number[]) => {
    const s = [...xs].sort((a, b) => a - b)
    return s.length === 0 ? NaN : s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2
  }
  out(`### The step after setNumThreads (Adam, fp32, ${threadsLabel(all)})`)
  out()
  out(
    `One process alternates setNumThreads(1) and setNumThreads(${all}) ${threadSwitch.cycles} times and times ${threadSwitch.batches} batches of ${threadSwitch.stepsPerBatch} steps right after each switch (\`benchmark/thread-switch.ts\`); a phase's time is its best batch. Before each switch to ${threadsLabel(all)} a fresh process starts (its one pool, on ${threadsLabel(all)}, made at its start, its steps warmed up), and after the switch the two run their batches in turn, the switched process's first: the machine's memory speed drifts, by up to 2× within seconds on a shared machine, and in turns both see the same drift. "Fresh processes alone beside it" are processes timed by themselves just before and just after the phase (one before the first switch and one after every second cycle); "first batch" is the ${threadSwitch.stepsPerBatch} steps right after a switch. A third process takes the same turns: started with the switching one and as old, on ${threadsLabel(all)} from its start, it never calls setNumThreads; what separates the switched phase from it is the pools' doing, what separates both from the fresh process is not. A phase counts as disturbed when processes other than these kept more than 0.1 CPU busy meanwhile.`,
  )
  out()
  out(
    `| params | fresh process alone, ms per step, 1 / ${all} thr | after a switch to ${all} thr: median / worst phase (ms) | the fresh process in turn: median / worst phase (ms) | switched / fresh in turn, phase by phase: median / worst | phases within 10% of the fresh process in turn | never switched / fresh in turn: median / worst (phases within 10%) | switched / never switched in turn: median / worst (phases within 10%) | worst phase / fresh processes alone beside it (phases within 10%; those processes' spread) | first batch after a switch: median / worst (ms) | fewest threads in a step | threads left by earlier pools, most in a phase | after a switch to 1 thr: median / worst phase (ms) | disturbed phases |`,
  )
  out('|---|---|---|---|---|---|---|---|---|---|---|---|---|---|')
  const ratios: string[] = []
  for (const size of threadSwitch.sizes) {
    const fresh = (t: number) => size.fresh.find((f) => f.threads === t)?.bestMs ?? NaN
    // How far fresh processes timed alone differ among themselves.
    const freshRuns = size.fresh.find((f) => f.threads === all)?.runs.map((r) => r.bestMs) ?? []
    const freshSpread = Math.max(...freshRuns) / Math.min(...freshRuns)
    const many = size.phases.filter((p) => p.threads === all)
    const one = size.phases.filter((p) => p.threads === 1)
    const best = many.map((p) => p.bestMs)
    // The faster of the fresh processes timed alone right before and right after a phase (the
    // fastest of all when the results do not say when each ran).
    const freshAll = size.fresh.find((f) => f.threads === all)?.runs ?? []
    const beside = (cycle: number) => {
      const before = freshAll.filter((r) => r.afterCycle !== undefined && r.afterCycle < cycle)
      const after = freshAll.filter((r) => r.afterCycle !== undefined && r.afterCycle >= cycle)
      const near = [before[before.length - 1], after[0]].filter((r) => r !== undefined)
      return near.length > 0 ? Math.min(...near.map((r) => r.bestMs)) : fresh(all)
    }
    const overAlone = many.map((p) => p.bestMs / beside(p.cycle))
    const withinAlone = overAlone.filter((x) => x <= 1.1).length
    // Each switched phase over the fresh process that took turns with it.
    const turns = size.turns ?? []
    const inTurn = many.map((p) => turns.find((c) => c.cycle === p.cycle)?.bestMs ?? NaN)
    const over = many.map((p, i) => p.bestMs / inTurn[i])
    const measured = over.filter(Number.isFinite)
    const within = measured.filter((x) => x <= 1.1).length
    const worstOver = measured.length ? Math.max(...measured) : NaN
    // The process that never switched, over the fresh one, and each switched phase over it.
    const steady = many.map((p) => (size.steadyTurns ?? []).find((c) => c.cycle === p.cycle)?.bestMs ?? NaN)
    const steadyOver = steady.map((x, i) => x / inTurn[i]).filter(Number.isFinite)
    const overSteady = many.map((p, i) => p.bestMs / steady[i]).filter(Number.isFinite)
    const pair = (xs: number[]) =>
      xs.length
        ? `${fmt(median(xs))} / ${fmt(Math.max(...xs))} (${xs.filter((x) => x <= 1.1).length} of ${xs.length})`
        : 'not run'
    const joined = Math.min(...many.map((p) => p.joinedMin ?? Infinity))
    // fastoptim's threads alive at a phase's end beyond its own pool's workers.
    const leftOver = Math.max(...size.phases.map((p) => (p.poolThreads ?? -Infinity) - (p.threads - 1)))
    const turnCell = turns.length
      ? `${fmt(median(turns.map((p) => p.bestMs)))} / ${fmt(Math.max(...turns.map((p) => p.bestMs)))}`
      : 'not run'
    out(
      `| ${label(size.params)} | ${fmt(fresh(1))} / ${fmt(fresh(all))} | ${fmt(median(best))} / ${fmt(Math.max(...best))} | ${turnCell} | ${fmt(median(measured))} / **${fmt(worstOver)}** | ${within} of ${many.length} | ${pair(steadyOver)} | ${pair(overSteady)} | ${fmt(Math.max(...overAlone))} (${withinAlone} of ${many.length}; ${fmt(freshSpread)}×) | ${fmt(median(many.map((p) => p.firstMs)))} / ${fmt(Math.max(...many.map((p) => p.firstMs)))} | ${Number.isFinite(joined) ? joined : '–'} | ${Number.isFinite(leftOver) ? leftOver : '–'} | ${fmt(median(one.map((p) => p.bestMs)))} / ${fmt(Math.max(...one.map((p) => p.bestMs)))} | ${size.phases.filter(busy).length} of ${size.phases.length} |`,
    )
    ratios.push(
      `${label(size.params)}: ${many.map((p, i) => `${fmt(over[i])}${busy(p) ? '*' : ''}`).join(', ')}${steadyOver.length ? ` (never switched: ${steadyOver.map((x) => fmt(x)).join(', ')})` : ''}`,
    )
    const slow = many.filter((_, i) => !(over[i] <= 1.1))
    const ok = slow.length === 0 && measured.length === many.length && many.length > 0
    const quietSlow = slow.filter((p) => !busy(p)).length
    targets.push([
      '16',
      `after any sequence of setNumThreads, the ${all}-thread step within 10% of a fresh process's in every phase (${label(size.params)})`,
      `worst phase ${fmt(worstOver)}× the fresh process that took turns with it; ${within} of ${many.length} phases within 10%${steadyOver.length ? ` (a process that never switched, in the same turns: worst ${fmt(Math.max(...steadyOver))}×, ${steadyOver.filter((x) => x <= 1.1).length} of ${steadyOver.length} within 10%; switched over never switched: worst ${fmt(Math.max(...overSteady))}×)` : ''}`,
      ok
        ? 'met'
        : `missed in ${slow.length} phase${slow.length === 1 ? '' : 's'} (${slow.length - quietSlow} of them disturbed)`,
      ok,
    ])
  }
  out()
  out(
    `Each phase on ${threadsLabel(all)}, in order, over the fresh process that took turns with it (* disturbed), and the same for the process that never switched: ${ratios.join('; ')}.`,
  )
  out()
}

if (references) {
  const sizes = [...new Set(references.results.filter((r) => r.scenario === 'adam').map((r) => r.params))]
  const cell = (scenario: Reference['scenario'], who: string, n: number) =>
    pair([1, ALL].map((t) => refUs(scenario, who, n, t)))
  const speedup = (scenario: Reference['scenario'], who: string, n: number) =>
    [1, ALL].map((t) => refUs(scenario, who, n, t) / refUs(scenario, 'fastoptim', n, t))
  out(`### Adam against references outside fastoptim: µs per step, ${threadsLabel(1)} / ${threadsLabel(ALL)}`)
  out()
  out(
    `benchmark/references.ts, in one process with two servers (\`benchmark/c/reference.c\` compiled at bench time, and \`benchmark/torch_reference.py\`), one measurement at a time in turn, ${references.rounds} round${references.rounds > 1 ? 's' : ''} (the best counts), each the best batch of steps back to back over about ${references.secondsPerCase} s. "C traffic" moves Adam's ${ADAM_BYTES} bytes per parameter with one addition each: the speed of memory outside fastoptim's engine. A ratio is the other's time over fastoptim's (above 1: fastoptim is faster). The targets below also give that ratio round by round, its lowest and highest over the rounds, each from two measurements of one turn: where the machine's memory or cores changed speed between turns, the best rounds of two contenders can come from different states of the machine, and the rounds show how far that moved the ratio.`,
  )
  out()
  out(`| params | fastoptim | C Adam | C traffic | PyTorch fused | × C Adam | × C traffic | × PyTorch |`)
  out('|---|---|---|---|---|---|---|---|')
  for (const n of sizes) {
    out(
      `| ${label(n)} | **${cell('adam', 'fastoptim', n)}** | ${cell('adam', 'C Adam', n)} | ${cell('adam', 'C traffic', n)} | ${cell('adam', 'PyTorch', n)} | ${pair(speedup('adam', 'C Adam', n))} | ${pair(speedup('adam', 'C traffic', n))} | ${pair(speedup('adam', 'PyTorch', n))} |`,
    )
    const rounds = (who: string) => roundRange(roundRatios('adam', who, n))
    if (hasTorch)
      ratioTarget(
        '12',
        `≥ 1.0× PyTorch's fused Adam at ${label(n)}`,
        speedup('adam', 'PyTorch', n),
        1,
        '×',
        rounds('PyTorch'),
      )
    if (hasC) {
      const traffic = trafficNeed(n)
      if (traffic !== undefined)
        ratioTarget(
          '12',
          `≥ ${traffic}× the C same-traffic kernel at ${label(n)}`,
          speedup('adam', 'C traffic', n),
          traffic,
          '×',
          rounds('C traffic'),
        )
      if (n === 1 << 14)
        ratioTarget(
          '12',
          `≥ 0.8× the C Adam kernel at ${label(n)}`,
          speedup('adam', 'C Adam', n),
          0.8,
          '×',
          rounds('C Adam'),
        )
    }
  }
  out()
  const regimes = stepRegimes(sizes)
  if (regimes) {
    out(regimes)
    out()
  }
  // The floor under the 256K target: Adam's arithmetic alone, timed in this run.
  const inCache = references.adamInCache
  const floors = arithmeticFloors(FLOOR_SIZE)
  if (inCache && floors && hasC && sizes.includes(FLOOR_SIZE)) {
    const need = trafficNeed(FLOOR_SIZE)!
    const allowed = [1, ALL].map((t) => refUs('adam', 'C traffic', FLOOR_SIZE, t) / need)
    const above = floorAbove(floors, allowed)
    const verdict = above.length
      ? ` On ${above.join(' and ')} that floor is above what the target allows: this kernel cannot meet it on this machine.`
      : ''
    out(
      `Adam's arithmetic alone: fastoptim's Adam kernel over the same ${inCache.elements} elements again and again (their arrays in L1), on one thread (\`__adamInCache\`, timed at the start and the end of this run, the better counting), took ${fmt(inCache.secondsPerElement * 16e9)} ns per 16 elements, with the square root and the division per element that PyTorch's bits need. At ${label(FLOOR_SIZE)} each thread's share then takes at least ${pair(floors, 1)} µs (${threadsLabel(1)} / ${threadsLabel(ALL)}), before any time to reach the arrays; ${need}× the C traffic kernel allows at most ${pair(allowed, 1)} µs.${verdict}`,
    )
    out()
  }
  const trainSizes = [...new Set(references.results.filter((r) => r.scenario === 'train').map((r) => r.params))]
  const trainRounds = references.trainRounds ?? references.rounds
  const trainRoundsText = `${trainRounds} round${trainRounds > 1 ? 's' : ''}`
  const added = references.evictWork === 'add'
  const evictText = added ? 'reads and writes' : 'writes over'
  const evictWhy = added
    ? " It adds one to each of the buffer's float64s, every cache line read and written by ordinary loads and stores, in each language (a JavaScript loop here, C, numpy, Rust for the engine alone). A fill of that size would not do: it is a string store, which the processor may keep out of the caches."
    : ''
  out(
    `### A training loop: Adam's median step after cache-evicting work, µs, ${threadsLabel(1)} / ${threadsLabel(ALL)}`,
  )
  out()
  out(
    `Before each of ${references.trainSteps} steps, the calling thread ${evictText} ${fmt(references.evictBytes / 2 ** 20, 0)} MiB of another buffer (untimed): what a forward and backward pass does to the caches.${evictWhy} Each contender in its own process or this one, in turn, over ${trainRoundsText}; the best round's median step counts.`,
  )
  out()
  const floor = (n: number, t: number) => refUs('train', 'Node-API call', n, t)
  const hasFloor = trainSizes.some((n) => Number.isFinite(floor(n, 1)))
  if (hasFloor) {
    const smallest = trainSizes[0]
    const share = [1, ALL].map((t) => (100 * floor(smallest, t)) / refUs('train', 'C Adam', smallest, t))
    const against = hasC
      ? ` At ${label(smallest)} that call alone takes ${pair(share, 0)} % of the C kernel's whole step (${threadsLabel(1)} / ${threadsLabel(ALL)}): the C program's step touches a few pages of its own, a step from Node first runs JavaScript and Node-API code that the work in between has evicted too.`
      : ''
    out(
      `"Node-API call" is the floor under any step made from JavaScript: a native function that only returns a number, timed in the same loop.${against}`,
    )
    out()
  }
  // The engine stepping from native code under the same conditions (absent from older runs).
  const engine = (n: number, t: number) => refUs('train', 'engine alone', n, t)
  const hasEngine = trainSizes.some((n) => Number.isFinite(engine(n, 1)))
  if (hasEngine) {
    out(
      `"Engine alone" is the same loop with the step made from native code (\`__adamTrainingLoop\`): the step count and scalars advanced, the state taken and the kernels run on the pool as a step from JavaScript runs them after its checks, each step after ${added ? 'the same work on' : 'writing over'} a buffer of the same size. It is what fastoptim's step costs without the call from JavaScript; "engine × C Adam" is the C kernel's time over it.`,
    )
    out()
  }
  const engineCols = hasEngine ? ' engine alone |' : ''
  out(
    `| params | fastoptim |${engineCols} C Adam | PyTorch fused |${hasFloor ? ' Node-API call |' : ''} × C Adam |${hasEngine ? ' engine × C Adam |' : ''} × PyTorch |`,
  )
  out(`|---|---|---|---|${hasEngine ? '---|---|' : ''}${hasFloor ? '---|' : ''}---|---|`)
  for (const n of trainSizes) {
    const engineCell = hasEngine ? ` ${cell('train', 'engine alone', n)} |` : ''
    const engineRatio = hasEngine
      ? ` ${pair([1, ALL].map((t) => refUs('train', 'C Adam', n, t) / engine(n, t)))} |`
      : ''
    out(
      `| ${label(n)} | **${cell('train', 'fastoptim', n)}** |${engineCell} ${cell('train', 'C Adam', n)} | ${cell('train', 'PyTorch', n)} |${hasFloor ? ` ${cell('train', 'Node-API call', n)} |` : ''} ${pair(speedup('train', 'C Adam', n))} |${engineRatio} ${pair(speedup('train', 'PyTorch', n))} |`,
    )
    if (hasC)
      ratioTarget(
        '12',
        `training loop: ≥ 0.9× the C Adam kernel at ${label(n)}`,
        speedup('train', 'C Adam', n),
        0.9,
        '×',
        roundRange(roundRatios('train', 'C Adam', n)),
      )
  }
  out()
  if (hasFloor && hasC) {
    // What the smallest size's target leaves above the bare call, beside the step back to back.
    const smallest = trainSizes[0]
    const allowed = [1, ALL].map((t) => refUs('train', 'C Adam', smallest, t) / 0.9)
    const rest = [1, ALL].map((t, i) => allowed[i] - floor(smallest, t))
    // Where the bare call alone takes more than the target allows, nothing is left (said so, not
    // printed as a negative time).
    const over = [1, ALL].filter((_, i) => rest[i] <= 0).map((t) => threadsLabel(t))
    const leftText =
      over.length === 0
        ? `that leaves ${pair(rest)} µs`
        : over.length === 2
          ? 'nothing is left'
          : `that leaves ${pair(rest.map((r) => Math.max(r, 0)))} µs (on ${over[0]} the call alone takes more than the target allows)`
    const warm = [1, ALL].map((t) => refUs('adam', 'fastoptim', smallest, t))
    const warmText = warm.every(Number.isFinite)
      ? ` Back to back, with its arrays and code in cache, fastoptim's whole step at ${label(smallest)} took ${pair(warm)} µs in this run.`
      : ''
    const alone = [1, ALL].map((t) => engine(smallest, t))
    // Round by round, fastoptim's median step less the engine's, measured one after the other.
    const callCost = [1, ALL].map((t) => {
      const diffs = roundPairs('train', 'fastoptim', 'engine alone', smallest, t)
        .map(([ours, bare]) => ours - bare)
        .sort((a, b) => a - b)
      return diffs.length ? diffs[diffs.length >> 1] : NaN
    })
    const engineText =
      alone.every(Number.isFinite) && callCost.every(Number.isFinite)
        ? ` The engine alone took ${pair(alone)} µs there; round by round, fastoptim's step took ${pair(callCost)} µs longer (the median over the rounds): what the call from JavaScript costs over evicted code and data (the facade, Node-API and the binding's checks).`
        : ''
    out(
      `At ${label(smallest)}, 0.9× the C kernel allows fastoptim's step at most ${pair(allowed)} µs (${threadsLabel(1)} / ${threadsLabel(ALL)}); less the bare Node-API call, ${leftText} for the JavaScript facade, the binding and the kernel over the same evicted arrays, where the C kernel's whole step took ${pair([1, ALL].map((t) => refUs('train', 'C Adam', smallest, t)))} µs.${engineText}${warmText}`,
    )
    out()
  }

  const optimizers = [...new Set(references.results.filter((r) => r.scenario === 'optimizers').map((r) => r.optimizer))]
  const optSizes = [...new Set(references.results.filter((r) => r.scenario === 'optimizers').map((r) => r.params))]
  const c64 = (t: number) => refUs('adam', 'C traffic', 1 << 26, t)
  // GB/s of the C traffic kernel timed beside an optimizer of 20 bytes per parameter, over that of
  // the one timed beside Adam (28 bytes), on 1 and on every thread.
  const twentyBytes = optimizers.find((name) => bytesPerParam(name) === 20)
  const ofStreams = twentyBytes
    ? `${pair(
        [1, ALL].map(
          (t) =>
            20 /
            refUs('optimizers', 'C traffic', 1 << 26, t, twentyBytes) /
            (ADAM_BYTES / refUs('optimizers', 'C traffic', 1 << 26, t, 'Adam')),
        ),
      )} (1 / ${ALL} threads)`
    : 'an unmeasured fraction'
  out(
    `### Every optimizer against its PyTorch counterpart: Gparam/s, and × PyTorch, ${threadsLabel(1)} / ${threadsLabel(ALL)}`,
  )
  out()
  out(
    `Back to back, fastoptim and its counterpart (${[...new Set(references.results.filter((r) => r.scenario === 'optimizers' && r.path).map((r) => r.path!))].join('; ') || 'none ran'}) alternating case by case: fastoptim and PyTorch take turns over ${references.rounds} rounds at every size (at 64M with the C traffic kernel) and each one's best counts. "Of memory at 64M" is the C traffic kernel's time at 64M over the optimizer's, the two timed in turn, round by round; that kernel moves the optimizer's own arrays with one addition each (p and g, its state buffers read and written, ASGD's average, only written before averaging starts, stored around the caches), so both move the optimizer's bytes per parameter (4 for each array read and for each written). A loop's memory speed depends on how many arrays it streams, not only on its bytes: here the C kernel that reads three arrays and writes two (20 bytes per parameter) moved ${ofStreams} as many GB/s as the one that reads four and writes three (Adam's 28).`,
  )
  out()
  out(`| optimizer | ${optSizes.map(label).join(' | ')} | of memory at 64M |`)
  out(`|---|${optSizes.map(() => '---').join('|')}|---|`)
  for (const name of optimizers) {
    const state = bytesPerParam(name)
    // The C traffic kernel timed beside the optimizer moves its own arrays; without it, Adam's
    // traffic kernel from the Adam scenario, scaled to the optimizer's bytes.
    const ofMemory = [1, ALL].map(
      (t) =>
        (refUs('optimizers', 'C traffic', 1 << 26, t, name) || (c64(t) * state) / ADAM_BYTES) /
        refUs('optimizers', 'fastoptim', 1 << 26, t, name),
    )
    const cells = optSizes.map((n) => {
      const ours = [1, ALL].map((t) => n / refUs('optimizers', 'fastoptim', n, t, name) / 1e3)
      const vs = [1, ALL].map(
        (t) => refUs('optimizers', 'PyTorch', n, t, name) / refUs('optimizers', 'fastoptim', n, t, name),
      )
      return `${pair(ours)} (${pair(vs, 1)}×)`
    })
    out(`| ${name} | ${cells.join(' | ')} | ${pair(ofMemory)} |`)
    if (hasTorch) {
      const all = optSizes.flatMap((n) =>
        [1, ALL].map((t) => refUs('optimizers', 'PyTorch', n, t, name) / refUs('optimizers', 'fastoptim', n, t, name)),
      )
      const worst = Math.min(...all)
      targets.push([
        '10',
        `${name} faster than its PyTorch counterpart at every size, 1 and ${ALL} threads`,
        `slowest ${fmt(worst)}× PyTorch`,
        worst > 1 ? 'met' : Number.isFinite(worst) ? 'missed' : 'not measured',
        worst > 1,
      ])
    }
    if (hasC && !STAGED.has(name) && optSizes.includes(1 << 26))
      ratioTarget('10', `${name} ≥ 0.9× the memory baseline at 64M (its ${state} bytes/param)`, ofMemory, 0.9)
  }
  out()
}

if (sparse) {
  const share = (100 * sparse.sparseTime) / sparse.denseTime
  out(
    `### SparseAdam: a step naming ${sparse.named} rows of a ${label(sparse.rows)} × ${sparse.width} table takes ${fmt(share, 4)}% of dense Adam's step over the table (${threadsLabel(sparse.threads)}; \`benchmark/sparse.ts\`)`,
  )
  out()
  targets.push([
    '10',
    `SparseAdam: ${sparse.named} rows of a ${label(sparse.rows)} × ${sparse.width} table < 1% of a dense Adam step`,
    `${fmt(share, 4)}%`,
    share < 1 ? 'met' : 'missed',
    share < 1,
  ])
}

if (eightbit) {
  const us = (contender: string, n: number, t: number) =>
    eightbit.rows.find((r) => r.contender === contender && r.params === n && r.threads === t)?.usPerStep ?? NaN
  const sizes = [...new Set(eightbit.rows.map((r) => r.params))].sort((a, b) => a - b)
  const largest = sizes[sizes.length - 1]
  const hasBnb = eightbit.rows.some((r) => r.contender === 'bitsandbytes Adam8bit')
  out(
    `### 8-bit and bfloat16 state: Gparam/s, ${threadsLabel(1)} / ${threadsLabel(ALL)}, and × fp32 Adam (\`benchmark/eightbit.ts\`)`,
  )
  out()
  out(
    `fp32 Adam, the 8-bit optimizers and the engine's memory-traffic kernel timed in turn, round by round; a tensor under 4096 elements keeps fp32 state, as in bitsandbytes. An 8-bit Adam step moves ${eightbit.eightBitBytes} bytes per parameter where fp32 Adam moves ${eightbit.adamBytes}: "memory limit" is the traffic kernel's speed × ${eightbit.adamBytes}/${eightbit.eightBitBytes}. ${eightbit.bitsandbytes}.`,
  )
  out()
  const hasBf16 = eightbit.bf16Bytes !== undefined
  const contenders = ['Adam (fp32)', 'Adam8bit', 'AdamW8bit', 'Lion8bit', ...(hasBf16 ? ['Adam (bf16 state)'] : [])]
  if (hasBnb) contenders.push('bitsandbytes Adam8bit')
  out(`| optimizer | ${sizes.map(label).join(' | ')} |`)
  out(`|---|${sizes.map(() => '---').join('|')}|`)
  for (const name of contenders) {
    const cells = sizes.map((n) => {
      const speed = [1, ALL].map((t) => n / us(name, n, t) / 1e3)
      const vs = [1, ALL].map((t) => us('Adam (fp32)', n, t) / us(name, n, t))
      return name === 'Adam (fp32)' ? pair(speed, 3) : `${pair(speed, 3)} (${pair(vs)}×)`
    })
    out(`| ${name} | ${cells.join(' | ')} |`)
  }
  const limit = (bytes: number) =>
    sizes.map((n) =>
      pair(
        [1, ALL].map((t) => (n / us('memory traffic (28 B/param)', n, t) / 1e3) * (eightbit.adamBytes / bytes)),
        3,
      ),
    )
  for (const bytes of [eightbit.eightBitBytes, ...(hasBf16 ? [eightbit.bf16Bytes!] : [])])
    out(`| memory limit for ${bytes} B/param | ${limit(bytes).join(' | ')} |`)
  out()
  out(
    `State per parameter at ${label(largest)} (stateDict's bytes): ${Object.entries(eightbit.stateBytesPerParam)
      .map(([name, bytes]) => `${name} ${fmt(bytes, 3)} B`)
      .join(', ')}.`,
  )
  out()
  // What the 1.5× target asks of Adam8bit's speed, against its speed at every size from 256K, its
  // arrays in the caches or not.
  const from = sizes.filter((n) => n >= 1 << 18)
  if (from.length > 1) {
    const speed = (n: number, t: number) => n / us('Adam8bit', n, t) / 1e3
    const needed = [1, ALL].map((t) => (1.5 * largest) / us('Adam (fp32)', largest, t) / 1e3)
    const above = [1, ALL].every((t, i) => from.every((n) => speed(n, t) < needed[i]))
    const both = (n: number) =>
      pair(
        [1, ALL].map((t) => speed(n, t)),
        3,
      )
    const speeds = from.map((n) => `${label(n)} ${both(n)}`).join(', ')
    out(
      `Adam8bit's speed at ${speeds} Gparam/s (${threadsLabel(1)} / ${threadsLabel(ALL)}); 1.5× fp32 Adam at ${label(largest)} asks for ${pair(needed, 3)}.${above ? ' That is faster than it ran at any of these sizes, its arrays in the caches or not: the bytes it moves are not what bounds it.' : ''}`,
    )
    out()
  }
  ratioTarget(
    '13',
    `Adam8bit ≥ 1.5× fp32 Adam's step at ${label(largest)}`,
    [1, ALL].map((t) => us('Adam (fp32)', largest, t) / us('Adam8bit', largest, t)),
    1.5,
  )
  if (hasBnb)
    ratioTarget(
      '13',
      `Adam8bit ≥ 30× bitsandbytes' CPU Adam8bit at ${label(largest)}`,
      [1, ALL].map((t) => us('bitsandbytes Adam8bit', largest, t) / us('Adam8bit', largest, t)),
      30,
    )
  const stateBytes = eightbit.stateBytesPerParam['Adam8bit']
  targets.push([
    '13',
    `≤ 2.1 bytes of state per parameter for an 8-bit tensor (Adam8bit, ${label(largest)})`,
    `${fmt(stateBytes, 3)} B`,
    stateBytes <= 2.1 ? 'met' : 'missed',
    stateBytes <= 2.1,
  ])
  const bf16Bytes = eightbit.stateBytesPerParam['Adam (bf16 state)']
  if (bf16Bytes !== undefined)
    targets.push([
      '13',
      `≤ 4 bytes of state per parameter with bfloat16 state (Adam, ${label(largest)}; the step count's 8 bytes a tensor aside)`,
      `${fmt(bf16Bytes, 3)} B`,
      bf16Bytes <= 4 + 8 / largest ? 'met' : 'missed',
      bf16Bytes <= 4 + 8 / largest,
    ])
}

for (const file of otherTargets)
  for (const row of file.rows) targets.push([file.issue, row.target, row.measured, row.met ? 'met' : 'missed', row.met])

out('### Targets')
out()
out('| issue | target | measured | verdict |')
out('|---|---|---|---|')
for (const [issue, what, measured, verdict] of targets) out(`| ${issue} | ${what} | ${measured} | ${verdict} |`)

targets.push([
  '12',
  'results identical for any thread count',
  'checked by `npm test` (__test__/threads.spec.ts and the core tests), not timed',
  'tested',
  true,
])

/** Replaces the text between `<!-- name:start -->` and `<!-- name:end -->` in `file`, if it has them. */
function fill(file: string, name: string, text: string) {
  if (!existsSync(file)) return
  const doc = readFileSync(file, 'utf8')
  const start = `<!-- ${name}:start -->`
  const end = `<!-- ${name}:end -->`
  if (!doc.includes(start) || !doc.includes(end)) return
  writeFileSync(file, doc.slice(0, doc.indexOf(start) + start.length) + '\n' + text + doc.slice(doc.indexOf(end)))
}

const summary = lines.join('\n') + '\n'
writeFileSync(join(RESULTS, 'summary.md'), summary)
// Quick mode fills copies beside its results, leaving the committed documents alone.
const root = join(__dirname, '..')
const doc = (name: string) => {
  if (!QUICK) return join(root, name)
  copyFileSync(join(root, name), join(RESULTS, name))
  return join(RESULTS, name)
}
const benchmarks = doc('BENCHMARKS.md')
fill(benchmarks, 'results', summary)
fill(
  benchmarks,
  'design',
  design.map((d) => `- **${d.choice}.** ${d.why} Measured: ${d.measured} (${d.how}).`).join('\n') + '\n',
)

// README's paragraph on speed: this run's figures for Adam at the suite's sizes, nothing else.
const speed = SIZES.filter((n) => rows.some((r) => r.suite === `adam-${label(n)}`)).map((n) => {
  // The references' figure, or the suite's where the references did not run.
  const us = [1, ALL].map((t) => {
    const x = refUs('adam', 'fastoptim', n, t)
    return Number.isFinite(x)
      ? x
      : 1e6 / (find(`adam-${label(n)}`, `fastoptim Adam (${threadsLabel(t)})`)?.opsPerSecond ?? NaN)
  })
  const torch = [1, ALL].map((t) => refUs('adam', 'PyTorch', n, t) / refUs('adam', 'fastoptim', n, t))
  const traffic = [1, ALL].map((t) => refUs('adam', 'C traffic', n, t) / refUs('adam', 'fastoptim', n, t))
  const rounds = (who: string) => roundRange(roundRatios('adam', who, n)) || '–'
  return `| ${label(n)} | ${pair(us)} | ${pair(torch)} | ${rounds('PyTorch')} | ${pair(traffic)} | ${rounds('C traffic')} |`
})
fill(
  doc('README.md'),
  'speed',
  [
    `Adam, fp32, one tensor, in the run of ${throughput.date.slice(0, 10)} that [BENCHMARKS.md](https://github.com/fastoptim/fastoptim/blob/main/BENCHMARKS.md) reports (${m.cpu}, ${ALL} CPUs), on 1 / ${ALL} threads: µs per step; speed against PyTorch's fused Adam and against a C kernel that only moves the same bytes, timed in the same run (above 1: fastoptim is faster). The ratios are those of each side's best round; "round by round" gives the lowest and highest ratio of two measurements taken in the same turn: a wide range means the ratio depended on when it was measured.`,
    '',
    '| params | µs per step | × PyTorch fused | round by round | × C same-traffic kernel | round by round |',
    '|---|---|---|---|---|---|',
    ...speed,
    '',
  ].join('\n'),
)
console.log(summary)
