import { execFile } from 'node:child_process'
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { promisify } from 'node:util'

import test from 'ava'

import { markdownToHtml } from '../demo/html'
import { loadMnist } from '../demo/mnist'
import { Mlp } from '../demo/mlp'
import { seriesEncoding } from '../demo/series'
import { Random } from '../demo/random'

const run = promisify(execFile)
const root = join(__dirname, '..')
const outDirs: string[] = []

/** Runs `npm run demo -- ...args` the way npm does (tsx over demo/main.ts), into a fresh folder. */
async function demo(...args: string[]): Promise<{ out: string; stdout: string; stderr: string }> {
  const out = mkdtempSync(join(tmpdir(), 'fastoptim-demo-'))
  outDirs.push(out)
  const { stdout, stderr } = await run(process.execPath, ['--import', 'tsx', 'demo/main.ts', '--out', out, ...args], {
    cwd: root,
    maxBuffer: 1 << 24,
  })
  return { out, stdout, stderr }
}

const readJson = (file: string) => JSON.parse(readFileSync(file, 'utf8'))

test.after.always(() => {
  for (const dir of outDirs) rmSync(dir, { recursive: true, force: true })
})

test('the MLP gradient matches central finite differences', (t) => {
  const { train } = loadMnist(1)
  const model = new Mlp(16, new Random(3))
  const order = Uint32Array.from({ length: 8 }, (_, i) => i)
  const loss = () => {
    const saved = model.parameters.map((p) => p.grad!.slice())
    const value = model.accumulateGradients(train, order, 0, 8)
    model.parameters.forEach((p, i) => p.grad!.set(saved[i]))
    return value
  }
  for (const p of model.parameters) p.grad!.fill(0)
  model.accumulateGradients(train, order, 0, 8)
  // w1 entries on pixels the first image actually has, so their gradient is not trivially zero.
  const livePixels = Array.from(train.pixel.subarray(train.rowStart[0] + 30, train.rowStart[0] + 34))
  const probes: Array<[number, number]> = [
    ...livePixels.map((pixel, k): [number, number] => [0, pixel * 16 + k]),
    [1, 3],
    [1, 11],
    [2, 5],
    [2, 97],
    [3, 0],
    [3, 7],
  ]
  for (const [which, index] of probes) {
    const p = model.parameters[which]
    const original = p.data[index]
    // Small enough that no ReLU in the batch flips between the two probes (a kink in between
    // would make the difference quotient meaningless), large enough for float32 weights.
    const h = 1e-3
    p.data[index] = original + h
    const up = loss()
    p.data[index] = original - h
    const down = loss()
    p.data[index] = original
    const numeric = (up - down) / (2 * h)
    const analytic = p.grad![index]
    t.true(
      Math.abs(numeric - analytic) <= 2e-3 * Math.max(1e-2, Math.abs(numeric)),
      `param ${which}[${index}]: ${analytic} vs ${numeric}`,
    )
  }
  t.not(model.w1.grad[livePixels[0] * 16], 0)
})

test('the split is seeded, disjoint in images, and covers all 10,000 digits', (t) => {
  const a = loadMnist(7)
  const b = loadMnist(7)
  const c = loadMnist(8)
  t.is(a.train.size, 8000)
  t.is(a.test.size, 2000)
  t.deepEqual(a.train.label, b.train.label)
  t.deepEqual(a.test.value, b.test.value)
  t.notDeepEqual(a.train.label, c.train.label)
  const counts = new Array(10).fill(0)
  for (const set of [a.train, a.test]) for (const label of set.label) counts[label]++
  t.deepEqual(counts, [1001, 1127, 991, 1032, 980, 863, 1014, 1070, 944, 978])
})

