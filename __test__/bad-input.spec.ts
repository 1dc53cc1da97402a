// Bad input, as a table. Each row sets up a world (optionally an optimizer that has stepped), makes
// one call that must be refused, and asserts the error's class, its Node-style `code`, a message
// naming the field and the value, and that no array, option or optimizer state changed. The
// second table holds inputs PyTorch accepts (a null grad, an empty parameter, shared or resizable
// memory, a 2^27-element array): those must work, and their numbers are checked. The option rows
// that hold for any optimizer are made from the registry (`algorithms()`): every option of every
// optimizer, with the message built from the rule the core states, so that an optimizer added to
// the core is covered here without being named.
import test from 'ava'

import * as fastoptim from '../lib'
import {
  Adagrad,
  Adam,
  Adamax,
  AdamW,
  NAdam,
  RAdam,
  RMSprop,
  SGD,
  type FloatArray,
  type Optimizer,
  type Parameter,
} from '../lib'
import { sparseGrad } from './helpers/sparse'

type AnyOptimizer = Optimizer<object>
type Ctor = new (params: never, options?: never) => AnyOptimizer

interface World {
  /** Float32, 8 elements, in group 0 of `stepped`. */
  a: Parameter
  /** Float32, 5 elements, in group 1 of `stepped`. */
  b: Parameter
  /** Every array made for the row, so that the row can check none of them changed. */
  arrays: FloatArray[]
  /** A Float32 parameter of `n` elements (data 1, grad 0.5), tracked. */
  param(n: number, dtype?: 'float32' | 'float64'): Parameter
  track<T extends FloatArray>(array: T): T
}

interface Row {
  name: string
  /** An optimizer made before the snapshot (usually one that has stepped). */
  prepare?: (w: World) => AnyOptimizer
  /** A change to the world or the optimizer's live options after the snapshot, before `act`. */
  spoil?: (w: World, opt: AnyOptimizer) => void
  /** The bad call: it must throw. */
  act: (w: World, opt: AnyOptimizer | undefined) => unknown
  error: { instanceOf: ErrorConstructor; code: string | undefined; message: RegExp }
}

function world(): World {
  const arrays: FloatArray[] = []
  const track = <T extends FloatArray>(array: T): T => (arrays.push(array), array)
  const param = (n: number, dtype: 'float32' | 'float64' = 'float32'): Parameter => {
    const Type = dtype === 'float32' ? Float32Array : Float64Array
    return { data: track(new Type(n).fill(1)), grad: track(new Type(n).fill(0.5)) }
  }
  return { a: param(8), b: param(5), arrays, param, track }
}

/** An Adam over a (group 0) and b (group 1, lr 0.01) that has taken one step. */
function stepped(w: World): AnyOptimizer {
  const opt = new Adam([{ params: [w.a] }, { params: [w.b], lr: 1e-2 }])
  opt.step()
  return opt as unknown as AnyOptimizer
}

/** ES2024's resizable ArrayBuffer and growable SharedArrayBuffer (Node 20 has them; the ES2022 lib types do not). */
type Resizable = ArrayBuffer & { resize(byteLength: number): void }
const resizable = (byteLength: number, maxByteLength: number) =>
  new (ArrayBuffer as unknown as new (n: number, o: { maxByteLength: number }) => Resizable)(byteLength, {
    maxByteLength,
  })
const growableShared = (byteLength: number, maxByteLength: number) =>
  new (SharedArrayBuffer as unknown as new (n: number, o: { maxByteLength: number }) => SharedArrayBuffer)(byteLength, {
    maxByteLength,
  })

/** Detaches `array`'s buffer, as posting it to a worker with a transfer list does. */
const transfer = (array: FloatArray) =>
  structuredClone(array.buffer as ArrayBuffer, { transfer: [array.buffer as ArrayBuffer] })

const typeError = (code: string, message: RegExp) => ({ instanceOf: TypeError as ErrorConstructor, code, message })
const argType = (message: RegExp) => typeError('ERR_INVALID_ARG_TYPE', message)
const argValue = (message: RegExp) => typeError('ERR_INVALID_ARG_VALUE', message)
const outOfRange = (message: RegExp) => ({
  instanceOf: RangeError as ErrorConstructor,
  code: 'ERR_OUT_OF_RANGE',
  message,
})
const invalidState = (message: RegExp) => ({ instanceOf: Error, code: 'ERR_INVALID_STATE', message })

/** A row that constructs `Optimizer` over `a` with `options`. */
function option(name: string, Optimizer: Ctor, options: object, error: Row['error']): Row {
  return { name, act: (w) => new Optimizer([w.a] as never, options as never), error }
}

