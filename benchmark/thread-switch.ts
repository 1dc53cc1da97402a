// `npm run bench`, part 4: the step after setNumThreads, against a fresh process's.
//
// Comparison suites (suite.ts among them) time a step on one thread and then on every thread in
// one process, so the step they time on every thread runs on a pool made after others. For 4M and
// 64M fp32 Adam parameters in one tensor, one process alternates setNumThreads(1) and
// setNumThreads(all) 20 times and times 5 batches of 20 steps right after each switch, with no
// warm-up; fresh processes time the same step (20 steps of warm-up, then 5 batches of 20 steps):
// on every thread before the first switch and after every second cycle, so that each phase has a
// fresh process timed just before it and one just after, and on one thread before the first
// switch, after the tenth and after the last.
//
// Each phase reports its best batch and its first (the steps right after the switch); how many
// threads joined its steps (`__lastStepThreads`, an internal export); how many of fastoptim's
// threads were alive at its end (/proc/self/task: the pool's workers, or more if an old pool left
// some behind); and what else the machine ran meanwhile: the CPUs other processes kept busy
// (/proc/stat) and the share of the time some thread waited for a CPU (/proc/pressure/cpu). On a
// small machine another process's work shows up as a slow phase, so before each switch (stepping
// meanwhile) and each fresh process the script waits, up to 5 s, for a tenth of a second in which
// other processes used under 0.05 CPU.
//
// The comparison the target asks for: a fresh process takes turns with each phase on every thread.
// Before each switch to every thread a new process starts (its one pool on every thread, made at
// its start, its steps warmed up as the fresh processes' above), and once the switch is made the
// two run their batches in turn, the switched process's first: the machine's memory speed, which
// drifts by up to 2x within seconds here, is then the same for both, batch by batch. A third
// process takes the same turns: started with the switching one and as old, on every thread from
// its start, it never calls setNumThreads. What separates the switched phase from it is the pools'
// doing; what separates both from the fresh process, a process's age. Results:
// benchmark/results/thread-switch.json.
import { execFileSync, spawn } from 'node:child_process'
import { createInterface } from 'node:readline'
import { readdirSync, readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'

import { Adam, setNumThreads } from '../lib'
import { native } from '../lib/native'
import { ALL_THREADS, label, machine, QUICK, RESULTS, values } from './common'

const internal = native as unknown as { __lastStepThreads(): number }

const SIZES = QUICK ? [1 << 20] : [1 << 22, 1 << 26]
const CYCLES = Number(process.env.FASTOPTIM_SWITCH_CYCLES ?? (QUICK ? 2 : 20))
/** Cycles between two fresh processes on every thread. */
const FRESH_EVERY = 2
const BATCHES = 5
const STEPS = 20

interface Phase {
  threads: number
  msPerStep: number[]
  bestMs: number
  firstMs: number
  /** The fewest threads that joined one of the phase's steps (null on one thread: no pool). */
  joinedMin: number | null
  /** CPUs that other processes kept busy on average. */
  othersCpu: number | null
  /** The share of the time at least one thread of the machine waited for a CPU. */
  cpuPressure: number | null
  /** fastoptim's threads alive at the phase's end (the pool's workers, and any a pool left behind). */
  poolThreads: number | null
}

const round = (x: number, digits = 3) => Math.round(x * 10 ** digits) / 10 ** digits

/** This process's threads named by fastoptim's pools (Linux only). */
function poolThreads(): number | null {
  try {
    return readdirSync('/proc/self/task').filter((id) => {
      try {
        return readFileSync(`/proc/self/task/${id}/comm`, 'utf8').startsWith('fastoptim-')
      } catch {
        return false // ended meanwhile
      }
    }).length
  } catch {
    return null
  }
}

const sleep = (ms: number) => Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms)

/**
 * Waits, up to `seconds`, for 100 ms in which other processes use less than 0.05 CPU; stepping
 * `opt` meanwhile, if given, so that the pool is as busy right before a switch as in a suite that
 * times one case after another.
 */
function quiet(opt?: Adam, seconds = 5) {
  const until = Date.now() + seconds * 1000
  do {
    const load = machineLoad()
    const end = Date.now() + 100
    if (opt) while (Date.now() < end) opt.step()
    else sleep(100)
    const { othersCpu } = load()
    if (othersCpu === null || othersCpu < 0.05) return
  } while (Date.now() < until)
}

