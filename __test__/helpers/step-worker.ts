// A worker thread for threads.spec.ts: steps an Adam over the parameters it is sent (on shared
// memory, so that the main thread sees the result) `steps` times, then reports.
import { parentPort, workerData } from 'node:worker_threads'

import { Adam, getNumThreads } from '../../lib'

const { data, grad, steps } = workerData as { data: Float32Array; grad: Float32Array; steps: number }
const opt = new Adam([{ data, grad }], { lr: 1e-2 })
for (let i = 0; i < steps; i++) opt.step()
parentPort!.postMessage({ threads: getNumThreads() })
