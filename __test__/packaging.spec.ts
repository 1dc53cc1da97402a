// Packaging as napi-rs does it: the committed per-platform packages (npm/<platform>) are what
// `napi create-npm-dirs` makes from package.json, the loader's error names the package this
// platform needs, and nothing builds for the build machine's own CPU. The install itself
// (pack, install without cargo, use) is scripts/install-test.sh.
import { execFileSync } from 'node:child_process'
import { cpSync, existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'

import test from 'ava'

import { currentPlatform, MIN_GLIBC, missingBindingError } from '../lib/native'

const root = join(__dirname, '..')
const readJson = (file: string) => JSON.parse(readFileSync(file, 'utf8'))
const pkg = readJson(join(root, 'package.json'))

test('every target of napi.targets has its committed package, as napi create-npm-dirs makes it', (t) => {
  const scratch = mkdtempSync(join(tmpdir(), 'fastoptim-npm-dirs-'))
  try {
    cpSync(join(root, 'package.json'), join(scratch, 'package.json'))
    execFileSync(
      process.execPath,
      [join(root, 'node_modules/@napi-rs/cli/dist/cli.js'), 'create-npm-dirs', '--cwd', scratch],
      { stdio: 'pipe' },
    )
    const generated = readdirSync(join(scratch, 'npm')).sort()
    t.deepEqual(readdirSync(join(root, 'npm')).sort(), generated)
    t.is(generated.length, pkg.napi.targets.length)
    for (const dir of generated) {
      const want = readJson(join(scratch, 'npm', dir, 'package.json'))
      const have = readJson(join(root, 'npm', dir, 'package.json'))
      // Only the description is our own: it says what the binary is for (and which glibc it needs).
      t.deepEqual({ ...have, description: undefined }, { ...want, description: undefined }, dir)
      t.regex(have.description, /^The native binary of fastoptim for /, dir)
    }
  } finally {
    rmSync(scratch, { recursive: true, force: true })
  }
})

test('the glibc packages say which glibc they need, and npm matches them by libc', (t) => {
  for (const dir of ['linux-x64-gnu', 'linux-arm64-gnu']) {
    const manifest = readJson(join(root, 'npm', dir, 'package.json'))
    t.deepEqual(manifest.libc, ['glibc'])
    t.true(manifest.description.includes(`glibc >= ${MIN_GLIBC}`), dir)
    t.true(readFileSync(join(root, 'npm', dir, 'README.md'), 'utf8').includes(`glibc ${MIN_GLIBC}`), dir)
  }
  for (const dir of ['linux-x64-musl', 'linux-arm64-musl'])
    t.deepEqual(readJson(join(root, 'npm', dir, 'package.json')).libc, ['musl'])
})

test('the release workflow builds every target and checks the glibc floor it states', (t) => {
  const workflow = readFileSync(join(root, '.github/workflows/release.yml'), 'utf8')
  for (const target of pkg.napi.targets as string[]) {
    const spelled = target.endsWith('linux-gnu') ? `${target}.${MIN_GLIBC}` : target
    t.true(workflow.includes(`--target ${spelled}`), target)
  }
  t.true(workflow.includes(`GLIBC_${MIN_GLIBC}`))
  t.true(workflow.includes('napi artifacts') && workflow.includes('napi pre-publish'))
})

test('nothing is compiled for the build machine’s CPU', (t) => {
  for (const file of ['.cargo/config.toml', '.cargo/config', 'crate/.cargo/config.toml']) {
    const path = join(root, file)
    if (existsSync(path)) t.notRegex(readFileSync(path, 'utf8'), /target-cpu|target-feature/, file)
  }
  for (const file of ['Cargo.toml', 'crate/Cargo.toml', 'build.rs', 'package.json', '.github/workflows/release.yml']) {
    t.notRegex(readFileSync(join(root, file), 'utf8'), /target-cpu/, file)
  }
})

test('a missing binary is reported with the platform and the package to install', (t) => {
  const cause = Object.assign(new Error('Cannot find native binding.'), {
    cause: new Error("Cannot find module 'fastoptim-linux-x64-gnu'"),
  })
  const error = missingBindingError(cause)
  const { name } = currentPlatform()
  t.is(error.code, 'ERR_FASTOPTIM_NATIVE_BINDING')
  t.is(error.cause, cause)
  t.true(error.message.includes(name))
  t.regex(error.message, /Cannot find module 'fastoptim-linux-x64-gnu'\.$/)
  const expected = `fastoptim-${name}`
  if (existsSync(join(root, 'npm', name))) t.true(error.message.includes(`npm install ${expected}`))
  else t.regex(error.message, /^fastoptim has no native binary for this platform/)
})

test('the package is ready to publish: metadata provenance needs, a license, no GitHub release without a token', (t) => {
  // npm provenance checks the repository it signs for against repository.url; napi create-npm-dirs
  // copies these into every platform package (checked above).
  t.regex(pkg.repository.url, /^git\+https:\/\/github\.com\/fastoptim\/fastoptim\.git$/)
  t.is(pkg.homepage, 'https://github.com/fastoptim/fastoptim#readme')
  t.is(pkg.bugs.url, 'https://github.com/fastoptim/fastoptim/issues')
  t.is(typeof pkg.author, 'string')
  t.is(pkg.license, 'MIT')
  t.regex(readFileSync(join(root, 'LICENSE'), 'utf8'), /^MIT License\n/)
  t.regex(
    readFileSync(join(root, 'CHANGELOG.md'), 'utf8'),
    new RegExp(`^## \\[${pkg.version.replace(/\./g, '\\.')}\\]`, 'm'),
  )
  const workflow = readFileSync(join(root, '.github/workflows/release.yml'), 'utf8')
  t.regex(workflow, /napi pre-publish -t npm --no-gh-release/)
  t.regex(workflow, /id-token: write/)
  t.regex(workflow, /npm pkg delete scripts\.prepare/)
  t.regex(workflow, /cp LICENSE "\$dir"/)
  // No source maps are published, so the JavaScript must not name any.
  t.false(JSON.parse(readFileSync(join(root, 'tsconfig.json'), 'utf8')).compilerOptions.sourceMap ?? false)
  t.regex(readFileSync(join(root, 'Cargo.toml'), 'utf8'), /^\[profile\.release\][^[]*^strip = "symbols"$/m)
})
