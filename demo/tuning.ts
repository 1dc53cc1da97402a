import { loadMnist } from './mnist'
import type { Recipe } from './optimizers'
import { ProgressBar, formatMarkdownTable, formatTable } from './progress'
import { trainMnist } from './train'

/** Decades around every optimizer's usual rate. */
export const TUNING_RATES: readonly number[] = [1e-4, 1e-3, 1e-2, 1e-1, 1]

/** How close to the sweep's best test accuracy a run must come to count as "works", in points. */
export const TUNING_MARGIN = 3

export interface TuningReport {
  epochs: number
  rates: readonly number[]
  /** Per optimizer, test accuracy after `epochs` at each rate (NaN when the run diverged). */
  results: Array<{ id: string; optimizer: string; accuracy: number[] }>
  best: number
  table: string
  markdown: string
}

/**
 * The MNIST MLP trained for a few epochs at each rate of a fixed grid, per optimizer: how wide
 * is the band of learning rates that works? Same seed, split, initial weights and batches as
 * the main scenario.
 */
export function runTuning(recipes: readonly Recipe[], seed: number, epochs: number): TuningReport {
  const data = loadMnist(seed)
  console.log(`\nLearning-rate sensitivity on MNIST: ${epochs} epoch(s) at each of ${TUNING_RATES.join(', ')}`)
  const results = recipes.map((recipe) => {
    const bar = new ProgressBar(recipe.label, TUNING_RATES.length)
    const accuracy: number[] = []
    for (const lr of TUNING_RATES) {
      const run = trainMnist(
        recipe,
        data,
        {
          epochs,
          seed,
          batchSize: 64,
          hiddenSize: 128,
          targetLoss: 0.1,
          curvePointsPerEpoch: 1,
          evaluateEveryEpoch: false,
        },
        { quiet: true, overrides: { lr } },
      )
      accuracy.push(run.diverged ? NaN : 100 * run.evaluations[run.evaluations.length - 1].testAccuracy)
      bar.update(accuracy.length, accuracy.map((a) => (Number.isNaN(a) ? '—' : a.toFixed(1))).join(' '))
    }
    bar.finish(accuracy.length, accuracy.map((a) => (Number.isNaN(a) ? '—' : a.toFixed(1))).join(' '))
    return { id: recipe.id, optimizer: recipe.label, accuracy }
  })
  const best = Math.max(...results.flatMap((r) => r.accuracy.filter(Number.isFinite)))
  const header = ['optimizer', ...TUNING_RATES.map((lr) => `lr ${lr}`), `lrs within ${TUNING_MARGIN} pts of best`]
  const rows = results.map((r) => [
    r.optimizer,
    ...r.accuracy.map((a) => (Number.isNaN(a) ? 'diverged' : `${a.toFixed(1)}%`)),
    String(workingRates(r.accuracy, best)),
  ])
  const table = formatTable(header, rows)
  console.log(`\n${table}\nTest accuracy after ${epochs} epoch(s); the best of the sweep is ${best.toFixed(1)}%.`)
  return { epochs, rates: TUNING_RATES, results, best, table, markdown: formatMarkdownTable(header, rows) }
}

/** How many rates came within TUNING_MARGIN points of the best accuracy. */
export function workingRates(accuracy: readonly number[], best: number): number {
  return accuracy.filter((a) => a >= best - TUNING_MARGIN).length
}
