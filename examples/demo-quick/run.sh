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
mkdir -p "$farm"
tenant=demo-tenant-$RANDOM$RANDOM worker_token=demo-worker-$RANDOM$RANDOM
printf '[tenants]\n"%s" = "demo"\n[workers]\n"%s" = "demo-pool"\n[pools.demo-pool]\ntenants = ["demo"]\n' "$tenant" "$worker_token" >"$farm/tokens.toml"
printf 'listen = "127.0.0.1:0"\ntoken_file = "tokens.toml"\n[store]\ndir = "store"\n' >"$farm/coordinator.toml"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT
"$rbk" coordinator --config "$farm/coordinator.toml" >"$farm/coordinator.log" 2>&1 &
pids+=($!)
addr=
for _ in $(seq 1 100); do
  addr=$(sed -n 's/^rbk coordinator listening on //p' "$farm/coordinator.log")
  [ -n "$addr" ] && break
  sleep 0.1
done
[ -n "$addr" ] || { echo "demo: the coordinator did not start; see $farm/coordinator.log" >&2; cat "$farm/coordinator.log" >&2; exit 1; }
export RBK_COORDINATOR=http://$addr RBK_TOKEN=$tenant
worker() { # id: a worker with its own, empty state dir
  "$rbk" worker --token "$worker_token" --id "$1" --state-dir "$farm/worker-$1" >"$farm/worker-$1.log" 2>&1 &
  pids+=($!)
  echo $! >"$farm/worker-$1.pid"
}
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