const construction: Row[] = [
  {
    name: 'params undefined',
    act: () => new Adam(undefined as never),
    error: argType(/^params must be an array of parameters or of parameter groups, got undefined$/),
  },
  {
    name: 'params a single parameter, not in an array',
    act: (w) => new Adam(w.a as never),
    error: argType(/^params must be an array .* got Object$/),
  },
  {
    name: 'params a Set',
    act: (w) => new Adam(new Set([w.a]) as never),
    error: argType(/^params must be an array .* got Set$/),
  },
  {
    name: 'a null parameter',
    act: (w) => new Adam([w.a, null as never]),
    error: argType(/^paramGroups\[0\]\.params\[1\] must be an object with data and grad, got null$/),
  },
  {
    name: 'a number as parameter',
    act: () => new Adam([3 as never]),
    error: argType(/^paramGroups\[0\]\.params\[0\] must be an object with data and grad, got a number$/),
  },
  {
    name: 'data missing',
    act: () => new Adam([{ grad: null } as never]),
    error: argType(/^paramGroups\[0\]\.params\[0\]\.data must be a Float32Array or Float64Array, got undefined$/),
  },
  {
    name: 'Uint8Array data',
    act: () => new Adam([{ data: new Uint8Array(4) as never, grad: null }]),
    error: argType(/\.data must be a Float32Array or Float64Array, got Uint8Array$/),
  },
  {
    name: 'DataView data',
    act: () => new Adam([{ data: new DataView(new ArrayBuffer(8)) as never, grad: null }]),
    error: argType(/\.data must be a Float32Array or Float64Array, got DataView$/),
  },
  {
    name: 'plain array data',
    act: () => new Adam([{ data: [1, 2, 3] as never, grad: null }]),
    error: argType(/\.data must be a Float32Array or Float64Array, got Array$/),
  },
  {
    name: 'a Buffer as data',
    act: () => new Adam([{ data: Buffer.alloc(8) as never, grad: null }]),
    error: argType(/\.data must be a Float32Array or Float64Array, got Buffer$/),
  },
  {
    name: 'BigInt64Array data',
    act: () => new Adam([{ data: new BigInt64Array(2) as never, grad: null }]),
    error: argType(/\.data must be a Float32Array or Float64Array, got BigInt64Array$/),
  },
  {
    name: 'Int32Array grad',
    act: (w) => new SGD([{ data: w.track(new Float32Array(2)), grad: new Int32Array(2) as never }]),
    error: argType(
      /^paramGroups\[0\]\.params\[0\]\.grad must be a Float32Array like its data, or null, got Int32Array$/,
    ),
  },
  {
    name: 'plain array grad',
    act: (w) => new Adam([{ data: w.track(new Float64Array(2)), grad: [1, 2] as never }]),
    error: argType(/\.grad must be a Float64Array like its data, or null, got Array$/),
  },
  {
    name: 'DataView grad',
    act: (w) => new Adam([{ data: w.track(new Float32Array(2)), grad: new DataView(new ArrayBuffer(8)) as never }]),
    error: argType(/\.grad must be a Float32Array like its data, or null, got DataView$/),
  },
  {
    name: 'Float32Array grad for Float64Array data',
    act: (w) => new RMSprop([{ data: w.track(new Float64Array(2)), grad: w.track(new Float32Array(2)) as never }]),
    error: argType(/\.grad must be a Float64Array like its data, or null, got Float32Array$/),
  },
  {
    name: 'grad shorter than data',
    act: (w) => new Adagrad([{ data: w.track(new Float32Array(3)), grad: w.track(new Float32Array(2)) }]),
    error: outOfRange(/^paramGroups\[0\]\.params\[0\]\.grad has length 2, expected 3 like its data$/),
  },
  {
    name: 'data whose ArrayBuffer was transferred',
    act: () => {
      const data = new Float32Array(4)
      structuredClone(data.buffer, { transfer: [data.buffer] })
      return new Adam([{ data, grad: null }])
    },
    error: invalidState(/^paramGroups\[0\]\.params\[0\]\.data is detached \(its ArrayBuffer was transferred\)$/),
  },
  {
    name: 'grad whose ArrayBuffer was transferred',
    act: (w) => {
      const grad = new Float32Array(8)
      structuredClone(grad.buffer, { transfer: [grad.buffer] })
      return new Adam([{ data: w.a.data, grad }])
    },
    error: invalidState(/^paramGroups\[0\]\.params\[0\]\.grad is detached/),
  },
  {
    name: 'a parameter in two groups',
    act: (w) => new Adam([{ params: [w.a, w.b] }, { params: [w.b] }]),
    error: argValue(
      /^paramGroups\[1\]\.params\[0\] appears more than once; every parameter must be in exactly one group, once$/,
    ),
  },
  {
    name: 'one data array in two parameters',
    act: (w) => new Adam([w.a, { data: w.a.data, grad: null }]),
    error: argValue(/^paramGroups\[0\]\.params\[1\] appears more than once/),
  },
  {
    name: 'two parameters overlapping in one ArrayBuffer',
    act: (w) => {
      const buffer = new ArrayBuffer(40)
      return new Adam([
        w.a,
        { data: w.track(new Float32Array(buffer, 0, 6)), grad: null },
        { data: w.track(new Float32Array(buffer, 16, 6)), grad: null },
      ])
    },
    error: argValue(
      /^paramGroups\[0\]\.params\[1\]\.data and paramGroups\[0\]\.params\[2\]\.data share memory; a parameter's data must not overlap any other array of the step$/,
    ),
  },
  {
    name: 'data and grad the same array',
    act: (w) => new SGD([{ data: w.a.data, grad: w.a.data }]),
    error: argValue(/^paramGroups\[0\]\.params\[0\]\.data and paramGroups\[0\]\.params\[0\]\.grad share memory/),
  },
  {
    name: 'a grad overlapping another parameter’s data, across groups',
    act: (w) => new Adam([{ params: [w.a] }, { params: [{ data: w.b.data, grad: w.a.data.subarray(3, 8) }] }]),
    error: argValue(/^paramGroups\[0\]\.params\[0\]\.data and paramGroups\[1\]\.params\[0\]\.grad share memory/),
  },
  {
    name: 'group params not an array',
    act: () => new Adam([{ params: 5 as never }]),
    error: argType(/^paramGroups\[0\]\.params must be an array of parameters, got a number$/),
  },
]

