import { Random } from './random'

/**
 * A small optimization problem: a starting point, a (possibly noisy) gradient, and the number a
 * run is judged by. `start(seed)` returns fresh state, so every optimizer sees the same noise.
 */
export interface Problem {
  id: string
  title: string
  /** What `metric` measures, for tables and axes. */
  metricName: string
  steps: number
  /** A run "reaches" the problem when its metric is at most this. */
  threshold: number
  start(seed: number): ProblemRun
}

export interface ProblemRun {
  /** The parameters, updated in place by the optimizer. */
  x: Float64Array
  /** Writes ∇f at `x` into `grad` for step `t` (0-based). */
  gradient(x: Float64Array, grad: Float64Array, t: number): void
  /** The figure of merit at `x` after step `t` (lower is better). */
  metric(x: Float64Array, t: number): number
  /** Other numbers worth keeping about the final `x`. */
  extras?(x: Float64Array): Record<string, number>
  /** The parameter's shape, for optimizers that treat rows apart (SparseAdam); absent: flat. */
  shape?: number[]
  /**
   * The same gradient as `gradient`, row-sparse: the rows step `t` touches (each once, in
   * increasing order) and their gradient rows, for optimizers of sparse gradients (SparseAdam).
   */
  sparseGradient?(x: Float64Array, t: number): { indices: Int32Array; values: Float64Array }
}

/**
 * f(x) = ½ (x − x*)ᵀH(x − x*) with H's eigenvalues spread log-uniformly over [1, κ] and the
 * minimum x* = (1, …, 1), away from the origin that weight decay pulls towards. Axis-aligned, H is
 * diagonal, so each coordinate has its own curvature, which is what per-coordinate step sizes
 * can undo; rotated, H = QΛQᵀ with a random orthogonal Q, so the same spectrum lies along no
 * coordinate. The start puts the same loss, ½ per direction, in every eigendirection, so the
 * flat directions count as much as the steep ones. Metric: f(x)/f(x₀).
 */
export function quadratic(options: { dimension: number; condition: number; rotated: boolean; steps: number }): Problem {
  const { dimension: d, condition, rotated } = options
  const eigen = Float64Array.from({ length: d }, (_, i) => condition ** (i / (d - 1)))
  return {
    id: rotated ? 'quadratic-rotated' : 'quadratic',
    title: `${rotated ? 'Rotated' : 'Axis-aligned'} quadratic, ${d} dims, condition number ${condition.toExponential(0).replace('e+', 'e')}`,
    metricName: 'f(x)/f(x₀)',
    steps: options.steps,
    threshold: 1e-6,
    start(seed) {
      // The rotation depends on the seed only, not on which optimizer runs.
      const q = rotated ? randomOrthogonal(d, new Random(seed ^ 0x51ed)) : undefined
      const hessian = new Float64Array(d * d)
      for (let i = 0; i < d; i++) {
        for (let j = 0; j < d; j++) {
          let h = 0
          if (q === undefined) h = i === j ? eigen[i] : 0
          else for (let k = 0; k < d; k++) h += q[i * d + k] * eigen[k] * q[j * d + k]
          hessian[i * d + j] = h
        }
      }
      // x₀ = x* + Q·(1/√λ): ½·λ_k·(1/√λ_k)² = ½ of loss in each eigendirection.
      const x = new Float64Array(d).fill(1)
      for (let i = 0; i < d; i++) {
        if (q === undefined) x[i] += 1 / Math.sqrt(eigen[i])
        else for (let k = 0; k < d; k++) x[i] += q[i * d + k] / Math.sqrt(eigen[k])
      }
      const f0 = d / 2
      const offset = new Float64Array(d)
      const hx = new Float64Array(d)
      // out = H(v − x*)
      const multiply = (v: Float64Array, out: Float64Array) => {
        for (let j = 0; j < d; j++) offset[j] = v[j] - 1
        for (let i = 0; i < d; i++) {
          let s = 0
          for (let j = 0; j < d; j++) s += hessian[i * d + j] * offset[j]
          out[i] = s
        }
      }
      return {
        x,
        gradient: (v, grad) => multiply(v, grad),
        metric: (v) => {
          multiply(v, hx)
          let f = 0
          for (let i = 0; i < d; i++) f += 0.5 * (v[i] - 1) * hx[i]
          return f / f0
        },
      }
    },
  }
}

