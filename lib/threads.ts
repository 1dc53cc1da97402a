import { native } from './native'

/**
 * Sets how many threads a step may use, the calling thread included (like PyTorch's
 * `torch.set_num_threads`). There is one pool per process: every optimizer and every worker
 * thread of the process share it, so the count applies to all of them. A whole number from 1 to
 * 256; steps already running finish with the count they started with. The previous pool's threads
 * have exited when it returns (if a step was still running on them, they exit when it ends), so
 * none of them runs beside the new pool's.
 *
 * The default is `FASTOPTIM_NUM_THREADS` if set, otherwise the number of CPUs the process may run
 * on (`os.availableParallelism()`). One step uses the pool's helper threads at a time; a step
 * that finds them busy with another step (another optimizer, another worker thread, a
 * `stepAsync()` in flight) runs on its own thread alone rather than wait.
 */
export function setNumThreads(n: number): void {
  native.setNumThreads(n)
}

/** How many threads a step may use, the calling thread included. */
export function getNumThreads(): number {
  return native.getNumThreads()
}