const options: Row[] = [
  {
    name: 'options null',
    act: (w) => new Adam([w.a], null as never),
    error: argType(/^options must be an object, got null$/),
  },
  {
    name: 'options an array',
    act: (w) => new Adam([w.a], [0.1] as never),
    error: argType(/^options must be an object, got Array$/),
  },
  {
    name: 'options a number',
    act: (w) => new SGD([w.a], 0.1 as never),
    error: argType(/^options must be an object, got a number$/),
  },
  option(
    'unknown option learningRate',
    Adam,
    { learningRate: 0.1 },
    argValue(
      /^options\.learningRate is not an option of Adam \(expected one of lr, betas, eps, weightDecay, amsgrad, maximize, decoupledWeightDecay\)$/,
    ),
  ),
  option('params among the options', SGD, { params: [] }, argValue(/^options\.params is not an option of SGD/)),
  {
    name: 'Adam’s betas in an SGD group',
    act: (w) => new SGD([{ params: [w.a], betas: [0.9, 0.99] }] as never),
    error: argValue(/^paramGroups\[0\]\.betas is not an option of SGD/),
  },
  option('lr NaN', Adam, { lr: NaN }, outOfRange(/^invalid lr: NaN \(expected a finite lr >= 0\) in options$/)),
  option(
    'lr -Infinity',
    AdamW,
    { lr: -Infinity },
    outOfRange(/^invalid lr: -Infinity \(expected a finite lr >= 0\) in options$/),
  ),
  option('lr 1e309 (Infinity)', SGD, { lr: 1e309 }, outOfRange(/^invalid lr: Infinity/)),
  option('lr a bigint', Adam, { lr: 1n }, argType(/^options\.lr must be a number, got a bigint$/)),
  option('lr a Number object', Adam, { lr: new Number(0.1) }, argType(/^options\.lr must be a number, got Number$/)),
  option('lr a string', RMSprop, { lr: '0.1' }, argType(/^options\.lr must be a number, got a string$/)),
  option(
    'betas a number',
    Adam,
    { betas: 0.9 },
    argType(/^options\.betas must be an array of 2 numbers, got a number$/),
  ),
  option(
    'three betas',
    NAdam,
    { betas: [0.9, 0.99, 0.999] },
    argType(/^options\.betas must be an array of 2 numbers, got Array$/),
  ),
  option(
    'betas[1] negative',
    Adam,
    { betas: [0.9, -0.1] },
    outOfRange(/^invalid betas\[1\]: -0\.1 \(expected 0 <= betas\[1\] < 1\) in options$/),
  ),
  option(
    'betas[0] of 1 in Adamax',
    Adamax,
    { betas: [1, 0.999] },
    outOfRange(/^invalid betas\[0\]: 1 \(expected 0 <= betas\[0\] < 1\)/),
  ),
  option('eps negative', RAdam, { eps: -1e-8 }, outOfRange(/^invalid eps: -1e-8 \(expected a finite eps >= 0\)/)),
  option('weightDecay NaN', SGD, { weightDecay: NaN }, outOfRange(/^invalid weightDecay: NaN/)),
  option('amsgrad a string', Adam, { amsgrad: 'yes' }, argType(/^options\.amsgrad must be a boolean, got a string$/)),
  option('maximize a number', SGD, { maximize: 1 }, argType(/^options\.maximize must be a boolean, got a number$/)),
  option(
    'momentum negative',
    SGD,
    { momentum: -0.1 },
    outOfRange(/^invalid momentum: -0\.1 \(expected a finite momentum >= 0\)/),
  ),
  option(
    'nesterov with dampening',
    SGD,
    { momentum: 0.9, dampening: 0.1, nesterov: true },
    argValue(
      /^nesterov momentum requires momentum > 0 and dampening = 0, got momentum = 0\.9 and dampening = 0\.1 in options$/,
    ),
  ),
  option(
    'nesterov without momentum',
    SGD,
    { nesterov: true },
    argValue(/requires momentum > 0 and dampening = 0, got momentum = 0 and dampening = 0/),
  ),
  option(
    'RMSprop alpha negative',
    RMSprop,
    { alpha: -1 },
    outOfRange(/^invalid alpha: -1 \(expected a finite alpha >= 0\)/),
  ),
  option(
    'RMSprop centered a number',
    RMSprop,
    { centered: 1 },
    argType(/^options\.centered must be a boolean, got a number$/),
  ),
  option(
    'Adagrad lrDecay negative',
    Adagrad,
    { lrDecay: -1 },
    outOfRange(/^invalid lrDecay: -1 \(expected a finite lrDecay >= 0\)/),
  ),
  option(
    'Adagrad initialAccumulatorValue negative',
    Adagrad,
    { initialAccumulatorValue: -0.5 },
    outOfRange(/^invalid initialAccumulatorValue: -0\.5/),
  ),
  option('NAdam momentumDecay negative', NAdam, { momentumDecay: -1 }, outOfRange(/^invalid momentumDecay: -1/)),
  option(
    'RAdam decoupledWeightDecay a string',
    RAdam,
    { decoupledWeightDecay: 'yes' },
    argType(/^options\.decoupledWeightDecay must be a boolean, got a string$/),
  ),
  {
    name: 'a group’s eps a string',
    act: (w) => new Adam([{ params: [w.a] }, { params: [w.b], eps: '1e-8' as never }]),
    error: argType(/^paramGroups\[1\]\.eps must be a number, got a string$/),
  },
]

// Every option of every optimizer of the registry: a value of the wrong type, NaN, and a value
// past each bound its rule states (and ±Infinity where it says finite), refused when the optimizer
// is made, and NaN or the wrong type refused at a step, after the optimizer has stepped, by a group
// whose other options are valid. The messages are built from the registry's `expected`, which is
// how the core words the rule; a rule this table cannot read fails below rather than go untested.

type Info = fastoptim.AlgorithmInfo
type OptionInfo = Info['options'][number]

const classes = fastoptim as unknown as Record<string, Ctor | undefined>

/** The exported class of a registry entry; a missing one fails the rows that need it. */
function classOf(info: Info): Ctor {
  const Class = classes[info.name]
  if (!Class) throw new Error(`the registry lists ${info.name}, but fastoptim exports no such class`)
  return Class
}

/** `betas[1]` → key `betas`, index 1; `lr` → key `lr`. */
function slotOf(option: OptionInfo): { key: string; index: number | undefined } {
  const [, key, index] = /^(\w+)(?:\[(\d+)\])?$/.exec(option.name)!
  return { key, index: index === undefined ? undefined : Number(index) }
}

/** `{ [key]: value }`, or for a tuple element the default tuple with that element replaced. */
function withValue(Class: Ctor, option: OptionInfo, value: unknown): Record<string, unknown> {
  const { key, index } = slotOf(option)
  if (index === undefined) return { [key]: value }
  const tuple = [...((Class as unknown as { defaults: Record<string, unknown[]> }).defaults[key] ?? [])]
  tuple[index] = value
  return { [key]: tuple }
}

const escape = (text: string) => text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')

/**
 * The values just outside a numeric rule, read from its text: `a finite x >= 0`, `a finite x > 0`,
 * `a finite x <= 0`, `a finite x`, `0 <= x < 1`, `0 <= x <= 1` (each maybe after `null or `), `a
 * whole number 0 <= x < n`.
 * Undefined: a rule this table does not know how to read.
 */
function outside(option: OptionInfo): number[] | undefined {
  const rule = option.expected.replace(/^null or /, '')
  const name = escape(option.name)
  const number = '(-?\\d+(?:\\.\\d+)?(?:e-?\\d+)?)'
  const finite = rule.startsWith('a finite ')
  const below = (op: string, x: number) => (op === '>=' ? x - 1 : x)
  const above = (op: string, x: number) => (op === '<=' ? x + 1 : x)
  let values: number[]
  let upper = false
  let m: RegExpExecArray | null
  // A count: below 0, at the bound, between whole numbers, and infinite.
  if ((m = new RegExp(`^a whole number 0 <= ${name} < (\\d+)$`).exec(rule))) return [-1, Number(m[1]), 0.5, Infinity]
  if (new RegExp(`^a finite ${name}$`).test(rule)) values = []
  else if ((m = new RegExp(`^a finite ${name} (>=|>) ${number}$`).exec(rule))) values = [below(m[1], Number(m[2]))]
  else if ((m = new RegExp(`^a finite ${name} (<=|<) ${number}$`).exec(rule)))
    ((values = [above(m[1], Number(m[2]))]), (upper = true))
  else if ((m = new RegExp(`^${number} (<=|<) ${name} (<=|<) ${number}$`).exec(rule))) {
    values = [below(m[2] === '<=' ? '>=' : '>', Number(m[1])), above(m[3], Number(m[4]))]
    upper = true
  } else return undefined
  // ±Infinity is past a bound already where the rule has bounds on both sides.
  if (finite) values.push(upper ? -Infinity : Infinity)
  return values
}