/** What the machine ran from this call to the returned function's, besides this process. */
function machineLoad(exclude: number[] = []): () => { othersCpu: number | null; cpuPressure: number | null } {
  /** User + system clock ticks of a process (/proc/<pid>/stat). */
  const ticks = (pid: string) => {
    const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ')
    return Number(fields[11]) + Number(fields[12])
  }
  const sample = () => {
    const at = process.hrtime.bigint()
    let busy: number | null = null
    let stalled: number | null = null
    try {
      const all = readFileSync('/proc/stat', 'utf8').split('\n')[0].trim().split(/\s+/).slice(1).map(Number)
      // Clock ticks (1/100 s): user + nice + system + irq + softirq, less this process's user +
      // system and those of the processes it takes turns with.
      busy =
        all[0] +
        all[1] +
        all[2] +
        all[5] +
        all[6] -
        ticks('self') -
        exclude.reduce((a, pid) => a + ticks(String(pid)), 0)
    } catch {
      busy = null
    }
    try {
      stalled = Number(readFileSync('/proc/pressure/cpu', 'utf8').match(/^some .*total=(\d+)/)?.[1] ?? NaN)
    } catch {
      stalled = null
    }
    return { at, busy, stalled }
  }
  const start = sample()
  return () => {
    const end = sample()
    const seconds = Number(end.at - start.at) / 1e9
    const othersCpu =
      start.busy === null || end.busy === null ? null : round(Math.max(0, (end.busy - start.busy) / 100 / seconds), 2)
    const cpuPressure =
      start.stalled === null || end.stalled === null || !Number.isFinite(end.stalled)
        ? null
        : round((end.stalled - (start.stalled as number)) / 1e6 / seconds, 2)
    return { othersCpu, cpuPressure }
  }
}

/** One batch of `STEPS` steps on the current pool: ms per step, and the fewest threads in a step. */
function batch(opt: Adam): { ms: number; joinedMin: number } {
  let elapsed = 0n
  let joinedMin = Infinity
  for (let i = 0; i < STEPS; i++) {
    const started = process.hrtime.bigint()
    opt.step()
    elapsed += process.hrtime.bigint() - started
    joinedMin = Math.min(joinedMin, internal.__lastStepThreads())
  }
  return { ms: Number(elapsed) / 1e6 / STEPS, joinedMin }
}

/** A phase of these batches on `threads` threads. */
function phaseOf(
  threads: number,
  batches: Array<{ ms: number; joinedMin: number }>,
  load: ReturnType<ReturnType<typeof machineLoad>>,
  pool: number | null,
): Phase {
  const ms = batches.map((b) => b.ms)
  return {
    threads,
    msPerStep: ms.map((x) => round(x)),
    bestMs: round(Math.min(...ms)),
    firstMs: round(ms[0]),
    joinedMin: threads > 1 ? Math.min(...batches.map((b) => b.joinedMin)) : null,
    ...load,
    poolThreads: pool,
  }
}

/** `count` batches of `STEPS` steps on the current pool. */
function phase(opt: Adam, threads: number, count = BATCHES): Phase {
  const load = machineLoad()
  const batches = Array.from({ length: count }, () => batch(opt))
  return phaseOf(threads, batches, load(), poolThreads())
}

/**
 * `BATCHES` batches here and as many in each of `others`, in turn, this process's first: its
 * phase and each other's.
 */
async function phaseInTurns(
  opt: Adam,
  threads: number,
  others: TurnProcess[],
): Promise<{ own: Phase; others: Phase[] }> {
  const load = machineLoad(others.map((o) => o.pid))
  const own: Array<{ ms: number; joinedMin: number }> = []
  const theirs: Array<Array<{ ms: number; joinedMin: number }>> = others.map(() => [])
  for (let b = 0; b < BATCHES; b++) {
    own.push(batch(opt))
    for (const [i, other] of others.entries()) theirs[i].push(await other.batch())
  }
  const machine = load()
  return {
    own: phaseOf(threads, own, machine, poolThreads()),
    others: theirs.map((batches) => phaseOf(threads, batches, machine, null)),
  }
}

const model = (n: number) => new Adam([{ data: values(n, 1), grad: values(n, 2) }])

/** A fresh process's step on `threads` threads: its pool is the first and only one. */
function fresh(n: number, threads: number): Phase {
  quiet()
  const out = execFileSync(process.execPath, [...process.execArgv, __filename, '--fresh', String(n), String(threads)], {
    encoding: 'utf8',
    env: { ...process.env, FASTOPTIM_NUM_THREADS: String(threads) },
  })
  return JSON.parse(out.trim().split('\n').pop() as string)
}

interface TurnProcess {
  pid: number
  batch: () => Promise<{ ms: number; joinedMin: number }>
  stop: () => void
}

/**
 * A new process on every thread (its one pool, made at its start), warmed up as `fresh` warms
 * its steps: a phase's fresh process, or the one that never switches. Each `batch()` runs one
 * batch of `STEPS` steps there.
 */
async function turnProcess(n: number): Promise<TurnProcess> {
  const child = spawn(process.execPath, [...process.execArgv, __filename, '--turns', String(n)], {
    env: { ...process.env, FASTOPTIM_NUM_THREADS: String(ALL_THREADS) },
    stdio: ['pipe', 'pipe', 'inherit'],
  })
  const waiting: Array<(line: string) => void> = []
  createInterface({ input: child.stdout }).on('line', (line) => waiting.shift()?.(line))
  const answer = () => new Promise<string>((resolve) => waiting.push(resolve))
  await answer() // ready
  return {
    pid: child.pid as number,
    batch: async () => {
      const next = answer()
      child.stdin.write('batch\n')
      return JSON.parse(await next) as { ms: number; joinedMin: number }
    },
    stop: () => child.kill(),
  }
}

