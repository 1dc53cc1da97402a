// Deterministic test data: the same xorshift32 sequence for every spec that needs arrays of values.
import type { FloatArray } from '../../lib'

/**
 * Fills `array` with deterministic values in (−scale, scale) drawn from `seed`, with 0 where
 * `zeroAt(i)` holds (so that zero gradients and parameters are covered), and returns it.
 */
export function fillValues<A extends FloatArray>(
  array: A,
  seed: number,
  { scale = 1, zeroAt }: { scale?: number; zeroAt?: (i: number) => boolean } = {},
): A {
  let x = (seed * 2654435761) >>> 0 || 1
  for (let i = 0; i < array.length; i++) {
    x ^= x << 13
    x ^= x >>> 17
    x ^= x << 5
    x >>>= 0
    array[i] = zeroAt?.(i) ? 0 : ((x / 2 ** 32) * 2 - 1) * scale
  }
  return array
}