/** Bad values of one option, each with the error it gives where the group is `where`. */
function badValues(option: OptionInfo, where: string): Array<{ what: string; value: unknown; error: Row['error'] }> {
  const invalid = (value: number) =>
    outOfRange(
      new RegExp(
        `^invalid ${escape(option.name)}: ${escape(String(value))} \\(expected ${escape(option.expected)}\\) in ${escape(where)}$`,
      ),
    )
  const typeOf = (type: string, got: string) =>
    argType(new RegExp(`^${escape(`${where}.${option.name} must be ${type}, got ${got}`)}$`))
  // The first value is of the wrong type; NaN follows, then the values past the rule's bounds.
  switch (option.kind) {
    case 'boolean':
      return [
        { what: 'a number', value: 1, error: typeOf('a boolean', 'a number') },
        { what: 'NaN', value: NaN, error: typeOf('a boolean', 'a number') },
      ]
    case 'choice?': {
      const names = option.choices.map((name) => JSON.stringify(name)).join(', ')
      const unknown = `invalid ${option.name}: "none" (expected ${option.expected}) in ${where}`
      return [
        { what: 'a number', value: 1, error: typeOf(`one of ${names} or null`, 'a number') },
        { what: 'an unknown name', value: 'none', error: argValue(new RegExp(`^${escape(unknown)}$`)) },
      ]
    }
    case 'number':
    case 'number?': {
      const type = option.kind === 'number' ? 'a number' : 'a number or null'
      return [
        { what: 'a string', value: '0.5', error: typeOf(type, 'a string') },
        // null is PyTorch's None only where the option may be None; elsewhere it is not a number.
        ...(option.kind === 'number' ? [{ what: 'null', value: null, error: typeOf(type, 'null') }] : []),
        { what: 'NaN', value: NaN, error: invalid(NaN) },
        ...(outside(option) ?? []).map((value) => ({ what: String(value), value, error: invalid(value) })),
      ]
    }
    default:
      throw new Error(`unknown option kind ${option.kind}`)
  }
}

/** `p`, as a matrix of `rows` rows for an optimizer of matrices only (Muon), else as it is. */
const shapedFor = (info: Info, p: Parameter, rows: number): Parameter =>
  info.matrices ? { ...p, shape: [rows, p.data.length / rows] } : p

/**
 * `info`'s class over a (as a [2, 4] matrix, so that an optimizer that treats matrices apart has
 * state of both kinds) in group 0 and b in group 1 (lr 0.01; a [1, 5] matrix for an optimizer of
 * matrices only), stepped once; an optimizer of sparse gradients gets a's and b's gradients as
 * sparse ones.
 */
function steppedWith(info: Info, w: World): AnyOptimizer {
  const [Class, sparse] = [classOf(info), info.sparse]
  const a = { ...w.a, shape: [2, 4], ...(sparse && { grad: sparseGrad(w.a.grad!, [2, 4]) }) }
  const b = sparse ? { ...w.b, grad: sparseGrad(w.b.grad!) } : shapedFor(info, w.b, 1)
  const opt = new Class([{ params: [a] }, { params: [b], lr: 1e-2 }] as never)
  // An optimizer with a training mode (schedule-free ones start in eval mode) steps in it.
  ;(opt as { train?: () => void }).train?.()
  opt.step()
  return opt
}

const everyOption: Row[] = fastoptim.algorithms().flatMap((info) =>
  info.options.flatMap((option) => {
    const made = badValues(option, 'options').map(({ what, value, error }): Row => ({
      name: `${info.name} option ${option.name} ${what}`,
      act: (w) =>
        new (classOf(info))([shapedFor(info, w.a, 2)] as never, withValue(classOf(info), option, value) as never),
      error,
    }))
    const atStep = badValues(option, 'paramGroups[1]')
      .filter(({ what }, i) => i === 0 || what === 'NaN')
      .map(({ what, value, error }): Row => ({
        name: `${info.name} live ${option.name} set to ${what} before a step`,
        prepare: (w) => steppedWith(info, w),
        spoil: (_w, opt) => Object.assign(group(opt, 1), withValue(classOf(info), option, value)),
        act: (_w, opt) => opt!.step(),
        error,
      }))
    return [...made, ...atStep]
  }),
)

