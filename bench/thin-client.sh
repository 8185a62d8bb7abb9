#!/usr/bin/env bash
# What `rbk submit` moves over the client's own link (issue #23): the client
# in a network namespace behind a shaped veth (20 Mbit/s up, 100 Mbit/s down,
# `tbf`), a coordinator, a worker and a docker-registry on this machine. The
# image is built FROM a ~150 MB base in that registry and pushed to it.
#
# Two farms, each fresh (own store), each built twice (the second time with
# one context file changed):
#   before: --client-registry-access (the client pulls the base, uploads its
#           layers to the farm, downloads the image and pushes it)
#   after:  the farm pulls the base and pushes the result
# Prints bytes the client sent and received (the namespace end's counters)
# and wall time per run. Not run in CI; needs root (ip netns, tc).
#
#   bench/thin-client.sh                     # target/debug/rbk
#   RBK=target/release/rbk bench/thin-client.sh
#   KEEP=1 bench/thin-client.sh              # keep the work dir (submit logs)
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/netns-link.sh
RBK=$(realpath "${RBK:-target/debug/rbk}")
UP="${UP:-20mbit}" DOWN="${DOWN:-100mbit}" BASE_MB="${BASE_MB:-150}"
REG_PORT="${REG_PORT:-37010}" COORD_PORT="${COORD_PORT:-37011}"
W=$(mktemp -d /tmp/rbk-thin-bench.XXXXXX)
NS="rbk-thin-$$" HOST_IF="rbkth$$h" NS_IF="rbkth$$n"
HOST_ADDR=10.203.78.1 NS_ADDR=10.203.78.2
REG="$HOST_ADDR:$REG_PORT"
[ "$(id -u)" = 0 ] || { echo "thin-client: needs root (ip netns, tc)" >&2; exit 1; }
busybox=$(command -v busybox) || { echo "thin-client: needs a static busybox on PATH" >&2; exit 1; }

pids=()
cleanup() {
  set +e
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done
  wait 2>/dev/null
  netns_link_down
  if [ -n "${KEEP:-}" ]; then echo "kept $W (each run's stderr: $W/FARM.N.err)" >&2; else rm -rf "$W"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

netns_link_up
# Upload: the namespace end's egress; download: the host end's.
ip netns exec "$NS" tc qdisc add dev "$NS_IF" root tbf rate "$UP" burst 256kb latency 50ms
tc qdisc add dev "$HOST_IF" root tbf rate "$DOWN" burst 256kb latency 50ms

wait_port() { for _ in $(seq 1 100); do (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null && return 0; sleep 0.1; done; echo "thin-client: nothing on $1:$2" >&2; exit 1; }

# The registry, reachable from the namespace (for "before").
printf 'version: 0.1\nlog: { level: warn }\nstorage:\n  filesystem: { rootdirectory: %s }\nhttp: { addr: "0.0.0.0:%s" }\n' "$W/registry" "$REG_PORT" >"$W/registry.yml"
docker-registry serve "$W/registry.yml" >"$W/registry.log" 2>&1 &
pids+=($!)
wait_port 127.0.0.1 "$REG_PORT"

# The base: busybox and BASE_MB of incompressible data, made with rbk build.
mkdir -p "$W/base"
cp "$busybox" "$W/base/busybox"
head -c "${BASE_MB}M" /dev/urandom >"$W/base/data.bin"
printf 'FROM scratch\nCOPY busybox /bin/busybox\nCOPY data.bin /data/data.bin\n' >"$W/base/Dockerfile"
"$RBK" build --state-dir "$W/base-state" --progress=quiet -o type=oci,dest="$W/base.tar" "$W/base" >/dev/null
skopeo copy -q --dest-tls-verify=false "oci-archive:$W/base.tar" "docker://$REG/thin-bench/base:1"

mkdir -p "$W/ctx"
printf 'FROM %s/thin-bench/base:1\nCOPY app.txt /app.txt\nRUN ["/bin/busybox", "sh", "-c", "cat /app.txt > /built"]\n' "$REG" >"$W/ctx/Dockerfile"

counters() { ip netns exec "$NS" sh -c "echo \$(cat /sys/class/net/$NS_IF/statistics/tx_bytes) \$(cat /sys/class/net/$NS_IF/statistics/rx_bytes)"; }
mib() { awk -v b="$1" 'BEGIN { printf "%.2f MiB", b / 1048576 }'; }

farm() { # NAME: a coordinator (0.0.0.0, fresh store) and one worker
  local f="$W/$1"
  mkdir -p "$f"
  printf '[tenants]\n"bench-tenant-token-0001" = "bench"\n[workers]\n"bench-worker-token-0002" = "pool"\n[pools.pool]\ntenants = ["bench"]\n' >"$f/tokens.toml"
  printf 'listen = "0.0.0.0:%s"\ntoken_file = "tokens.toml"\n[store]\ndir = "store"\n' "$COORD_PORT" >"$f/coordinator.toml"
  "$RBK" coordinator --insecure-plaintext --config "$f/coordinator.toml" >"$f/coordinator.log" 2>&1 &
  coord_pid=$!
  pids+=($coord_pid)
  wait_port 127.0.0.1 "$COORD_PORT"
  "$RBK" worker --coordinator "http://127.0.0.1:$COORD_PORT" --token bench-worker-token-0002 --id w1 --state-dir "$f/worker" >"$f/worker.log" 2>&1 &
  worker_pid=$!
  pids+=($worker_pid)
  sleep 2
}

stop_farm() { kill "$worker_pid" "$coord_pid" 2>/dev/null || true; wait "$worker_pid" "$coord_pid" 2>/dev/null || true; }

run() { # LABEL FARM N [submit flags]: one submit from the namespace
  local label=$1 f=$2 n=$3; shift 3
  echo "change $n" >"$W/ctx/app.txt"
  read -r tx0 rx0 < <(counters)
  local t0 t1
  t0=$(date +%s.%N)
  ip netns exec "$NS" "$RBK" submit --progress=plain --coordinator "http://$HOST_ADDR:$COORD_PORT" \
    --token bench-tenant-token-0001 --client-dir "$W/$f/client" --insecure-registry "$REG" \
    -t "$REG/thin-bench/out-$f:$n" --push "$@" "$W/ctx" >"$W/$f.$n.out" 2>"$W/$f.$n.err" \
    || { cat "$W/$f.$n.err" >&2; exit 1; }
  t1=$(date +%s.%N)
  read -r tx1 rx1 < <(counters)
  printf '| %s | %s | %s | %.1f s |\n' "$label" "$(mib $((tx1 - tx0)))" "$(mib $((rx1 - rx0)))" "$(awk -v a="$t0" -v b="$t1" 'BEGIN { print b - a }')"
}

echo "client link: $UP up, $DOWN down (tbf); base: busybox + ${BASE_MB} MiB; $RBK"
echo
echo "| run | client sent | client received | wall |"
echo "|---|---|---|---|"
farm before
run "before (--client-registry-access), first build" before 1 --client-registry-access
run "before (--client-registry-access), repeat, one file changed" before 2 --client-registry-access
stop_farm
farm after
run "after (the farm pulls and pushes), first build" after 1
run "after (the farm pulls and pushes), repeat, one file changed" after 2
stop_farm
