#!/usr/bin/env bash
# Prerequisites on a fresh Debian machine (as root): a C compiler for the
# -sys crates, a Rust toolchain and cargo-nextest; and what the embedded
# default needs to run steps: an OCI runtime (runc), pasta (package passt:
# the egress of a RUN step's own network namespace) and busybox-static (the
# demo's base image is built from it); Debian's chromium and a font for the
# dashboard's browser tests (deploy/tests/test_dashboard.py). Idempotent.
set -euo pipefail
log() { echo "setup: $*" >&2; }

need=()
for pkg in build-essential pkg-config curl ca-certificates runc passt busybox-static chromium fonts-dejavu-core; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || need+=("$pkg")
done
if [ ${#need[@]} -gt 0 ]; then
  log "installing ${need[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}"
fi
if ! command -v cargo >/dev/null; then
  [ -x "$HOME/.cargo/bin/cargo" ] || { log "no Rust toolchain: install one with rustup (https://rustup.rs)"; exit 1; }
  export PATH="$HOME/.cargo/bin:$PATH"
fi
if ! command -v cargo-nextest >/dev/null; then
  log "installing cargo-nextest"
  cargo install --locked cargo-nextest
fi
