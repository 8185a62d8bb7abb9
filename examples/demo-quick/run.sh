#!/usr/bin/env bash
# `make demo-quick`: the mechanism of the README's demo on the embedded default (no servers): build on
# worker A, then on a fresh worker B that shares only the content store and
# the embedded coordinator state, and watch the cache mount arrive warm.
# Then the same on a farm: `rbk coordinator` and two `rbk worker` processes
# (filesystem store, started and stopped by this script), `rbk submit`.
# Usage: examples/demo-quick/run.sh [RBK_BINARY]   (root: runc and overlayfs)
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

echo
echo "== 5. the same on a farm: a coordinator and two worker processes on this machine"
farm=$work/farm
. "$here/../farm.sh"
submit() { "$rbk" submit --client-dir "$farm/client" -t rbk-demo:latest "$@" "$ctx" 2>&1; }

echo "-- worker a joins; rbk submit: every step runs on a"
worker a
submit --progress=plain | tee "$work/farm-a.log"
kill -TERM "$(cat "$farm/worker-a.pid")"   # drains and exits
wait "$(cat "$farm/worker-a.pid")" || true
echo
echo "-- worker a leaves, worker b (empty state dir) joins; --no-cache: the RUN runs on b, its cache mount restored from the store"
worker b
submit --no-cache --progress=plain -o type=oci,dest="$work/rbk-demo-farm.tar" | tee "$work/farm-b.log"
grep -q "cache holds 1 earlier run(s)" "$work/farm-b.log" || { echo "demo: the cache did not follow the build to worker b" >&2; exit 1; }
echo
echo "demo: on the farm too, worker b's cache mount held worker a's run; image written to $work/rbk-demo-farm.tar"
