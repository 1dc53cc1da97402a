/**
 * `npm run demo`: trains a small network on real digits with each fastoptim optimizer, and tests
 * claims often made for adaptive optimizers, on problems built to show them. `npm run demo -- --help` for options.
 */
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs'
import { availableParallelism } from 'node:os'
import { join, resolve } from 'node:path'
import { parseArgs } from 'node:util'

import { markdownToHtml, PAGE_STYLE } from './html'
import { runAdaptivity } from './adaptivity'
import { runMnist } from './mnist-scenario'
import { ALL_RECIPES, DEFAULT_IDS, findRecipe, isAvailable, type Recipe } from './optimizers'

const HELP = `Usage: npm run demo -- [options]

Trains a 784-128-10 MLP on the 10,000 digits of the \`mnist\` package (8,000 to train,
2,000 held out) with each optimizer at its usual learning rate, then prints a table and
writes plots. With --scenario adaptivity it instead tests claims often made for adaptive optimizers
about per-dimension step sizes and tuning, on small problems and a learning-rate sweep.

Options:
  --scenario NAME      mnist (the default; about a minute on 2 cores), adaptivity
                       (about a minute), or all (both)
  --optimizers LIST    comma-separated, from: ${ALL_RECIPES.map((r) => r.id).join(', ')}
                       (default: ${DEFAULT_IDS.join(',')}; those this build lacks are skipped)
  --epochs N           MNIST epochs (default 10)
  --tuning-epochs N    epochs per learning rate in the adaptivity scenario's MNIST
                       learning-rate sweep (default 2; 0 skips the sweep)
  --batch-size N       MNIST batch size (default 64)
  --threads N          threads for the optimizer step (default: one per core);
                       the forward and backward passes run on the main thread
  --seed N             seeds the split, the weights, the batch order and the synthetic
                       problems (default 1); the same seed gives the same numbers
  --out DIR            where the plots and JSON go (default demo-output)
  -h, --help           this text
`

interface Cli {
  scenario: 'mnist' | 'adaptivity' | 'all'
  recipes: Recipe[]
  skipped: Recipe[]
  epochs: number
  tuningEpochs: number
  batchSize: number
  threads: number | undefined
  seed: number
  out: string
}

function positiveInteger(name: string, text: string | undefined, fallback: number | undefined): number | undefined {
  if (text === undefined) return fallback
  const value = Number(text)
  if (!Number.isInteger(value) || value < 1) throw new UsageError(`--${name} must be a positive integer, got '${text}'`)
  return value
}

class UsageError extends Error {}

function parseCli(argv: string[]): Cli | undefined {
  const { values } = parseArgs({
    args: argv,
    strict: true,
    options: {
      scenario: { type: 'string', default: 'mnist' },
      optimizers: { type: 'string' },
      epochs: { type: 'string' },
      'tuning-epochs': { type: 'string' },
      'batch-size': { type: 'string' },
      threads: { type: 'string' },
      seed: { type: 'string' },
      out: { type: 'string', default: 'demo-output' },
      help: { type: 'boolean', short: 'h', default: false },
    },
  })
  if (values.help) return undefined
  const scenario = values.scenario
  if (scenario !== 'mnist' && scenario !== 'adaptivity' && scenario !== 'all') {
    throw new UsageError(`--scenario must be mnist, adaptivity or all, got '${scenario}'`)
  }
  const ids =
    values.optimizers === undefined
      ? DEFAULT_IDS
      : values.optimizers
          .split(',')
          .map((id) => id.trim())
          .filter(Boolean)
  const wanted = ids.map((id) => {
    const recipe = findRecipe(id)
    if (recipe === undefined)
      throw new UsageError(
        `--optimizers: unknown optimizer '${id}' (expected some of ${ALL_RECIPES.map((r) => r.id).join(', ')})`,
      )
    return recipe
  })
  if (wanted.length === 0) throw new UsageError('--optimizers names no optimizer')
  const seedText = values.seed ?? '1'
  const seed = Number(seedText)
  if (!Number.isInteger(seed) || seed < 0 || seed > 0xffffffff)
    throw new UsageError(`--seed must be an integer in 0..4294967295, got '${seedText}'`)
  return {
    scenario,
    recipes: wanted.filter(isAvailable),
    skipped: wanted.filter((recipe) => !isAvailable(recipe)),
    epochs: positiveInteger('epochs', values.epochs, 10)!,
    tuningEpochs: values['tuning-epochs'] === '0' ? 0 : positiveInteger('tuning-epochs', values['tuning-epochs'], 2)!,
    batchSize: positiveInteger('batch-size', values['batch-size'], 64)!,
    threads: positiveInteger('threads', values.threads, undefined),
    seed,
    out: values.out,
  }
}