/** An orthogonal matrix (rows orthonormal) from Gram–Schmidt on Gaussian rows. */
function randomOrthogonal(d: number, random: Random): Float64Array {
  const q = new Float64Array(d * d)
  for (let i = 0; i < d; i++) {
    for (let j = 0; j < d; j++) q[i * d + j] = random.normal()
    for (let pass = 0; pass < 2; pass++) {
      for (let k = 0; k < i; k++) {
        let dot = 0
        for (let j = 0; j < d; j++) dot += q[i * d + j] * q[k * d + j]
        for (let j = 0; j < d; j++) q[i * d + j] -= dot * q[k * d + j]
      }
    }
    let norm = 0
    for (let j = 0; j < d; j++) norm += q[i * d + j] ** 2
    norm = Math.sqrt(norm)
    for (let j = 0; j < d; j++) q[i * d + j] /= norm
  }
  return q
}

/** Rosenbrock's banana, f = (1 − x)² + 100(y − x²)², from the classic start (−1.2, 1). Metric: f. */
export function rosenbrock(steps: number): Problem {
  const f = (x: number, y: number) => (1 - x) ** 2 + 100 * (y - x * x) ** 2
  return {
    id: 'rosenbrock',
    title: 'Rosenbrock function from (−1.2, 1)',
    metricName: 'f(x, y)',
    steps,
    threshold: 1e-6,
    start() {
      return {
        x: Float64Array.of(-1.2, 1),
        gradient: ([x, y], grad) => {
          grad[0] = -2 * (1 - x) - 400 * x * (y - x * x)
          grad[1] = 200 * (y - x * x)
        },
        metric: ([x, y]) => f(x, y),
      }
    },
  }
}

/**
 * Logistic regression with rare binary features: feature j is present with probability p_j,
 * from 50% down to 0.5% (log-spaced), and the labels come from true weights w* ~ N(0, 2²). Each
 * step takes a fresh minibatch, so a rare feature's gradient is zero most of the time, and as
 * large as any other's when it is not. Metric: RMS error of the rarest quarter of the weights,
 * which an optimizer learns only if it takes big steps on the rare occasions it can; the most
 * frequent quarter's error is kept beside it.
 */
export function sparseLogistic(options: { features: number; batchSize: number; steps: number }): Problem {
  const { features: d, batchSize, steps } = options
  const frequency = Float64Array.from({ length: d }, (_, j) => 0.5 * 0.01 ** (j / (d - 1)))
  const quarter = Math.max(1, Math.floor(d / 4))
  const rmsError = (x: Float64Array, w: Float64Array, from: number, to: number) => {
    let s = 0
    for (let j = from; j < to; j++) s += (x[j] - w[j]) ** 2
    return Math.sqrt(s / (to - from))
  }
  // Every run with the same seed sees the same stream of samples; draw it once.
  const streams = new Map<
    number,
    { truth: Float64Array; rowStart: Uint32Array; feature: Uint16Array; label: Uint8Array }
  >()
  const stream = (seed: number) => {
    let cached = streams.get(seed)
    if (cached !== undefined) return cached
    const random = new Random(seed ^ 0x5ba5e)
    const truth = Float64Array.from({ length: d }, () => 2 * random.normal())
    const rows = steps * batchSize
    const rowStart = new Uint32Array(rows + 1)
    const features: number[] = []
    const label = new Uint8Array(rows)
    for (let n = 0; n < rows; n++) {
      rowStart[n] = features.length
      let score = 0
      for (let j = 0; j < d; j++) {
        if (random.next() < frequency[j]) {
          features.push(j)
          score += truth[j]
        }
      }
      label[n] = random.next() < sigmoid(score) ? 1 : 0
    }
    rowStart[rows] = features.length
    cached = { truth, rowStart, feature: Uint16Array.from(features), label }
    streams.set(seed, cached)
    return cached
  }
  return {
    id: 'sparse',
    title: `Logistic regression, ${d} binary features present 50% … 0.5% of the time`,
    metricName: 'RMS error of the rarest 25% of weights',
    steps,
    threshold: 0.5,
    start(seed) {
      const { truth, rowStart, feature, label } = stream(seed)
      return {
        x: new Float64Array(d),
        gradient: (w, grad, t) => {
          grad.fill(0)
          for (let n = t * batchSize; n < (t + 1) * batchSize; n++) {
            let score = 0
            for (let k = rowStart[n]; k < rowStart[n + 1]; k++) score += w[feature[k]]
            const residual = (sigmoid(score) - label[n]) / batchSize
            for (let k = rowStart[n]; k < rowStart[n + 1]; k++) grad[feature[k]] += residual
          }
        },
        metric: (w) => rmsError(w, truth, d - quarter, d),
        extras: (w) => ({
          rareWeightError: rmsError(w, truth, d - quarter, d),
          frequentWeightError: rmsError(w, truth, 0, quarter),
        }),
      }
    },
  }
}