async function scenario(n: number) {
  const counts = [...new Set([1, ALL_THREADS])]
  /** Each count's fresh processes, with the cycle after which each ran (0: before the first). */
  const freshRuns: Array<Array<Phase & { afterCycle: number }>> = counts.map(() => [])
  const freshNow = (afterCycle: number, only?: number) =>
    counts.forEach((t, i) => {
      if (only === undefined || t === only) freshRuns[i].push({ afterCycle, ...fresh(n, t) })
    })
  freshNow(0)
  // The process that never switches: made first, so that its setup overlaps no timing.
  const steady = await turnProcess(n)
  const opt = model(n)
  setNumThreads(ALL_THREADS)
  phase(opt, ALL_THREADS, 1) // the state's pages
  const phases: Array<Phase & { cycle: number }> = []
  /** The fresh process of each phase on every thread, its batches taken in turns with the phase's. */
  const turns: Array<Phase & { cycle: number }> = []
  /** The process that never switched, in the same turns. */
  const steadyTurns: Array<Phase & { cycle: number }> = []
  for (let cycle = 1; cycle <= CYCLES; cycle++) {
    for (const threads of counts) {
      // The fresh process starts and warms up before the switch, so that its setup overlaps no
      // timing.
      const other = threads === ALL_THREADS ? await turnProcess(n) : null
      quiet(opt)
      setNumThreads(threads)
      let p: Phase & { cycle: number }
      if (other) {
        const all = await phaseInTurns(opt, threads, [other, steady])
        other.stop()
        p = { cycle, ...all.own }
        turns.push({ cycle, ...all.others[0] })
        steadyTurns.push({ cycle, ...all.others[1] })
      } else {
        p = { cycle, ...phase(opt, threads) }
      }
      phases.push(p)
      const beside = other
        ? `, in turn: the fresh process ${turns[turns.length - 1].bestMs} ms, the one that never switched ${steadyTurns[steadyTurns.length - 1].bestMs} ms`
        : ''
      console.log(
        `  ${label(n)}, switch ${cycle}, ${threads} thread${threads > 1 ? 's' : ''}: best ${p.bestMs} ms, first batch ${p.firstMs} ms, fewest threads in a step ${p.joinedMin ?? '–'}, pool threads alive ${p.poolThreads ?? '–'}, other processes ${p.othersCpu} CPU, CPU pressure ${p.cpuPressure}${beside}`,
      )
    }
    if (cycle === Math.ceil(CYCLES / 2) || cycle === CYCLES) freshNow(cycle)
    else if (cycle % FRESH_EVERY === 0) freshNow(cycle, ALL_THREADS)
  }
  const reference = counts.map((threads, i) => {
    const runs = freshRuns[i]
    // The fastest: a fresh process at its best, as each phase is read at its best.
    const bestMs = Math.min(...runs.map((r) => r.bestMs))
    console.log(
      `  ${label(n)}, fresh process, ${threads} thread${threads > 1 ? 's' : ''}: best ${runs.map((r) => r.bestMs).join(' ms, ')} ms`,
    )
    return { threads, bestMs, runs }
  })
  steady.stop()
  return { params: n, fresh: reference, phases, turns, steadyTurns }
}

async function main() {
  const args = process.argv.slice(2)
  if (args[0] === '--turns') {
    const opt = model(Number(args[1]))
    phase(opt, ALL_THREADS, 1) // the state's pages, as in the alternating process
    phase(opt, ALL_THREADS, 1) // warm-up, as in `--fresh`
    console.log('ready')
    for await (const _ of createInterface({ input: process.stdin })) console.log(JSON.stringify(batch(opt)))
    return
  }
  if (args[0] === '--fresh') {
    const [n, threads] = [Number(args[1]), Number(args[2])]
    setNumThreads(threads)
    const opt = model(n)
    phase(opt, threads, 1) // the state's pages, as in the alternating process
    console.log(JSON.stringify(phase(opt, threads)))
    return
  }
  const sizes = args.length > 0 ? args.map(Number) : SIZES
  const started = Date.now()
  const results = []
  for (const n of sizes) {
    results.push(await scenario(n))
    ;(globalThis as { gc?: () => void }).gc?.()
  }
  writeFileSync(
    join(RESULTS, 'thread-switch.json'),
    JSON.stringify(
      {
        date: new Date().toISOString(),
        machine: machine(),
        allThreads: ALL_THREADS,
        cycles: CYCLES,
        batches: BATCHES,
        stepsPerBatch: STEPS,
        seconds: (Date.now() - started) / 1000,
        sizes: results,
      },
      null,
      2,
    ),
  )
}

main().catch((error) => {
  console.error(error)
  process.exit(1)
})
