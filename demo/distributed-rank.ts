// One rank of the distributed MNIST demo (demo/distributed.ts): a worker thread of runWorkers or
// a process of mpirun. Every rank builds the same MLP (same seed) and walks the same batches; of
// each global batch it computes the gradient of its own 1/size share, and ShardedOptimizer
// averages them, keeps 1/size of Adam's state and steps 1/size of the weights.
import { writeFileSync } from 'node:fs'
import { parentPort, workerData } from 'node:worker_threads'

import { Adam } from '../lib'
import { isWorkerRank, mpiCommunicator, ShardedOptimizer, workerCommunicator } from '../lib/distributed'
import { Mlp } from './mlp'
import { loadMnist } from './mnist'
import { Random } from './random'

export interface DemoConfig {
  epochs: number
  batchSize: number
  hiddenSize: number
  seed: number
  lr: number
}

export interface RankReport {
  rank: number
  size: number
  stateBytes: number
  /** Mean time of one `step()` (reduce-scatter, the slice's update, all-gather), in ms. */
  stepMs: number
  /** Mean time of this rank's share of forward and backward per batch, in ms. */
  gradientMs: number
  testAccuracy: number
  trainLoss: number
}

const ms = (from: bigint) => Number(process.hrtime.bigint() - from) / 1e6

function train(config: DemoConfig): RankReport {
  const comm = isWorkerRank() ? workerCommunicator() : mpiCommunicator()
  const { rank, size } = comm
  const random = new Random(config.seed)
  const model = new Mlp(config.hiddenSize, random.fork())
  const batchOrder = random.fork()
  const { train: set, test } = loadMnist(config.seed)
  const opt = new ShardedOptimizer(Adam, model.parameters, { lr: config.lr }, { comm })
  const order = Uint32Array.from({ length: set.size }, (_, i) => i)
  let stepMs = 0
  let gradientMs = 0
  let steps = 0
  for (let epoch = 0; epoch < config.epochs; epoch++) {
    batchOrder.shuffle(order)
    for (let start = 0; start < set.size; start += config.batchSize) {
      const end = Math.min(start + config.batchSize, set.size)
      // This rank's share of the batch; the mean over equal shares is the batch's mean gradient.
      const share = Math.ceil((end - start) / size)
      const from = Math.min(start + rank * share, end)
      const to = Math.min(from + share, end)
      opt.zeroGrad(false)
      const t0 = process.hrtime.bigint()
      if (to > from) model.accumulateGradients(set, order, from, to)
      gradientMs += ms(t0)
      const t1 = process.hrtime.bigint()
      opt.step()
      stepMs += ms(t1)
      steps++
    }
  }
  const onTest = model.evaluate(test)
  const onTrain = model.evaluate(set)
  return {
    rank,
    size,
    stateBytes: opt.stateBytes(),
    stepMs: stepMs / steps,
    gradientMs: gradientMs / steps,
    testAccuracy: onTest.accuracy,
    trainLoss: onTrain.loss,
  }
}

if (isWorkerRank()) parentPort!.postMessage(train((workerData as { config: DemoConfig }).config))
else if (require.main === module) {
  const [json, out] = process.argv.slice(2)
  const report = train(JSON.parse(json) as DemoConfig)
  writeFileSync(`${out}.${report.rank}.json`, JSON.stringify(report))
}
