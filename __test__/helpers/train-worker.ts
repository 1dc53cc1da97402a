// A worker thread for workers.spec.ts: trains its own optimizer over parameters that live in
// SharedArrayBuffers the main thread also holds, writing each step's gradients into shared memory
// too, then reports whether every step saw finite gradients.
import { parentPort, workerData } from 'node:worker_threads'

import { type Job, train } from './training'

const report = train(workerData as Job)
parentPort!.postMessage(report)
