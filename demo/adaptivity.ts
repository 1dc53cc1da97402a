import { mkdirSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'

import { algorithms, type FloatArray, type Parameter, type SparseGrad } from '../lib'
import { createOptimizer, findRecipe, type Recipe, type StepOptimizer } from './optimizers'
import { figure, linePanel, renderSvg, type Row } from './plot'
import { movingTarget, quadratic, rosenbrock, sparseEmbedding, sparseLogistic, type Problem } from './problems'
import { formatMarkdownTable, formatTable } from './progress'
import { TUNING_MARGIN, runTuning, workingRates, type TuningReport } from './tuning'

/** Learning rates every optimizer is tried at: half-decades from 1e-4 to 3. */
export const LEARNING_RATES: readonly number[] = [1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 0.1, 0.3, 1, 3]

/** The optimizers whose step is scaled per coordinate by a running size of the gradient. */
const PER_COORDINATE = new Set(['rmsprop', 'adagrad', 'adam', 'adamw', 'adamax', 'nadam', 'radam', 'sparseadam'])

/**
 * SparseAdam, which takes only row-sparse gradients: the demo's other problems have none, so it
 * runs on the embedding problem alone (with SGD, Adagrad and Adam beside it, whatever
 * `--optimizers` chose), at PyTorch's default lr.
 */
const SPARSE_ADAM: Recipe = { id: 'sparseadam', label: 'SparseAdam', className: 'SparseAdam', options: { lr: 1e-3 } }
const EMBEDDING_IDS = ['sgd', 'adagrad', 'adam']
/** The optimizers that take only row-sparse gradients. */
const SPARSE_CLASSES = new Set(algorithms().flatMap((a) => (a.sparse ? [a.name] : [])))

export interface Outcome {
  id: string
  optimizer: string
  lr: number
  /** The metric after the last step, Infinity when the run diverged. */
  final: number
  diverged: boolean
  /**
   * Per phase (one unless the problem moves), the step from which the metric stayed ≤ threshold
   * to the end of the phase, or null: passing through the threshold on the way elsewhere does
   * not count.
   */
  reached: Array<number | null>
  /** Per phase, the mean of the metric over its steps (Infinity if the run diverged). */
  phaseMean: number[]
  extras?: Record<string, number>
  trace?: Array<{ step: number; value: number }>
  /** Median over coordinates of the step size the optimizer's state implies (γ/(√accumulator + ε)). */
  effectiveLr?: Array<{ step: number; value: number }>
}

export interface ProblemReport {
  id: string
  title: string
  metricName: string
  threshold: number
  steps: number
  /** For each optimizer: every learning rate's outcome, in LEARNING_RATES order. */
  sweeps: Array<{ id: string; optimizer: string; usualLr: number; bestLr: number; outcomes: Outcome[] }>
}

export interface Claim {
  claim: string
  evidence: string
  verdict: 'supported' | 'contradicted' | 'mixed' | 'not tested'
}

const TRACE_POINTS = 200
const DIVERGED = 1e12
/** Curves are drawn down to this value; below it, a log axis would spend its height on noise. */
const PLOT_FLOOR = 1e-12

/** Runs one optimizer at one learning rate on a problem, from the problem's start. */
export function optimize(
  recipe: Recipe,
  lr: number,
  problem: Problem,
  seed: number,
  phases: readonly number[] = [0],
  detail = false,
  tracePoints = TRACE_POINTS,
): Outcome {
  const run = problem.start(seed)
  const sparse = SPARSE_CLASSES.has(recipe.className)
  if (sparse && run.sparseGradient === undefined)
    throw new Error(`${problem.id} has no sparse gradient for ${recipe.label}`)
  const dense = new Float64Array(run.x.length)
  const param: { data: FloatArray; grad: FloatArray | SparseGrad | null; shape?: number[] } = {
    data: run.x,
    grad: sparse ? null : dense,
  }
  if (run.shape) param.shape = run.shape
  const optimizer = createOptimizer(recipe, [param as Parameter], { lr })
  const reached: Array<number | null> = phases.map(() => null)
  const phaseSum = phases.map(() => 0)
  const traceEvery = Math.max(1, Math.floor(problem.steps / tracePoints))
  const outcome: Outcome = {
    id: recipe.id,
    optimizer: recipe.label,
    lr,
    final: Infinity,
    diverged: false,
    reached,
    phaseMean: [],
  }
  if (detail) outcome.trace = [{ step: 0, value: run.metric(run.x, 0) }]
  if (detail && PER_COORDINATE.has(recipe.id)) outcome.effectiveLr = []
  let value = Infinity
  for (let t = 0; t < problem.steps; t++) {
    if (sparse) param.grad = run.sparseGradient!(run.x, t)
    else run.gradient(run.x, dense, t)
    optimizer.step()
    value = run.metric(run.x, t)
    if (!(value < DIVERGED)) {
      outcome.diverged = true
      break
    }
    let phase = 0
    while (phase + 1 < phases.length && t >= phases[phase + 1]) phase++
    phaseSum[phase] += value
    if (value > problem.threshold) reached[phase] = null
    else if (reached[phase] === null) reached[phase] = t + 1
    if (detail && ((t + 1) % traceEvery === 0 || t + 1 === problem.steps)) {
      outcome.trace!.push({ step: t + 1, value })
      const effective = outcome.effectiveLr && effectiveLearningRate(optimizer, param as Parameter, lr)
      if (effective !== undefined) outcome.effectiveLr!.push({ step: t + 1, value: effective })
    }
  }
  outcome.final = outcome.diverged ? Infinity : value
  if (outcome.diverged) reached.fill(null)
  outcome.phaseMean = phases.map((from, p) => {
    const to = p + 1 < phases.length ? phases[p + 1] : problem.steps
    return outcome.diverged ? Infinity : phaseSum[p] / (to - from)
  })
  if (!outcome.diverged && run.extras) outcome.extras = run.extras(run.x)
  return outcome
}

/**
 * The median per-coordinate step size γ/(√a + ε) that an adaptive optimizer's state implies:
 * a is AdaGrad's sum of squared gradients (`sum`), RMSprop's average (`squareAvg`) or Adam's
 * bias-corrected second moment (`expAvgSq`). Undefined for a state it does not recognise.
 */
function effectiveLearningRate(optimizer: StepOptimizer, param: Parameter, lr: number): number | undefined {
  const state = optimizer.getState?.(param)
  if (state === undefined) return undefined
  const eps = typeof optimizer.defaults?.eps === 'number' ? optimizer.defaults.eps : 0
  let accumulator: ArrayLike<number> | undefined
  let correction = 1
  if (state.sum instanceof Float64Array) accumulator = state.sum
  else if (state.squareAvg instanceof Float64Array) accumulator = state.squareAvg
  else if (state.expAvgSq instanceof Float64Array && typeof state.step === 'number') {
    accumulator = state.expAvgSq
    const betas = optimizer.defaults?.betas
    const beta2 = Array.isArray(betas) && typeof betas[1] === 'number' ? betas[1] : 0.999
    correction = 1 - beta2 ** state.step
  }
  if (accumulator === undefined) return undefined
  const sizes = Array.from(accumulator, (a) => lr / (Math.sqrt(a / correction) + eps)).sort((a, b) => a - b)
  return sizes[sizes.length >> 1]
}

/** Fewest steps to the threshold, then lowest final value. */
const fastest = (a: Outcome, b: Outcome) => (a.reached[0] ?? Infinity) - (b.reached[0] ?? Infinity) || a.final - b.final

/**
 * Every optimizer at every learning rate of the grid; its best lr is the first by `compare`.
 * Keeps the traces of its usual and best lr only.
 */
function sweep(
  problem: Problem,
  recipes: readonly Recipe[],
  seed: number,
  phases: readonly number[] = [0],
  compare = fastest,
  tracePoints = TRACE_POINTS,
): ProblemReport {
  const sweeps = recipes.map((recipe) => {
    const outcomes = LEARNING_RATES.map((lr) => optimize(recipe, lr, problem, seed, phases))
    const best = outcomes.reduce((a, b) => (compare(b, a) < 0 ? b : a))
    const usualLr = recipe.options.lr
    for (const lr of new Set([usualLr, best.lr])) {
      const detailed = optimize(recipe, lr, problem, seed, phases, true, tracePoints)
      const index = LEARNING_RATES.indexOf(lr)
      if (index >= 0) outcomes[index] = detailed
      else outcomes.push(detailed)
    }
    return { id: recipe.id, optimizer: recipe.label, usualLr, bestLr: best.lr, outcomes }
  })
  return {
    id: problem.id,
    title: problem.title,
    metricName: problem.metricName,
    threshold: problem.threshold,
    steps: problem.steps,
    sweeps,
  }
}

const outcomeAt = (s: ProblemReport['sweeps'][number], lr: number) => s.outcomes.find((o) => o.lr === lr)!
const fmt = (x: number) =>
  x === Infinity ? 'diverged' : x === 0 ? '0' : x < 1e-3 || x >= 1e4 ? x.toExponential(1) : x.toPrecision(3)
const fmtLr = (lr: number) => (lr >= 0.01 ? String(lr) : lr.toExponential(0).replace('e-', 'e-'))

/** The lrs of the grid at which the problem was reached, as "count: lowest…highest". */
function reachingLrs(s: ProblemReport['sweeps'][number]): { count: number; text: string } {
  const good = LEARNING_RATES.filter((lr) => outcomeAt(s, lr).reached[0] !== null)
  if (good.length === 0) return { count: 0, text: `0 of ${LEARNING_RATES.length}` }
  return {
    count: good.length,
    text: `${good.length} of ${LEARNING_RATES.length}: ${fmtLr(good[0])}…${fmtLr(good[good.length - 1])}`,
  }
}

function sweepTable(report: ProblemReport): { header: string[]; rows: string[][] } {
  const header = [
    'optimizer',
    'usual lr',
    `${report.metricName} at usual lr`,
    'best lr',
    'at best lr',
    `steps to ≤ ${fmtLr(report.threshold)} (best lr)`,
    `lrs reaching ≤ ${fmtLr(report.threshold)}`,
  ]
  const edges = [LEARNING_RATES[0], LEARNING_RATES[LEARNING_RATES.length - 1]]
  const rows = report.sweeps.map((s) => {
    const usual = outcomeAt(s, s.usualLr)
    const best = outcomeAt(s, s.bestLr)
    return [
      s.optimizer,
      fmtLr(s.usualLr),
      fmt(usual.final),
      `${fmtLr(s.bestLr)}${edges.includes(s.bestLr) ? '*' : ''}`,
      fmt(best.final),
      best.reached[0] === null ? '—' : String(best.reached[0]),
      reachingLrs(s).text,
    ]
  })
  return { header, rows }
}

export interface AdaptivityReport {
  problems: ProblemReport[]
  tuning?: TuningReport
  claims: Claim[]
  markdown: string
  files: string[]
}

/**
 * Runs the five problems for every optimizer at every learning rate of the grid, prints a
 * table per problem and the verdict on each claim, and writes adaptivity.{json,md,svg}.
 * `budget` scales every problem's step count (tests use a small one).
 */
export async function runAdaptivity(
  recipes: readonly Recipe[],
  seed: number,
  out: string,
  options: { budget?: number; tuningEpochs?: number } = {},
): Promise<AdaptivityReport> {
  const budget = options.budget ?? 1
  const tuningEpochs = options.tuningEpochs ?? 2
  const steps = (n: number) => Math.max(20, Math.round(n * budget))
  const problems = {
    aligned: quadratic({ dimension: 50, condition: 1e3, rotated: false, steps: steps(1000) }),
    rotated: quadratic({ dimension: 50, condition: 1e3, rotated: true, steps: steps(1000) }),
    rosenbrock: rosenbrock(steps(3000)),
    sparse: sparseLogistic({ features: 100, batchSize: 32, steps: steps(3000) }),
    moving: movingTarget({ dimension: 10, noise: 0.3, steps: steps(2000) }),
    embedding: sparseEmbedding({ rows: 400, dim: 8, outputs: 8, batchSize: 16, steps: steps(1500), noise: 0.1 }),
  }
  const intro =
    `Adaptivity: ${recipes.length} optimizers × ${LEARNING_RATES.length} learning rates (${LEARNING_RATES.map(fmtLr).join(', ')}) ` +
    `on six small problems (the embedding table with its own four), seed ${seed}, float64 parameters.`
  console.log(intro)
  const reports: ProblemReport[] = []
  const markdown: string[] = [`${intro}\n`]
  const section = (report: ProblemReport, table: { header: string[]; rows: string[][] }, note: string) => {
    console.log(`\n${report.title} (${report.steps} steps)\n${formatTable(table.header, table.rows)}\n${note}`)
    markdown.push(
      `**${report.title}** (${report.steps} steps). ${note}\n\n${formatMarkdownTable(table.header, table.rows)}\n`,
    )
  }
  const bestNote = 'Best lr: fewest steps to the threshold, else lowest final value; * marks the edge of the grid.'
  for (const problem of [problems.aligned, problems.rotated, problems.rosenbrock, problems.sparse]) {
    const report = sweep(problem, recipes, seed)
    reports.push(report)
    const table = sweepTable(report)
    if (problem === problems.sparse) {
      table.header.push('frequent-weight error (best lr)')
      report.sweeps.forEach((s, i) =>
        table.rows[i].push(fmt(outcomeAt(s, s.bestLr).extras?.frequentWeightError ?? Infinity)),
      )
    }
    section(report, table, bestNote)
  }

  // AdaGrad's decay: tune each optimizer for the first approach, then move the minimum.
  const moving = problems.moving
  const byFirstHalf = (a: Outcome, b: Outcome) => a.phaseMean[0] - b.phaseMean[0]
  // A finer trace than elsewhere: the plot zooms in on the steps after the jump.
  const movingReport = sweep(moving, recipes, seed, [0, moving.switchStep], byFirstHalf, moving.steps / 2)
  reports.push(movingReport)
  const movingRows = movingReport.sweeps.map((s) => {
    const o = outcomeAt(s, s.bestLr)
    const { first, second, ratio } = approaches(o, moving.switchStep)
    const lrTrace = o.effectiveLr ?? []
    const atJump = lrTrace.filter((p) => p.step <= moving.switchStep).pop()
    return [
      s.optimizer,
      fmtLr(s.bestLr),
      first === null ? `> ${moving.switchStep}` : String(first),
      second === null ? `> ${moving.steps - moving.switchStep}` : String(second),
      ratio === null ? '—' : `${ratio.toFixed(1)}×`,
      `${fmt(o.phaseMean[0])} / ${fmt(o.phaseMean[1])}`,
      lrTrace.length > 0 ? fmt(lrTrace[0].value) : '—',
      atJump ? fmt(atJump.value) : '—',
      lrTrace.length > 0 ? fmt(lrTrace[lrTrace.length - 1].value) : '—',
    ]
  })
  section(
    movingReport,
    {
      header: [
        'optimizer',
        'lr',
        'steps, 1st approach',
        'steps, 2nd approach',
        '2nd/1st',
        'mean distance 1st / 2nd half',
        'eff. lr at start',
        'at jump',
        'at end',
      ],
      rows: movingRows,
    },
    `lr: the grid's lowest mean distance over the first half. Steps until the RMS distance to the minimum is ≤ ${moving.threshold}. ` +
      "Effective lr: median over coordinates of γ/(√accumulator + ε), read from the optimizer's state.",
  )

  // Rare rows of an embedding: SGD, Adagrad and Adam with dense gradients, SparseAdam with sparse ones.
  const embeddingRecipes = [...EMBEDDING_IDS.flatMap((id) => findRecipe(id) ?? []), SPARSE_ADAM]
  const embeddingReport = sweep(problems.embedding, embeddingRecipes, seed)
  reports.push(embeddingReport)
  const embeddingTable = sweepTable(embeddingReport)
  embeddingTable.header.push('rarest-25% error (best lr)', 'most frequent 25% error (best lr)')
  embeddingReport.sweeps.forEach((s, i) => {
    const extras = outcomeAt(s, s.bestLr).extras
    embeddingTable.rows[i].push(fmt(extras?.rareRowError ?? Infinity), fmt(extras?.frequentRowError ?? Infinity))
  })
  section(
    embeddingReport,
    embeddingTable,
    `${bestNote} SparseAdam gets row-sparse gradients ({ indices, values }); the others the same gradient as a dense table.`,
  )

  let tuning: TuningReport | undefined
  if (tuningEpochs > 0) {
    tuning = runTuning(recipes, seed, tuningEpochs)
    markdown.push(
      `**Learning-rate sensitivity on MNIST** (${tuning.epochs} epochs at each rate, test accuracy; the sweep's best is ${tuning.best.toFixed(1)}%).\n\n${tuning.markdown}\n`,
    )
  }

  const claims = judgeClaims(reports, moving.switchStep, tuning)
  console.log('\nClaims about adaptive optimizers, as these problems measure them:')
  for (const claim of claims) console.log(`- ${claim.claim}: ${claim.verdict.toUpperCase()}. ${claim.evidence}`)
  markdown.push(`Claims:\n\n${claims.map((c) => `- **${c.claim}**: ${c.verdict}. ${c.evidence}`).join('\n')}\n`)

  mkdirSync(out, { recursive: true })
  const files = [join(out, 'adaptivity.json'), join(out, 'adaptivity.md'), join(out, 'adaptivity.svg')]
  const { table: _table, markdown: _markdown, ...tuningData } = tuning ?? {}
  const json = { seed, learningRates: LEARNING_RATES, problems: reports, tuning: tuning && tuningData, claims }
  writeFileSync(files[0], `${JSON.stringify(json, null, 1)}\n`)
  writeFileSync(files[1], `${markdown.join('\n')}\n`)
  writeFileSync(
    files[2],
    await renderSvg(
      adaptivityFigure(
        reports,
        [...new Set([...recipes, ...embeddingRecipes].map((r) => r.label))],
        moving.switchStep,
        tuning,
      ),
    ),
  )
  return { problems: reports, tuning, claims, markdown: markdown.join('\n'), files }
}

/** Steps to the threshold before and after the jump, and their ratio. */
function approaches(
  o: Outcome,
  switchStep: number,
): { first: number | null; second: number | null; ratio: number | null } {
  const first = o.reached[0]
  const second = o.reached[1] === null ? null : o.reached[1] - switchStep
  return { first, second, ratio: first === null || second === null ? null : second / first }
}

/** The fastest of a family on a problem, each at its best lr: steps to the threshold, else final value. */
function fastestOf(report: ProblemReport, adaptive: boolean): Outcome | undefined {
  const best = report.sweeps.filter((s) => PER_COORDINATE.has(s.id) === adaptive).map((s) => outcomeAt(s, s.bestLr))
  return best.length === 0 ? undefined : best.reduce((a, b) => (fastest(b, a) < 0 ? b : a))
}

const describeRun = (o: Outcome) =>
  `${o.optimizer} (lr ${fmtLr(o.lr)}) ${o.reached[0] === null ? `does not get there, ends at ${fmt(o.final)}` : `in ${o.reached[0]} steps`}`

/**
 * Turns the measurements into verdicts, each by a rule stated in its evidence, so that the
 * verdict follows from the numbers, whatever they turn out to be.
 */
function judgeClaims(reports: readonly ProblemReport[], switchStep: number, tuning: TuningReport | undefined): Claim[] {
  const byId = (id: string) => reports.find((r) => r.id === id)!
  const claims: Claim[] = []
  const adaptiveVsPlain = (id: string, claim: string) => {
    const report = byId(id)
    const adaptive = fastestOf(report, true)
    const plain = fastestOf(report, false)
    if (adaptive === undefined || plain === undefined) {
      claims.push({
        claim,
        evidence: 'needs both a per-coordinate optimizer and SGD in this build',
        verdict: 'not tested',
      })
      return
    }
    const a = adaptive.reached[0] ?? Infinity
    const p = plain.reached[0] ?? Infinity
    const verdict =
      a === Infinity && p === Infinity ? 'mixed' : p >= 2 * a ? 'supported' : a >= 2 * p ? 'contradicted' : 'mixed'
    claims.push({
      claim,
      evidence:
        `to ${report.metricName} ≤ ${fmtLr(report.threshold)}, each optimizer at its best lr: the fastest per-coordinate method, ${describeRun(adaptive)}; ` +
        `the fastest of SGD and SGD+momentum, ${describeRun(plain)} (rule: supported if at least twice as fast, contradicted if half as fast or slower).`,
      verdict,
    })
  }
  adaptiveVsPlain('quadratic', 'Per-dimension step sizes help on an ill-conditioned problem (axis-aligned quadratic)')
  adaptiveVsPlain(
    'quadratic-rotated',
    'They help when the ill-conditioning lies along no coordinate (rotated quadratic)',
  )
  adaptiveVsPlain('rosenbrock', "They help in Rosenbrock's curved valley")
  adaptiveVsPlain('sparse', 'They help with rare features (sparse gradients)')
  claims.push(rareRows(byId('sparse-embedding')))
  claims.push(lazyVsDense(byId('sparse-embedding')))

  const moving = byId('moving-target')
  const ratios = moving.sweeps.map((s) => ({ s, ...approaches(outcomeAt(s, s.bestLr), switchStep) }))
  const adagrad = ratios.find((r) => r.s.id === 'adagrad')
  const others = ratios.filter((r) => r.s.id !== 'adagrad' && r.ratio !== null)
  if (adagrad === undefined || adagrad.first === null || others.length === 0) {
    claims.push({
      claim: 'AdaGrad slows down as its accumulator grows',
      evidence: 'needs Adagrad and another optimizer that reach the first minimum',
      verdict: 'not tested',
    })
  } else {
    const adagradRatio = adagrad.ratio ?? Infinity
    const worst = others.reduce((a, b) => (b.ratio! > a.ratio! ? b : a))
    const verdict =
      adagradRatio >= 2 * worst.ratio! ? 'supported' : adagradRatio <= worst.ratio! ? 'contradicted' : 'mixed'
    claims.push({
      claim: 'AdaGrad slows down as its accumulator grows',
      evidence:
        `once the minimum moves, Adagrad (lr ${fmtLr(adagrad.s.bestLr)}) takes ${adagrad.ratio === null ? `more than ${moving.steps - switchStep} steps` : `${adagrad.ratio.toFixed(1)}× the steps`} of its first approach ` +
        `(${adagrad.first} steps); of the others the slowest to recover, ${worst.s.optimizer}, ${worst.ratio!.toFixed(1)}× ` +
        '(rule: supported if at least twice that ratio, contradicted if no more).',
      verdict,
    })
  }

  // "Less tuning": how many grid learning rates reach each static problem's threshold.
  const statics = reports.filter((r) => r.id !== 'moving-target' && r.id !== 'sparse-embedding')
  const tolerance = new Map<string, { label: string; count: number }>()
  for (const report of statics) {
    for (const s of report.sweeps) {
      const entry = tolerance.get(s.id) ?? { label: s.optimizer, count: 0 }
      entry.count += reachingLrs(s).count
      tolerance.set(s.id, entry)
    }
  }
  claims.push(
    lessTuning(
      'Adam needs less learning-rate tuning (synthetic problems)',
      tolerance,
      `learning rates of the grid that reach the threshold, over the ${statics.length} static problems (of ${LEARNING_RATES.length * statics.length})`,
    ),
  )
  if (tuning !== undefined) {
    const onMnist = new Map(
      tuning.results.map((r) => [r.id, { label: r.optimizer, count: workingRates(r.accuracy, tuning.best) }]),
    )
    claims.push(
      lessTuning(
        'Adam needs less learning-rate tuning (MNIST)',
        onMnist,
        `learning rates of ${tuning.rates.join(', ')} whose test accuracy after ${tuning.epochs} epoch(s) is within ${TUNING_MARGIN} points of the sweep's best (${tuning.best.toFixed(1)}%)`,
      ),
    )
  }
  return claims
}

/**
 * The embedding's rare rows, compared on their final error (each optimizer at its best lr): the
 * per-coordinate method that ends lowest against SGD.
 */
function rareRows(report: ProblemReport): Claim {
  const claim = 'They help the rare rows of an embedding table (Zipf lookups, row-sparse gradients)'
  const lowest = (adaptive: boolean) =>
    report.sweeps
      .filter((s) => PER_COORDINATE.has(s.id) === adaptive)
      .map((s) => outcomeAt(s, s.bestLr))
      .reduce<Outcome | undefined>((a, b) => (a === undefined || b.final < a.final ? b : a), undefined)
  const [adaptive, plain] = [lowest(true), lowest(false)]
  if (adaptive === undefined || plain === undefined) {
    return { claim, evidence: 'needs a per-coordinate optimizer and SGD in this build', verdict: 'not tested' }
  }
  const ratio = adaptive.final / plain.final
  const edge = (o: Outcome) => (o.lr === LEARNING_RATES[LEARNING_RATES.length - 1] ? ', the top of the grid' : '')
  return {
    claim,
    evidence:
      `${report.metricName} after ${report.steps} steps, each optimizer at its best lr: the lowest per-coordinate method, ` +
      `${adaptive.optimizer} (lr ${fmtLr(adaptive.lr)}${edge(adaptive)}), ${fmt(adaptive.final)}; ${plain.optimizer} (lr ${fmtLr(plain.lr)}${edge(plain)}), ${fmt(plain.final)} ` +
      "(rule: supported if at most half of SGD's, contradicted if twice or more).",
    verdict: ratio <= 0.5 ? 'supported' : ratio >= 2 ? 'contradicted' : 'mixed',
  }
}

/**
 * SparseAdam updates a row's moments only when a batch touches it; dense Adam decays every row's
 * moments every step and keeps moving rows on their momentum. Compared on the rarest rows' final
 * error, each at its best lr.
 */
function lazyVsDense(report: ProblemReport): Claim {
  const claim = "SparseAdam's lazy row updates cost the rare rows nothing against dense Adam"
  const [lazy, dense] = ['sparseadam', 'adam'].map((id) => report.sweeps.find((s) => s.id === id))
  if (lazy === undefined || dense === undefined) {
    return { claim, evidence: 'needs SparseAdam and Adam in this build', verdict: 'not tested' }
  }
  const [l, d] = [lazy, dense].map((s) => outcomeAt(s, s.bestLr).final)
  return {
    claim,
    evidence:
      `${report.metricName} after ${report.steps} steps, each at its best lr: SparseAdam (lr ${fmtLr(lazy.bestLr)}) ${fmt(l)}, ` +
      `Adam (lr ${fmtLr(dense.bestLr)}) ${fmt(d)} (rule: supported if SparseAdam's is at most 10% above Adam's, contradicted if twice or more).`,
    verdict: l <= 1.1 * d ? 'supported' : l >= 2 * d ? 'contradicted' : 'mixed',
  }
}

/** Adam against SGD, SGD+momentum, RMSprop and Adagrad on a count of learning rates that work. */
function lessTuning(claim: string, counts: ReadonlyMap<string, { label: string; count: number }>, what: string): Claim {
  const adam = counts.get('adam')
  const rivals = ['sgd', 'sgd-momentum', 'rmsprop', 'adagrad'].flatMap((id) => counts.get(id) ?? [])
  if (adam === undefined || rivals.length === 0) {
    return {
      claim,
      evidence: 'needs Adam and at least one of SGD, RMSprop, Adagrad in this build',
      verdict: 'not tested',
    }
  }
  const beaten = rivals.filter((r) => adam.count > r.count)
  return {
    claim,
    evidence: `${what}: ${[adam, ...rivals].map((r) => `${r.label} ${r.count}`).join(', ')} (rule: supported if Adam's count beats every other's, contradicted if it beats none).`,
    verdict: beaten.length === rivals.length ? 'supported' : beaten.length === 0 ? 'contradicted' : 'mixed',
  }
}

function adaptivityFigure(
  reports: readonly ProblemReport[],
  series: readonly string[],
  switchStep: number,
  tuning: TuningReport | undefined,
) {
  const byId = (id: string) => reports.find((r) => r.id === id)!
  const floor = (value: number) => Math.max(value, PLOT_FLOOR)
  const curves = (
    report: ProblemReport,
    field: 'trace' | 'effectiveLr' = 'trace',
    from = 0,
    to = Infinity,
    every = 1,
  ): Row[] =>
    report.sweeps.flatMap((s) =>
      (outcomeAt(s, s.bestLr)[field] ?? [])
        .filter((p, i) => Number.isFinite(p.value) && p.step >= from && p.step <= to && i % every === 0)
        .map((p) => ({ optimizer: s.optimizer, step: p.step, value: floor(p.value) })),
    )
  // Diverged runs are left out: the line joins the learning rates that finished.
  const sweepRows = (report: ProblemReport): Row[] =>
    report.sweeps.flatMap((s) =>
      LEARNING_RATES.map((lr) => outcomeAt(s, lr))
        .filter((o) => Number.isFinite(o.final))
        .map((o) => ({ optimizer: s.optimizer, lr: o.lr, value: floor(o.final) })),
    )
  const panel = (title: string, rows: Row[], yTitle: string, x: 'step' | 'lr' = 'step', log = true) =>
    linePanel({
      title,
      rows,
      x:
        x === 'lr'
          ? { field: 'lr', title: 'learning rate (log scale)', log: true, format: '~e' }
          : { field: 'step', title: 'step' },
      // These axes span many decades: 1e-6 reads better than 0.000001.
      y: { field: 'value', title: yTitle, log, format: log ? '~e' : undefined },
      series,
      points: x === 'lr',
      width: 300,
      height: 210,
    })
  const aligned = byId('quadratic')
  const rotated = byId('quadratic-rotated')
  const rosen = byId('rosenbrock')
  const sparse = byId('sparse')
  const moving = byId('moving-target')
  const embedding = byId('sparse-embedding')
  const panels = [
    panel('Axis-aligned quadratic, κ = 1000', curves(aligned), `${aligned.metricName} (floor 1e-12)`),
    panel('Rotated quadratic, κ = 1000', curves(rotated), `${rotated.metricName} (floor 1e-12)`),
    panel(
      'Axis-aligned quadratic: result vs lr',
      sweepRows(aligned),
      `${aligned.metricName} after ${aligned.steps} steps`,
      'lr',
    ),
    panel('Rosenbrock', curves(rosen), `${rosen.metricName} (floor 1e-12)`),
    panel('Rosenbrock: result vs lr', sweepRows(rosen), `f after ${rosen.steps} steps`, 'lr'),
    panel('Rare features: error of the rarest weights', curves(sparse), 'RMS error, rarest 25%'),
    panel('Embedding table: error of the rarest rows', curves(embedding), 'RMS error, rarest 25% of rows'),
    panel(
      `Moving minimum: steps ${switchStep - 20}–${switchStep + 200} (jump at ${switchStep})`,
      curves(moving, 'trace', switchStep - 20, switchStep + 200),
      moving.metricName,
    ),
    panel('Moving minimum: effective step size', curves(moving, 'effectiveLr', 0, Infinity, 5), 'median γ/(√acc + ε)'),
  ]
  if (tuning !== undefined) {
    const rows = tuning.results.flatMap((r) =>
      r.accuracy.flatMap((a, i) =>
        Number.isFinite(a) ? [{ optimizer: r.optimizer, lr: tuning.rates[i], value: a }] : [],
      ),
    )
    panels.push(panel(`MNIST: test accuracy after ${tuning.epochs} epoch(s) vs lr`, rows, 'accuracy (%)', 'lr', false))
  }
  return figure(
    'fastoptim: per-dimension adaptivity (each optimizer at its best learning rate of the grid unless said)',
    panels,
    3,
  )
}