async function main(): Promise<number> {
  let cli: Cli | undefined
  try {
    cli = parseCli(process.argv.slice(2))
  } catch (error) {
    if (!(error instanceof UsageError) && !(error instanceof TypeError)) throw error
    console.error(`${error.message}\n\n${HELP}`)
    return 2
  }
  if (cli === undefined) {
    console.log(HELP)
    return 0
  }
  // Read by rayon when its pool first starts, at the first parallel step; nothing has stepped yet.
  if (cli.threads !== undefined) process.env.RAYON_NUM_THREADS = String(cli.threads)
  const fromEnvironment = process.env.RAYON_NUM_THREADS
  const threads =
    cli.threads !== undefined
      ? String(cli.threads)
      : fromEnvironment
        ? `${fromEnvironment} (RAYON_NUM_THREADS)`
        : `${availableParallelism()} (default)`
  if (cli.skipped.length > 0) {
    console.log(
      `Not in this build of fastoptim, skipped: ${cli.skipped.map((r) => `${r.label} (${r.className})`).join(', ')}`,
    )
  }
  if (cli.recipes.length === 0) {
    console.error('None of the chosen optimizers is in this build of fastoptim.')
    return 1
  }
  const out = resolve(cli.out)
  mkdirSync(out, { recursive: true })
  const started = Date.now()
  const written: string[] = []
  if (cli.scenario !== 'adaptivity') {
    const report = await runMnist(
      cli.recipes,
      {
        epochs: cli.epochs,
        seed: cli.seed,
        batchSize: cli.batchSize,
        hiddenSize: 128,
        targetLoss: 0.1,
        curvePointsPerEpoch: 10,
      },
      out,
      threads,
    )
    written.push(...report.files)
  }
  if (cli.scenario !== 'mnist') {
    if (cli.scenario === 'all') console.log('')
    // Its problems are Float64Array: an optimizer of Float32Array parameters only sits it out.
    const float32Only = cli.recipes.filter((recipe) => recipe.float32Only)
    if (float32Only.length > 0)
      console.log(`Adaptivity runs in float64; skipped: ${float32Only.map((r) => r.label).join(', ')}`)
    const recipes = cli.recipes.filter((recipe) => !recipe.float32Only)
    const report = await runAdaptivity(recipes, cli.seed, out, { tuningEpochs: cli.tuningEpochs })
    written.push(...report.files)
  }
  const index = join(out, 'index.html')
  writeFileSync(index, html(out))
  written.push(index)
  const shown = written.map((file) => join(cli.out, file.slice(out.length + 1)))
  console.log(
    `\nWrote ${shown.join(', ')} in ${((Date.now() - started) / 1000).toFixed(1)} s. Open ${join(cli.out, 'index.html')} in a browser.`,
  )
  if (cli.scenario === 'mnist')
    console.log('The adaptivity claims: npm run demo -- --scenario adaptivity (about a minute).')
  return 0
}

/**
 * A page with every scenario's plot and tables found in `out`, so that it shows both after two
 * separate runs (each scenario's files say which seed and settings made them).
 */
function html(out: string): string {
  const body = [
    { title: 'MNIST', name: 'mnist' },
    { title: 'Adaptivity', name: 'adaptivity' },
  ]
    .filter(({ name }) => existsSync(join(out, `${name}.svg`)) && existsSync(join(out, `${name}.md`)))
    .map(({ title, name }) => {
      const text = readFileSync(join(out, `${name}.md`), 'utf8')
      return `<h2>${title}</h2>\n<img src="${name}.svg" alt="${title} plots">\n${markdownToHtml(text)}`
    })
    .join('\n')
  return `<!doctype html>
<html lang="en">
<meta charset="utf-8">
<title>fastoptim demo</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
${PAGE_STYLE}
</style>
<h1>fastoptim demo</h1>
${body}
</html>
`
}

main().then(
  (code) => {
    process.exitCode = code
  },
  (error) => {
    console.error(error)
    process.exitCode = 1
  },
)
