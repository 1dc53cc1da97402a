// `npm run bench`, part 2: fastoptim against references outside its engine, in the same run.
//
// The references: benchmark/c/reference.c, compiled now with the system's `cc -O3 -march=native
// -fno-math-errno -fopenmp` (fp32 Adam as a plain C loop, and kernels that move an optimizer's bytes
// per parameter with one addition each, Adam's 28 or another optimizer's own arrays; 64-byte
// aligned arrays, OpenMP static schedule), and each
// optimizer's PyTorch counterpart (benchmark/torch_reference.py: fused where PyTorch has a fused
// CPU path, else foreach). Both run as servers, started once and asked for one measurement at a
// time, so that their measurements alternate with fastoptim's (in this process) under the same
// protocol and the same machine; each is skipped with a note when it cannot run (no cc, no
// python3 or torch).
//
// 1. Adam back to back, at the suite's sizes on 1 and on every thread: a warm-up, then batches until
//    the case's seconds have passed (at least 3); the best batch's time per step. Rounds in turn
//    (fastoptim, C Adam, C traffic, PyTorch, the first moving to the end each round); the best of
//    the rounds counts.
// 2. A training loop: at 16K, 100K, 1M and 8M parameters, each step comes after reading and
//    writing EVICT_BYTES of another buffer on the calling thread, adding one to each of its
//    float64s with ordinary loads and stores (a stand-in for a forward and backward pass, which
//    evicts the step's arrays and code from cache; untimed), and the median step counts;
//    fastoptim, C Adam, PyTorch's fused Adam, fastoptim's engine stepping from native code
//    (`__adamTrainingLoop`) and a bare Node-API call in turn, in TRAIN_ROUNDS rounds; the best
//    round's median counts.
// 3. Every optimizer of the registry against its PyTorch counterpart at the suite's sizes, back to
//    back, alternating case by case, in three rounds at every size (the best of each side counts),
//    at the largest with the C traffic kernel of the optimizer's arrays.
// Results: benchmark/results/references.json.
import { execFileSync, spawn, type ChildProcessWithoutNullStreams } from 'node:child_process'
import { mkdtempSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { createInterface } from 'node:readline'

import { Adam, setNumThreads, type Optimizer } from '../lib'
import { native } from '../lib/native'
import {
  ALL_THREADS,
  backToBackAt,
  batchSteps,
  label,
  now,
  QUICK,
  type Reference,
  registry,
  save,
  SECONDS,
  SIZES,
  trafficShape,
  values,
} from './common'

/** The binding's internal exports that the benchmark reads. */
const internal = native as unknown as {
  __lastStepThreads(): number
  __adamInCache(elements: number, batches: number): number
  __adamTrainingLoop(params: number, steps: number, evictBytes: number): number
}

const THREADS = [...new Set([1, ALL_THREADS])]
const ROUNDS = QUICK ? 1 : 3
/**
 * Rounds of the training loop: its steps are short (100 steps of 10 µs at 16K are a millisecond of
 * timed work) and this project's guest changes speed for seconds at a time, so it takes more
 * rounds than the cases back to back to find each contender's best; they cost about half a minute.
 */
const TRAIN_ROUNDS = QUICK ? 1 : 5
const TRAIN_SIZES = QUICK ? [1 << 14, 100_000] : [1 << 14, 100_000, 1 << 20, 1 << 23]
const TRAIN_STEPS = QUICK ? 10 : 100
/**
 * What the work between two training steps reads and writes (32 MiB by default: more than any
 * core's L2, and a few milliseconds of work; a last-level cache larger than that keeps part of the
 * step's arrays, as it would in training). A whole number of float64s.
 */
const EVICT_BYTES = Number(process.env.FASTOPTIM_EVICT_BYTES ?? 32 << 20)
/** Elements over which Adam's arithmetic alone is timed: four arrays of 4 KB, within any L1. */
const IN_CACHE_ELEMENTS = 1024

/**
 * Adam's arithmetic alone: the seconds per element of fastoptim's Adam kernel over arrays that
 * stay in the first-level cache, on one thread (`__adamInCache`, the best of 5 calls, each the
 * best of its batches). A step over more elements takes at least this per element and per thread.
 * The same call moves by a quarter from one moment to the next on this project's guest (one of its
 * two vCPUs ran the kernel that much slower than the other for minutes at a time, whatever the
 * arrays' addresses): the best call is the floor.
 */
function adamInCache(): number {
  let best = Infinity
  for (let k = 0; k < 5; k++) best = Math.min(best, internal.__adamInCache(IN_CACHE_ELEMENTS, QUICK ? 5 : 100))
  return best
}

/** Seconds per case of the optimizers' table, which has many. */
const OPTIMIZER_SECONDS = SECONDS / 4

interface Request {
  optimizer: string
  kernel?: 'adam' | 'traffic'
  mode: 'back' | 'train'
  threads: number
  params: number
  seconds: number
  /** Steps per timed batch back to back ([`batchSteps`]). */
  batch: number
  evictBytes: number
  trainSteps: number
}
interface Answer {
  usPerStep?: number
  /** fastoptim's: steps its optimizer took before the timed ones (`Reference.stepsBefore`). */
  stepsBefore?: number
  path?: string
  error?: string
}

/** A reference that answers one line per request line. */
class Server {
  private readonly lines: AsyncIterableIterator<string>
  private constructor(private readonly child: ChildProcessWithoutNullStreams) {
    this.lines = createInterface({ input: child.stdout })[Symbol.asyncIterator]()
  }

  static start(command: string, args: string[]): Server {
    const child = spawn(command, args, { stdio: ['pipe', 'pipe', 'pipe'] })
    child.stderr.on('data', (chunk) => process.stderr.write(chunk))
    return new Server(child)
  }

  async line(): Promise<string> {
    const { value, done } = await this.lines.next()
    if (done) throw new Error('the reference process ended')
    return value
  }

  async ask(line: string): Promise<Answer> {
    this.child.stdin.write(line + '\n')
    return JSON.parse(await this.line()) as Answer
  }

  stop() {
    this.child.stdin.end()
  }
}

/** The C references, compiled now; or why there are none. */
function startC(): { server?: Server; note: string } {
  const flags = ['-O3', '-march=native', '-fno-math-errno', '-fopenmp']
  const binary = join(mkdtempSync(join(tmpdir(), 'fastoptim-bench-')), 'reference')
  try {
    execFileSync('cc', [...flags, '-o', binary, join(__dirname, 'c', 'reference.c'), '-lm'], { stdio: 'pipe' })
  } catch (error) {
    return { note: `C references skipped: \`cc ${flags.join(' ')}\` failed (${String(error).split('\n')[0]})` }
  }
  const version = execFileSync('cc', ['--version'], { encoding: 'utf8' }).split('\n')[0]
  return { server: Server.start(binary, []), note: `${version}, \`cc ${flags.join(' ')}\`` }
}

/** PyTorch's server; or why there is none. */
async function startTorch(): Promise<{ server?: Server; note: string }> {
  try {
    const server = Server.start('python3', [join(__dirname, 'torch_reference.py')])
    const hello = JSON.parse(await server.line()) as { torch: string; python: string }
    return { server, note: `PyTorch ${hello.torch} (Python ${hello.python})` }
  } catch (error) {
    return { note: `PyTorch skipped: python3 with torch did not start (${String(error).split('\n')[0]})` }
  }
}

/**
 * The work between two training steps: adds one to each float64 of `evict`, every cache line read
 * and written by ordinary loads and stores, as a forward and backward pass reads and writes its
 * activations. Not `fill`: a fill of this size is a string store that the processor may keep out
 * of the caches (on this project's AMD EPYC guest a step after it ran as fast as after
 * non-temporal stores), so it would evict little. The C and PyTorch references and
 * `__adamTrainingLoop` do the same.
 */
const evict = new Float64Array(Math.floor(EVICT_BYTES / 8))
function evictCaches(): void {
  for (let i = 0; i < evict.length; i++) evict[i] += 1
}

/** Steps the training loop takes before the timed ones. */
const TRAIN_WARM_UP = 3

/** The median µs of `steps` steps, each after `evictCaches` (see the file's comment). */
function trainingLoop(step: () => unknown, steps: number): number {
  for (let k = 0; k < TRAIN_WARM_UP; k++) step()
  const times: number[] = []
  for (let k = 0; k < steps; k++) {
    evictCaches()
    // The clock's own code is out of cache too: the first reading brings it back, the second counts.
    now()
    const t = now()
    step()
    times.push(now() - t)
  }
  times.sort((a, b) => a - b)
  return times[times.length >> 1] * 1e6
}

const gc = () => (globalThis as { gc?: () => void }).gc?.()

/**
 * Gives back the memory of a measurement before the next contender's starts: a full collection,
 * which schedules the finalizers of the native optimizers it finds unreachable (they free the
 * state), those finalizers, and a second collection for the arrays. Every contender does this
 * before it answers (the C server frees its arrays first, PyTorch's are freed as `measure`
 * returns): returning a gigabyte to the system keeps a core busy for a tenth of a second or more,
 * which would otherwise slow the steps of whichever contender runs next.
 */
async function release() {
  gc()
  await new Promise((resolve) => setImmediate(resolve))
  gc()
}

/**
 * µs per step of the optimizer `make` builds over new arrays, and the steps it took before the
 * timed ones; nothing of it stays reachable.
 */
function measure(
  request: Request,
  make: (params: Array<{ data: Float32Array; grad: Float32Array }>) => Optimizer<object>,
): { us: number; stepsBefore: number } {
  const opt = make([{ data: values(request.params, 1), grad: values(request.params, 2) }])
  const step = () => opt.step()
  return request.mode === 'train'
    ? { us: trainingLoop(step, request.trainSteps), stepsBefore: TRAIN_WARM_UP }
    : backToBackAt(step, request.batch, request.seconds)
}

async function fastoptim(
  request: Request,
  make: (params: Array<{ data: Float32Array; grad: Float32Array }>) => Optimizer<object>,
) {
  setNumThreads(request.threads)
  const { us, stepsBefore } = measure(request, make)
  await release()
  return { usPerStep: us, stepsBefore }
}

async function main() {
  const started = Date.now()
  const c = startC()
  const torch = await startTorch()
  console.log(`C: ${c.note}\nPyTorch: ${torch.note}`)
  // Timed at the start and again at the end (the better counts), in case the machine was busy once.
  let inCache = adamInCache()
  const results: Reference[] = []
  const slot = (r: Omit<Reference, 'usPerStep' | 'rounds'>) => {
    let found = results.find(
      (x) =>
        x.scenario === r.scenario &&
        x.contender === r.contender &&
        x.optimizer === r.optimizer &&
        x.params === r.params &&
        x.threads === r.threads,
    )
    if (!found) results.push((found = { ...r, usPerStep: null, rounds: [] }))
    return found
  }
  const note = (r: Reference, answer: Answer) => {
    if (answer.error) r.error = answer.error
    if (answer.path) r.path = answer.path
    if (answer.usPerStep !== undefined) {
      r.rounds.push(Math.round(answer.usPerStep * 1000) / 1000)
      r.usPerStep = Math.min(...r.rounds)
      if (answer.stepsBefore !== undefined) (r.stepsBefore ??= []).push(answer.stepsBefore)
    }
  }
  type Contender = { name: string; run: (request: Request) => Promise<Answer> }
  const adam = (params: Array<{ data: Float32Array; grad: Float32Array }>) => new Adam(params)
  const contenders = (kernels: Array<'adam' | 'traffic'>): Contender[] => [
    { name: 'fastoptim', run: (request) => fastoptim(request, adam) },
    ...kernels.flatMap((kernel) =>
      c.server
        ? [
            {
              name: kernel === 'adam' ? 'C Adam' : 'C traffic',
              run: (r: Request) =>
                c.server!.ask(
                  [kernel, r.mode, r.threads, r.params, r.seconds, r.batch, r.evictBytes, r.trainSteps].join(' '),
                ),
            },
          ]
        : [],
    ),
    ...(torch.server ? [{ name: 'PyTorch', run: (r: Request) => torch.server!.ask(JSON.stringify(r)) }] : []),
  ]

  // The least any step from JavaScript into native code costs in the training loop: a Node-API
  // function that only returns a number, timed as the steps are.
  const floor: Contender = {
    name: 'Node-API call',
    run: async (request) => {
      setNumThreads(request.threads)
      return { usPerStep: trainingLoop(() => internal.__lastStepThreads(), request.trainSteps) }
    },
  }
  // The same loop with the step made from native code: fastoptim's engine stepping Adam as a step
  // from JavaScript does after its checks, each step after the same work on a buffer of the same size.
  // fastoptim's step less this is what calling it from JavaScript costs over evicted caches.
  const engine: Contender = {
    name: 'engine alone',
    run: async (request) => {
      setNumThreads(request.threads)
      const us = internal.__adamTrainingLoop(request.params, request.trainSteps, request.evictBytes)
      await release()
      return { usPerStep: us }
    },
  }
  const scenarios: Array<{ scenario: 'adam' | 'train'; sizes: number[]; mode: 'back' | 'train'; who: Contender[] }> = [
    { scenario: 'adam', sizes: SIZES, mode: 'back', who: contenders(['adam', 'traffic']) },
    { scenario: 'train', sizes: TRAIN_SIZES, mode: 'train', who: [...contenders(['adam']), engine, floor] },
  ]
  for (const { scenario, sizes, mode, who } of scenarios) {
    const rounds = mode === 'train' ? TRAIN_ROUNDS : ROUNDS
    for (const params of sizes) {
      for (const threads of THREADS) {
        for (let round = 0; round < rounds; round++) {
          for (let k = 0; k < who.length; k++) {
            const contender = who[(k + round) % who.length]
            const request: Request = {
              optimizer: 'Adam',
              mode,
              threads,
              params,
              seconds: SECONDS,
              batch: batchSteps(params),
              evictBytes: EVICT_BYTES,
              trainSteps: TRAIN_STEPS,
            }
            const r = slot({ scenario, contender: contender.name, optimizer: 'Adam', params, threads })
            note(r, await contender.run(request))
          }
        }
        const line = results
          .filter((r) => r.scenario === scenario && r.params === params && r.threads === threads)
          .map((r) => `${r.contender} ${r.usPerStep?.toFixed(2) ?? r.error} µs`)
          .join(', ')
        console.log(`${scenario} ${label(params)}, ${threads} thr: ${line}`)
      }
    }
  }

  for (const { name, label: caseLabel, make } of registry()) {
    for (const params of SIZES) {
      for (const threads of THREADS) {
        const request: Request = {
          optimizer: name,
          mode: 'back',
          threads,
          params,
          seconds: OPTIMIZER_SECONDS,
          batch: batchSteps(params),
          evictBytes: 0,
          trainSteps: 0,
        }
        const ours = slot({ scenario: 'optimizers', contender: 'fastoptim', optimizer: caseLabel, params, threads })
        const largest = params === SIZES[SIZES.length - 1]
        // The memory this VM gives a process swings by a third within minutes, so at the largest
        // size, where an optimizer is held to the memory baseline, the C traffic kernel is timed
        // in turn with it, round by round, rather than taken from the Adam scenario's minutes ago.
        // That kernel moves the optimizer's own arrays (its state buffers read and written, or only
        // written): memory's speed depends on how many streams a loop reads and writes, not only
        // on the bytes.
        // PyTorch's counterpart takes its turn in the same rounds, so that each side's best comes
        // from the same minutes; at every size, since a single round in cache can fall on a moment
        // when the machine is busy elsewhere (in one run, SGDScheduleFree at 256K on two threads
        // measured a quarter of the speed it showed in every measurement after).
        const { buffers, writeOnly } = trafficShape(caseLabel)
        for (let round = 0; round < ROUNDS; round++) {
          note(ours, await fastoptim(request, make))
          if (largest && c.server) {
            const traffic = slot({
              scenario: 'optimizers',
              contender: 'C traffic',
              optimizer: caseLabel,
              params,
              threads,
            })
            note(
              traffic,
              await c.server.ask(
                [`traffic:${buffers}:${writeOnly}`, 'back', threads, params, request.seconds, request.batch, 0, 1].join(
                  ' ',
                ),
              ),
            )
          }
          if (torch.server) {
            const theirs = slot({ scenario: 'optimizers', contender: 'PyTorch', optimizer: caseLabel, params, threads })
            note(theirs, await torch.server.ask(JSON.stringify(request)))
          }
        }
        console.log(`${caseLabel} ${label(params)}, ${threads} thr: ${ours.usPerStep?.toFixed(2)} µs`)
      }
    }
  }
  c.server?.stop()
  torch.server?.stop()
  inCache = Math.min(inCache, adamInCache())
  console.log(`Adam's kernel in L1: ${(inCache * 16e9).toFixed(2)} ns per 16 elements`)
  save('references.json', {
    quick: QUICK,
    allThreads: ALL_THREADS,
    rounds: ROUNDS,
    trainRounds: TRAIN_ROUNDS,
    secondsPerCase: SECONDS,
    evictBytes: EVICT_BYTES,
    evictWork: 'add',
    trainSteps: TRAIN_STEPS,
    c: c.note,
    torch: torch.note,
    adamInCache: { elements: IN_CACHE_ELEMENTS, secondsPerElement: inCache },
    seconds: (Date.now() - started) / 1000,
    results,
  })
}

main().catch((error) => {
  console.error(error)
  process.exit(1)
})
