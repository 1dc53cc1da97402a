/** Node-style error codes fastoptim throws with, as Node's own APIs do (`err.code`). */
export type ErrorCode = 'ERR_INVALID_ARG_TYPE' | 'ERR_INVALID_ARG_VALUE' | 'ERR_OUT_OF_RANGE' | 'ERR_INVALID_STATE'

function withCode<E extends Error>(error: E, code: ErrorCode): E & { code: ErrorCode } {
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

/** What a value is, for messages: `Int32Array`, `a string`, `null`. */
export function describe(value: unknown): string {
  if (value === null) return 'null'
  if (typeof value !== 'object') return typeof value === 'undefined' ? 'undefined' : `a ${typeof value}`
  const name = (value as { constructor?: { name?: unknown } }).constructor?.name
  return typeof name === 'string' && name !== '' ? name : 'an object'
}
