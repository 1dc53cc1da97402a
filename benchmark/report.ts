// `npm run bench`, last part: the tables of BENCHMARKS.md, from one run's results.
//
// Reads benchmark/results/throughput.json (suite.ts), event-loop.json, memory.json,
// thread-switch.json and, when present, torch.json (benchmark/torch_adam.py, run by hand), writes
// results/summary.md, and
// replaces the part of BENCHMARKS.md between `<!-- results:start -->` and `<!-- results:end -->`.
import { existsSync, readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'

import { ADAM_BYTES, label, RESULTS, SIZES } from './common'

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
interface TorchRow {
  model: string
  params: number
  threads: number
  usPerStep: number
  gparamPerSecond: number
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
const torch = read<{ torch: string; allThreads: number; date: string; rows: TorchRow[] }>('torch.json')
const eventLoop = read<{
  threads: number
  rows: Array<{
    mode: string
    params: number
    msPerStep: number
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
    fresh: Array<{ threads: number; bestMs: number; runs: SwitchPhase[] }>
    phases: Array<SwitchPhase & { cycle: number }>
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
const torchRow = (model: string, threads: number) => torch?.rows.find((r) => r.model === model && r.threads === threads)

const lines: string[] = []
const out = (line = '') => lines.push(line)

const m = throughput.machine
out(
  `Run of ${throughput.date.slice(0, 16).replace('T', ' ')} UTC on ${m.cpu} (${m.cpusAvailable} CPUs available to the process, ${m.threadsPerCore} thread per core, L2 ${m.l2}, L3 ${m.l3}, AVX-512 ${m.avx512}, ${m.hypervisor} guest), ${m.memoryGiB} GiB of memory, Node ${m.node}${torch ? `; PyTorch ${torch.torch}` : ''}. The suite took ${Math.round(throughput.seconds)} s.`,
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
const targets: Array<[string, string, string, boolean]> = []
for (const n of SIZES) {
  const suite = `adam-${label(n)}`
  if (!rows.some((r) => r.suite === suite)) continue
  const js = find(suite, 'plain JS loop (1 thread)')
  const cpu = find(suite, 'tfjs cpu (1 thread)')
  const wasm = find(suite, 'tfjs wasm (1 thread)')
  const fo = [1, ALL].map((t) => find(suite, `fastoptim Adam (${threadsLabel(t)})`))
  const base = [1, ALL].map((t) => find(suite, `memory baseline (${threadsLabel(t)})`))
  const pt = [1, ALL].map((t) => torchRow(label(n), t))
  const frac = fo.map((r, i) => gparam(r) / gparam(base[i]))
  const vsTorch = fo.map((r, i) => gparam(r) / (pt[i]?.gparamPerSecond ?? NaN))
  const gb = (r: Row | undefined) => gparam(r) * ADAM_BYTES
  const tfjsCell = (r: Row | undefined) =>
    r?.error ? r.error : `${fmt(gparam(r), 3)}${r && r.samples === 1 ? ' (1 step)' : ''}`
  out(
    `| ${label(n)} | ${fmt(gparam(js), 3)} | ${tfjsCell(cpu)} | ${tfjsCell(wasm)} | ${fmt(pt[0]?.gparamPerSecond ?? NaN)} / ${fmt(pt[1]?.gparamPerSecond ?? NaN)} | **${fmt(gparam(fo[0]))} / ${fmt(gparam(fo[1]))}** | ${fmt(us(fo[0]))} / ${fmt(us(fo[1]))} | ${fmt(gb(fo[0]), 1)} / ${fmt(gb(fo[1]), 1)} | ${fmt(gb(base[0]), 1)} / ${fmt(gb(base[1]), 1)} | ${fmt(frac[0])} / ${fmt(frac[1])} | ${fmt(gparam(fo[1]) / gparam(js), 1)} | ${fmt(vsTorch[0], 1)} / ${fmt(vsTorch[1], 1)} |`,
  )
  const need = n >= 1 << 22 ? 0.95 : n >= 1 << 18 ? 0.8 : undefined
  if (need !== undefined) {
    targets.push([
      `≥ ${need}× the memory baseline at ${label(n)}`,
      `${fmt(frac[0])} (1 thr), ${fmt(frac[1])} (${ALL} thr)`,
      frac[1] >= need ? 'met' : `missed by ${fmt((1 - frac[1] / need) * 100, 0)}% (${ALL} thr)`,
      frac[1] >= need,
    ])
  }
  if (n >= 1 << 14) {
    const x = gparam(fo[1]) / gparam(js)
    targets.push([
      `≥ 10× the plain JS loop at ${label(n)}`,
      `${fmt(x, 1)}×`,
      x >= 10 ? 'met' : `missed by ${fmt((1 - x / 10) * 100, 0)}%`,
      x >= 10,
    ])
  }
  if (torch) {
    const ok = vsTorch.every((x) => x > 1)
    targets.push([
      `faster than PyTorch fused CPU Adam at ${label(n)}, same threads`,
      `${fmt(vsTorch[0], 2)}× (1 thr), ${fmt(vsTorch[1], 2)}× (${ALL} thr)`,
      ok ? 'met' : 'missed',
      ok,
    ])
  }
  if (n === 1 << 10) {
    const t = Math.min(us(fo[0]), us(fo[1]))
    targets.push([
      '≤ 2 µs per step at 1K, Node-API call included',
      `${fmt(t)} µs`,
      t <= 2 ? 'met' : `missed by ${fmt(t - 2)} µs`,
      t <= 2,
    ])
  }
}
out()

const model = [1, ALL].map((t) => ({
  t,
  many: find('adam-200x1K', `fastoptim Adam, 200 x 1K (${threadsLabel(t)})`),
  one: find('adam-200x1K', `fastoptim Adam, 1 x 200K (${threadsLabel(t)})`),
}))
if (model.some((x) => x.many)) {
  out('### 200 tensors of 1K against one tensor of 200K (Adam, fp32)')
  out()
  out('| | µs per step, 200 × 1K | µs per step, 1 × 200K | ratio |')
  out('|---|---|---|---|')
  const js = find('adam-200x1K', 'plain JS loop, 200 x 1K (1 thread)')
  const cpu = find('adam-200x1K', 'tfjs cpu, 200 x 1K (1 thread)')
  out(`| plain JS loop | ${fmt(us(js), 1)} | | |`)
  out(`| tfjs cpu | ${fmt(us(cpu), 1)} | | |`)
  const tm = torchRow('200x1K', 1)
  if (torch) {
    for (const t of [1, ALL])
      out(
        `| PyTorch fused, ${threadsLabel(t)} | ${fmt(torchRow('200x1K', t)?.usPerStep ?? NaN, 1)} | ${fmt(torchRow('1x200K', t)?.usPerStep ?? NaN, 1)} | ${fmt((torchRow('200x1K', t)?.usPerStep ?? NaN) / (torchRow('1x200K', t)?.usPerStep ?? NaN))} |`,
      )
  }
  void tm
  for (const { t, many, one } of model) {
    const ratio = us(many) / us(one)
    out(`| fastoptim, ${threadsLabel(t)} | ${fmt(us(many), 1)} | ${fmt(us(one), 1)} | **${fmt(ratio)}** |`)
    targets.push([
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
      `0 bytes allocated per step, resident memory flat over 10,000 steps (${r.model}, ${threadsLabel(r.threads)})`,
      `${r.bytesAllocatedPerStep} B/step; RSS ${r.rssMiB.first} → ${r.rssMiB.last} MiB`,
      ok ? 'met' : flat ? `missed by ${r.bytesAllocatedPerStep} B/step (RSS flat)` : 'missed',
      ok,
    ])
  }
  out()
}

if (eventLoop) {
  const n = eventLoop.rows[0]?.params ?? 0
  out(`### Event-loop delay while ${label(n)} parameters step (Adam, fp32, ${threadsLabel(eventLoop.threads)})`)
  out()
  out('| mode | ms per step | GB/s | delay p50 / p99 / max (ms) | 1 ms timer ticks per second |')
  out('|---|---|---|---|---|')
  for (const r of eventLoop.rows)
    out(
      `| ${r.mode} | ${r.msPerStep} | ${r.gbPerSecond} | ${r.delayMs.p50} / ${r.delayMs.p99} / ${r.delayMs.max} | ${r.timerTicksPerSecond} |`,
    )
  for (const r of eventLoop.rows.filter((r) => r.mode.startsWith('stepAsync'))) {
    targets.push([
      `event-loop delay p99 ≤ 2 ms during stepAsync() over ${label(n)}: ${r.mode.replace('stepAsync(), ', '')}`,
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
    `One process alternates setNumThreads(1) and setNumThreads(${all}) ${threadSwitch.cycles} times and times ${threadSwitch.batches} batches of ${threadSwitch.stepsPerBatch} steps right after each switch (\`benchmark/thread-switch.ts\`); a phase's time is its best batch, and the fresh process's is the best of three (run before the first switch, after the middle one and after the last). "First batch" is the ${threadSwitch.stepsPerBatch} steps right after a switch. A phase counts as disturbed when other processes kept more than 0.1 CPU busy meanwhile.`,
  )
  out()
  out(
    `| params | fresh process, ms per step, 1 / ${all} thr | fresh processes on ${all} thr, slowest / fastest | after a switch to ${all} thr: median / worst phase (ms) | worst phase / fresh | phases within 10% of fresh | first batch after a switch: median / worst (ms) | fewest threads in a step | threads left by earlier pools, most in a phase | after a switch to 1 thr: median / worst phase (ms) | disturbed phases |`,
  )
  out('|---|---|---|---|---|---|---|---|---|---|---|')
  const ratios: string[] = []
  for (const size of threadSwitch.sizes) {
    const fresh = (t: number) => size.fresh.find((f) => f.threads === t)?.bestMs ?? NaN
    // How far fresh processes differ among themselves: the noise a phase is read against.
    const freshRuns = size.fresh.find((f) => f.threads === all)?.runs.map((r) => r.bestMs) ?? []
    const freshSpread = Math.max(...freshRuns) / Math.min(...freshRuns)
    const many = size.phases.filter((p) => p.threads === all)
    const one = size.phases.filter((p) => p.threads === 1)
    const best = many.map((p) => p.bestMs)
    const worst = Math.max(...best)
    const within = many.filter((p) => p.bestMs <= fresh(all) * 1.1).length
    const joined = Math.min(...many.map((p) => p.joinedMin ?? Infinity))
    // fastoptim's threads alive at a phase's end beyond its own pool's workers.
    const leftOver = Math.max(...size.phases.map((p) => (p.poolThreads ?? -Infinity) - (p.threads - 1)))
    out(
      `| ${label(size.params)} | ${fmt(fresh(1))} / ${fmt(fresh(all))} | ${fmt(freshSpread)}× | ${fmt(median(best))} / ${fmt(worst)} | **${fmt(worst / fresh(all))}** | ${within} of ${many.length} | ${fmt(median(many.map((p) => p.firstMs)))} / ${fmt(Math.max(...many.map((p) => p.firstMs)))} | ${Number.isFinite(joined) ? joined : '–'} | ${Number.isFinite(leftOver) ? leftOver : '–'} | ${fmt(median(one.map((p) => p.bestMs)))} / ${fmt(Math.max(...one.map((p) => p.bestMs)))} | ${size.phases.filter(busy).length} of ${size.phases.length} |`,
    )
    ratios.push(
      `${label(size.params)}: ${many.map((p) => `${fmt(p.bestMs / fresh(all))}${busy(p) ? '*' : ''}`).join(', ')}`,
    )
    const slow = many.filter((p) => p.bestMs > fresh(all) * 1.1)
    const ok = slow.length === 0
    const quietSlow = slow.filter((p) => !busy(p)).length
    targets.push([
      `after any sequence of setNumThreads, the ${all}-thread step within 10% of a fresh process's in every phase (${label(size.params)})`,
      `worst phase ${fmt(worst / fresh(all))}× fresh; ${within} of ${many.length} phases within 10%`,
      ok
        ? 'met'
        : `missed in ${slow.length} phase${slow.length > 1 ? 's' : ''} (${slow.length - quietSlow} of them disturbed; fresh processes differed by ${fmt(freshSpread)}×)`,
      ok,
    ])
  }
  out()
  out(
    `Each phase on ${threadsLabel(all)}, in order, over the fresh process's time (* disturbed): ${ratios.join('; ')}.`,
  )
  out()
}

const others = [
  ...new Set(
    rows
      .filter((r) => r.case.startsWith('fastoptim ') && !r.case.startsWith('fastoptim Adam ('))
      .map((r) => r.case.replace(/ \(\d+ threads?\)$/, '').replace(/^fastoptim /, '')),
  ),
]
if (others.length > 0) {
  out(`### The other optimizers: Gparam/s, 1 / ${ALL} threads`)
  out()
  out(`| optimizer | ${SIZES.map(label).join(' | ')} |`)
  out(`|---|${SIZES.map(() => '---').join('|')}|`)
  for (const name of others) {
    const cells = SIZES.map((n) => {
      const [a, b] = [1, ALL].map((t) => find(`adam-${label(n)}`, `fastoptim ${name} (${threadsLabel(t)})`))
      return `${fmt(gparam(a))} / ${fmt(gparam(b))}`
    })
    out(`| ${name} | ${cells.join(' | ')} |`)
  }
  out()
}

out('### Targets')
out()
out('| target | measured | verdict |')
out('|---|---|---|')
for (const [what, measured, verdict] of targets) out(`| ${what} | ${measured} | ${verdict} |`)

const summary = lines.join('\n') + '\n'
writeFileSync(join(RESULTS, 'summary.md'), summary)
const doc = join(__dirname, '..', 'BENCHMARKS.md')
if (existsSync(doc)) {
  const text = readFileSync(doc, 'utf8')
  const start = '<!-- results:start -->'
  const end = '<!-- results:end -->'
  if (text.includes(start) && text.includes(end)) {
    writeFileSync(
      doc,
      text.slice(0, text.indexOf(start) + start.length) + '\n' + summary + text.slice(text.indexOf(end)),
    )
  }
}
console.log(summary)
