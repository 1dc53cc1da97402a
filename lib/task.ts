// The driver of `stepAsync()`; the machinery and why it is safe are in src/task.rs.
import { invalidState } from './errors'
import { native } from './native'
import type { StartedStep } from '../native/index'

type NativeOptimizer = InstanceType<typeof native.NativeOptimizer>

/**
 * How long one slice of a step over ordinary (not shared) memory holds the JavaScript thread, in
 * microseconds: it runs pieces of the update until this much time has passed, the first of 128K
 * elements and the others sized to the time left (src/task.rs), so a slice takes about this long.
 * The event loop runs between slices; a slice costs a turn of it (a few µs).
 */
export const SLICE_MICROS = 500

const nextTurn = () => new Promise<void>((resolve) => setImmediate(resolve))

/** What a native optimizer with a step in flight answers to (src/task.rs, src/eightbit/task.rs). */
export interface Flight {
  stepSlice(budgetMicros: number): boolean
  finishStep(): boolean
}

/**
 * Runs a step without holding the event loop: on a worker thread when every array is on a
 * SharedArrayBuffer, otherwise in slices between which the event loop runs. Bad input rejects
 * before anything changes, as `step()` throws. Resolves to whether every gradient was finite.
 */
export async function stepAsync(
  opt: NativeOptimizer,
  params: unknown,
  groupOf: Uint32Array,
  packed: Float64Array,
  skipNonFinite: boolean,
): Promise<boolean> {
  const start = opt.startStep(params, groupOf, packed, skipNonFinite)
  return settle(start, opt, () => native.stepOffThread(opt))
}

/**
 * Runs the rest of a step that `start` says is in flight on `flight` (`offThread` hands it to a
 * worker thread), and gives the optimizer its state back however it ends. Resolves to whether
 * every gradient element was finite.
 */
export async function settle(start: StartedStep, flight: Flight, offThread: () => Promise<void>): Promise<boolean> {
  if (start === native.StartedStep.Skipped) return false
  let nonFinite = false
  try {
    if (start === native.StartedStep.OffThread) await offThread()
    else while (!flight.stepSlice(SLICE_MICROS)) await nextTurn()
  } finally {
    nonFinite = flight.finishStep()
  }
  return !nonFinite
}

/** The error a call gets while a `stepAsync()` is in flight (the native side throws the same). */
export function busyError(what: string): Error & { code: 'ERR_INVALID_STATE' } {
  const message = `${what} was called while stepAsync() is in flight; await the promise stepAsync() returned first`
  return invalidState(message)
}
