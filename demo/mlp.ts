import type { Parameter } from '../lib'
import { CLASSES, PIXELS, type DigitSet } from './mnist'
import { Random } from './random'

/**
 * A 784-H-10 perceptron with a ReLU hidden layer and a softmax cross-entropy loss, forward and
 * backward written out over Float32Array.
 *
 * Layout: `w1` is stored pixel-major (`w1[p * H + j]` joins pixel p to hidden unit j) so that a
 * pixel's weights are one contiguous run of H floats: the first layer then walks only the
 * non-zero pixels of each image, H multiply-adds at a time, in both passes. `w2` is
 * `w2[j * 10 + c]`. Every scratch buffer is allocated once, in the constructor.
 */
export class Mlp {
  readonly w1: Parameter & { data: Float32Array; grad: Float32Array }
  readonly b1: Parameter & { data: Float32Array; grad: Float32Array }
  readonly w2: Parameter & { data: Float32Array; grad: Float32Array }
  readonly b2: Parameter & { data: Float32Array; grad: Float32Array }
  /** In the order an optimizer takes them. */
  readonly parameters: Parameter[]

  readonly #hidden: Float64Array
  readonly #hiddenGrad: Float64Array
  readonly #logits = new Float64Array(CLASSES)

  constructor(
    readonly hiddenSize: number,
    random: Random,
  ) {
    // PyTorch's nn.Linear initialisation: weights and biases uniform in ±1/√fan_in. The shapes are
    // the layouts below (a weight is [inputs, outputs], row-major), for optimizers that factor
    // matrices (Adafactor).
    const layer = (fanIn: number, shape: number[]) => {
      const bound = 1 / Math.sqrt(fanIn)
      const length = shape.reduce((a, b) => a * b, 1)
      const data = new Float32Array(length)
      for (let i = 0; i < length; i++) data[i] = random.uniform(-bound, bound)
      return { data, grad: new Float32Array(length), shape }
    }
    this.w1 = layer(PIXELS, [PIXELS, hiddenSize])
    this.b1 = layer(PIXELS, [hiddenSize])
    this.w2 = layer(hiddenSize, [hiddenSize, CLASSES])
    this.b2 = layer(hiddenSize, [CLASSES])
    this.parameters = [this.w1, this.b1, this.w2, this.b2]
    this.#hidden = new Float64Array(hiddenSize)
    this.#hiddenGrad = new Float64Array(hiddenSize)
  }

  /** How many numbers the optimizer updates. */
  get parameterCount(): number {
    return this.parameters.reduce((n, p) => n + p.data.length, 0)
  }

  /**
   * Adds the gradient of the batch's mean loss to each parameter's `grad` (zero them first, as
   * with PyTorch's `backward`) and returns that mean loss. The batch is
   * `set[order[start]] .. set[order[end - 1]]`.
   */
  accumulateGradients(set: DigitSet, order: Uint32Array, start: number, end: number): number {
    const scale = 1 / (end - start)
    let loss = 0
    for (let k = start; k < end; k++) loss += this.#backward(set, order[k], scale)
    return loss * scale
  }

  /** Mean loss and accuracy over a whole set, without touching gradients. */
  evaluate(set: DigitSet): { loss: number; accuracy: number } {
    let loss = 0
    let correct = 0
    const logits = this.#logits
    for (let i = 0; i < set.size; i++) {
      this.#forward(set, i)
      let best = 0
      for (let c = 1; c < CLASSES; c++) if (logits[c] > logits[best]) best = c
      if (best === set.label[i]) correct++
      loss += this.#crossEntropy(set.label[i])
    }
    return { loss: loss / set.size, accuracy: correct / set.size }
  }

