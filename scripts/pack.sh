#!/usr/bin/env bash
# Packs fastoptim as the release workflow publishes it, into the folder given (default: a new
# temporary one, printed): the main package with package.json as `napi pre-publish` and the
# workflow leave it (optionalDependencies on every platform package, no `prepare` script), and the
# linux-x64-gnu package with the binary and LICENSE copied in as the workflow does. Writes
# fastoptim-<version>.tgz and fastoptim-linux-x64-gnu-<version>.tgz; needs `npm run build` first.
# Used by the install test and by `npm run lint:package`; runs offline.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
out="${1:-$(mktemp -d)}"
mkdir -p "$out"
out="$(cd "$out" && pwd)"
binary="$repo/native/fastoptim.linux-x64-gnu.node"
[[ -f "$binary" && -f "$repo/dist/index.js" ]] || { echo "pack: build first: npm run build" >&2; exit 1; }

stage="$(mktemp -d)"
trap 'rm -rf "$stage"' EXIT
main="$stage/main"
mkdir -p "$main/native"
(cd "$repo" && cp -r package.json README.md LICENSE CHANGELOG.md index.d.ts tfjs.d.ts distributed.d.ts dist "$main"/ &&
  cp native/index.js native/index.d.ts "$main/native/")
node -e '
  const fs = require("fs")
  const file = process.argv[1]
  const pkg = JSON.parse(fs.readFileSync(file, "utf8"))
  const abi = (triple) => {
    const [arch, , os, env] = triple.split("-")
    const cpu = { x86_64: "x64", aarch64: "arm64" }[arch]
    if (os === "darwin") return `darwin-${cpu}`
    if (os === "windows") return `win32-${cpu}-msvc`
    return `linux-${cpu}-${env}`
  }
  pkg.optionalDependencies = Object.fromEntries(pkg.napi.targets.map((t) => [`${pkg.name}-${abi(t)}`, pkg.version]))
  // What the release workflow removes before publishing (`npm pkg delete scripts.prepare`).
  delete pkg.scripts.prepare
  fs.writeFileSync(file, JSON.stringify(pkg, null, 2))
' "$main/package.json"
gnu="$stage/gnu"
cp -r "$repo/npm/linux-x64-gnu" "$gnu"
cp "$binary" "$repo/LICENSE" "$gnu/"

pack() {
  (cd "$1" && env npm_config_offline=true npm_config_update_notifier=false npm_config_cache="$stage/cache" \
    npm pack --ignore-scripts --silent --pack-destination "$out" >/dev/null)
}
pack "$main"
pack "$gnu"
echo "$out"