test.serial('one epoch of MNIST writes a table, JSON, SVG and page that agree and make sense', async (t) => {
  const { out, stdout } = await demo('--epochs', '1', '--optimizers', 'sgd,adam', '--seed', '3', '--threads', '2')
  for (const file of ['mnist.json', 'mnist.md', 'mnist.svg', 'index.html']) t.true(existsSync(join(out, file)), file)
  const report = readJson(join(out, 'mnist.json'))
  t.deepEqual(
    report.runs.map((r: { label: string }) => r.label),
    ['SGD', 'Adam'],
  )
  for (const r of report.runs) {
    t.false(r.diverged)
    t.is(r.steps, Math.ceil(8000 / 64))
    t.deepEqual(
      r.evaluations.map((e: { epoch: number }) => e.epoch),
      [0, 1],
    )
    const [before, after] = r.evaluations
    // Random weights: about ln 10 and chance; one epoch of either optimizer learns the digits.
    t.true(Math.abs(before.trainLoss - Math.log(10)) < 0.1, `initial loss ${before.trainLoss}`)
    t.true(before.testAccuracy < 0.25)
    t.true(after.trainLoss < 0.7, `${r.label} loss ${after.trainLoss}`)
    t.true(after.testAccuracy > 0.8, `${r.label} accuracy ${after.testAccuracy}`)
    t.is(r.curve.length, 10)
    t.true(r.stepSeconds > 0 && r.stepSeconds < r.trainSeconds && r.trainSeconds <= r.wallSeconds)
    t.true(stdout.includes(`${(100 * after.testAccuracy).toFixed(1)}%`), 'the table shows the JSON accuracy')
  }
  // Same initial weights: the two runs start from the same evaluation.
  t.deepEqual(report.runs[0].evaluations[0], report.runs[1].evaluations[0])
  t.true(['supported', 'mixed', 'contradicted'].includes(report.claim.verdict))
  const svg = readFileSync(join(out, 'mnist.svg'), 'utf8')
  t.true(svg.startsWith('<svg'))
  for (const label of ['SGD', 'Adam', 'Test accuracy']) t.true(svg.includes(label), label)
  t.regex(stdout, /optimizer\s+options\s+train loss\s+test acc/)
})

test.serial('the same seed gives the same numbers whatever the thread count; another seed does not', async (t) => {
  const numbers = (out: string) =>
    readJson(join(out, 'mnist.json')).runs.map((r: { curve: unknown; evaluations: unknown }) => ({
      curve: r.curve,
      evaluations: r.evaluations,
    }))
  const args = ['--epochs', '1', '--optimizers', 'adam,rmsprop', '--batch-size', '256']
  const one = await demo(...args, '--seed', '5', '--threads', '1')
  const two = await demo(...args, '--seed', '5', '--threads', '2')
  const other = await demo(...args, '--seed', '6', '--threads', '2')
  t.deepEqual(numbers(one.out), numbers(two.out))
  t.notDeepEqual(numbers(one.out), numbers(other.out))
})

test.serial('the adaptivity scenario measures every claim and AdaGrad’s step size never grows', async (t) => {
  const { out, stdout } = await demo(
    '--scenario',
    'adaptivity',
    '--tuning-epochs',
    '0',
    '--optimizers',
    'sgd,sgd-momentum,rmsprop,adagrad,adam',
  )
  for (const file of ['adaptivity.json', 'adaptivity.md', 'adaptivity.svg', 'index.html'])
    t.true(existsSync(join(out, file)), file)
  const report = readJson(join(out, 'adaptivity.json'))
  t.deepEqual(
    report.problems.map((p: { id: string }) => p.id),
    ['quadratic', 'quadratic-rotated', 'rosenbrock', 'sparse', 'moving-target', 'sparse-embedding'],
  )
  // The embedding problem runs SGD, Adagrad, Adam and SparseAdam (sparse gradients) whatever was chosen.
  const embedding = report.problems.find((p: { id: string }) => p.id === 'sparse-embedding')
  t.deepEqual(
    embedding.sweeps.map((s: { id: string }) => s.id),
    ['sgd', 'adagrad', 'adam', 'sparseadam'],
  )
  for (const sweep of embedding.sweeps) {
    const best = sweep.outcomes.find((o: { lr: number }) => o.lr === sweep.bestLr)
    t.is(best.final, best.extras.rareRowError, `${sweep.id}: the metric is the rarest rows' error`)
  }
  t.true(report.claims.some((c: { claim: string }) => /embedding table/.test(c.claim)))
  t.true(report.claims.some((c: { claim: string }) => /SparseAdam/.test(c.claim)))
  for (const problem of report.problems) {
    for (const sweep of problem.sweeps) {
      t.true(report.learningRates.includes(sweep.bestLr))
      const best = sweep.outcomes.find((o: { lr: number }) => o.lr === sweep.bestLr)
      t.true(best.trace.length > 1, `${problem.id} ${sweep.optimizer} keeps a trace of its best lr`)
      // A run that reached the threshold and stayed there ends at or below it.
      if (best.reached[best.reached.length - 1] !== null) t.true(best.final <= problem.threshold)
    }
  }
  // Plain and heavy-ball gradient descent are rotation invariant: turning the quadratic must not
  // change what they reach (up to rounding), unlike the per-coordinate methods.
  const [aligned, rotated] = report.problems
  for (const id of ['sgd', 'sgd-momentum']) {
    const a = aligned.sweeps.find((s: { id: string }) => s.id === id)
    const r = rotated.sweeps.find((s: { id: string }) => s.id === id)
    for (const lr of report.learningRates) {
      const x = a.outcomes.find((o: { lr: number }) => o.lr === lr)
      const y = r.outcomes.find((o: { lr: number }) => o.lr === lr)
      t.is(x.diverged, y.diverged, `${id} at lr ${lr}`)
      if (!x.diverged && x.final > 1e-9)
        t.true(Math.abs(x.final - y.final) <= 1e-6 * x.final, `${id} at lr ${lr}: ${x.final} vs ${y.final}`)
    }
  }
  const rmsprop = (problem: {
    sweeps: Array<{ id: string; bestLr: number; outcomes: Array<{ lr: number; final: number }> }>
  }) => problem.sweeps.find((s) => s.id === 'rmsprop')!.outcomes.find((o) => o.lr === 3e-3)!.final
  t.true(rmsprop(rotated) > 10 * rmsprop(aligned), 'RMSprop does better when the curvature lies along the coordinates')
  // Gradient descent on a quadratic with κ = 1000 diverges at lr 0.1 (> 2/λmax): the sweep must say so.
  const sgd = report.problems[0].sweeps.find((s: { id: string }) => s.id === 'sgd')
  t.true(sgd.outcomes.find((o: { lr: number }) => o.lr === 0.1).diverged)
  // AdaGrad's accumulator only grows, so the step size it implies only shrinks.
  const moving = report.problems[4].sweeps.find((s: { id: string }) => s.id === 'adagrad')
  const steps = moving.outcomes
    .find((o: { lr: number }) => o.lr === moving.bestLr)
    .effectiveLr.map((p: { value: number }) => p.value)
  t.true(steps.length > 100)
  for (let i = 1; i < steps.length; i++) t.true(steps[i] <= steps[i - 1], `effective lr rose at sample ${i}`)
  t.true(steps[steps.length - 1] < steps[0] / 2)
  const claims = report.claims as Array<{ claim: string; verdict: string; evidence: string }>
  t.is(claims.length, 8)
  for (const claim of claims) {
    t.true(['supported', 'mixed', 'contradicted'].includes(claim.verdict), `${claim.claim}: ${claim.verdict}`)
    t.true(stdout.includes(claim.evidence))
  }
  t.true(readFileSync(join(out, 'adaptivity.svg'), 'utf8').includes('Rosenbrock'))
})

