#!/usr/bin/env bash
# Prerequisites on a fresh Debian machine (as root): a C compiler for the
# -sys crates, a Rust toolchain and cargo-nextest; and what the embedded
# default needs to run steps: an OCI runtime (runc), pasta (package passt:
# the egress of a RUN step's own network namespace) and busybox-static (the
# demo's base image is built from it); Debian's chromium and a font for the
# dashboard's browser tests (deploy/tests/test_dashboard.py); for
# multi-platform builds, qemu-user-static and binfmt-support (QEMU's
# aarch64 handler registered with the fix-binary flag) and an arm64 busybox
# for the tests' arm64 base. Idempotent.
set -euo pipefail
log() { echo "setup: $*" >&2; }

need=()
for pkg in build-essential pkg-config curl ca-certificates runc passt busybox-static chromium fonts-dejavu-core qemu-user-static binfmt-support; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || need+=("$pkg")
done
if [ ${#need[@]} -gt 0 ]; then
  log "installing ${need[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}"
fi
# Emulation of arm64 steps: binfmt_misc mounted, QEMU's aarch64 handler
# enabled (qemu-user-static registers it with the F flag). A kernel or
# container that refuses is reported; the multi-platform tests then skip
# and say so.
binfmt=/proc/sys/fs/binfmt_misc
if [ ! -e "$binfmt/register" ]; then
  mount -t binfmt_misc binfmt_misc "$binfmt" 2>/dev/null || log "cannot mount binfmt_misc at $binfmt: no emulation of other platforms here"
fi
if [ -e "$binfmt/register" ] && ! grep -qs '^enabled' "$binfmt/qemu-aarch64"; then
  update-binfmts --enable qemu-aarch64 || log "the kernel refused QEMU's aarch64 handler: no emulation of arm64 here"
fi
# The tests' arm64 base: Debian's busybox-static:arm64, unpacked (no
# registry involved). RBK_TEST_BIN_BUSYBOX_ARM64 points here.
dev=${RBK_DEV_DIR:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)/.rbk-dev}
if [ ! -x "$dev/arm64-busybox/bin/busybox" ]; then
  log "fetching busybox-static:arm64"
  dpkg --print-foreign-architectures | grep -qx arm64 || { dpkg --add-architecture arm64; apt-get update -qq; }
  tmp=$(mktemp -d)
  (cd "$tmp" && chmod 0777 . && apt-get download -qq busybox-static:arm64)
  rm -rf "$dev/arm64-busybox" && mkdir -p "$dev" && dpkg-deb -x "$tmp"/busybox-static_*_arm64.deb "$dev/arm64-busybox"
  rm -rf "$tmp"
fi

if ! command -v cargo >/dev/null; then
  [ -x "$HOME/.cargo/bin/cargo" ] || { log "no Rust toolchain: install one with rustup (https://rustup.rs)"; exit 1; }
  export PATH="$HOME/.cargo/bin:$PATH"
fi
if ! command -v cargo-nextest >/dev/null; then
  log "installing cargo-nextest"
  cargo install --locked cargo-nextest
fi
