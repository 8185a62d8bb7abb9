#!/usr/bin/env bash
# The demo on a farm: a coordinator, worker A, `rbk submit`; then A is gone
# and a fresh worker B (empty state dir) gets the same build: every step is
# CACHED; with --no-cache the RUN runs on B and its cache mount arrives warm
# from the store. Everything on 127.0.0.1, the store a local directory.
# Usage: examples/demo/farm.sh [RBK_BINARY]   (root: runc and overlayfs)
set -euo pipefail
rbk=$(realpath "${1:-./target/release/rbk}")
here=$(dirname "$(realpath "$0")")
work=${RBK_DEMO_DIR:-$(mktemp -d)}
busybox=$(command -v busybox) || { echo "demo: needs a static busybox on PATH (deploy/dev/setup.sh installs it)" >&2; exit 1; }
ctx=$work/context
mkdir -p "$ctx"
cp "$here/Dockerfile" "$here/hello.txt" "$ctx/"
cp "$busybox" "$ctx/busybox"

tenant=demo-tenant-$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')
pool=demo-workers-$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')
printf '[tenants]\n"%s" = "demo"\n[workers]\n"%s" = "pool"\n' "$tenant" "$pool" > "$work/tokens.toml"
printf 'listen = "127.0.0.1:0"\ntoken_file = "%s"\n[store]\ndir = "%s"\n' "$work/tokens.toml" "$work/store" > "$work/coordinator.toml"

pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

"$rbk" coordinator --config "$work/coordinator.toml" > "$work/coordinator.out" 2> "$work/coordinator.log" &
pids+=($!)
for _ in $(seq 100); do grep -q "listening on" "$work/coordinator.out" 2>/dev/null && break; sleep 0.1; done
addr=$(sed -n 's/.*listening on //p' "$work/coordinator.out" | head -n1)
[ -n "$addr" ] || { echo "demo: the coordinator did not start; see $work/coordinator.log" >&2; exit 1; }
export RBK_COORDINATOR=http://$addr RBK_TOKEN=$tenant

worker() { "$rbk" worker --token "$pool" --id "$1" --state-dir "$work/worker-$1" 2> "$work/worker-$1.log" & pids+=($!); }
submit() { "$rbk" submit --client-dir "$work/client" -t rbk-demo:latest "$@" "$ctx" 2>&1; }

echo "== 1. worker A, cold: every step runs on A"
worker a
submit --progress=plain
echo
echo "== 2. worker A is gone; fresh worker B joins: every step CACHED, nothing runs"
kill "${pids[1]}"; wait "${pids[1]}" 2>/dev/null || true
worker b
submit
echo
echo "== 3. --no-cache on B: the RUN runs there, and its cache mount arrives warm from the store"
submit --no-cache --progress=plain -o type=oci,dest="$work/rbk-demo.tar" | tee "$work/b.log"
grep -q "cache holds 1 earlier run(s)" "$work/b.log" || { echo "demo: the cache did not arrive warm on worker B" >&2; exit 1; }
echo
echo "demo: worker B's cache mount held worker A's run; image written to $work/rbk-demo.tar"
