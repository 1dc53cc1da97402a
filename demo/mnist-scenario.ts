import { mkdirSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'

import type { Claim } from './adaptivity'
import { loadMnist } from './mnist'
import { describeOptions, type Recipe } from './optimizers'
import { figure, linePanel, renderSvg } from './plot'
import { formatMarkdownTable, formatTable } from './progress'
import { trainMnist, type MnistRun, type TrainConfig } from './train'

export interface MnistReport {
  config: TrainConfig & { trainSize: number; testSize: number; parameters: number; threads: string }
  runs: MnistRun[]
  claim: Claim
  table: string
  markdown: string
  files: string[]
}

const percent = (x: number) => `${(100 * x).toFixed(1)}%`

/** Trains the MLP once per optimizer, prints the table, and writes mnist.json, mnist.md and mnist.svg. */
export async function runMnist(
  recipes: readonly Recipe[],
  config: TrainConfig,
  out: string,
  threads: string,
): Promise<MnistReport> {
  const data = loadMnist(config.seed)
  const parameters = 784 * config.hiddenSize + config.hiddenSize + config.hiddenSize * 10 + 10
  const intro =
    `MNIST: ${data.train.size} training and ${data.test.size} held-out digits (split by seed ${config.seed}), ` +
    `MLP 784-${config.hiddenSize}-10 (${parameters.toLocaleString('en-US')} parameters), ` +
    `batch ${config.batchSize}, ${config.epochs} epochs, ${threads} optimizer thread(s)`
  console.log(intro)
  const runs = recipes.map((recipe) => trainMnist(recipe, data, config))

  const header = [
    'optimizer',
    'options',
    'train loss',
    'test acc',
    `epochs to loss ≤ ${config.targetLoss}`,
    'wall s',
    'step ms',
    'step %',
  ]
  const rows = runs.map((run) => {
    const last = run.evaluations[run.evaluations.length - 1]
    return [
      run.label,
      describeOptions(run.options),
      run.diverged ? 'diverged' : last.trainLoss.toFixed(4),
      run.diverged ? '—' : percent(last.testAccuracy),
      run.epochsToTarget === null ? '—' : String(run.epochsToTarget),
      run.wallSeconds.toFixed(1),
      ((1000 * run.stepSeconds) / Math.max(1, run.steps)).toFixed(3),
      percent(run.stepSeconds / run.trainSeconds),
    ]
  })
  const table = formatTable(header, rows)
  const markdown = formatMarkdownTable(header, rows)
  console.log(`\n${table}`)
  console.log(
    `\ntrain loss: mean over all ${data.train.size} training digits after the last epoch; test acc: on the ${data.test.size} held-out digits;\n` +
      `step ms: mean time of one optimizer.step() over all ${parameters.toLocaleString('en-US')} parameters; ` +
      `step %: its share of the training loop (forward, backward, zeroGrad, step).`,
  )

  const claim = judgeConvergence(runs, config)
  console.log(`\nClaim: ${claim.claim}: ${claim.verdict.toUpperCase()}. ${claim.evidence}`)

  mkdirSync(out, { recursive: true })
  const files = [join(out, 'mnist.json'), join(out, 'mnist.md'), join(out, 'mnist.svg')]
  const fullConfig = { ...config, trainSize: data.train.size, testSize: data.test.size, parameters, threads }
  writeFileSync(files[0], `${JSON.stringify({ config: fullConfig, runs, claim }, null, 1)}\n`)
  writeFileSync(files[1], `${intro}.\n\n${markdown}\n\n- **${claim.claim}**: ${claim.verdict}. ${claim.evidence}\n`)
  writeFileSync(files[2], await renderSvg(mnistFigure(runs, config)))
  return { config: fullConfig, runs, claim, table, markdown, files }
}

/**
 * "Adam converges faster than SGD, SGD with momentum, RMSprop and AdaGrad", each at its usual
 * learning rate: runs are ranked by epochs to the target loss, then by final training loss.
 */
function judgeConvergence(runs: readonly MnistRun[], config: TrainConfig): Claim {
  const claim = 'Adam converges faster than SGD, SGD+momentum, RMSprop and Adagrad (MNIST, usual learning rates)'
  const adam = runs.find((run) => run.id === 'adam')
  const rivals = runs.filter((run) => ['sgd', 'sgd-momentum', 'rmsprop', 'adagrad'].includes(run.id))
  if (adam === undefined || rivals.length === 0) {
    return { claim, evidence: 'needs Adam and at least one of SGD, RMSprop, Adagrad in the run', verdict: 'not tested' }
  }
  const finalLoss = (run: MnistRun) => (run.diverged ? Infinity : run.evaluations[run.evaluations.length - 1].trainLoss)
  const beats = (a: MnistRun, b: MnistRun) => {
    const ea = a.epochsToTarget ?? Infinity
    const eb = b.epochsToTarget ?? Infinity
    return ea < eb || (ea === eb && finalLoss(a) < finalLoss(b))
  }
  const beaten = rivals.filter((rival) => beats(adam, rival))
  const describe = (run: MnistRun) =>
    `${run.label} ${run.epochsToTarget === null ? 'never' : `${run.epochsToTarget} epochs`}, final ${run.diverged ? 'diverged' : finalLoss(run).toFixed(4)}`
  return {
    claim,
    evidence:
      `epochs to training loss ≤ ${config.targetLoss}, then final training loss: ${[adam, ...rivals].map(describe).join('; ')}. ` +
      `Adam beats ${beaten.length} of ${rivals.length}${
        beaten.length < rivals.length
          ? ` (not ${rivals
              .filter((r) => !beaten.includes(r))
              .map((r) => r.label)
              .join(', ')})`
          : ''
      } ` +
      '(rule: supported if it beats all, contradicted if it beats none).',
    verdict: beaten.length === rivals.length ? 'supported' : beaten.length === 0 ? 'contradicted' : 'mixed',
  }
}

function mnistFigure(runs: readonly MnistRun[], config: TrainConfig) {
  const series = runs.map((run) => run.label)
  const lossRows = runs.flatMap((run) => run.curve.map(({ epoch, loss }) => ({ optimizer: run.label, epoch, loss })))
  const evalRows = runs.flatMap((run) =>
    run.evaluations.map((e) => ({
      optimizer: run.label,
      epoch: e.epoch,
      trainLoss: e.trainLoss,
      accuracy: 100 * e.testAccuracy,
    })),
  )
  const trained = evalRows.filter((row) => row.epoch > 0)
  const lowest = Math.min(100, ...trained.map((row) => row.accuracy))
  return figure(
    `fastoptim: a 784-${config.hiddenSize}-10 MLP on MNIST, each optimizer at its usual learning rate (seed ${config.seed})`,
    [
      linePanel({
        title: `Training loss (mean of each 1/${config.curvePointsPerEpoch} epoch's batches)`,
        rows: lossRows,
        x: { field: 'epoch', title: 'epoch' },
        y: { field: 'loss', title: 'cross-entropy (log scale)', log: true },
        series,
      }),
      linePanel({
        title: 'Test accuracy on the held-out digits',
        rows: trained,
        x: { field: 'epoch', title: 'epoch' },
        y: { field: 'accuracy', title: 'accuracy (%)', domain: [Math.max(0, Math.floor(lowest / 5) * 5), 100] },
        series,
        points: true,
      }),
    ],
  )
}
