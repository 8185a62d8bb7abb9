# Sourced by the demos: a farm of processes on this machine for `rbk submit`
# (a coordinator with a filesystem store under $farm, one tenant, one worker
# pool serving it), started here and stopped when the demo exits.
# Needs: $rbk (the binary), $farm (an empty directory).
# Gives: RBK_COORDINATOR and RBK_TOKEN exported; `worker ID` starts a worker
# with its own, empty state dir ($farm/worker-ID, pid in $farm/worker-ID.pid).
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
if [ -z "$addr" ]; then
  cat "$farm/coordinator.log" >&2
  echo "demo: the coordinator did not start; see $farm/coordinator.log" >&2
  exit 1
fi
export RBK_COORDINATOR=http://$addr RBK_TOKEN=$tenant
worker() { # ID
  "$rbk" worker --token "$worker_token" --id "$1" --state-dir "$farm/worker-$1" >"$farm/worker-$1.log" 2>&1 &
  pids+=($!)
  echo $! >"$farm/worker-$1.pid"
}