test.serial('--help lists every option, and a bad option is refused with a message', async (t) => {
  const { stdout } = await demo('--help')
  for (const option of [
    '--scenario',
    '--optimizers',
    '--epochs',
    '--threads',
    '--seed',
    '--out',
    '--tuning-epochs',
    '--batch-size',
  ]) {
    t.true(stdout.includes(option), option)
  }
  const error = await t.throwsAsync(demo('--optimizers', 'adam,shampoo'))
  t.regex((error as Error & { stderr: string }).stderr, /unknown optimizer 'shampoo'/)
  const seed = await t.throwsAsync(demo('--seed', '1.5'))
  t.regex((seed as Error & { stderr: string }).stderr, /--seed must be an integer/)
})

test('the page shows the demo’s Markdown as HTML: tables as <table>, bold, lists and paragraphs, text escaped', (t) => {
  const markdown = [
    '**Axis-aligned** (10 steps). Rule: f/f₀ <= 1e-6.',
    '',
    '| optimizer | steps | note |',
    '| --- | ---: | --- |',
    '| Adam | 125 | `lr` 3e-3 |',
    '| SGD & co | — | never |',
    'Claims:',
    '',
    '- **Adam converges faster**: mixed. SGD+momentum 5 epochs',
  ].join('\n')
  t.is(
    markdownToHtml(markdown),
    [
      '<p><strong>Axis-aligned</strong> (10 steps). Rule: f/f₀ &lt;= 1e-6.</p>',
      '<table>',
      '<thead><tr><th>optimizer</th><th class="num">steps</th><th>note</th></tr></thead>',
      '<tbody>',
      '<tr><td>Adam</td><td class="num">125</td><td><code>lr</code> 3e-3</td></tr>',
      '<tr><td>SGD &amp; co</td><td class="num">—</td><td>never</td></tr>',
      '</tbody>',
      '</table>',
      '<p>Claims:</p>',
      '<ul>',
      '<li><strong>Adam converges faster</strong>: mixed. SGD+momentum 5 epochs</li>',
      '</ul>',
    ].join('\n'),
  )
})

test('every series of a plot has its own dash pattern (and point shape), not only its colour', (t) => {
  const series = ['SGD', 'Adam', 'AdamW', 'RMSprop', 'Adagrad', 'NAdam']
  const encoding = seriesEncoding('optimizer', series, true) as Record<
    string,
    { scale: { domain: string[]; range: unknown[] } }
  >
  for (const channel of ['strokeDash', 'shape']) {
    const { domain, range } = encoding[channel].scale
    t.deepEqual(domain, series, channel)
    t.is(new Set(range.map((r) => JSON.stringify(r))).size, series.length, `${channel}: one each`)
  }
})
