/**
 * A small seeded generator, so that the same `--seed` gives the same split, the same initial
 * weights and the same batches, and so the same numbers, on every run.
 */
export class Random {
  #state: number

  constructor(seed: number) {
    // Mix the seed once so that nearby seeds (1, 2, 3) start far apart.
    this.#state = Random.#mix((seed >>> 0) ^ 0x9e3779b9)
  }

  /** The next 32 bits, from mulberry32. */
  nextUint32(): number {
    this.#state = (this.#state + 0x6d2b79f5) | 0
    return Random.#mix(this.#state)
  }

  /** Uniform in [0, 1). */
  next(): number {
    return this.nextUint32() / 4294967296
  }

  /** Uniform in [low, high). */
  uniform(low: number, high: number): number {
    return low + (high - low) * this.next()
  }

  /** An integer uniform in [0, n). */
  int(n: number): number {
    return Math.floor(this.next() * n)
  }

  /** Standard normal, by Box–Muller (one of the pair is dropped: simpler, and cheap enough here). */
  normal(): number {
    const u = 1 - this.next()
    return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * this.next())
  }

  /** Shuffles `array` in place (Fisher–Yates) and returns it. */
  shuffle<A extends { length: number; [index: number]: unknown }>(a: A): A {
    for (let i = a.length - 1; i > 0; i--) {
      const j = this.int(i + 1)
      const t = a[i]
      a[i] = a[j]
      a[j] = t
    }
    return a
  }

  /** A generator seeded from this one, for an independent stream (init, batches, noise). */
  fork(): Random {
    return new Random(this.nextUint32())
  }

  static #mix(x: number): number {
    let t = x
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return (t ^ (t >>> 14)) >>> 0
  }
}
