#!/usr/bin/env bash
# Snapshot restore ÷ raw S3 GET throughput where the network is the limit
# (issue #3; not run in CI, needs root for network namespaces).
#
# Starts a private moto_server inside a network namespace joined to this one
# by a veth pair on a private /30, shapes the link on both ends to each RATE
# in turn, and runs `rbk-bench snapshot --s3-only` against that endpoint:
# cold restore, raw aws-sdk-s3 GETs of the same ranges at the same
# concurrency, naive restore, incremental restore. Prints one table row per
# rate with restore ÷ raw GET. The namespace, the veth pair and moto are
# removed on exit, however the script ends.
#
#   bench/snapshot-link.sh                        # release build, all rates
#   RATES="1gbit 10gbit" ROUNDS=3 bench/snapshot-link.sh
#   RBK_BENCH=/path/to/rbk-bench bench/snapshot-link.sh   # no build
#
# Shaping: `tc qdisc ... netem delay 1ms rate RATE` (1 ms each way) when the
# kernel has netem; otherwise `tbf rate RATE` (rate only, no added delay) and
# the table says so. RATE "unshaped" leaves the veth link as it is.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/netns-link.sh

RATES="${RATES:-unshaped 10gbit 5gbit 2.5gbit 1gbit}"
ROUNDS="${ROUNDS:-3}"
CONCURRENCY="${CONCURRENCY:-16}"
PROFILE="${PROFILE:-release}"
PORT="${PORT:-19100}"
# On tmpfs by default, so that the file system is not the limit either:
# this machine's ext4 has no journal, and creating files soon after many
# were deleted (the previous rate's run) scans recently deleted inodes on
# every create, which swamps the link (see docs/benchmarks.md).
# WORK=/tmp/... measures on disk.
WORK="${WORK:-/dev/shm/rbk-bench-snapshot-link}"
MOTO="${MOTO:-$PWD/.rbk-dev/venv/bin/moto_server}"
NS="rbk-snaplink-$$"
HOST_IF="rbksl$$h"
NS_IF="rbksl$$n"
HOST_ADDR=10.203.77.1
NS_ADDR=10.203.77.2

[ "$(id -u)" = 0 ] || { echo "snapshot-link: needs root (ip netns, tc)" >&2; exit 1; }
[ -x "$MOTO" ] || { echo "snapshot-link: no moto_server at $MOTO; run deploy/dev/services.sh up first" >&2; exit 1; }
if [ -z "${SKIP_BUILD:-}" ] && [ -z "${RBK_BENCH:-}" ]; then
  if [ "$PROFILE" = release ]; then cargo build --release -p rbk-bench; else cargo build -p rbk-bench; fi
fi
RBK_BENCH="${RBK_BENCH:-$PWD/target/$PROFILE/rbk-bench}"

moto_pid=
cleanup() {
  set +e
  [ -n "$moto_pid" ] && kill "$moto_pid" 2>/dev/null && wait "$moto_pid" 2>/dev/null
  netns_link_down
  rm -rf "$WORK" "$WORK".*.log
}
trap cleanup EXIT
trap 'exit 130' INT TERM

netns_link_up

start_moto() {
  ip netns exec "$NS" "$MOTO" -H "$NS_ADDR" -p "$PORT" >"$WORK.moto.log" 2>&1 &
  moto_pid=$!
  for _ in $(seq 1 100); do
    (exec 3<>"/dev/tcp/$NS_ADDR/$PORT") 2>/dev/null && return 0
    sleep 0.1
  done
  echo "snapshot-link: moto_server did not start on $NS_ADDR:$PORT; see $WORK.moto.log" >&2
  exit 1
}

stop_moto() {
  kill "$moto_pid" 2>/dev/null || true
  wait "$moto_pid" 2>/dev/null || true
  moto_pid=
}

# Shapes one device (in namespace $1, "" for this one) to rate $3.
# Prints how it shaped.
shape() {
  local ns=$1 dev=$2 rate=$3 run=()
  [ -n "$ns" ] && run=(ip netns exec "$ns")
  "${run[@]}" tc qdisc del dev "$dev" root 2>/dev/null || true
  if [ "$rate" = unshaped ]; then
    echo "none"
    return
  fi
  if "${run[@]}" tc qdisc add dev "$dev" root netem delay 1ms rate "$rate" 2>/dev/null; then
    echo "netem delay 1ms rate $rate"
    return
  fi
  # tbf: a bucket of 2 ms at the rate (at least 128 KiB, so a GSO packet of
  # 64 KiB always fits), packets queued at most 20 ms.
  local burst
  burst=$(awk -v r="$rate" 'BEGIN {
    n = r + 0; u = tolower(r); sub(/^[0-9.]+/, "", u)
    m = (u == "gbit") ? 1e9 : (u == "mbit") ? 1e6 : (u == "kbit") ? 1e3 : 1
    b = n * m / 8 * 0.002; if (b < 131072) b = 131072; printf "%d", b }')
  "${run[@]}" tc qdisc add dev "$dev" root tbf rate "$rate" burst "$burst" latency 20ms
  echo "tbf rate $rate burst $burst (no netem in this kernel: no added delay)"
}

mkdir -p "$(dirname "$WORK")"
results=()
echo "snapshot-link: load average before: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
for rate in $RATES; do
  how=$(shape "$NS" "$NS_IF" "$rate")
  shape "" "$HOST_IF" "$rate" >/dev/null
  start_moto
  echo "=== link $rate ($how), load average $(cut -d' ' -f1-3 /proc/loadavg)" >&2
  log="$WORK.$rate.log"
  "$RBK_BENCH" snapshot --s3-only --work-dir "$WORK" --rounds "$ROUNDS" --concurrency "$CONCURRENCY" \
    --s3-endpoint "http://$NS_ADDR:$PORT" --s3-region us-east-1 --s3-access-key bench --s3-secret-key bench \
    | tee "$log" >&2
  stop_moto
  line=$(grep '^summary s3:' "$log" || true)
  [ -n "$line" ] || { echo "snapshot-link: no summary line at $rate; see above" >&2; exit 1; }
  val() { sed -n "s/.* $1=\([^ ]*\).*/\1/p" <<<"$line"; }
  ratio=$(val ratio)
  ok=$(awk -v r="$ratio" 'BEGIN { print (r >= 0.80) ? "✔" : "✘" }')
  results+=("| $rate | $how | $(val cold_restore_s) | $(val raw_get_s) | **$ratio** $ok | $(val naive_restore_s) | $(val incremental_restore_s) |")
  rm -f "$log"
done

echo
echo "| link | shaping (both ends) | cold restore (s) | raw GET, same ranges (s) | restore ÷ raw GET (≥ 0.80) | naive restore (s) | incremental restore (s) |"
echo "|---|---|---:|---:|---:|---:|---:|"
printf '%s\n' "${results[@]}"
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
