// Worker threads: several workers train their own optimizers at the same time, on parameters
// in SharedArrayBuffers (some large enough to be cut across the step pool, which all threads of
// the process share), while the main thread trains one of its own. Each result must equal, bit
// for bit, the same run made alone on the main thread.
import { join } from 'node:path'
import { Worker } from 'node:worker_threads'

import test from 'ava'

import { getNumThreads, setNumThreads, type FloatArray } from '../lib'
import { type Job, train } from './helpers/training'

const SIZES = [3, 1000, 40_000, 17] // 40,000 is over the parallel threshold

/** The job's parameters, each data and grad a view of one SharedArrayBuffer per job. */
function sharedJob(algorithm: Job['algorithm'], seed: number, dtype: 'float32' | 'float64', steps: number): Job {
  const Type = dtype === 'float32' ? Float32Array : Float64Array
  const total = SIZES.reduce((a, b) => a + b, 0)
  const buffer = new SharedArrayBuffer(2 * total * Type.BYTES_PER_ELEMENT)
  let offset = 0
  const view = (n: number): FloatArray => {
    const array = new Type(buffer as unknown as ArrayBuffer, offset * Type.BYTES_PER_ELEMENT, n)
    offset += n
    return array
  }
  const params = SIZES.map((n) => ({ data: view(n), grad: view(n) }))
  params.forEach(({ data }, k) => data.forEach((_, i) => (data[i] = Math.cos(seed * 13 + k + i))))
  return { algorithm, params, steps, seed }
}

/** The same job on ordinary memory, with the same starting values. */
function copyOf(job: Job): Job {
  return { ...job, params: job.params.map(({ data, grad }) => ({ data: data.slice(), grad: grad.slice() })) }
}

function inWorker(job: Job): Promise<{ finiteSteps: number }> {
  return new Promise((resolve, reject) => {
    // The worker loads the TypeScript helper through tsx's require hook.
    const script = `require('tsx/cjs'); require(${JSON.stringify(join(__dirname, 'helpers', 'train-worker.ts'))})`
    const worker = new Worker(script, { eval: true, workerData: job })
    worker.once('message', resolve)
    worker.once('error', reject)
    worker.once('exit', (code) => code !== 0 && reject(new Error(`worker exited with ${code}`)))
  })
}

const bits = (array: FloatArray) => Buffer.from(array.buffer, array.byteOffset, array.byteLength)

test('workers training concurrently on shared memory get the bits a lone run gets', async (t) => {
  const steps = 30
  const jobs = [
    sharedJob('Adam', 1, 'float32', steps),
    sharedJob('SGD', 2, 'float64', steps),
    sharedJob('RMSprop', 3, 'float32', steps),
    sharedJob('NAdam', 4, 'float64', steps),
  ]
  const alone = jobs.map(copyOf)
  const mine = sharedJob('Adam', 5, 'float64', steps)
  const mineAlone = copyOf(mine)

  const running = jobs.map(inWorker)
  const mainReport = train(mine) // the main thread trains meanwhile
  const reports = await Promise.all(running)

  // The lone runs: one JavaScript thread, and one thread in the step pool too.
  const threads = getNumThreads()
  setNumThreads(1)
  try {
    for (const job of [...alone, mineAlone]) train(job)
  } finally {
    setNumThreads(threads)
  }
  t.deepEqual(
    reports,
    jobs.map(() => ({ finiteSteps: steps })),
  )
  t.deepEqual(mainReport, { finiteSteps: steps })
  ;[...jobs, mine].forEach((job, j) => {
    const reference = [...alone, mineAlone][j]
    job.params.forEach(({ data }, k) => {
      t.true(bits(data).equals(bits(reference.params[k].data)), `${job.algorithm} (job ${j}) parameter ${k}`)
    })
  })
  // The runs moved the parameters: the comparison is not between untouched arrays.
  t.false(bits(jobs[0].params[2].data).equals(bits(sharedJob('Adam', 1, 'float32', steps).params[2].data)))
})

test('a worker’s updates land in the shared arrays the main thread holds', async (t) => {
  const job = sharedJob('SGD', 7, 'float32', 5)
  const initial = copyOf(job)
  const alone = copyOf(job)
  t.deepEqual(await inWorker(job), { finiteSteps: 5 })
  train(alone)
  job.params.forEach(({ data }, k) => {
    t.true(bits(data).equals(bits(alone.params[k].data)), `parameter ${k} as a lone run leaves it`)
    t.false(bits(data).equals(bits(initial.params[k].data)), `parameter ${k} was written by the worker`)
  })
})
