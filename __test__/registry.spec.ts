// The registry: the one list of optimizers, declared in the Rust core, that the facade's classes,
// the README's table and the shared suites are made from.
import { execFileSync } from 'node:child_process'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'

import test from 'ava'

import * as fastoptim from '../lib'
import { generate, OUTPUT } from '../scripts/generate-facade'

type Class = { defaults: Record<string, unknown>; new (params: fastoptim.Parameter[]): fastoptim.Optimizer<object> }
const classes = fastoptim as unknown as Record<string, Class | undefined>

test('lib/optimizers.ts is exactly what the registry generates (npm run generate)', async (t) => {
  t.is(readFileSync(OUTPUT, 'utf8'), await generate())
})

test('every optimizer of the registry is exported as a class whose defaults are the native ones', (t) => {
  const names = fastoptim.algorithms().map((info) => info.name)
  t.is(new Set(names).size, names.length, 'each name once')
  for (const info of fastoptim.algorithms()) {
    const Class = classes[info.name]
    if (!Class) return t.fail(`${info.name} is not exported`)
    const packed = Object.keys(Class.defaults).length
    t.is(packed, new Set(info.options.map((o) => o.name.replace(/\[\d+\]$/, ''))).size, info.name)
    // A [1, 2] matrix, which an optimizer of matrices only (Muon) takes too.
    const opt = new Class([{ data: new Float32Array(2), grad: null, shape: [1, 2] }])
    // Lion's constructor fills initLr with its lr, as lion-pytorch's records `_init_lr`.
    const filled = info.name === 'Lion' ? { initLr: Class.defaults.lr } : {}
    t.deepEqual(opt.defaults, { ...Class.defaults, ...filled }, info.name)
  }
})

test('the @default tags of the option docs agree with the native defaults', (t) => {
  const source = readFileSync(OUTPUT, 'utf8')
  for (const info of fastoptim.algorithms()) {
    const body = source.slice(source.indexOf(`export interface ${info.name}Options {`))
    const block = body.slice(0, body.indexOf('\n}'))
    const documented = Object.fromEntries(
      [...block.matchAll(/@default (.+)\n\s*\*\/\n\s*(\w+):/g)].map(([, value, key]) => [key, JSON.parse(value)]),
    )
    t.deepEqual(documented, { ...classes[info.name]!.defaults }, info.name)
  }
})

test('every option has a line of documentation and every buffer a known layout', (t) => {
  for (const info of fastoptim.algorithms()) {
    for (const option of info.options) t.true(option.doc.length > 10, `${info.name}.${option.name}`)
    for (const buffer of info.buffers)
      t.true(['param', 'unfactored', 'rows', 'cols'].includes(buffer.layout), buffer.name)
    t.true(info.summary.length > 10, info.name)
  }
})

test('options are read the same where code generation is refused (the compiled reader falls back to the generic one)', (t) => {
  // The facade as published (dist/, built by `npm run build`), in a process that refuses `new Function`.
  const script = `
    const { Adam, SGD } = require(${JSON.stringify(join(__dirname, '..', 'dist'))})
    const run = (Class, options) => {
      const p = { data: Float32Array.from([1, -2, 3]), grad: Float32Array.from([0.5, 0.25, -1]) }
      const opt = new Class([p], options)
      opt.step(); opt.paramGroups[0].lr = 0.05; opt.step()
      let refused = ''
      try { opt.paramGroups[0].lr = 'x'; opt.step() } catch (e) { refused = e.code + ': ' + e.message }
      return { data: Array.from(p.data), refused }
    }
    console.log(JSON.stringify([run(Adam, { lr: 0.1, betas: [0.8, 0.99] }), run(SGD, { lr: 0.1, momentum: 0.9, nesterov: true })]))
  `
  const run = (flags: string[]) =>
    JSON.parse(execFileSync(process.execPath, [...flags, '-e', script], { encoding: 'utf8' })) as unknown
  const refusing = run(['--disallow-code-generation-from-strings'])
  t.deepEqual(refusing, run([]))
  t.regex(JSON.stringify(refusing), /ERR_INVALID_ARG_TYPE: paramGroups\[0\]\.lr must be a number, got/)
})