  /** Fills `#hidden` (after ReLU) and `#logits` for image `i`. */
  #forward(set: DigitSet, i: number): void {
    const H = this.hiddenSize
    const hidden = this.#hidden
    const logits = this.#logits
    const w1 = this.w1.data
    const b1 = this.b1.data
    const w2 = this.w2.data
    const b2 = this.b2.data
    const { pixel, value } = set
    for (let j = 0; j < H; j++) hidden[j] = b1[j]
    // Four pixels per pass over `hidden`: a quarter of the loads and stores of one at a time,
    // which V8 turns into about twice the multiply-adds per second.
    let k = set.rowStart[i]
    const end = set.rowStart[i + 1]
    for (; k + 3 < end; k += 4) {
      const xa = value[k],
        ra = pixel[k] * H
      const xb = value[k + 1],
        rb = pixel[k + 1] * H
      const xc = value[k + 2],
        rc = pixel[k + 2] * H
      const xd = value[k + 3],
        rd = pixel[k + 3] * H
      for (let j = 0; j < H; j++) hidden[j] += xa * w1[ra + j] + xb * w1[rb + j] + xc * w1[rc + j] + xd * w1[rd + j]
    }
    for (; k < end; k++) {
      const x = value[k],
        row = pixel[k] * H
      for (let j = 0; j < H; j++) hidden[j] += x * w1[row + j]
    }
    for (let c = 0; c < CLASSES; c++) logits[c] = b2[c]
    for (let j = 0; j < H; j++) {
      const h = hidden[j]
      if (h <= 0) {
        hidden[j] = 0
        continue
      }
      const row = j * CLASSES
      for (let c = 0; c < CLASSES; c++) logits[c] += h * w2[row + c]
    }
  }

  /**
   * Turns `#logits` into probabilities in place and returns −log p(label), computed as
   * log Σ exp(z − max) + max − z_label so that no exponential overflows.
   */
  #crossEntropy(label: number): number {
    const logits = this.#logits
    let max = logits[0]
    for (let c = 1; c < CLASSES; c++) if (logits[c] > max) max = logits[c]
    const target = logits[label]
    let sum = 0
    for (let c = 0; c < CLASSES; c++) {
      const e = Math.exp(logits[c] - max)
      logits[c] = e
      sum += e
    }
    for (let c = 0; c < CLASSES; c++) logits[c] /= sum
    return Math.log(sum) + max - target
  }

  /** One image's forward and backward pass; adds `scale` × its gradient; returns its loss. */
  #backward(set: DigitSet, i: number, scale: number): number {
    this.#forward(set, i)
    const label = set.label[i]
    const loss = this.#crossEntropy(label)
    const H = this.hiddenSize
    const hidden = this.#hidden
    const hiddenGrad = this.#hiddenGrad
    // ∂loss/∂z = softmax(z) − onehot(label), scaled for the batch mean.
    const dz = this.#logits
    dz[label] -= 1
    for (let c = 0; c < CLASSES; c++) dz[c] *= scale
    const w2 = this.w2.data
    const gw2 = this.w2.grad
    const gb2 = this.b2.grad
    const gb1 = this.b1.grad
    for (let c = 0; c < CLASSES; c++) gb2[c] += dz[c]
    for (let j = 0; j < H; j++) {
      const h = hidden[j]
      if (h === 0) {
        // ReLU was off (or exactly at 0): no gradient flows back through this unit.
        hiddenGrad[j] = 0
        continue
      }
      const row = j * CLASSES
      let back = 0
      for (let c = 0; c < CLASSES; c++) {
        gw2[row + c] += h * dz[c]
        back += w2[row + c] * dz[c]
      }
      hiddenGrad[j] = back
      gb1[j] += back
    }
    const gw1 = this.w1.grad
    const { pixel, value } = set
    let k = set.rowStart[i]
    const end = set.rowStart[i + 1]
    for (; k + 3 < end; k += 4) {
      const xa = value[k],
        ra = pixel[k] * H
      const xb = value[k + 1],
        rb = pixel[k + 1] * H
      const xc = value[k + 2],
        rc = pixel[k + 2] * H
      const xd = value[k + 3],
        rd = pixel[k + 3] * H
      for (let j = 0; j < H; j++) {
        const g = hiddenGrad[j]
        gw1[ra + j] += xa * g
        gw1[rb + j] += xb * g
        gw1[rc + j] += xc * g
        gw1[rd + j] += xd * g
      }
    }
    for (; k < end; k++) {
      const x = value[k],
        row = pixel[k] * H
      for (let j = 0; j < H; j++) gw1[row + j] += x * hiddenGrad[j]
    }
    return loss
  }
}
