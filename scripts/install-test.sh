#!/usr/bin/env bash
# Install test: pack fastoptim as it is published (the main package, and the linux-x64-gnu package
# holding the binary, as `napi artifacts` fills it), install both from the tarballs into a fresh
# project that has no Rust toolchain and no network, and use it there: require() and import, a
# step whose numbers are checked, the shipped types under the TypeScript compiler, and the clear
# error a user gets when the platform package is missing. Run after `npm run build`.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
binary="$repo/native/fastoptim.linux-x64-gnu.node"
fail() { echo "install-test: FAIL: $*" >&2; exit 1; }

[[ "$(node -p 'process.platform + "-" + process.arch')" == linux-x64 ]] || { echo "install-test: skipped (only linux-x64 is built here)"; exit 0; }
[[ -f "$binary" && -f "$repo/dist/index.js" ]] || fail "build first: npm run build"

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
version="$(node -p "require('$repo/package.json').version")"

# A PATH with node and npm only: nothing may reach for cargo or rustc.
mkdir -p "$work/bin"
ln -s "$(command -v node)" "$work/bin/node"
ln -s "$(command -v npm)" "$work/bin/npm"
clean_path="$work/bin:/usr/bin:/bin"
if PATH="$clean_path" command -v cargo >/dev/null || PATH="$clean_path" command -v rustc >/dev/null; then
  fail "cargo or rustc is still on the clean PATH"
fi
# npm with no user config, an empty cache per project, and no network: only the tarballs install.
run_npm() {
  local cache="$1"
  shift
  env PATH="$clean_path" HOME="$work/home" npm_config_userconfig="$work/npmrc" npm_config_cache="$cache" \
    npm_config_offline=true npm_config_audit=false npm_config_fund=false npm_config_update_notifier=false \
    npm "$@"
}
mkdir -p "$work/home" && : >"$work/npmrc"

# The tarballs as the release workflow publishes them (scripts/pack.sh).
bash "$repo/scripts/pack.sh" "$work" >/dev/null
main_tgz="$work/fastoptim-$version.tgz"
gnu_tgz="$work/fastoptim-linux-x64-gnu-$version.tgz"
[[ -f "$main_tgz" && -f "$gnu_tgz" ]] || fail "npm pack made no tarballs"

echo "install-test: contents of fastoptim-$version.tgz"
tar -tzf "$main_tgz" | sort | tee "$work/main.txt" | sed 's/^/  /'
for forbidden in 'package/src/' 'package/crate/' 'package/__test__/' 'package/target/' 'package/scripts/' \
  'package/lib/' 'package/node_modules/' 'package/demo/' '\.node$' '\.map$' 'package/Cargo' 'package/docs/'; do
  if grep -E -q "$forbidden" "$work/main.txt"; then fail "the main tarball holds $forbidden"; fi
done
for needed in package/package.json package/README.md package/LICENSE package/CHANGELOG.md package/index.d.ts \
  package/tfjs.d.ts package/distributed.d.ts package/dist/index.js package/dist/index.d.ts package/native/index.js package/native/index.d.ts; do
  grep -qx "$needed" "$work/main.txt" || fail "the main tarball lacks $needed"
done
echo "install-test: contents of fastoptim-linux-x64-gnu-$version.tgz"
tar -tzf "$gnu_tgz" | sort | tee "$work/gnu.txt" | sed 's/^/  /'
[[ "$(cat "$work/gnu.txt")" == $'package/LICENSE\npackage/README.md\npackage/fastoptim.linux-x64-gnu.node\npackage/package.json' ]] ||
  fail "the platform tarball should hold exactly its LICENSE, README, package.json and binary"

# The published manifest and files: no install-time build script, no comment pointing at a source
# map that is not shipped, and a binary without its symbol table.
unpacked="$work/unpacked"
mkdir -p "$unpacked/main" "$unpacked/gnu"
tar -xzf "$main_tgz" -C "$unpacked/main" && tar -xzf "$gnu_tgz" -C "$unpacked/gnu"
node -e 'const p = require(process.argv[1]); if (p.scripts && p.scripts.prepare) process.exit(1)' \
  "$unpacked/main/package/package.json" || fail "the published package.json keeps scripts.prepare"
if grep -rl 'sourceMappingURL' "$unpacked/main/package" --include='*.js'; then fail "published JavaScript names source maps it lacks"; fi
if readelf -S -W "$unpacked/gnu/package/fastoptim.linux-x64-gnu.node" | grep -q '\.symtab'; then
  fail "the binary is not stripped (it has a .symtab)"