const sigmoid = (z: number) => 1 / (1 + Math.exp(-z))

/**
 * An embedding table learned from lookups whose rows follow Zipf's law: row r (from 0) is looked
 * up with probability ∝ 1/(r + 1)^1.1, so the first rows are seen thousands of times and the
 * last a handful. Each sample names a row i and gives y = Wᵀe*ᵢ + noise through a fixed random
 * readout W (dim × outputs, so the rows' directions are scaled differently), and the loss of a
 * batch is the mean of ½|Wᵀeᵢ − y|². A batch touches at most `batchSize` rows: its gradient is
 * row-sparse, `{ indices, values }` for SparseAdam, or a dense table that is zero elsewhere.
 * True rows e* ~ N(0, 1); the table starts at 0. Metric: RMS error of the rarest quarter of
 * the rows (by their probability); the most frequent quarter's error is kept beside it.
 */
export function sparseEmbedding(options: {
  rows: number
  dim: number
  outputs: number
  batchSize: number
  steps: number
  noise: number
}): Problem {
  const { rows, dim, outputs, batchSize, steps, noise } = options
  const weights = Float64Array.from({ length: rows }, (_, r) => (r + 1) ** -1.1)
  const cumulative = new Float64Array(rows)
  weights.reduce((sum, w, r) => (cumulative[r] = sum + w), 0)
  const quarter = Math.max(1, Math.floor(rows / 4))
  const rmsError = (x: Float64Array, truth: Float64Array, from: number, to: number) => {
    let s = 0
    for (let k = from * dim; k < to * dim; k++) s += (x[k] - truth[k]) ** 2
    return Math.sqrt(s / ((to - from) * dim))
  }
  // Every run with the same seed sees the same lookups; draw them once.
  const streams = new Map<number, { truth: Float64Array; readout: Float64Array; row: Uint32Array; y: Float64Array }>()
  const stream = (seed: number) => {
    let cached = streams.get(seed)
    if (cached !== undefined) return cached
    const random = new Random(seed ^ 0xe3bed)
    const truth = Float64Array.from({ length: rows * dim }, () => random.normal())
    const readout = Float64Array.from({ length: dim * outputs }, () => random.normal() / Math.sqrt(dim))
    const samples = steps * batchSize
    const row = new Uint32Array(samples)
    const y = new Float64Array(samples * outputs)
    const total = cumulative[rows - 1]
    for (let n = 0; n < samples; n++) {
      const u = random.next() * total
      let lo = 0
      let hi = rows - 1
      while (lo < hi) {
        const mid = (lo + hi) >> 1
        if (cumulative[mid] > u) hi = mid
        else lo = mid + 1
      }
      row[n] = lo
      for (let o = 0; o < outputs; o++) {
        let v = 0
        for (let k = 0; k < dim; k++) v += readout[k * outputs + o] * truth[lo * dim + k]
        y[n * outputs + o] = v + noise * random.normal()
      }
    }
    cached = { truth, readout, row, y }
    streams.set(seed, cached)
    return cached
  }
  return {
    id: 'sparse-embedding',
    title: `Embedding table, ${rows} rows × ${dim}, Zipf(1.1) lookups, ${batchSize} per step`,
    metricName: 'RMS error of the rarest 25% of rows',
    steps,
    // Half the error of the start (the table at 0, true rows of unit variance).
    threshold: 0.5,
    start(seed) {
      const { truth, readout, row, y } = stream(seed)
      const residual = new Float64Array(outputs)
      const touched = new Map<number, Float64Array>()
      /** Adds the batch's gradient rows into `rowOf(r)`. */
      const accumulate = (x: Float64Array, t: number, rowOf: (r: number) => Float64Array | ArrayLike<number>) => {
        for (let n = t * batchSize; n < (t + 1) * batchSize; n++) {
          const r = row[n]
          for (let o = 0; o < outputs; o++) {
            let v = -y[n * outputs + o]
            for (let k = 0; k < dim; k++) v += readout[k * outputs + o] * x[r * dim + k]
            residual[o] = v / batchSize
          }
          const g = rowOf(r) as Float64Array
          for (let k = 0; k < dim; k++) {
            let v = 0
            for (let o = 0; o < outputs; o++) v += readout[k * outputs + o] * residual[o]
            g[k] += v
          }
        }
      }
      return {
        x: new Float64Array(rows * dim),
        shape: [rows, dim],
        gradient: (x, grad, t) => {
          grad.fill(0)
          accumulate(x, t, (r) => grad.subarray(r * dim, (r + 1) * dim))
        },
        sparseGradient: (x, t) => {
          touched.clear()
          accumulate(x, t, (r) => {
            let g = touched.get(r)
            if (g === undefined) touched.set(r, (g = new Float64Array(dim)))
            return g
          })
          const indices = Int32Array.from([...touched.keys()].sort((a, b) => a - b))
          const values = new Float64Array(indices.length * dim)
          indices.forEach((r, i) => values.set(touched.get(r)!, i * dim))
          return { indices, values }
        },
        metric: (x) => rmsError(x, truth, rows - quarter, rows),
        extras: (x) => ({
          rareRowError: rmsError(x, truth, rows - quarter, rows),
          frequentRowError: rmsError(x, truth, 0, quarter),
        }),
      }
    },
  }
}

