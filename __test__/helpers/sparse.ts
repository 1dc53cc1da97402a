// Row-sparse gradients for the shared suites: what an optimizer of the registry that takes only
// sparse gradients (`algorithms()`'s `sparse`) is given where the others get a dense gradient.
import type { FloatArray, GradKind, SparseGrad } from '../../lib'

/** Rows and their size for a parameter of `length` elements and `shape` (absent: flat; 0-D: one row). */
export function rowsOf(length: number, shape?: readonly number[]): { rows: number; rowLength: number } {
  if (!shape) return { rows: length, rowLength: 1 }
  if (shape.length === 0) return { rows: 1, rowLength: 1 }
  return { rows: shape[0], rowLength: shape.slice(1).reduce((a, b) => a * b, 1) }
}

/**
 * The dense gradient `grad` as a sparse one naming the rows that hold an element other than 0,
 * so that an optimizer of sparse gradients moves those rows exactly as a masked reference does
 * (helpers/reference.ts). To exercise coalescing, rows are named in reverse order, and every
 * third row named is split into two halves named apart (their sum is the row, exactly, above
 * the subnormal range).
 */
export function sparseGrad(grad: FloatArray, shape?: readonly number[]): SparseGrad {
  const { rows, rowLength } = rowsOf(grad.length, shape)
  const named: number[] = []
  for (let r = rows - 1; r >= 0; r--) {
    for (let k = r * rowLength; k < (r + 1) * rowLength; k++) {
      if (grad[k] !== 0) {
        named.push(r)
        break
      }
    }
  }
  const split = named.filter((_, i) => i % 3 === 0)
  const indices = Int32Array.from([...named, ...split])
  const values = new (grad.constructor as Float32ArrayConstructor)(indices.length * rowLength)
  indices.forEach((r, i) => {
    const scale = i % 3 === 0 || i >= named.length ? 0.5 : 1
    for (let j = 0; j < rowLength; j++) values[i * rowLength + j] = grad[r * rowLength + j] * scale
  })
  return { indices, values }
}

/** `grad` as the optimizer takes it: as it is, or as `sparseGrad` makes it when `sparse`. */
export function gradFor(sparse: boolean, grad: FloatArray, shape?: readonly number[]): GradKind {
  return sparse ? sparseGrad(grad, shape) : grad
}
