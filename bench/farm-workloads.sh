#!/usr/bin/env bash
# Issue #6's benchmark on the FARM path: `rbk coordinator` with its content
# store on the S3 server (moto, from deploy/dev/services.sh), `rbk worker`
# processes, `rbk submit` — the shared workloads built cold, warm on the same
# worker, and warm on a FRESH worker that restores the cache from S3.
#
# Usage (root; slow, NOT part of `make test`):
#   bench/farm-workloads.sh [WORKLOAD...]     default: synthetic pip
#   env: REPS=1 (median of REPS runs per cell), RBK (default
#        target/release/rbk), WORKLOADS_DIR, BENCH_DIR (default
#        /tmp/rbk-bench; the python base OCI layout comes from
#        bench/workloads.sh's set-up, run it once first), SYNTH_FILES=N,
#        WORKER_STORE=s3|coordinator (how workers reach the store: directly
#        on S3 with --store-config, as in-cluster workers do — the default —
#        or through the coordinator's Content service).
#
# Cells (wall seconds of one `rbk submit`; the same client dir throughout,
# like a CI runner that keeps its pulled base images):
#   cold            a new coordinator, an empty S3 bucket, worker A (empty
#                   state dir) is the only worker; variant 0.
#   warm same       variant 1, A still the only worker (the step re-runs, its
#                   cache mount is warm in A's cache dir).
#   warm fresh      A drained and stopped; worker B with an empty state dir is
#                   the only worker; variant 2. B fetches the base layers and
#                   the cache mount's head from S3.
#   fresh, base held  B stopped; worker C (empty state dir) first runs an
#                   untimed `FROM BASE` + `RUN true` build (it gets the base,
#                   never the cache), then variant 3 is timed: a fresh worker
#                   that has never seen the cache, as BuildKit's "fresh"
#                   columns keep their base image.
# Variants as in bench/workloads.sh (synthetic: SEED=N; pip: a comment in
# requirements.txt).
set -euo pipefail
CTX_PREFIX=farm-
. "$(dirname "$0")/workloads-common.sh"
WORKER_STORE=${WORKER_STORE:-s3}
log() { echo "farm-bench: $*" >&2; }
base_oci=$BENCH_DIR/python-oci
[ -e "$base_oci/index.json" ] || { log "no base image at $base_oci: run bench/workloads.sh once first (it builds it)"; exit 2; }
"$RBK" submit --help >/dev/null 2>&1 || { log "$RBK has no submit command"; exit 2; }
eval "$(deploy/dev/services.sh up)"
export RBK_S3_ACCESS_KEY_ID=$RBK_TEST_S3_ACCESS_KEY RBK_S3_SECRET_ACCESS_KEY=$RBK_TEST_S3_SECRET_KEY
TENANT=bench-tenant-token-0001
WTOKEN=bench-worker-token-0002
runtime=$(command -v runc)

