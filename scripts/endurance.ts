// Endurance: many steps on a mid-size model, watching the process's memory. Run with
//   npx tsx --expose-gc scripts/endurance.ts [--steps 100000] [--params 1000000] [--tensors 50]
// It trains Adam on a quadratic (each step refreshes one tensor's gradient, in turn), and along
// the way exercises what a long training run does now and then: a stepAsync() every 1,000 steps;
// every 10,000 a stateDict()/loadStateDict() round trip, a getState(), and a step with a NaN
// gradient under skipNonFinite, which must change nothing. It prints the resident set and the
// V8 heap at the start, every tenth of the run and at the end, as a Markdown table, and exits
// non-zero if the resident set grew by more than 5% from the first tenth to the end, if a step
// reported a non-finite gradient it should not have, or if a parameter went non-finite.
import { Adam, getNumThreads, type Parameter } from '../lib'

function option(name: string, fallback: number): number {
  const at = process.argv.indexOf(`--${name}`)
  if (at < 0) return fallback
  const value = Number(process.argv[at + 1])
  if (!Number.isSafeInteger(value) || value <= 0)
    throw new RangeError(`--${name} must be a positive whole number, got ${process.argv[at + 1]}`)
  return value
}

const STEPS = option('steps', 100_000)
const PARAMS = option('params', 1_000_000)
const TENSORS = option('tensors', 50)
const gc = (globalThis as { gc?: () => void }).gc

// Tensor sizes from about a tenth of the mean to twice it, as a network's layers vary, summing to PARAMS.
const weights = Array.from({ length: TENSORS }, (_, i) => 0.1 + (1.9 * ((i * 7919) % TENSORS)) / TENSORS)
const scale = PARAMS / weights.reduce((a, b) => a + b, 0)
const sizes = weights.map((w) => Math.max(1, Math.round(w * scale)))
sizes[sizes.length - 1] += PARAMS - sizes.reduce((a, b) => a + b, 0)

const targets = sizes.map((n, k) => Float32Array.from({ length: n }, (_, i) => Math.sin(k + i / 97)))
const params: Parameter[] = sizes.map((n, k) => ({
  data: Float32Array.from({ length: n }, (_, i) => Math.cos(k * 3 + i / 89)),
  grad: new Float32Array(n),
}))
/** The quadratic's gradient p − target, for tensor k. */
function refresh(k: number): void {
  const { data, grad } = params[k]
  const target = targets[k]
  for (let i = 0; i < data.length; i++) grad![i] = data[i] - target[i]
}
params.forEach((_, k) => refresh(k))

const opt = new Adam(params, { lr: 1e-3 })

interface Sample {
  step: number
  seconds: number
  rss: number
  heapUsed: number
  external: number
  arrayBuffers: number
}
const samples: Sample[] = []
const started = process.hrtime.bigint()
function sample(step: number): void {
  gc?.()
  const m = process.memoryUsage()
  samples.push({
    step,
    seconds: Number(process.hrtime.bigint() - started) / 1e9,
    rss: m.rss,
    heapUsed: m.heapUsed,
    external: m.external,
    arrayBuffers: m.arrayBuffers,
  })
}

async function main(): Promise<void> {
  let failures = 0
  const fail = (message: string) => {
    failures++
    console.error(`FAIL: ${message}`)
  }
  // A first step makes the optimizer's state; the baseline is taken after it.
  opt.step()
  sample(0)
  const every = Math.max(1, Math.floor(STEPS / 10))
  for (let step = 1; step <= STEPS; step++) {
    refresh(step % TENSORS)
    const finite = step % 1000 === 0 ? await opt.stepAsync() : opt.step()
    if (!finite) fail(`step ${step} reported a non-finite gradient`)
    if (step % 10_000 === 0) {
      const saved = opt.stateDict()
      opt.loadStateDict(saved)
      if (opt.getState(params[0])!.step !== step + 1)
        fail(`step count ${opt.getState(params[0])!.step} after ${step + 1} steps`)
      const grad = params[step % TENSORS].grad!
      const kept = grad[0]
      grad[0] = NaN
      const before = params[step % TENSORS].data[0]
      if (opt.step({ skipNonFinite: true })) fail('a NaN gradient was not reported')
      if (params[step % TENSORS].data[0] !== before) fail('a skipped step changed a parameter')
      grad[0] = kept
    }
    if (step % every === 0 || step === STEPS) sample(step)
  }
  const finiteParams = params.every(({ data }) => data.every(Number.isFinite))
  if (!finiteParams) fail('a parameter went non-finite')

  const mib = (bytes: number) => (bytes / 2 ** 20).toFixed(1)
  console.log(
    `\n${STEPS.toLocaleString('en')} Adam steps on ${PARAMS.toLocaleString('en')} float32 parameters in ${TENSORS} tensors, ${getNumThreads()} threads, Node.js ${process.version}${gc ? '' : ' (run with --expose-gc to collect before each sample)'}\n`,
  )
  console.log(
    '| step | elapsed (s) | steps/s since last | RSS (MiB) | V8 heap used (MiB) | external (MiB) | ArrayBuffers (MiB) |',
  )
  console.log('| ---: | ---: | ---: | ---: | ---: | ---: | ---: |')
  samples.forEach((s, i) => {
    const rate = i === 0 ? '' : ((s.step - samples[i - 1].step) / (s.seconds - samples[i - 1].seconds)).toFixed(0)
    console.log(
      `| ${s.step.toLocaleString('en')} | ${s.seconds.toFixed(1)} | ${rate} | ${mib(s.rss)} | ${mib(s.heapUsed)} | ${mib(s.external)} | ${mib(s.arrayBuffers)} |`,
    )
  })
  const settled = samples[1] ?? samples[0]
  const last = samples[samples.length - 1]
  const growth = (last.rss - settled.rss) / settled.rss
  console.log(
    `\nRSS from step ${settled.step.toLocaleString('en')} to the end: ${growth >= 0 ? '+' : ''}${(growth * 100).toFixed(2)}% (${mib(last.rss - settled.rss)} MiB); from the first step: ${mib(last.rss - samples[0].rss)} MiB`,
  )
  if (growth > 0.05) fail(`the resident set grew by ${(growth * 100).toFixed(1)}% after the first tenth of the run`)
  console.log(failures === 0 ? 'endurance: ok' : `endurance: ${failures} failure(s)`)
  process.exitCode = failures === 0 ? 0 : 1
}

main().catch((error) => {
  console.error(error)
  process.exitCode = 1
})
