#!/usr/bin/env bash
# The package as published, checked offline: publint (the manifest, exports and files) and
# are-the-types-wrong (the types each entry point resolves to under node10, node16 CommonJS and
# ESM, and bundler resolution), both on the tarball scripts/pack.sh makes. Run after `npm run build`.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT
bash "$repo/scripts/pack.sh" "$out" >/dev/null
version="$(node -p "require('$repo/package.json').version")"
tarball="$out/fastoptim-$version.tgz"
cd "$repo"
npx --no-install publint run "$tarball" --strict
npx --no-install attw "$tarball" --no-emoji
