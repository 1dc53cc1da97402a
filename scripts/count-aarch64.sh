#!/usr/bin/env bash
# Instructions executed by the 8-bit kernels on 64-bit ARM, level against level: the NEON kernel
# against the portable one, for Adam8bit and Lion8bit. There is no ARM machine to time them on;
# QEMU's user-mode emulation counts every instruction it runs (`-singlestep -d nochain,exec`,
# filtered to the addresses of each optimizer's `fused_at`, which holds both levels' loops).
# Each count is steps 1-3 less step 1 of `crate/examples/eightbit_steps.rs` (16 blocks of 256),
# halved: one step, without the maps' one-time set-up. docs/eightbit.md quotes its output.
#
# Toolchain as scripts/test-aarch64.sh (Debian's, unpacked under target/). About a minute.
set -euo pipefail
cd "$(dirname "$0")/.."

. scripts/aarch64-env.sh

# Symbols kept (the release profile strips them) and no link-time optimization, so that each
# `fused_at` stays a function of its own whose addresses can be told to QEMU.
CARGO_PROFILE_RELEASE_STRIP=none CARGO_PROFILE_RELEASE_LTO=false \
  CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUSTFLAGS="-C target-feature=+crt-static" \
  cargo build -q -p fastoptim-core --release --target "$TARGET" --example eightbit_steps
program="$CARGO_TARGET_DIR/$TARGET/release/examples/eightbit_steps"
log=$(mktemp)
trap 'rm -f "$log"' EXIT

# The address range of the function whose demangled name contains $1.
range() {
  local start size
  read -r start size _ < <(aarch64-linux-gnu-nm -S -C "$program" | grep -F "$1" | grep -E '^[0-9a-f]+ [0-9a-f]+ [Tt] ' | head -n 1)
  [ -n "${start:-}" ] && printf '0x%s..0x%x\n' "$start" $((0x$start + 0x$size))
}
# Instructions run inside range $1 by `eightbit_steps $2 $3 $4`.
count() {
  qemu-aarch64 -singlestep -d nochain,exec -dfilter "$1" -D "$log" "$program" "$2" "$3" "$4" >/dev/null
  grep -c '^Trace' "$log"
}

echo "| optimizer | level | instructions a step (16 blocks) | per element |"
echo "|---|---|---|---|"
for optimizer in adam lion; do
  where=$(range "eightbit::${optimizer}8bit::fused_at")
  [ -n "$where" ] || { echo "count-aarch64: no ${optimizer}8bit::fused_at symbol" >&2; exit 1; }
  sums=""
  for level in portable neon; do
    one=$(count "$where" "$optimizer" "$level" 1)
    three=$(count "$where" "$optimizer" "$level" 3)
    sums="$sums $("$CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUNNER" "$program" "$optimizer" "$level" 3)"
    step=$(((three - one) / 2))
    echo "| ${optimizer^}8bit | $level | $step | $(awk -v s="$step" 'BEGIN { printf "%.1f", s / 4096 }') |"
  done
  # Both levels must end with the same parameters.
  set -- $sums
  [ "$1" = "$2" ] || { echo "count-aarch64: ${optimizer}: the levels' checksums differ ($1, $2)" >&2; exit 1; }
done