fi

# A consumer project with both tarballs installed.
app="$work/app"
mkdir -p "$app"
echo '{ "name": "consumer", "version": "1.0.0", "private": true }' >"$app/package.json"
(cd "$app" && run_npm "$work/cache-app" install --no-save --loglevel=error "$main_tgz" "$gnu_tgz") ||
  fail "npm install from the tarballs failed"
[[ -f "$app/node_modules/fastoptim-linux-x64-gnu/fastoptim.linux-x64-gnu.node" ]] || fail "the platform package was not installed"

cat >"$app/step.cjs" <<'EOF'
const assert = require('node:assert/strict')
const fastoptim = require('fastoptim')
assert.ok(require.resolve('fastoptim').startsWith(__dirname), 'fastoptim resolves inside the consumer project')
assert.ok(require.resolve('fastoptim-linux-x64-gnu').startsWith(__dirname))
// Adam's first step moves every element by lr (m̂ = g, v̂ = g²): γ·g/(|g| + ε).
const p = { data: Float64Array.of(1, -2, 3), grad: Float64Array.of(0.5, -4, 0) }
new fastoptim.Adam([p], { lr: 0.1 }).step()
const want = [1 - (0.1 * 0.5) / (0.5 + 1e-8), -2 + (0.1 * 4) / (4 + 1e-8), 3]
p.data.forEach((x, i) => assert.ok(Math.abs(x - want[i]) <= 1e-15 * Math.abs(want[i]), `Adam element ${i}: ${x} vs ${want[i]}`))
// SGD with momentum 0.9, two steps on float32: p ← p − γ·b with b = g, then b = 0.9b + g.
const q = { data: Float32Array.of(1), grad: Float32Array.of(1) }
const sgd = new fastoptim.SGD([q], { lr: 0.5, momentum: 0.9 })
sgd.step()
sgd.step()
assert.equal(q.data[0], Math.fround(Math.fround(1 - 0.5) - Math.fround(0.5 * 1.9)))
console.log('require: ok')
EOF
cat >"$app/step.mjs" <<'EOF'
import assert from 'node:assert/strict'
import { Adam, AdamW, clipGradNorm } from 'fastoptim'
import fastoptim from 'fastoptim'
assert.equal(Adam, fastoptim.Adam)
const p = { data: Float32Array.of(2, 2), grad: Float32Array.of(3, 4) }
assert.equal(clipGradNorm([p], 1), 5)
new AdamW([p], { lr: 0.01, weightDecay: 0.5 }).step()
// AdamW: decay first (2·(1 − 0.005)), then the Adam step of size lr (the clipped grads are positive).
for (const x of p.data) assert.ok(Math.abs(x - (2 * (1 - 0.005) - 0.01)) < 1e-6, String(x))
console.log('import: ok')
EOF
(cd "$app" && PATH="$clean_path" node step.cjs && PATH="$clean_path" node step.mjs) || fail "using the installed package failed"

# Any x86-64 CPU: on an emulated baseline CPU (qemu64: SSE2/SSE3, no AVX), where an AVX
# instruction is an illegal instruction, the installed binary must choose its baseline kernels.
if command -v qemu-x86_64 >/dev/null; then
  (cd "$app" && PATH="$clean_path" qemu-x86_64 -cpu qemu64 "$(command -v node)" step.cjs) || fail "the binary does not run on a baseline x86-64 CPU"
  echo "baseline x86-64 (qemu64): ok"
else
  echo "baseline x86-64: not checked (install qemu-user for qemu-x86_64)"
fi

