import { Mlp } from './mlp'
import type { MnistSplit } from './mnist'
import { createOptimizer, type Recipe } from './optimizers'
import { ProgressBar } from './progress'
import { Random } from './random'

export interface TrainConfig {
  epochs: number
  seed: number
  batchSize: number
  hiddenSize: number
  /** The training loss whose first crossing the table reports, in epochs. */
  targetLoss: number
  /** Points per epoch on the training-loss curve (each the mean minibatch loss since the last). */
  curvePointsPerEpoch: number
  /** Evaluate after every epoch (default), or only after the last (sweeps, to save time). */
  evaluateEveryEpoch?: boolean
}

export interface Evaluation {
  /** Epochs trained so far (0: the initial weights). */
  epoch: number
  /** Mean loss over the whole training set, measured after the epoch. */
  trainLoss: number
  testLoss: number
  testAccuracy: number
}

export interface MnistRun {
  id: string
  label: string
  options: Record<string, unknown>
  /** Mean minibatch loss over each 1/curvePointsPerEpoch of an epoch, at its end. */
  curve: Array<{ epoch: number; loss: number }>
  evaluations: Evaluation[]
  /** First epoch after which the training loss was at most the target, or null. */
  epochsToTarget: number | null
  /** True when the loss stopped being a finite number and the run was cut short. */
  diverged: boolean
  steps: number
  /** The whole run: training and the evaluation after each epoch. */
  wallSeconds: number
  /** Time inside `optimizer.step()` alone. */
  stepSeconds: number
  /** Time in the training loop: gradients, zeroGrad and step (evaluation excluded). */
  trainSeconds: number
}

const seconds = (from: bigint) => Number(process.hrtime.bigint() - from) / 1e9

/**
 * Trains a fresh MLP with one optimizer. The initial weights and the batch order depend only on
 * `config.seed`, so every optimizer starts from the same weights and sees the same batches.
 */
export function trainMnist(
  recipe: Recipe,
  data: MnistSplit,
  config: TrainConfig,
  options: { quiet?: boolean; overrides?: Record<string, unknown> } = {},
): MnistRun {
  const random = new Random(config.seed)
  const model = new Mlp(config.hiddenSize, random.fork())
  const batchOrder = random.fork()
  const optimizer = createOptimizer(recipe, model.parameters, options.overrides)
  // Optimizers with a training and an evaluation point (schedule-free ones) train at the first
  // and are evaluated at the second, as their users run them.
  const modes = optimizer as { train?: () => void; eval?: () => void }
  modes.train?.()
  const { train, test } = data
  const batchesPerEpoch = Math.ceil(train.size / config.batchSize)
  const order = Uint32Array.from({ length: train.size }, (_, i) => i)
  const bar = options.quiet ? undefined : new ProgressBar(recipe.label, config.epochs * batchesPerEpoch)

  const evaluate = (epoch: number): Evaluation => {
    modes.eval?.()
    const onTrain = model.evaluate(train)
    const onTest = model.evaluate(test)
    modes.train?.()
    return { epoch, trainLoss: onTrain.loss, testLoss: onTest.loss, testAccuracy: onTest.accuracy }
  }
  const run: MnistRun = {
    id: recipe.id,
    label: recipe.label,
    options: { ...recipe.options, ...options.overrides },
    curve: [],
    evaluations: [],
    epochsToTarget: null,
    diverged: false,
    steps: 0,
    wallSeconds: 0,
    stepSeconds: 0,
    trainSeconds: 0,
  }
  const started = process.hrtime.bigint()
  const everyEpoch = config.evaluateEveryEpoch ?? true
  if (everyEpoch) run.evaluations.push(evaluate(0))
  let stepNanos = 0n
  let trainNanos = 0n
  const note = () => {
    const last = run.evaluations.at(-1)
    const loss = run.curve.at(-1)?.loss ?? last?.trainLoss ?? NaN
    const accuracy = last === undefined ? '' : `  test ${(100 * last.testAccuracy).toFixed(1)}%`
    return `loss ${loss.toFixed(4)}${accuracy}  ${seconds(started).toFixed(1)}s`
  }

  training: for (let epoch = 1; epoch <= config.epochs; epoch++) {
    batchOrder.shuffle(order)
    let windowLoss = 0
    let windowBatches = 0
    let nextPoint = 1
    const trainStart = process.hrtime.bigint()
    for (let b = 0; b < batchesPerEpoch; b++) {
      const start = b * config.batchSize
      const end = Math.min(start + config.batchSize, train.size)
      optimizer.zeroGrad(false)
      const loss = model.accumulateGradients(train, order, start, end)
      const stepStart = process.hrtime.bigint()
      optimizer.step()
      stepNanos += process.hrtime.bigint() - stepStart
      run.steps++
      if (!Number.isFinite(loss)) {
        run.diverged = true
        trainNanos += process.hrtime.bigint() - trainStart
        break training
      }
      windowLoss += loss
      windowBatches++
      // Curve points fall on fixed fractions of the epoch, whatever the batch size.
      if ((b + 1) * config.curvePointsPerEpoch >= nextPoint * batchesPerEpoch) {
        run.curve.push({ epoch: epoch - 1 + (b + 1) / batchesPerEpoch, loss: windowLoss / windowBatches })
        windowLoss = 0
        windowBatches = 0
        nextPoint++
      }
      bar?.update((epoch - 1) * batchesPerEpoch + b + 1, note())
    }
    trainNanos += process.hrtime.bigint() - trainStart
    if (!everyEpoch && epoch < config.epochs) continue
    const evaluation = evaluate(epoch)
    run.evaluations.push(evaluation)
    if (run.epochsToTarget === null && evaluation.trainLoss <= config.targetLoss) run.epochsToTarget = epoch
    if (!Number.isFinite(evaluation.trainLoss)) {
      run.diverged = true
      break
    }
  }
  if (run.diverged && run.evaluations.length === 0) run.evaluations.push(evaluate(run.steps / batchesPerEpoch))
  run.wallSeconds = seconds(started)
  run.stepSeconds = Number(stepNanos) / 1e9
  run.trainSeconds = Number(trainNanos) / 1e9
  bar?.finish(run.steps, run.diverged ? 'diverged (loss is not finite)' : note())
  return run
}