now() { date +%s.%N; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

# start_farm DIR: a coordinator on a fresh bucket; sets URL, COORD_PID.
start_farm() {
  local d=$1 bucket port
  bucket=rbk-bench-$(date +%s%N | tail -c 10)
  curl -sf -X PUT -H "x-amz-content-sha256: e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855" \
    --aws-sigv4 "aws:amz:$RBK_TEST_S3_REGION:s3" --user "$RBK_TEST_S3_ACCESS_KEY:$RBK_TEST_S3_SECRET_KEY" \
    "$RBK_TEST_S3_ENDPOINT/$bucket" >/dev/null || { log "cannot create bucket $bucket on $RBK_TEST_S3_ENDPOINT"; exit 1; }
  port=$(free_port)
  printf '[tenants]\n"%s" = "bench"\n[workers]\n"%s" = "pool"\n' "$TENANT" "$WTOKEN" >"$d/tokens.toml"
  local store="type = \"s3\"\nbucket = \"$bucket\"\nendpoint = \"$RBK_TEST_S3_ENDPOINT\"\nregion = \"$RBK_TEST_S3_REGION\"\nprefix = \"farm\"\n"
  printf "listen = \"127.0.0.1:$port\"\ntoken_file = \"tokens.toml\"\n[store]\n$store" >"$d/coordinator.toml"
  printf "[store]\n$store" >"$d/worker-store.toml"
  RBK_LOG=info "$RBK" coordinator --config "$d/coordinator.toml" >"$d/coordinator.out" 2>"$d/coordinator.log" &
  COORD_PID=$!; pids+=("$COORD_PID")
  for _ in $(seq 100); do grep -q "listening on" "$d/coordinator.out" 2>/dev/null && break; sleep 0.1; done
  grep -q "listening on" "$d/coordinator.out" || { log "coordinator did not start (see $d/coordinator.log)"; exit 1; }
  URL=http://127.0.0.1:$port
}

# start_worker DIR ID: an rbk worker with state DIR/ID; waits until registered.
start_worker() {
  local d=$1 id=$2 extra=()
  [ "$WORKER_STORE" = s3 ] && extra=(--store-config "$d/worker-store.toml")
  RBK_LOG=info "$RBK" worker --coordinator "$URL" --token "$WTOKEN" --id "$id" --state-dir "$d/$id" \
    --runtime-path "$runtime" --max-backoff 1s "${extra[@]}" >/dev/null 2>"$d/worker-$id.log" &
  local pid=$!; pids+=("$pid"); eval "WORKER_$id=$pid"
  for _ in $(seq 300); do grep -q "registered with" "$d/worker-$id.log" 2>/dev/null && return; sleep 0.1; done
  log "worker $id did not register (see $d/worker-$id.log)"; exit 1
}
stop_worker() { # ID: SIGTERM drains; wait for it
  local v="WORKER_$1"; kill -TERM "${!v}" 2>/dev/null || true; wait "${!v}" 2>/dev/null || true
}

# The workloads' variants are workloads-common.sh's; `seed` is the untimed
# `FROM python-base` + `RUN true` build that gives a fresh worker the base.
variant() { # WORKLOAD N: sets ctx, vargs
  if [ "$1" = seed ]; then
    ctx=$BENCH_DIR/seed-ctx; mkdir -p "$ctx"; printf 'FROM python-base\nRUN true\n' >"$ctx/Dockerfile"; vargs=()
  else
    workload_variant "$@"
  fi
}
submit() { # DIR N WORKLOAD
  variant "$3" "$2"
  "$RBK" submit --progress=plain --coordinator "$URL" --token "$TENANT" --client-dir "$1/client" \
    --base-image "python-base=$base_oci:latest" "${vargs[@]}" -t "farm-bench-$3:latest" "$ctx"
}
timed() { # LOG CMD...: wall seconds
  local out=$1; shift; local t0 t1; t0=$(now)
  if ! "$@" >"$out" 2>&1; then log "FAILED: $* (log: $out)"; tail -20 "$out" >&2; exit 1; fi
  t1=$(now); awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.1f", b-a}'
}
median() { tr ' ' '\n' | grep -v '^$' | sort -n | awk '{a[NR]=$1} END{if(NR==0){print "-"} else if(NR%2){print a[(NR+1)/2]} else {printf "%.1f", (a[NR/2]+a[NR/2+1])/2}}'; }

declare -A R
for w in "${workloads[@]}"; do
  for rep in $(seq "$REPS"); do
    d=$BENCH_DIR/farm-$w; rm -rf "$d"; mkdir -p "$d"
    logs=$BENCH_DIR/logs/farm-$w-$rep; rm -rf "$logs"; mkdir -p "$logs"
    start_farm "$d"
    start_worker "$d" a
    R[$w,c]+="$(timed "$logs/cold.log" submit "$d" 0 "$w") "
    R[$w,s]+="$(timed "$logs/same.log" submit "$d" 1 "$w") "
    stop_worker a
    start_worker "$d" b
    R[$w,f]+="$(timed "$logs/fresh.log" submit "$d" 2 "$w") "
    stop_worker b
    start_worker "$d" c
    timed "$logs/seed.log" submit "$d" 0 seed >/dev/null
    R[$w,h]+="$(timed "$logs/fresh-base.log" submit "$d" 3 "$w") "
    stop_worker c
    kill "$COORD_PID" 2>/dev/null || true; wait "$COORD_PID" 2>/dev/null || true
    cp "$d"/*.log "$logs/" 2>/dev/null || true
    log "$w run $rep: cold ${R[$w,c]}| same ${R[$w,s]}| fresh ${R[$w,f]}| fresh, base held ${R[$w,h]}"
  done
done

echo "REPS=$REPS (median of $REPS run(s) per cell), wall seconds of rbk submit; $(nproc) cores; rbk=$RBK; workers reach the store via $WORKER_STORE; store: S3 ($RBK_TEST_S3_ENDPOINT, moto)"
echo
echo "| workload | farm cold | farm warm same (A) | farm warm fresh (B) | farm warm fresh, base held (C) | fresh ÷ same | fresh, base held ÷ same |"
echo "|---|---|---|---|---|---|---|"
for w in "${workloads[@]}"; do
  c=$(echo "${R[$w,c]}" | median); s=$(echo "${R[$w,s]}" | median)
  f=$(echo "${R[$w,f]}" | median); h=$(echo "${R[$w,h]}" | median)
  echo "| $w | $c | $s | $f | $h | $(awk -v a="$f" -v b="$s" 'BEGIN{printf "%.2f", a/b}') | $(awk -v a="$h" -v b="$s" 'BEGIN{printf "%.2f", a/b}') |"
done
