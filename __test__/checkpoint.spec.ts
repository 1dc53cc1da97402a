// Saving and resuming: the object form and the safetensors form, both exact for every optimizer of
// the registry, with state of matrices written in PyTorch's shapes; PyTorch's own checkpoints load
// and continue as PyTorch continues; a corrupt or mismatched checkpoint throws and leaves the
// optimizer as it was.
import { mkdtempSync, readFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'

import test from 'ava'

import * as fastoptim from '../lib'
import {
  decodeSafetensors,
  encodeSafetensors,
  loadStateDict,
  saveStateDict,
  type GradKind,
  type Optimizer,
  type Parameter,
  type StateDict,
} from '../lib'
import { maxRelativeError, tolerance, typed } from './helpers/fixtures'
import { gradFor } from './helpers/sparse'

type AnyOptimizer = Optimizer<object>
type Constructor = new (params: never, options?: never) => AnyOptimizer

const dir = join(__dirname, 'fixtures', 'checkpoints')
const fixture = JSON.parse(readFileSync(join(dir, 'cases.json'), 'utf8'))

function classOf(name: string): Constructor | undefined {
  return (fastoptim as unknown as Record<string, Constructor | undefined>)[name]
}

/** Deterministic gradients for step `s` of parameter `i`. */
function gradient(data: Float32Array | Float64Array, i: number, s: number) {
  const grad = new (data.constructor as Float32ArrayConstructor)(data.length)
  for (let k = 0; k < grad.length; k++) grad[k] = Math.sin(1.7 * k + 3.1 * i + 0.37 * s) * (k % 5 === 0 ? 0 : 1)
  return grad
}

function model(dtype: 'float32' | 'float64'): Parameter[] {
  return [1, 37, 99].map((n, i) => {
    const data = typed(
      dtype,
      Array.from({ length: n }, (_, k) => Math.cos(k + i)),
    )
    return { data, grad: null }
  })
}

/** Steps `opt` from step `from` to `to`; an optimizer of `sparse` gradients gets the rows that are not all 0. */
function train(opt: AnyOptimizer, params: Parameter[], from: number, to: number, sparse = false) {
  for (let s = from; s < to; s++) {
    params.forEach((p, i) => ((p as Parameter<GradKind>).grad = gradFor(sparse, gradient(p.data, i, s), p.shape)))
    opt.step()
  }
}

/**
 * The round trips' parameters: the flat ones of `model` (given without a shape) and a matrix and a
 * 3-D tensor, whose state PyTorch's checkpoints hold in shapes of their own (Adafactor's factored
 * rows and columns among them). No 0-D parameter: decodeSafetensors reads a tensor of shape []
 * back as a number (as it must `step`), so a 0-D parameter's buffers do not survive the file yet.
 */
const SHAPES = [[1], [37], [99], [3, 4], [2, 3, 5]]

/** The round trips' parameters of an optimizer of matrices only (Muon): wide, tall and square. */
const MATRIX_SHAPES = [
  [1, 3],
  [7, 5],
  [9, 11],
  [3, 4],
  [6, 6],
]

function shapedModel(dtype: 'float32' | 'float64', shapes: number[][] = SHAPES): Parameter[] {
  return shapes.map((dims, i) => {
    const n = dims.reduce((a, b) => a * b, 1)
    const data = typed(
      dtype,
      Array.from({ length: n }, (_, k) => Math.cos(k + i)),
    )
    return { data, grad: null, shape: dims.length === 1 ? undefined : dims }
  })
}

/**
 * A state buffer's shape in PyTorch's state_dict, by its layout, for a parameter of shape `dims`;
 * undefined where PyTorch keeps no such buffer (a factored one of a vector, a whole one of a matrix).
 */
function pytorchShape(layout: string, dims: number[]): number[] | undefined {
  const factored = dims.length >= 2
  switch (layout) {
    case 'param':
      return dims
    case 'unfactored':
      return factored ? undefined : dims
    case 'rows':
      return factored ? [...dims.slice(0, -1), 1] : undefined
    case 'cols':
      return factored ? [...dims.slice(0, -2), 1, dims[dims.length - 1]] : undefined
    default:
      throw new Error(`unknown layout ${layout}`)
  }
}

const snake = (name: string) => name.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`)

/** The JSON header of safetensors bytes. */
function headerOf(bytes: Uint8Array): Record<string, { dtype: string; shape: number[] }> {
  const length = Number(new DataView(bytes.buffer, bytes.byteOffset).getBigUint64(0, true))
  return JSON.parse(Buffer.from(bytes.subarray(8, 8 + length)).toString())
}

/**
 * Options that put more of an optimizer's state to use than its defaults (momentum buffers,
 * AMSGrad's maximum, the centered average); an optimizer of the registry not listed round-trips
 * with its defaults.
 */
const OPTIONS: Record<string, object> = {
  Adam: { amsgrad: true, weightDecay: 0.01 },
  AdamW: { lr: 1e-2 },
  SGD: { lr: 1e-2, momentum: 0.9, nesterov: true },
  RMSprop: { momentum: 0.5, centered: true },
  Adagrad: { lrDecay: 1e-3, initialAccumulatorValue: 0.1 },
  RAdam: { decoupledWeightDecay: true, weightDecay: 0.01 },
  AdamWScheduleFree: { trainMode: true, weightDecay: 0.01, warmupSteps: 3 },
  SGDScheduleFree: { lr: 0.1, trainMode: true, weightDecay: 0.01, warmupSteps: 3 },
}

test('the options table names only optimizers of the registry', (t) => {
  const names = new Set(fastoptim.algorithms().map((info) => info.name))
  t.true(names.size > 0)
  t.deepEqual(
    Object.keys(OPTIONS).filter((name) => !names.has(name)),
    [],
  )
})

for (const info of fastoptim.algorithms()) {
  const { name } = info
  const options = OPTIONS[name] ?? {}
  for (const form of ['object', 'safetensors'] as const) {
    test(`${name}: save at step 7, load into a new optimizer, continue — exactly the uninterrupted run (${form})`, (t) => {
      const Class = classOf(name)
      if (!Class) return t.fail(`${name} is not exported`)
      const make = (params: Parameter[]) =>
        new Class([{ params: params.slice(0, 2) }, { params: params.slice(2), lr: 3e-3 }] as never, options as never)
      const modelShapes = info.matrices ? MATRIX_SHAPES : SHAPES
      const straight = shapedModel('float32', modelShapes)
      train(make(straight), straight, 0, 15, info.sparse)

      const first = shapedModel('float32', modelShapes)
      const before = make(first)
      train(before, first, 0, 7, info.sparse)
      let saved: StateDict<object> = before.stateDict()
      if (form === 'safetensors') {
        const file = join(mkdtempSync(join(tmpdir(), 'fastoptim-')), 'state.safetensors')
        saveStateDict(file, saved)
        // Every state buffer is in the file in the shape PyTorch's state_dict gives it, and only
        // the buffers PyTorch keeps for the parameter's shape are there.
        const header = headerOf(readFileSync(file))
        modelShapes.forEach((dims, i) => {
          if (!saved.state[i]) return t.fail(`param ${i} has no state after 7 steps`)
          for (const buffer of info.buffers) {
            const tensor = `state.${i}.${snake(buffer.name)}`
            const shape = pytorchShape(buffer.layout, dims)
            if (!shape)
              t.false(tensor in header, `${tensor}: PyTorch keeps no ${buffer.name} for a parameter of shape [${dims}]`)
            else if (tensor in header)
              t.deepEqual(header[tensor].shape, shape, `${tensor} of a parameter of shape [${dims}]`)
          }
        })
        const shapes = saved.shapes
        saved = loadStateDict(file)
        t.deepEqual(saved.shapes, shapes, 'the shapes read back')
      }
      const resumed = first.map((p) => ({ data: p.data.slice(), grad: null, shape: p.shape }))
      const after = make(resumed)
      after.loadStateDict(saved)
      train(after, resumed, 7, 15, info.sparse)
      resumed.forEach((p, i) => t.deepEqual(p.data, straight[i].data, `param ${i}`))
    })
  }
}

for (const c of fixture.cases) {
  test(`a PyTorch ${c.optimizer} checkpoint loads and continues as PyTorch does: ${c.name}`, (t) => {
    const Class = classOf(c.optimizer)
    if (!Class) return t.fail(`${c.optimizer} is not exported`)
    const params: Parameter[] = c.paramsAtCheckpoint.map((values: number[]) => ({
      data: typed(c.dtype, values),
      grad: null,
    }))
    const groups = c.groups.map((g: { params: number[]; options: Record<string, unknown> }) => {
      // PyTorch's AdamW lists decoupled_weight_decay, which fastoptim's AdamW implies.
      const { decoupledWeightDecay: _, ...rest } = g.options
      const options = c.optimizer === 'AdamW' ? rest : g.options
      // Start from other options: loadStateDict must bring PyTorch's back.
      return { params: g.params.map((i) => params[i]), ...options, lr: 0.5 }
    })
    const opt = new Class(groups as never)
    opt.loadStateDict(decodeSafetensors(readFileSync(join(dir, c.file))))
    t.deepEqual(
      opt.paramGroups.map((g) => (g as unknown as { lr: number }).lr),
      c.groups.map((g: { options: { lr: number } }) => g.options.lr),
    )
    c.steps.forEach((step: { grads: number[][]; params: number[][] }, s: number) => {
      params.forEach((p, i) => (p.grad = typed(c.dtype, step.grads[i])))
      opt.step()
      params.forEach((p, i) => {
        const error = maxRelativeError(p.data, step.params[i])
        t.true(error <= tolerance(c.dtype), `step ${s + 1} after the checkpoint, param ${i}: relative error ${error}`)
      })
    })
  })
}

/** Checkpoints that must be refused, each with the error it gives. */
const corrupt: Array<[string, (good: Uint8Array, sd: StateDict<object>) => unknown, RegExp]> = [
  ['truncated to 5 bytes', (good) => decodeSafetensors(good.slice(0, 5)), /shorter than the 8-byte header length/],
  [
    'header length past the end',
    (good) => {
      const bad = good.slice()
      new DataView(bad.buffer).setBigUint64(0, 1n << 40n, true)
      return decodeSafetensors(bad)
    },
    /header length \d+ exceeds the file/,
  ],
  ['data cut short', (good) => decodeSafetensors(good.slice(0, good.length - 4)), /data_offsets .* do not fit/],
  [
    'header not JSON',
    (good) => {
      const bad = good.slice()
      bad[8] = 0x7b + 1
      return decodeSafetensors(bad)
    },
    /header is not JSON/,
  ],
  [
    'an extra parameter group',
    (_, sd) => ({ ...sd, paramGroups: [...sd.paramGroups, sd.paramGroups[0]] }),
    /has 3 groups, but the optimizer has 2/,
  ],
  [
    'a group of another size',
    (_, sd) => ({ ...sd, paramGroups: [{ ...sd.paramGroups[0], params: [0] }, sd.paramGroups[1]] }),
    /params must list 2 parameters/,
  ],
  [
    'a buffer of another length',
    (_, sd) => ({ ...sd, state: { ...sd.state, 2: { ...sd.state[2], expAvg: new Float32Array(3) } } }),
    /state\[2\]\.expAvg has length 3, expected 99/,
  ],
  [
    'a buffer of another dtype',
    (_, sd) => ({ ...sd, state: { ...sd.state, 1: { ...sd.state[1], expAvgSq: new Float64Array(37) } } }),
    /state\[1\]\.expAvgSq must be a Float32Array like the parameter's data, got Float64Array/,
  ],
  [
    'state of another optimizer',
    (_, sd) => ({ ...sd, state: { ...sd.state, 0: { ...sd.state[0], momentumBuffer: new Float32Array(1) } } }),
    /state\[0\]\.momentumBuffer is not state of Adam/,
  ],
  [
    'an unknown option',
    (_, sd) => ({ ...sd, paramGroups: [{ ...sd.paramGroups[0], nesterov: true }, sd.paramGroups[1]] }),
    /paramGroups\[0\]\.nesterov is not an option of Adam/,
  ],
  [
    'an out-of-range option',
    (_, sd) => ({ ...sd, paramGroups: [sd.paramGroups[0], { ...sd.paramGroups[1], betas: [1.5, 0.9] }] }),
    /invalid betas\[0\]: 1\.5 .* in stateDict\.paramGroups\[1\]/,
  ],
  [
    'a negative step',
    (_, sd) => ({ ...sd, state: { ...sd.state, 0: { ...sd.state[0], step: -1 } } }),
    /invalid state\[0\]\.step: -1/,
  ],
  [
    'state for a parameter no group lists',
    (_, sd) => ({ ...sd, state: { ...sd.state, 7: sd.state[0] } }),
    /state\[7\] is for a parameter no group lists/,
  ],
]

for (const [what, damage, message] of corrupt) {
  test(`a checkpoint with ${what} is refused and the optimizer is unchanged`, (t) => {
    const params = model('float32')
    const opt = new fastoptim.Adam([{ params: params.slice(0, 2) }, { params: params.slice(2), lr: 3e-3 }], {
      amsgrad: true,
    })
    train(opt, params, 0, 3)
    const good = encodeSafetensors(opt.stateDict())
    const before = JSON.stringify(opt.stateDict(), (_, v) =>
      ArrayBuffer.isView(v) ? Array.from(v as Float32Array) : v,
    )
    t.throws(
      () => {
        const result = damage(good, decodeSafetensors(good))
        if (!(result instanceof Uint8Array) && result && typeof result === 'object' && 'paramGroups' in result)
          (opt as unknown as Optimizer<object>).loadStateDict(result as StateDict<object>)
      },
      { message },
    )
    t.is(
      JSON.stringify(opt.stateDict(), (_, v) => (ArrayBuffer.isView(v) ? Array.from(v as Float32Array) : v)),
      before,
    )
  })
}

test('the safetensors layout: 8-byte length, JSON header with PyTorch names, aligned data', (t) => {
  const params = model('float64')
  const opt = new fastoptim.AdamW(params, { amsgrad: true })
  train(opt, params, 0, 2)
  const bytes = encodeSafetensors(opt.stateDict())
  const length = Number(new DataView(bytes.buffer).getBigUint64(0, true))
  t.is((8 + length) % 8, 0)
  const header = JSON.parse(Buffer.from(bytes.subarray(8, 8 + length)).toString())
  t.deepEqual(header['state.1.step'], { dtype: 'F32', shape: [], data_offsets: header['state.1.step'].data_offsets })
  t.deepEqual(header['state.1.exp_avg_sq'].shape, [37])
  t.is(header['state.1.max_exp_avg_sq'].dtype, 'F64')
  t.deepEqual(JSON.parse(header.__metadata__.param_groups)[0].weight_decay, 0.01)
})

test("Adam's expAvg of a [3, 4] parameter is written as a [3, 4] tensor, and reads back so", (t) => {
  const param: Parameter = { data: new Float32Array(12).fill(1), grad: new Float32Array(12).fill(0.5), shape: [3, 4] }
  const opt = new fastoptim.Adam([param])
  opt.step()
  const bytes = encodeSafetensors(opt.stateDict())
  t.deepEqual(headerOf(bytes)['state.0.exp_avg'].shape, [3, 4])
  const back = decodeSafetensors(bytes)
  t.deepEqual(back.shapes?.[0]?.expAvg, [3, 4])
  t.deepEqual(back.state[0].expAvg, opt.getState(param)!.expAvg)
})
