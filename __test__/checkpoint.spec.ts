// Saving and resuming: the object form and the safetensors form, both exact; PyTorch's own
// checkpoints load and continue as PyTorch continues; a corrupt or mismatched checkpoint throws
// and leaves the optimizer as it was.
import { mkdtempSync, readFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'

import test from 'ava'

import * as fastoptim from '../lib'
import { decodeSafetensors, encodeSafetensors, loadStateDict, saveStateDict, type Optimizer, type Parameter, type StateDict } from '../lib'
import { maxRelativeError, tolerance, typed } from './helpers/fixtures'

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
    const data = typed(dtype, Array.from({ length: n }, (_, k) => Math.cos(k + i)))
    return { data, grad: null }
  })
}

function train(opt: AnyOptimizer, params: Parameter[], from: number, to: number) {
  for (let s = from; s < to; s++) {
    params.forEach((p, i) => (p.grad = gradient(p.data, i, s)))
    opt.step()
  }
}

/** Every optimizer class the package exports, with options that exercise its state. */
const optimizers: Array<[string, object]> = [
  ['Adam', { amsgrad: true, weightDecay: 0.01 }],
  ['AdamW', { lr: 1e-2 }],
  ['SGD', { lr: 1e-2, momentum: 0.9, nesterov: true }],
  ['RMSprop', { momentum: 0.5, centered: true }],
  ['Adagrad', { lrDecay: 1e-3, initialAccumulatorValue: 0.1 }],
  ['Adamax', {}],
  ['NAdam', {}],
  ['RAdam', { decoupledWeightDecay: true, weightDecay: 0.01 }],
]

for (const [name, options] of optimizers) {
  for (const form of ['object', 'safetensors'] as const) {
    test(`${name}: save at step 7, load into a new optimizer, continue — exactly the uninterrupted run (${form})`, (t) => {
      const Class = classOf(name)
      if (!Class) return t.fail(`${name} is not exported`)
      const make = (params: Parameter[]) => new Class([{ params: params.slice(0, 2) }, { params: params.slice(2), lr: 3e-3 }] as never, options as never)
      const straight = model('float32')
      train(make(straight), straight, 0, 15)

      const first = model('float32')
      const before = make(first)
      train(before, first, 0, 7)
      let saved: StateDict<object> = before.stateDict()
      if (form === 'safetensors') {
        const file = join(mkdtempSync(join(tmpdir(), 'fastoptim-')), 'state.safetensors')
        saveStateDict(file, saved)
        saved = loadStateDict(file)
      }
      const resumed = first.map((p) => ({ data: p.data.slice(), grad: null }))
      const after = make(resumed)
      after.loadStateDict(saved)
      train(after, resumed, 7, 15)
      resumed.forEach((p, i) => t.deepEqual(p.data, straight[i].data, `param ${i}`))
    })
  }
}

for (const c of fixture.cases) {
  test(`a PyTorch ${c.optimizer} checkpoint loads and continues as PyTorch does: ${c.name}`, (t) => {
    const Class = classOf(c.optimizer)
    if (!Class) return t.fail(`${c.optimizer} is not exported`)
    const params: Parameter[] = c.paramsAtCheckpoint.map((values: number[]) => ({ data: typed(c.dtype, values), grad: null }))
    const groups = c.groups.map((g: { params: number[]; options: Record<string, unknown> }) => {
      // PyTorch's AdamW lists decoupled_weight_decay, which fastoptim's AdamW implies.
      const { decoupledWeightDecay: _, ...rest } = g.options
      const options = c.optimizer === 'AdamW' ? rest : g.options
      // Start from other options: loadStateDict must bring PyTorch's back.
      return { params: g.params.map((i) => params[i]), ...options, lr: 0.5 }
    })
    const opt = new Class(groups as never)
    opt.loadStateDict(decodeSafetensors(readFileSync(join(dir, c.file))))
    t.deepEqual(opt.paramGroups.map((g) => (g as unknown as { lr: number }).lr), c.groups.map((g: { options: { lr: number } }) => g.options.lr))
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
  ['header length past the end', (good) => { const bad = good.slice(); new DataView(bad.buffer).setBigUint64(0, 1n << 40n, true); return decodeSafetensors(bad) }, /header length \d+ exceeds the file/],
  ['data cut short', (good) => decodeSafetensors(good.slice(0, good.length - 4)), /data_offsets .* do not fit/],
  ['header not JSON', (good) => { const bad = good.slice(); bad[8] = 0x7b + 1; return decodeSafetensors(bad) }, /header is not JSON/],
  ['an extra parameter group', (_, sd) => ({ ...sd, paramGroups: [...sd.paramGroups, sd.paramGroups[0]] }), /has 3 groups, but the optimizer has 2/],
  ['a group of another size', (_, sd) => ({ ...sd, paramGroups: [{ ...sd.paramGroups[0], params: [0] }, sd.paramGroups[1]] }), /params must list 2 parameters/],
  ['a buffer of another length', (_, sd) => ({ ...sd, state: { ...sd.state, 2: { ...sd.state[2], expAvg: new Float32Array(3) } } }), /state\[2\]\.expAvg has length 3, expected 99/],
  ['a buffer of another dtype', (_, sd) => ({ ...sd, state: { ...sd.state, 1: { ...sd.state[1], expAvgSq: new Float64Array(37) } } }), /state\[1\]\.expAvgSq must be a Float32Array like the parameter's data, got Float64Array/],
  ['state of another optimizer', (_, sd) => ({ ...sd, state: { ...sd.state, 0: { ...sd.state[0], momentumBuffer: new Float32Array(1) } } }), /state\[0\]\.momentumBuffer is not state of Adam/],
  ['an unknown option', (_, sd) => ({ ...sd, paramGroups: [{ ...sd.paramGroups[0], nesterov: true }, sd.paramGroups[1]] }), /paramGroups\[0\]\.nesterov is not an option of Adam/],
  ['an out-of-range option', (_, sd) => ({ ...sd, paramGroups: [sd.paramGroups[0], { ...sd.paramGroups[1], betas: [1.5, 0.9] }] }), /invalid betas\[0\]: 1\.5 .* in stateDict\.paramGroups\[1\]/],
  ['a negative step', (_, sd) => ({ ...sd, state: { ...sd.state, 0: { ...sd.state[0], step: -1 } } }), /invalid state\[0\]\.step: -1/],
  ['state for a parameter no group lists', (_, sd) => ({ ...sd, state: { ...sd.state, 7: sd.state[0] } }), /state\[7\] is for a parameter no group lists/],
]

for (const [what, damage, message] of corrupt) {
  test(`a checkpoint with ${what} is refused and the optimizer is unchanged`, (t) => {
    const params = model('float32')
    const opt = new fastoptim.Adam([{ params: params.slice(0, 2) }, { params: params.slice(2), lr: 3e-3 }], { amsgrad: true })
    train(opt, params, 0, 3)
    const good = encodeSafetensors(opt.stateDict())
    const before = JSON.stringify(opt.stateDict(), (_, v) => (ArrayBuffer.isView(v) ? Array.from(v as Float32Array) : v))
    t.throws(() => {
      const result = damage(good, decodeSafetensors(good))
      if (!(result instanceof Uint8Array) && result && typeof result === 'object' && 'paramGroups' in result) (opt as unknown as Optimizer<object>).loadStateDict(result as StateDict<object>)
    }, { message })
    t.is(JSON.stringify(opt.stateDict(), (_, v) => (ArrayBuffer.isView(v) ? Array.from(v as Float32Array) : v)), before)
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