test('the rule of every option of the registry is one the option rows can read', (t) => {
  for (const info of fastoptim.algorithms()) {
    for (const option of info.options) {
      if (option.kind === 'boolean') t.is(option.expected, 'true or false', `${info.name}.${option.name}`)
      else if (option.kind === 'choice?') t.regex(option.expected, /^null or one of "/, `${info.name}.${option.name}`)
      else
        t.not(
          outside(option),
          undefined,
          `${info.name}.${option.name}: rule "${option.expected}" is not one the option rows know; teach outside() to read it`,
        )
    }
  }
})

/** A row that changes something on `stepped`'s world, then steps. */
function atStep(name: string, spoil: (w: World, opt: AnyOptimizer) => void, error: Row['error']): Row {
  return { name, prepare: stepped, spoil, act: (_w, opt) => opt!.step(), error }
}
const group = (opt: AnyOptimizer, g: number) => opt.paramGroups[g] as unknown as Record<string, unknown>

const steps: Row[] = [
  atStep(
    'a live lr set to undefined',
    (_w, opt) => (group(opt, 0).lr = undefined),
    argType(/^paramGroups\[0\]\.lr must be a number, got undefined$/),
  ),
  atStep(
    'a live lr set to NaN',
    (_w, opt) => (group(opt, 1).lr = NaN),
    outOfRange(/^invalid lr: NaN \(expected a finite lr >= 0\) in paramGroups\[1\]$/),
  ),
  atStep(
    'live betas replaced by one number',
    (_w, opt) => (group(opt, 0).betas = [0.9]),
    argType(/^paramGroups\[0\]\.betas must be an array of 2 numbers, got Array$/),
  ),
  atStep(
    'a live weightDecay set negative',
    (_w, opt) => (group(opt, 1).weightDecay = -1),
    outOfRange(/^invalid weightDecay: -1 .* in paramGroups\[1\]$/),
  ),
  atStep(
    'data replaced by a Uint8Array',
    (w) => (w.b.data = new Uint8Array(5) as never),
    argType(/^paramGroups\[1\]\.params\[0\]\.data must be a Float32Array or Float64Array, got Uint8Array$/),
  ),
  atStep(
    'grad replaced by a DataView',
    (w) => (w.a.grad = new DataView(new ArrayBuffer(32)) as never),
    argType(/^paramGroups\[0\]\.params\[0\]\.grad must be a Float32Array like its data, or null, got DataView$/),
  ),
  atStep(
    'grad replaced by a plain array',
    (w) => (w.b.grad = [1, 2, 3, 4, 5] as never),
    argType(/^paramGroups\[1\]\.params\[0\]\.grad must be a Float32Array like its data, or null, got Array$/),
  ),
  atStep(
    'data replaced by a view into another parameter’s grad',
    (w) => (w.b.data = w.a.grad!.subarray(0, 5)),
    argValue(/^paramGroups\[0\]\.params\[0\]\.grad and paramGroups\[1\]\.params\[0\]\.data share memory/),
  ),
  atStep(
    'grad replaced by a view overlapping its own data',
    (w) => {
      const shared = w.track(new Float32Array(9))
      w.b.data = shared.subarray(0, 5)
      w.b.grad = shared.subarray(4, 9)
    },
    argValue(/^paramGroups\[1\]\.params\[0\]\.data and paramGroups\[1\]\.params\[0\]\.grad share memory/),
  ),
  atStep(
    'data whose buffer was transferred',
    (w) => transfer(w.a.data),
    invalidState(/^paramGroups\[0\]\.params\[0\]\.data is detached \(its ArrayBuffer was transferred\)$/),
  ),
  atStep(
    'data of another length than its state',
    (w) => ((w.b.data = w.track(new Float32Array(4))), (w.b.grad = w.track(new Float32Array(4)))),
    outOfRange(/^paramGroups\[1\]\.params\[0\]\.data has length 4, but its optimizer state has length 5$/),
  ),
  atStep(
    'Float64 data after Float32 steps',
    (w) => ((w.a.data = w.track(new Float64Array(8))), (w.a.grad = w.track(new Float64Array(8)))),
    argType(/^paramGroups\[0\]\.params\[0\]\.data is a Float64Array, but its optimizer state is float32$/),
  ),
  atStep(
    'a length-tracking view whose resizable buffer shrank',
    (w) => {
      const buffer = resizable(20, 64)
      w.b.data = new Float32Array(buffer)
      buffer.resize(16)
      w.b.grad = w.track(new Float32Array(4))
    },
    outOfRange(/^paramGroups\[1\]\.params\[0\]\.data has length 4, but its optimizer state has length 5$/),
  ),
  atStep(
    'a data getter that throws',
    (w) =>
      Object.defineProperty(w.b, 'data', {
        get() {
          throw new SyntaxError('thrown by the data getter')
        },
      }),
    { instanceOf: SyntaxError as ErrorConstructor, code: undefined, message: /^thrown by the data getter$/ },
  ),
  atStep(
    'a grad getter that transfers an array read before it',
    (w) => {
      const grad = w.b.grad
      Object.defineProperty(w.b, 'grad', {
        get() {
          transfer(w.a.data)
          return grad
        },
      })
    },
    invalidState(/detached/),
  ),
]

const methods: Row[] = [
  {
    name: 'zeroGrad with a string',
    prepare: stepped,
    act: (_w, opt) => opt!.zeroGrad('no' as never),
    error: argType(/^zeroGrad: setToNone must be a boolean, got a string$/),
  },
  {
    name: 'getState of a parameter of no group',
    prepare: stepped,
    act: (w, opt) => opt!.getState(w.param(3)),
    error: argValue(/^getState: the parameter does not belong to this optimizer$/),
  },
  {
    name: 'addParamGroup(null)',
    prepare: stepped,
    act: (_w, opt) => opt!.addParamGroup(null as never),
    error: argType(/^paramGroups\[2\] must be an object, got null$/),
  },
  {
    name: 'addParamGroup with a parameter it has',
    prepare: stepped,
    act: (w, opt) => opt!.addParamGroup({ params: [w.param(2), w.b] }),
    error: argValue(/^paramGroups\[2\]\.params\[1\] appears more than once/),
  },
  {
    name: 'addParamGroup with lr -2',
    prepare: stepped,
    act: (w, opt) => opt!.addParamGroup({ params: [w.param(2)], lr: -2 } as never),
    error: outOfRange(/^invalid lr: -2 \(expected a finite lr >= 0\) in paramGroups\[2\]$/),
  },
  {
    name: 'addParamGroup with data overlapping a parameter it has',
    prepare: stepped,
    act: (w, opt) => opt!.addParamGroup({ params: [{ data: w.a.data.subarray(6), grad: null }] }),
    error: argValue(/^paramGroups\[0\]\.params\[0\]\.data and paramGroups\[2\]\.params\[0\]\.data share memory/),
  },
]

/** A row that loads `stepped`'s own state dict after `change` spoils it (or replaces it, when it returns one). */
function load(
  name: string,
  change: (sd: Record<string, any>) => void | { replace: unknown },
  error: Row['error'],
): Row {
  return {
    name,
    prepare: stepped,
    act: (_w, opt) => {
      const sd = opt!.stateDict() as unknown as Record<string, any>
      const replaced = change(sd)
      opt!.loadStateDict((replaced ? replaced.replace : sd) as never)
    },
    error,
  }
}

const loading: Row[] = [
  load('null', () => ({ replace: null }), argType(/^stateDict must be an object, got null$/)),
  load(
    'paramGroups an object',
    (sd) => ({ replace: { state: sd.state, paramGroups: {} } }),
    argType(/^stateDict\.paramGroups must be an array, got Object$/),
  ),
  load(
    'one group for two',
    (sd) => {
      sd.paramGroups.pop()
    },
    argValue(/^stateDict\.paramGroups has 1 groups, but the optimizer has 2$/),
  ),
  load(
    'a group without eps',
    (sd) => {
      delete sd.paramGroups[1].eps
    },
    argValue(/^stateDict\.paramGroups\[1\]\.eps is missing$/),
  ),
  load(
    'a group with lr -1',
    (sd) => {
      sd.paramGroups[0].lr = -1
    },
    outOfRange(/^invalid lr: -1 \(expected a finite lr >= 0\) in stateDict\.paramGroups\[0\]$/),
  ),
  load(
    'a group that lists two parameters for one',
    (sd) => {
      sd.paramGroups[1].params = [1, 2]
    },
    argValue(/^stateDict\.paramGroups\[1\]\.params must list 1 parameters like the optimizer's group, got Array of 2$/),
  ),
  load(
    'one id in two groups',
    (sd) => {
      sd.paramGroups[1].params = [0]
    },
    argValue(/^stateDict\.paramGroups\[1\]\.params\[0\] must be a distinct whole number, got 0$/),
  ),
  load(
    'state of a parameter no group lists',
    (sd) => {
      sd.state[7] = sd.state[0]
    },
    argValue(/^stateDict\.state\[7\] is for a parameter no group lists$/),
  ),
  load(
    'a state entry that is a number',
    (sd) => {
      sd.state[1] = 5
    },
    argType(/^stateDict\.state\[1\] must be an object, got a number$/),
  ),
  load(
    'state of SGD’s kind',
    (sd) => {
      sd.state[0].momentumBuffer = sd.state[0].expAvg
    },
    argValue(
      /^stateDict\.state\[0\]\.momentumBuffer is not state of Adam \(expected step, expAvg, expAvgSq, maxExpAvgSq\)$/,
    ),
  ),
  load(
    'step a string',
    (sd) => {
      sd.state[0].step = '1'
    },
    argType(/^stateDict\.state\[0\]\.step must be a number, got a string$/),
  ),
  load(
    'step 1.5',
    (sd) => {
      sd.state[1].step = 1.5
    },
    outOfRange(/^invalid state\[1\]\.step: 1\.5 \(expected a whole number from 0 to 2\^53 - 1\)$/),
  ),
  load(
    'step 2^60',
    (sd) => {
      sd.state[0].step = 2 ** 60
    },
    outOfRange(/^invalid state\[0\]\.step: 1152921504606847000 \(expected a whole number from 0 to 2\^53 - 1\)$/),
  ),
  load(
    'step negative',
    (sd) => {
      sd.state[0].step = -1
    },
    outOfRange(/^invalid state\[0\]\.step: -1 \(expected a whole number/),
  ),
  load(
    'expAvg of another length',
    (sd) => {
      sd.state[1].expAvg = new Float32Array(4)
    },
    outOfRange(/^stateDict\.state\[1\]\.expAvg has length 4, expected 5 like the parameter's data$/),
  ),
  load(
    'expAvgSq a Float64Array for Float32 data',
    (sd) => {
      sd.state[0].expAvgSq = new Float64Array(8)
    },
    argType(/^stateDict\.state\[0\]\.expAvgSq must be a Float32Array like the parameter's data, got Float64Array$/),
  ),
  load(
    'expAvg a plain array',
    (sd) => {
      sd.state[0].expAvg = Array.from(sd.state[0].expAvg)
    },
    argType(/^stateDict\.state\[0\]\.expAvg must be a Float32Array like the parameter's data, got Array$/),
  ),
]

/** False once an array's buffer was transferred away (reading it then throws). */
function isReadable(array: FloatArray): boolean {
  try {
    array.at(0)
    return true
  } catch {
    return false
  }
}

/** The contents of every array (`null` once detached or shrunk away) and of the optimizer. */
function snapshot(w: World, opt: AnyOptimizer | undefined, arrays: FloatArray[]) {
  return {
    arrays: arrays.map((x) => (isReadable(x) ? Array.from(x) : null)),
    state:
      opt &&
      opt.paramGroups
        .flatMap((g) => g.params)
        .map((p) => {
          const state = opt.getState(p)
          return (
            state &&
            Object.fromEntries(Object.entries(state).map(([k, v]) => [k, typeof v === 'number' ? v : Array.from(v)]))
          )
        }),
    options: opt && JSON.stringify(opt.paramGroups.map((g) => ({ ...g, params: g.params.length }))),
    groups: opt?.paramGroups.length,
  }
}

const rows = [...construction, ...options, ...everyOption, ...steps, ...methods, ...loading]

test('the table has a row for every kind of bad input', (t) => {
  t.true(rows.length >= 40, `${rows.length} rows`)
  t.is(new Set(rows.map((r) => r.name)).size, rows.length, 'row names are distinct')
})

for (const row of rows) {
  test(`refused: ${row.name}`, (t) => {
    const w = world()
    const opt = row.prepare?.(w)
    const arrays = [...w.arrays]
    const before = snapshot(w, opt, arrays)
    if (row.spoil) {
      row.spoil(w, opt!)
      before.options = snapshot(w, opt, []).options
    }
    const error = t.throws(() => row.act(w, opt), { instanceOf: row.error.instanceOf, message: row.error.message })
    t.is((error as Error & { code?: string }).code, row.error.code)
    // Arrays the row detached cannot be read any more; every other one must be as it was.
    const after = snapshot(w, opt, arrays)
    const gone = after.arrays.map((x) => x === null)
    t.deepEqual(
      after.arrays.map((x, i) => (gone[i] ? null : x)),
      before.arrays.map((x, i) => (gone[i] ? null : x)),
      'no array changed',
    )
    t.deepEqual(after.state, before.state, 'no optimizer state changed')
    t.is(after.options, before.options, 'no option changed')
    t.is(after.groups, before.groups, 'no group was added')
  })
}

// What PyTorch accepts works, with the numbers it gives.

/** Adam's first step on an element whose grad is g, with ε = 1e-8: −γ·g/(|g| + ε). */
const adamFirstStep = (lr: number, g: number) => (-lr * g) / (Math.abs(g) + 1e-8)

test('works: a null grad skips its parameter (no state), the others step', (t) => {
  const a = { data: Float64Array.of(1, 2), grad: Float64Array.of(0.5, -0.25) }
  const skipped = { data: Float64Array.of(3), grad: null }
  const opt = new Adam([a, skipped], { lr: 0.1 })
  opt.step()
  t.deepEqual(Array.from(skipped.data), [3])
  t.is(opt.getState(skipped), undefined)
  t.deepEqual(Array.from(a.data), [1 + adamFirstStep(0.1, 0.5), 2 + adamFirstStep(0.1, -0.25)])
})

test('works: a zero-length parameter steps (its step count advances) beside others', (t) => {
  const empty = { data: new Float32Array(0), grad: new Float32Array(0) }
  const a = { data: Float32Array.of(1), grad: Float32Array.of(2) }
  const opt = new Adam([empty, a], { lr: 0.5 })
  opt.step()
  opt.step()
  t.deepEqual(opt.getState(empty), { step: 2, expAvg: new Float32Array(0), expAvgSq: new Float32Array(0) })
  // Two Adam steps with a constant grad each move by γ (up to ε): 1 − 2·0.5.
  t.true(Math.abs(a.data[0] - 0) < 1e-6)
})

test('works: a group with no parameters, as PyTorch allows', (t) => {
  const a = { data: Float32Array.of(1), grad: Float32Array.of(1) }
  const opt = new SGD([{ params: [] }, { params: [a], lr: 0.25 }])
  opt.step()
  t.deepEqual(Array.from(a.data), [0.75])
})

test('works: grads shared between parameters (they are only read)', (t) => {
  const grad = Float64Array.of(0.5, 1)
  const a = { data: Float64Array.of(1, 1), grad }
  const b = { data: Float64Array.of(2, 2), grad }
  new SGD([a, b], { lr: 0.5 }).step()
  t.deepEqual([...a.data, ...b.data], [0.75, 0.5, 1.75, 1.5])
})

test('works: data and grad on SharedArrayBuffers, growable ones too, give the numbers ordinary memory gives', (t) => {
  const values = [0.5, -1, 2, 0]
  const on = (buffer: ArrayBufferLike) => {
    const data = new Float32Array(buffer, 0, 4)
    data.set([1, 2, 3, 4])
    return data
  }
  const plain = { data: on(new ArrayBuffer(16)), grad: Float32Array.from(values) }
  const shared = { data: on(new SharedArrayBuffer(16)), grad: new Float32Array(new SharedArrayBuffer(16)) }
  shared.grad.set(values)
  const growable = { data: on(growableShared(16, 64)), grad: Float32Array.from(values) }
  for (const p of [plain, shared, growable]) {
    const opt = new Adam([p], { lr: 0.1, amsgrad: true })
    opt.step()
    opt.step()
  }
  t.deepEqual(Array.from(shared.data), Array.from(plain.data))
  t.deepEqual(Array.from(growable.data), Array.from(plain.data))
  t.notDeepEqual(Array.from(plain.data), [1, 2, 3, 4])
})

test('works: a fixed-length view on a resizable ArrayBuffer, also after the buffer grows', (t) => {
  // Safe to update in place: a non-shared buffer is resized only by JavaScript on its own thread,
  // and none runs between the step's last check of the array and its return.
  const buffer = resizable(8, 64)
  const p = { data: new Float64Array(buffer, 0, 1), grad: Float64Array.of(1) }
  p.data[0] = 1
  const opt = new SGD([p], { lr: 0.25 })
  opt.step()
  buffer.resize(64)
  opt.step()
  t.is(p.data[0], 0.5)
})

test('refused clearly: a fixed-length view whose resizable buffer shrank below it', (t) => {
  const buffer = resizable(16, 64)
  const p = { data: new Float32Array(buffer, 0, 4).fill(1), grad: new Float32Array(4).fill(1) }
  const opt = new SGD([p], { lr: 0.25 })
  opt.step()
  buffer.resize(8)
  // Out of bounds, as the facade refuses such an array wherever it reads one (not a length mismatch).
  t.throws(() => opt.step(), {
    instanceOf: Error,
    code: 'ERR_INVALID_STATE',
    message: 'paramGroups[0].params[0].data is out of bounds (its resizable ArrayBuffer shrank below it)',
  })
  buffer.resize(16)
  // What was left of the array is as the first step made it; the regrown part is zeroed.
  t.deepEqual(Array.from(p.data), [0.75, 0.75, 0, 0], 'the refused step wrote nothing')
})

test('refused clearly after repeated steps over the same arrays: one transferred, shrunk or grown meanwhile', (t) => {
  // From the third step over the same arrays a step skips reading them (it only checks, natively,
  // that each is still attached, where it was and of its length); one that is not is read again,
  // with the errors of a first read, and the step writes nothing.
  const make = () => {
    const buffer = resizable(16, 64)
    const p = { data: Float32Array.of(1, 2), grad: Float32Array.of(0.5, -0.5) }
    const fixed = { data: new Float32Array(buffer, 0, 4).fill(1), grad: new Float32Array(4).fill(0.25) }
    const opt = new Adam([p, fixed], { lr: 0.1 })
    for (let k = 0; k < 3; k++) opt.step()
    return { buffer, p, fixed, opt }
  }
  const steps = (w: ReturnType<typeof make>) => [w.p, w.fixed].map((q) => w.opt.getState(q)!.step)
  {
    const w = make()
    const before = Array.from(w.p.data)
    transfer(w.fixed.data)
    t.throws(() => w.opt.step(), invalidState(/^paramGroups\[0\]\.params\[1\]\.data is detached/))
    t.deepEqual(steps(w), [3, 3], 'transferred: no step counted')
    t.deepEqual(Array.from(w.p.data), before, 'transferred: nothing written')
  }
  {
    const w = make()
    const before = Array.from(w.p.grad)
    transfer(w.p.grad)
    t.throws(() => w.opt.step(), invalidState(/^paramGroups\[0\]\.params\[0\]\.grad is detached/))
    t.deepEqual(steps(w), [3, 3], 'grad transferred: no step counted')
    t.notDeepEqual(Array.from(w.fixed.data), before)
  }
  {
    const w = make()
    const kept = Array.from(w.fixed.data)
    w.buffer.resize(8)
    t.throws(() => w.opt.step(), invalidState(/^paramGroups\[0\]\.params\[1\]\.data is out of bounds/))
    t.deepEqual(steps(w), [3, 3], 'shrunk: no step counted')
    w.buffer.resize(16)
    t.deepEqual(Array.from(w.fixed.data).slice(0, 2), kept.slice(0, 2), 'shrunk: nothing written')
    w.opt.step()
    t.deepEqual(steps(w), [4, 4], 'grown back: it steps again')
  }
  {
    // A length-tracking view grows with its buffer: its gradient no longer matches it.
    const buffer = resizable(8, 64)
    const p = { data: new Float32Array(buffer).fill(1), grad: Float32Array.of(0.5, 0.5) }
    const opt = new Adam([p])
    for (let k = 0; k < 3; k++) opt.step()
    buffer.resize(16)
    t.throws(
      () => opt.step(),
      outOfRange(/^paramGroups\[0\]\.params\[0\]\.grad has length 2, expected 4 like its data$/),
    )
    t.is(opt.getState(p)!.step, 3)
  }
})

test('works: new gradient arrays at every step give the numbers of the same arrays refilled, for every optimizer kind', (t) => {
  // From the third step over the same data arrays, a step that finds only new gradient arrays takes
  // just those; the numbers must be those of a step that reads everything.
  const grads = (step: number, i: number, n: number) =>
    Float32Array.from({ length: n }, (_, j) => Math.sin(0.7 * step + 1.3 * i + 0.11 * j) * (j % 5 === 0 ? 1e-3 : 1))
  for (const [name, make] of [
    ['Adam', (ps: Parameter[]) => new Adam(ps, { lr: 0.01 })],
    ['SGD', (ps: Parameter[]) => new SGD(ps, { lr: 0.01, momentum: 0.9 })],
    ['AdamW', (ps: Parameter[]) => new AdamW([{ params: ps.slice(0, 2) }, { params: ps.slice(2), lr: 0.1 }])],
  ] as const) {
    const lengths = [1, 33, 1000, 7]
    const fresh = lengths.map((n, i) => ({
      data: Float32Array.from({ length: n }, (_, j) => i + j / n),
      grad: grads(0, i, n),
    }))
    const kept = fresh.map((p) => ({ data: Float32Array.from(p.data), grad: Float32Array.from(p.grad) }))
    const a = make(fresh)
    const b = make(kept)
    for (let step = 1; step <= 12; step++) {
      fresh.forEach((p, i) => {
        // Every other step one parameter keeps its gradient array, refilled.
        if (step % 2 === 0 && i === 1) p.grad.set(grads(step, i, p.grad.length))
        else p.grad = grads(step, i, p.grad.length)
      })
      kept.forEach((p, i) => p.grad.set(grads(step, i, p.grad.length)))
      a.step()
      b.step()
    }
    fresh.forEach((p, i) => {
      t.deepEqual(Array.from(p.data), Array.from(kept[i].data), `${name}: params[${i}].data`)
      t.deepEqual(a.getState(p), b.getState(kept[i]), `${name}: params[${i}]'s state`)
    })
  }
})

test('refused clearly after repeated steps: a new gradient that does not fit, or that overlaps a parameter', (t) => {
  const make = () => {
    const p = { data: Float32Array.of(1, 2, 3, 4), grad: Float32Array.of(0.5, -0.5, 0.25, 1) as Float32Array | null }
    const q = { data: Float32Array.of(5, 6), grad: Float32Array.of(0.1, 0.2) as FloatArray | null }
    const opt = new Adam([p, q], { lr: 0.1 })
    for (let k = 0; k < 3; k++) {
      p.grad = Float32Array.from(p.grad!)
      opt.step()
    }
    return { p, q, opt }
  }
  const cases: Array<[string, (w: ReturnType<typeof make>) => void, object]> = [
    [
      'shorter',
      (w) => (w.q.grad = Float32Array.of(1)),
      outOfRange(/^paramGroups\[0\]\.params\[1\]\.grad has length 1, expected 2 like its data$/),
    ],
    [
      'of another type',
      (w) => (w.q.grad = Float64Array.of(1, 2)),
      argType(/^paramGroups\[0\]\.params\[1\]\.grad must be a Float32Array like its data, got Float64Array$/),
    ],
    [
      'detached',
      (w) => {
        w.q.grad = Float32Array.of(1, 2)
        transfer(w.q.grad)
      },
      invalidState(/^paramGroups\[0\]\.params\[1\]\.grad is detached/),
    ],
    [
      'a view of the other parameter',
      (w) => (w.q.grad = w.p.data.subarray(1, 3)),
      argValue(/^paramGroups\[0\]\.params\[0\]\.data and paramGroups\[0\]\.params\[1\]\.grad share memory/),
    ],
    [
      'a view of its own data',
      (w) => (w.q.grad = w.q.data.subarray(0, 2)),
      argValue(
        /^paramGroups\[0\]\.params\[1\]\.(data|grad) and paramGroups\[0\]\.params\[1\]\.(data|grad) share memory/,
      ),
    ],
    [
      'not an array',
      (w) => (w.q.grad = { length: 2 } as never),
      argType(/^paramGroups\[0\]\.params\[1\]\.grad must be/),
    ],
  ]
  for (const [what, act, error] of cases) {
    const w = make()
    const before = [Array.from(w.p.data), Array.from(w.q.data)]
    w.p.grad = Float32Array.of(1, 1, 1, 1)
    act(w)
    t.throws(() => w.opt.step(), error as never, what)
    t.deepEqual([Array.from(w.p.data), Array.from(w.q.data)], before, `${what}: nothing written`)
    t.deepEqual([w.opt.getState(w.p)!.step, w.opt.getState(w.q)!.step], [3, 3], `${what}: no step counted`)
  }
  // A gradient gone (null) skips its parameter, as in any step; one back again steps it.
  const w = make()
  w.q.grad = null
  w.p.grad = Float32Array.of(1, 1, 1, 1)
  w.opt.step()
  t.deepEqual([w.opt.getState(w.p)!.step, w.opt.getState(w.q)!.step], [4, 3])
  w.q.grad = Float32Array.of(1, 1)
  w.p.grad = Float32Array.of(1, 1, 1, 1)
  w.opt.step()
  t.deepEqual([w.opt.getState(w.p)!.step, w.opt.getState(w.q)!.step], [5, 4])
})

test('works: a 2^27-element Float32Array (512 MiB) steps like a short one', (t) => {
  const n = 2 ** 27
  const big = { data: new Float32Array(n).fill(1), grad: new Float32Array(n).fill(0.5) }
  big.grad[n - 1] = -2
  const small = { data: Float32Array.of(1, 1), grad: Float32Array.of(0.5, -2) }
  new Adam([big], { lr: 0.1 }).step()
  new Adam([small], { lr: 0.1 }).step()
  t.is(big.data[0], small.data[0])
  t.is(big.data[n >> 1], small.data[0])
  t.is(big.data[n - 1], small.data[1])
  t.not(small.data[0], 1)
})

// Calls while a stepAsync() is in flight are refused (stepAsync is newer than this table: the rows
// run where the class has it). The arrays are on SharedArrayBuffers, so the step runs on another
// thread and is still in flight when stepAsync() returns its promise.
const busy: Array<[string, (opt: AnyOptimizer, w: World) => unknown]> = [
  ['step()', (opt) => opt.step()],
  ['zeroGrad()', (opt) => opt.zeroGrad()],
  ['addParamGroup()', (opt, w) => opt.addParamGroup({ params: [w.param(2)] })],
  ['getState()', (opt, w) => opt.getState(w.a)],
  ['stateDict()', (opt) => opt.stateDict()],
  ['loadStateDict()', (opt) => opt.loadStateDict({ state: {}, paramGroups: [] } as never)],
]

function sharedWorld(): World {
  const w = world()
  for (const p of [w.a, w.b]) {
    for (const key of ['data', 'grad'] as const) {
      const shared = new Float32Array(new SharedArrayBuffer(p[key]!.byteLength))
      shared.set(p[key]!)
      p[key] = w.track(shared)
    }
  }
  return w
}

for (const [what, call] of busy) {
  test(`refused while stepAsync() is in flight: ${what}`, async (t) => {
    const w = sharedWorld()
    const opt = stepped(w)
    const stepAsync = (opt as unknown as { stepAsync?: () => Promise<void> }).stepAsync
    if (typeof stepAsync !== 'function') {
      t.pass('this build has no stepAsync()')
      return
    }
    const pending = stepAsync.call(opt)
    const error = t.throws(() => call(opt, w), {
      instanceOf: Error,
      message: new RegExp(`^${what.replace(/[()]/g, '\\$&')} was called while stepAsync\\(\\) is in flight`),
    })
    t.is((error as Error & { code?: string }).code, 'ERR_INVALID_STATE')
    await pending
    // The step in flight counted once, and the refused call changed nothing.
    const twin = sharedWorld()
    const sync = stepped(twin)
    sync.step()
    t.deepEqual(Array.from(w.a.data), Array.from(twin.a.data))
    t.deepEqual(opt.getState(w.b), sync.getState(twin.b))
    t.is(opt.paramGroups.length, 2)
  })
}