# The shipped types, compiled strictly against the installed package, with no @types/node.
cat >"$app/use.ts" <<'EOF'
import {
  Adam,
  SGD,
  SparseAdam,
  type AdamOptions,
  type AdamState,
  type ErrorCode,
  type Parameter,
  type StateDict,
} from 'fastoptim'
const w: Parameter = { data: new Float32Array(4), grad: new Float32Array(4) }
const options: Partial<AdamOptions> = { lr: 1e-3, betas: [0.9, 0.99], amsgrad: true }
const adamOpt = new Adam([{ params: [w], lr: 0.1 }], options)
adamOpt.step()
adamOpt.paramGroups[0].lr = 0.01
const saved: StateDict<AdamOptions, AdamState> = adamOpt.stateDict()
adamOpt.loadStateDict(saved)
// betas as a readonly tuple and as a number[] built apart from the call.
const frozen = [0.8, 0.9] as const
const built: number[] = [0.8, 0.9]
new Adam([w], { betas: frozen })
new Adam([{ params: [w], betas: built }], { betas: built })
// Each optimizer's state is typed: Adam's moments are arrays, AMSGrad's maximum may be absent.
const state = adamOpt.getState(w)
if (state) {
  const moment: Float32Array | Float64Array = state.expAvg
  const max: Float32Array | Float64Array | undefined = state.maxExpAvgSq
  const step: number = saved.state[0].step
  // @ts-expect-error Adam keeps no momentumBuffer
  void state.momentumBuffer
  void [moment, max, step]
}
const sgdState = new SGD([w], { momentum: 0.9, nesterov: true }).getState(w)
// @ts-expect-error SGD's momentum buffer exists only with momentum: possibly undefined
void sgdState?.momentumBuffer.length
new SparseAdam([{ data: new Float32Array(6), grad: null, shape: [3, 2] }])
const binding: ErrorCode = 'ERR_FASTOPTIM_NATIVE_BINDING'
// @ts-expect-error lr is a number
new Adam([w], { lr: '0.1' })
// @ts-expect-error momentum is an option of SGD, not of Adam
new Adam([w], { momentum: 0.9 })
// @ts-expect-error data must be a Float32Array or Float64Array
const bad: Parameter = { data: new Int32Array(4), grad: null }
export { bad, binding }
EOF
cat >"$app/use-tfjs.ts" <<'EOF'
import type { AdamOptions } from 'fastoptim'
import { adam, train, type FastoptimOptimizer } from 'fastoptim/tfjs'
const frozen = [0.8, 0.9] as const
export const tfOptimizer: FastoptimOptimizer<AdamOptions> = adam({ betas: frozen })
train.adamwschedulefree().train()
// @ts-expect-error lr is a number
adam({ lr: '0.1' })
EOF
# Strictly, under each resolution a consumer uses: node16 and nodenext (CommonJS here) and bundler.
# fastoptim/tfjs's types need tfjs-core's: resolved from this repository's node_modules.
for resolution in node16:node16 nodenext:nodenext esnext:bundler; do
  module="${resolution%%:*}"
  # fastoptim's own declarations with skipLibCheck off; fastoptim/tfjs's with it on, as tfjs-core's
  # need types (Long, the DOM's) of their own.
  for files in '"use.ts"' '"use-tfjs.ts"'; do
    skip=$([[ "$files" == '"use.ts"' ]] && echo false || echo true)
    cat >"$app/tsconfig.json" <<EOF
{ "compilerOptions": { "strict": true, "noEmit": true, "module": "$module", "moduleResolution": "${resolution#*:}",
  "target": "ES2022", "lib": ["ES2022", "DOM"], "types": [], "skipLibCheck": $skip, "exactOptionalPropertyTypes": true,
  "paths": { "@tensorflow/tfjs-core": ["$repo/node_modules/@tensorflow/tfjs-core"] } }, "files": [$files] }
EOF
    (cd "$app" && PATH="$clean_path" node "$repo/node_modules/typescript/bin/tsc" -p tsconfig.json) ||
      fail "the shipped types do not type-check ($files, module $module, moduleResolution ${resolution#*:})"
  done
done
echo "types: ok (node16, nodenext, bundler)"

# Without the platform package: a clear error naming the platform and the package to install.
bare="$work/bare"
mkdir -p "$bare"
echo '{ "name": "bare", "version": "1.0.0", "private": true }' >"$bare/package.json"
(cd "$bare" && run_npm "$work/cache-bare" install --no-save --loglevel=error "$main_tgz") || fail "installing the main package alone failed"
[[ ! -e "$bare/node_modules/fastoptim-linux-x64-gnu" ]] || fail "the platform package came from somewhere"
(cd "$bare" && PATH="$clean_path" node -e '
  const assert = require("node:assert/strict")
  assert.throws(() => require("fastoptim"), (e) => {
    assert.equal(e.code, "ERR_FASTOPTIM_NATIVE_BINDING")
    assert.match(e.message, /^fastoptim could not load its native binary for linux-x64-gnu \(glibc \d+\.\d+\), Node\.js v/)
    assert.match(e.message, /npm install fastoptim-linux-x64-gnu/)
    assert.match(e.message, /Cannot find module .fastoptim-linux-x64-gnu/)
    return true
  })
  console.log("missing platform package: clear error")
') || fail "the missing-binary error is not the expected one"

echo "install-test: ok (tarball contents, install without cargo or network, require, import, types, missing-binary error)"
