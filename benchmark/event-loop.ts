// `npm run bench`, part 2: how long the event loop waits while a large model steps.
//
// 64M fp32 parameters, Adam and then Adam8bit, 12 steps in each mode, while
// perf_hooks.monitorEventLoopDelay samples the loop's delay every millisecond: step() (the loop is
// blocked for a whole step, for comparison), stepAsync() on ordinary ArrayBuffers (slices of about
// half a millisecond on the pool, the loop running between them), and stepAsync() on
// SharedArrayBuffers (the whole update on a worker thread). A timer also counts how many 1 ms
// ticks it got, as a server would see it. Results: benchmark/results/event-loop.json.
import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { monitorEventLoopDelay } from 'node:perf_hooks'

import { Adam, Adam8bit, getNumThreads } from '../lib'
import { ADAM_BYTES, EIGHT_BIT_BYTES, QUICK, RESULTS, values } from './common'

const N = Number(process.env.FASTOPTIM_EVENT_LOOP_PARAMS ?? (QUICK ? 1 << 20 : 1 << 26))
const STEPS = QUICK ? 4 : 12

function params(shared: boolean) {
  const make = (seed: number) => {
    const out = shared ? new Float32Array(new SharedArrayBuffer(N * 4)) : new Float32Array(N)
    out.set(values(N, seed))
    return out
  }
  return [{ data: make(1), grad: make(2) }]
}

const turn = () => new Promise<void>((resolve) => setImmediate(resolve))

interface Stepper {
  step(): unknown
  stepAsync(): Promise<unknown>
}

const optimizers: Record<string, { make: (ps: ReturnType<typeof params>) => Stepper; bytes: number }> = {
  Adam: { make: (ps) => new Adam(ps), bytes: ADAM_BYTES },
  Adam8bit: { make: (ps) => new Adam8bit(ps), bytes: EIGHT_BIT_BYTES },
}

async function measure(optimizer: string, mode: string, shared: boolean, run: (opt: Stepper) => Promise<unknown>) {
  const { make, bytes } = optimizers[optimizer]
  const opt = make(params(shared))
  // The first step makes the state (512 MB at 64M), which the rows below leave out.
  const first = process.hrtime.bigint()
  await run(opt)
  const firstStepMs = Math.round(Number(process.hrtime.bigint() - first) / 1e5) / 10
  const histogram = monitorEventLoopDelay({ resolution: 1 })
  let ticks = 0
  const timer = setInterval(() => ticks++, 1)
  histogram.enable()
  const started = process.hrtime.bigint()
  for (let i = 0; i < STEPS; i++) await run(opt)
  const seconds = Number(process.hrtime.bigint() - started) / 1e9
  histogram.disable()
  clearInterval(timer)
  const ms = (ns: number) => Math.round(ns / 1e4) / 100
  const row = {
    optimizer,
    mode,
    params: N,
    steps: STEPS,
    msPerStep: Math.round((seconds / STEPS) * 1e4) / 10,
    firstStepMs,
    gbPerSecond: Math.round(((N * bytes * STEPS) / seconds / 1e9) * 10) / 10,
    delayMs: { p50: ms(histogram.percentile(50)), p99: ms(histogram.percentile(99)), max: ms(histogram.max) },
    timerTicksPerSecond: Math.round(ticks / seconds),
  }
  console.log(JSON.stringify(row))
  return row
}

async function main() {
  const rows = []
  for (const optimizer of Object.keys(optimizers)) {
    rows.push(
      await measure(optimizer, 'step() (blocks the loop)', false, async (opt) => {
        opt.step()
        await turn()
      }),
      await measure(optimizer, 'stepAsync(), ordinary ArrayBuffers (slices)', false, (opt) => opt.stepAsync()),
      await measure(optimizer, 'stepAsync(), SharedArrayBuffers (worker thread)', true, (opt) => opt.stepAsync()),
    )
  }
  writeFileSync(
    join(RESULTS, 'event-loop.json'),
    JSON.stringify({ date: new Date().toISOString(), threads: getNumThreads(), rows }, null, 2),
  )
}

main().catch((error) => {
  console.error(error)
  process.exit(1)
})
