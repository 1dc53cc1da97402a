# Sourced by scripts/test-aarch64.sh and scripts/count-aarch64.sh: makes Debian's cross toolchain
# for aarch64-unknown-linux-gnu ready (see test-aarch64.sh for what it takes and why) and exports
# what cargo needs to build for that target and run under QEMU. Run from the repository's root.
SUDO=$([ "$(id -u)" = 0 ] || echo sudo)
CACHE=${FASTOPTIM_AARCH64_CACHE:-$PWD/target/aarch64-toolchain}
TARGET=aarch64-unknown-linux-gnu

if ! command -v aarch64-linux-gnu-gcc >/dev/null || ! command -v qemu-aarch64 >/dev/null; then
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq gcc-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user
fi

if [ ! -x "$CACHE/usr/bin/rustc" ]; then
  if ! dpkg --print-foreign-architectures | grep -qx arm64; then
    $SUDO dpkg --add-architecture arm64
  fi
  $SUDO apt-get update -qq
  version=$(apt-cache policy rustc-web | awk '/Candidate:/ { print $2 }')
  if [ -z "$version" ] || [ "$version" = "(none)" ]; then
    echo "aarch64: Debian's rustc-web is not available from this machine's apt sources" >&2
    exit 1
  fi
  short=$(echo "$version" | sed -E 's/^([0-9]+\.[0-9]+).*/\1/')
  llvm=$(apt-cache depends "libstd-rust-web-$short=$version" | grep -o 'libllvm[0-9]*' | head -n 1)
  rm -rf "$CACHE" && mkdir -p "$CACHE/debs"
  (
    cd "$CACHE/debs"
    apt-get download -q "rustc-web=$version" "libstd-rust-web-$short=$version" "libstd-rust-web-dev=$version" \
      "libstd-rust-web-$short:arm64=$version" "libstd-rust-web-dev:arm64=$version" "$llvm" 2>&1 |
      grep -v '^W: Download is performed unsandboxed' || true
  )
  for deb in "$CACHE"/debs/*.deb; do dpkg-deb -x "$deb" "$CACHE"; done
  rm -rf "$CACHE/debs"
fi

export LD_LIBRARY_PATH="$CACHE/usr/lib/x86_64-linux-gnu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export RUSTC="$CACHE/usr/bin/rustc"
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/target/aarch64}
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUNNER=qemu-aarch64
echo "aarch64: $("$RUSTC" --version), $(qemu-aarch64 --version | head -n 1)"
