#!/usr/bin/env bash
# Fuzzes checkpoint decoding (crate/src/checkpoint.rs) with cargo fuzz (libFuzzer) for a bounded
# time: `scripts/fuzz.sh [seconds]`, 60 by default. Not part of `npm test`. libFuzzer's
# instrumentation needs a nightly toolchain (`rustup toolchain install nightly`); cargo-fuzz is
# installed from crates.io if missing. The seed corpus is copied, so the run leaves no files behind
# except crash inputs, which libFuzzer writes under fuzz/artifacts/.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-60}"
command -v cargo-fuzz > /dev/null || cargo install cargo-fuzz --locked
corpus="$(mktemp -d)"
trap 'rm -rf "$corpus"' EXIT
cp fuzz/corpus/decode_checkpoint/* "$corpus"/
cargo +nightly fuzz run decode_checkpoint "$corpus" -- -max_total_time="$seconds" -rss_limit_mb=2048 -print_final_stats=1