/**
 * A noisy quadratic whose minimum jumps: f = ½|x − c|² with gradient noise of standard
 * deviation σ per coordinate. For the first half of the steps c = 3 and each coordinate starts
 * between 1 and 2 above it; then c jumps to between 1 and 2 below 3 in each coordinate. The
 * second approach is about as long as the first, so an optimizer whose step size holds steady
 * takes about as long for it; one whose step size has shrunk takes longer. The offsets are
 * random (by seed) so that no learning rate of the grid lands on the minimum by arithmetic.
 * Metric: RMS distance to the current minimum.
 */
export function movingTarget(options: {
  dimension: number
  noise: number
  steps: number
}): Problem & { switchStep: number } {
  const { dimension: d, noise } = options
  const switchStep = Math.floor(options.steps / 2)
  return {
    id: 'moving-target',
    title: `Noisy quadratic (σ = ${noise}) whose minimum moves at step ${switchStep}`,
    metricName: 'RMS distance to the minimum',
    steps: options.steps,
    threshold: 0.25,
    switchStep,
    start(seed) {
      const placement = new Random(seed ^ 0x70ad)
      const x = Float64Array.from({ length: d }, () => 3 + placement.uniform(1, 2))
      const second = Float64Array.from({ length: d }, () => 3 - placement.uniform(1, 2))
      const noiseSource = placement.fork()
      const target = (t: number, i: number) => (t < switchStep ? 3 : second[i])
      return {
        x,
        gradient: (v, grad, t) => {
          for (let i = 0; i < d; i++) grad[i] = v[i] - target(t, i) + noise * noiseSource.normal()
        },
        metric: (v, t) => {
          let s = 0
          for (let i = 0; i < d; i++) s += (v[i] - target(t, i)) ** 2
          return Math.sqrt(s / d)
        },
      }
    },
  }
}
