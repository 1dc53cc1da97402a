// Every error the facade's TypeScript throws is made here, so that each kind has one class and one
// code. The messages are the callers' own.

/**
 * Node-style error codes fastoptim throws with, as Node's own APIs do (`err.code`):
 * `ERR_FASTOPTIM_NATIVE_BINDING` when the native binary cannot be loaded (`require('fastoptim')`
 * throws it; see `lib/native.ts`), the others for bad input and calls the state does not allow.
 */
export type ErrorCode =
  | 'ERR_INVALID_ARG_TYPE'
  | 'ERR_INVALID_ARG_VALUE'
  | 'ERR_OUT_OF_RANGE'
  | 'ERR_INVALID_STATE'
  | 'ERR_INVALID_RETURN_VALUE'
  | 'ERR_CLOSURE_FAILED'
  | 'ERR_FASTOPTIM_NATIVE_BINDING'

function withCode<E extends Error, C extends ErrorCode>(error: E, code: C): E & { code: C } {
  return Object.assign(error, { code })
}

/** A value of the wrong type. */
export function invalidType(message: string) {
  return withCode(new TypeError(message), 'ERR_INVALID_ARG_TYPE')
}

/** A value of the right type that is not acceptable (unknown option, duplicate parameter). */
export function invalidValue(message: string) {
  return withCode(new TypeError(message), 'ERR_INVALID_ARG_VALUE')
}

/** A number outside its allowed range, or a length that does not match. */
export function outOfRange(message: string) {
  return withCode(new RangeError(message), 'ERR_OUT_OF_RANGE')
}

/** A call the current state does not allow (a step in flight, a detached array, a schedule run past its end). */
export function invalidState(message: string) {
  return withCode(new Error(message), 'ERR_INVALID_STATE')
}

/** `what` (a public method) was called from JavaScript that `running`, another call on the same optimizer, ran. */
export function reentered(what: string, running: string) {
  return invalidState(`${what} was called from JavaScript run by ${running} of the same optimizer`)
}

/** A callback (LBFGS's closure) returned what it must not: a TypeError for the wrong type, a RangeError for a non-finite number. */
export function invalidReturnValue(message: string, kind: 'type' | 'range') {
  return withCode(kind === 'type' ? new TypeError(message) : new RangeError(message), 'ERR_INVALID_RETURN_VALUE')
}

/** A callback (LBFGS's closure) threw; `cause` is what it threw. */
export function closureFailed(message: string, cause: unknown) {
  return withCode(new Error(message, { cause }), 'ERR_CLOSURE_FAILED')
}

/**
 * Calls a step's closure once (PyTorch's `step(closure)`), for `where` (`Adam.step`): what it
 * throws comes back as `ERR_CLOSURE_FAILED` with it as the cause, and a closure that returns a
 * promise is refused, since a step runs synchronously and its gradients would not be ready.
 */
export function callClosure(where: string, closure: () => unknown): unknown {
  let value: unknown
  try {
    value = closure()
  } catch (cause) {
    throw closureFailed(`${where}: the closure threw: ${cause instanceof Error ? cause.message : String(cause)}`, cause)
  }
  if (typeof (value as { then?: unknown } | null)?.then === 'function')
    throw invalidReturnValue(
      `${where}: the closure returned a promise, and a step runs synchronously (await the backward pass, then call step())`,
      'type',
    )
  return value
}

/** The native binary could not be loaded; `cause` is what the loader threw. */
export function nativeBindingError(message: string, cause: unknown) {
  return withCode(new Error(message, { cause }), 'ERR_FASTOPTIM_NATIVE_BINDING')
}

/** What a value is, for messages: `Int32Array`, `a string`, `null`. */
export function describe(value: unknown): string {
  if (value === null) return 'null'
  if (typeof value !== 'object') return typeof value === 'undefined' ? 'undefined' : `a ${typeof value}`
  const name = (value as { constructor?: { name?: unknown } }).constructor?.name
  if (typeof name !== 'string' || name === '') return 'an object'
  // A Proxy around a typed array answers its constructor's name, but is not one.
  if (/^(Big)?[A-Z]\w*Array$/.test(name) && name !== 'Array' && !ArrayBuffer.isView(value))
    return `an object that is not a ${name} (a Proxy or a look-alike)`
  return name
}
