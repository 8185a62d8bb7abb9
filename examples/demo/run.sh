#!/usr/bin/env bash
# The README's main demo on the embedded default (no servers): build on
# worker A, then on a fresh worker B that shares only the content store and
# the embedded coordinator state, and watch the cache mount arrive warm.
# Usage: examples/demo/run.sh [RBK_BINARY]   (root: runc and overlayfs)
set -euo pipefail
rbk=$(realpath "${1:-./target/release/rbk}")
here=$(dirname "$(realpath "$0")")
work=${RBK_DEMO_DIR:-$(mktemp -d)}
busybox=$(command -v busybox) || { echo "demo: needs a static busybox on PATH (deploy/dev/setup.sh installs it)" >&2; exit 1; }
ctx=$work/context
mkdir -p "$ctx"
cp "$here/Dockerfile" "$here/hello.txt" "$ctx/"
cp "$busybox" "$ctx/busybox"
build() { "$rbk" build --state-dir "$work/state" -t rbk-demo:latest "$@" "$ctx" 2>&1; }

echo "== 1. worker A, cold: every step runs"
build --worker-dir "$work/worker-a" --progress=plain
echo
echo "== 2. worker A again, nothing changed: every step CACHED"
build --worker-dir "$work/worker-a"
echo
echo "== 3. worker B, fresh (empty local dir): layers come from the store, still all CACHED"
build --worker-dir "$work/worker-b"
echo
echo "== 4. worker B with --no-cache: the RUN runs, and its cache mount arrives warm from the store"
build --worker-dir "$work/worker-b" --no-cache --progress=plain -o type=oci,dest="$work/rbk-demo.tar" | tee "$work/b.log"
grep -q "cache holds 1 earlier run(s)" "$work/b.log" || { echo "demo: the cache did not arrive warm on worker B" >&2; exit 1; }
echo
echo "demo: worker B's cache mount held worker A's run; image written to $work/rbk-demo.tar"
