#!/usr/bin/env bash
# The core's tests on 64-bit ARM (aarch64-unknown-linux-gnu, the target of the linux-arm64-gnu
# package), on an x86-64 Debian 12 machine: cross-compiled and run under QEMU's user-mode emulation.
#
# From Debian's registry only: the cross linker and C library (gcc-aarch64-linux-gnu,
# libc6-dev-arm64-cross), qemu-user, and Debian's `rustc-web` toolchain with its aarch64 standard
# library. The toolchain's packages are unpacked into a cache directory, not installed, so that no
# `rustc` lands on the PATH (the install test checks that a package installs without one).
# Test binaries are linked statically: under bookworm's QEMU 7.2 a dynamically linked aarch64
# program hangs in its first pthread_create, a static one does not.
#
# Needs root (or sudo) for apt-get the first time; adds the arm64 architecture to dpkg's list.
# Usage: bash scripts/test-aarch64.sh [extra `cargo test` arguments]
set -euo pipefail
cd "$(dirname "$0")/.."

. scripts/aarch64-env.sh

# The whole workspace as the release builds it for this target, with warnings as errors (the x86
# lint never compiles the code that only aarch64 leaves out or keeps).
RUSTFLAGS="-D warnings" cargo check --workspace --release --target "$TARGET" --all-targets
# The core's tests, statically linked (see above).
CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUSTFLAGS="-D warnings -C target-feature=+crt-static" \
  cargo test -p fastoptim-core --release --target "$TARGET" --lib "$@"
