// Writes lib/optimizers.ts, the facade's optimizer classes and their option types, from the native
// registry (`algorithms()`: each optimizer's options with their defaults, rules and one-line docs),
// which the Rust core declares once per optimizer. `npm run generate` rewrites it; a test checks
// that the committed file is what this generates, so the JSDoc `@default`s cannot drift.
import { readdirSync, readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'

import { format, resolveConfig } from 'prettier'

import { algorithms, Optimizer, Schema, type AlgorithmInfo, type GradKind, type Parameter } from '../lib/optimizer'

export const OUTPUT = join(__dirname, '..', 'lib', 'optimizers.ts')

/**
 * The optimizers whose class another file of lib/ declares (`export class <Name>`), by name, with
 * that file: classes with methods of their own (lib/schedule-free.ts). Only their options
 * interface is generated here, so that the two classes do not clash.
 */
export function ownFacades(): Map<string, string> {
  const lib = join(__dirname, '..', 'lib')
  const owners = new Map<string, string>()
  for (const file of readdirSync(lib).filter((f) => f.endsWith('.ts') && join(lib, f) !== OUTPUT)) {
    const text = readFileSync(join(lib, file), 'utf8')
    for (const [, name] of text.matchAll(/^export class (\w+)/gm)) owners.set(name, file)
  }
  return owners
}

type OptionInfo = AlgorithmInfo['options'][number]

/** A default as TypeScript writes it (NaN packs null, an index a choice). */
function literal({ kind, default: value, choices }: OptionInfo): string {
  if (kind === 'boolean') return String(value !== 0)
  if ((kind === 'number?' || kind === 'choice?') && Number.isNaN(value)) return 'null'
  if (kind === 'choice?') return JSON.stringify(choices[value])
  return String(value)
}

/** The option's TypeScript type: a choice is the union of its names. */
function typeOf({ kind, choices }: OptionInfo): string {
  if (kind === 'choice?') return [...choices.map((name) => `'${name}'`), 'null'].join(' | ')
  return kind === 'boolean' ? 'boolean' : kind === 'number?' ? 'number | null' : 'number'
}

/** One interface member per option: tuple elements (`betas[0]`, `betas[1]`) make one tuple member. */
function members(info: AlgorithmInfo): string[] {
  const byKey = new Map<string, AlgorithmInfo['options']>()
  for (const option of info.options) {
    const key = option.name.replace(/\[\d+\]$/, '')
    byKey.set(key, [...(byKey.get(key) ?? []), option])
  }
  return [...byKey].map(([key, options]) => {
    const tuple = options.length > 1 || options[0].name !== key
    const type = tuple ? `[${options.map(typeOf).join(', ')}]` : typeOf(options[0])
    const value = tuple ? `[${options.map(literal).join(', ')}]` : literal(options[0])
    const expected = options.map((o) => o.expected).join('; ')
    return [
      '  /**',
      `   * ${options[0].doc}`,
      `   * Expected: ${expected}.`,
      `   * @default ${value}`,
      '   */',
      `  ${key}: ${type}`,
    ].join('\n')
  })
}

/**
 * The state a parameter always has after a step with the default options, whatever its shape:
 * what stepping a vector and a matrix (two matrices for Muon) leaves in both. The registry's other buffers depend on an
 * option (AMSGrad's maxExpAvgSq, SGD's momentumBuffer) or on the shape (Adafactor's factored
 * rowVar and colVar, or its unfactored variance), so they are optional in the state's type.
 */
function alwaysPresent(info: AlgorithmInfo): Set<string> {
  const schema = new Schema<Record<string, unknown>>(info.name)
  class Probe extends Optimizer<Record<string, unknown>, GradKind> {
    constructor(params: Parameter<GradKind>[]) {
      // Schedule-Free optimizers step only in training mode.
      super(schema, params, 'trainMode' in schema.defaults ? { trainMode: true } : {})
    }
  }
  const param = (shape: number[]): Parameter<GradKind> => {
    const length = shape.reduce((a, b) => a * b, 1)
    const ramp = Float64Array.from({ length }, (_, i) => i + 1)
    return {
      data: new Float64Array(length),
      grad: info.sparse ? { indices: Int32Array.from({ length: shape[0] }, (_, i) => i), values: ramp } : ramp,
      shape,
    }
  }
  // An optimizer of matrices only (Muon) is probed on two matrices.
  const params = info.matrices ? [param([3, 2]), param([2, 3])] : [param([6]), param([2, 3])]
  const opt = new Probe(params)
  opt.step()
  const [vector, matrix] = params.map((p) => Object.keys(opt.getState(p) ?? {}))
  return new Set(vector.filter((name) => matrix.includes(name)))
}

/** A parameter's state as a type: the step count, the registry's scalars and its buffers. */
function stateType(info: AlgorithmInfo): string {
  const always = alwaysPresent(info)
  const member = (name: string, type: string) =>
    always.has(name)
      ? `  ${name}: ${type}`
      : `  /** Only with some options or parameter shapes. */\n  ${name}?: ${type}`
  // bfloat16 state (`stateDtype: 'bfloat16'`) comes as Uint16Arrays of raw bits; typed as the
  // default's FloatArray, which code written for float32 state expects.
  const buffer = 'FloatArray'
  const bits = info.bf16State ? "; with `stateDtype: 'bfloat16'`, buffers are Uint16Arrays of bfloat16 bits" : ''
  return `/**
 * ${info.name}'s state of one parameter, as \`getState()\` returns it and \`stateDict().state\` holds
 * it: \`${info.reference}\`'s \`state[p]\` in camelCase (buffers flat, their shapes in \`stateDict().shapes\`)${bits}.
 */
export type ${info.name}State = {
  /** The parameter's step count. */
  step: number
${[...info.scalars.map((name) => member(name, 'number')), ...info.buffers.map(({ name }) => member(name, buffer))].join('\n')}
}
`
}

/**
 * The class's example: a dense parameter, a matrix for an optimizer of matrices only, or for an
 * optimizer of sparse gradients an embedding table.
 */
function example(name: string, sparse: boolean, matrices: boolean): string {
  if (matrices) {
    return ` * const w = { data: new Float32Array(rows * cols), grad: new Float32Array(rows * cols), shape: [rows, cols] }
 * const opt = new ${name}([w])
 * opt.step()`
  }
  if (!sparse) {
    return ` * const w = { data: new Float32Array(n), grad: new Float32Array(n) }
 * const opt = new ${name}([w])
 * opt.step()`
  }
  return ` * const table: Parameter<SparseGrad> = { data: new Float32Array(rows * dim), grad: null, shape: [rows, dim] }
 * const opt = new ${name}([table])
 * table.grad = { indices: Int32Array.of(3, 17, 3), values: new Float32Array(3 * dim) } // row 3 twice: summed
 * opt.step() // rows 3 and 17 only`
}

function declaration(info: AlgorithmInfo, owner: string | undefined): string {
  const name = info.name
  const torch = info.reference
  // An optimizer of sparse gradients takes parameters whose grad is a SparseGrad.
  const grad = info.sparse ? 'SparseGrad' : 'FloatArray'
  if (owner) {
    return `/** ${name}'s options, in camelCase; its class is in lib/${owner}. */
export interface ${name}Options {
${members(info).join('\n')}
}

${stateType(info)}`
  }
  return `/** ${name}'s options: \`${torch}\`'s, in camelCase. */
export interface ${name}Options {
${members(info).join('\n')}
}

${stateType(info)}
/**
 * ${info.summary}; as \`${torch}\`.
 *
 * @example
${example(name, info.sparse, info.matrices)}
 */
export class ${name} extends Optimizer<${name}Options, ${grad}, ${name}State> {
  static readonly schema = new Schema<${name}Options>('${name}')
  /** PyTorch's defaults, read from the native core. */
  static readonly defaults = ${name}.schema.defaults

  constructor(params: Params<${name}Options${info.sparse ? ', SparseGrad' : ''}>, options?: ${info.bf16State ? 'StateDtypeOptions' : 'OptionsInput'}<${name}Options>) {
    super(${name}.schema, params, options)
  }
}
`
}

/** The file's text, formatted as `npm run format` would. */
export async function generate(): Promise<string> {
  const sparse = algorithms().some((info) => info.sparse) ? ', type SparseGrad' : ''
  const header = `// Generated by scripts/generate-facade.ts from the native registry (npm run generate); do not edit.
// Each optimizer is declared once, in its Rust core file; this is its TypeScript face.
import {
  Optimizer,
  Schema,
  type FloatArray,
  type OptionsInput,
  type Params,
  type StateDtypeOptions${sparse},
} from './optimizer'
`
  const owners = ownFacades()
  const text = [header, ...algorithms().map((info) => declaration(info, owners.get(info.name)))].join('\n')
  return format(text, { ...(await resolveConfig(OUTPUT)), parser: 'typescript' })
}

if (require.main === module) void generate().then((text) => writeFileSync(OUTPUT, text))
