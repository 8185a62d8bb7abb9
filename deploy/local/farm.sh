#!/usr/bin/env bash
# A whole rbk farm on this machine, as processes, no Kubernetes: the S3
# server and Redis (deploy/dev/services.sh), N coordinators (1, or 3/5 as a
# Raft group), and two workers with separate state dirs sharing the S3 store.
# The walkthrough in docs/operations.md ("Local multi-node setup") uses it.
#
#   deploy/local/farm.sh up [N]   start (N coordinators, default 1), then
#                                 print the client environment (eval it)
#   deploy/local/farm.sh env      print it again
#   deploy/local/farm.sh status   each process (running or not) and, from
#                                 /metrics, leader, workers and builds
#   deploy/local/farm.sh down     stop what `up` started (by pid file)
#
#   eval "$(deploy/local/farm.sh up)"
#   rbk submit examples/demo-context     # RBK_COORDINATOR and RBK_TOKEN are set
#
# env: RBK (the rbk binary; default target/release/rbk, else target/debug/rbk),
#      RBK_FARM_DIR (state; default .rbk-dev/farm), RBK_FARM_PORT (first
#      coordinator's API port, default 17070; raft ports +100, metrics +200),
#      RBK_FARM_WORKERS (default 2), RBK_FARM_STORE (s3: everyone on the S3
#      stack; coordinator: blobs in the coordinator's dir, workers through
#      its Content service), RBK_FARM_METRICS (default 1: coordinator i
#      serves /metrics on port +200+i, worker i on +300+i; 0: off).
#      Walkthrough: docs/local-farm.md. Root: workers run steps in runc.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
farm=${RBK_FARM_DIR:-$repo/.rbk-dev/farm}
port=${RBK_FARM_PORT:-17070}
nworkers=${RBK_FARM_WORKERS:-2}
log() { echo "farm: $*" >&2; }

rbk_binary() {
  local c
  if [ -n "${RBK:-}" ]; then echo "$RBK"; return; fi
  for c in "$repo/target/release/rbk" "$repo/target/debug/rbk"; do
    [ -x "$c" ] && { echo "$c"; return; }
  done
  log "no rbk binary: cargo build -p rbk (or set RBK)"; exit 1
}

running() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

wait_for_line() { # file pattern what pidfile
  local i
  for i in $(seq 1 200); do
    grep -q "$2" "$1" 2>/dev/null && return 0
    running "$4" || { log "$3 exited; see $1:"; head -8 "$1" >&2; exit 1; }
    sleep 0.1
  done
  log "$3 did not start within 20 s; see $1"; exit 1
}

token() { head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n'; }

up() {
  local n=${1:-1}
  case "$n" in 1|3|5) ;; *) log "coordinators: 1, 3 or 5 (got $n)"; exit 2 ;; esac
  local rbk; rbk=$(rbk_binary)
  eval "$("$repo/deploy/dev/services.sh" up)"
  mkdir -p "$farm"
  if [ ! -f "$farm/tokens.toml" ]; then
    local tenant worker
    tenant=local-tenant-$(token); worker=local-worker-$(token)
    printf '[tenants]\n"%s" = "local"\n[workers]\n"%s" = "local"\n[pools.local]\ntenants = ["local"]\n' "$tenant" "$worker" >"$farm/tokens.toml"
    printf '%s' "$tenant" >"$farm/tenant.token"; printf '%s' "$worker" >"$farm/worker.token"
    printf '%s' "$(token)" >"$farm/raft.secret"
    chmod 600 "$farm"/tokens.toml "$farm"/*.token "$farm/raft.secret"
  fi
  # One bucket for the farm; S3 credentials and the Redis URL come from the
  # environment (RBK_S3_*, RBK_REDIS_URL), never from the files.
  # Signed (SigV4, the empty body's hash): the S3 server checks keys.
  curl -fsS -X PUT -H "x-amz-content-sha256: e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855" \
    --aws-sigv4 "aws:amz:$RBK_TEST_S3_REGION:s3" --user "$RBK_TEST_S3_ACCESS_KEY:$RBK_TEST_S3_SECRET_KEY" \
    "$RBK_TEST_S3_ENDPOINT/rbk-farm" -o /dev/null || true
  local stack
  stack=$(cat <<TOML
type = "existence_cache"
ttl_secs = 600
[store.inner]
type = "verify"
[store.inner.inner]
type = "compress"
[store.inner.inner.inner]
type = "s3"
bucket = "rbk-farm"
endpoint = "$RBK_TEST_S3_ENDPOINT"
region = "$RBK_TEST_S3_REGION"
TOML
)
  printf '[store]\n%s\n' "$stack" >"$farm/store.toml"
  export RBK_S3_ACCESS_KEY_ID=$RBK_TEST_S3_ACCESS_KEY RBK_S3_SECRET_ACCESS_KEY=$RBK_TEST_S3_SECRET_KEY
  export RBK_REDIS_URL=$RBK_TEST_REDIS_URL

  # s3: coordinators and workers use the S3 stack above. coordinator: the
  # coordinators keep blobs in their own dir and workers reach them through
  # the Content service (one coordinator only).
  local store=${RBK_FARM_STORE:-coordinator} store_args=()
  case "$store" in
    s3) store_args=(--store-config "$farm/store.toml") ;;
    coordinator) [ "$n" = 1 ] || { log "RBK_FARM_STORE=coordinator takes one coordinator; use s3"; exit 2; } ;;
    *) log "RBK_FARM_STORE: s3 or coordinator (got $store)"; exit 2 ;;
  esac
  local i j
  for ((i = 0; i < n; i++)); do
    local dir=$farm/coordinator-$i cfg=$farm/coordinator-$i.toml
    mkdir -p "$dir"
    {
      echo "listen = \"127.0.0.1:$((port + i))\""
      echo "token_file = \"tokens.toml\""
      if [ "${RBK_FARM_METRICS:-1}" = 1 ]; then echo "metrics_listen = \"127.0.0.1:$((port + 200 + i))\""; fi
      if [ "$store" = s3 ]; then printf '[store]\n%s\n' "$stack"; else printf '[store]\ndir = "coordinator-%d/store"\n' "$i"; fi
      if [ "$n" -gt 1 ]; then
        echo "[raft]"
        echo "node_id = $((i + 1))"
        echo "data_dir = \"coordinator-$i/raft\""
        echo "listen = \"127.0.0.1:$((port + 100 + i))\""
        echo "secret_file = \"raft.secret\""
        echo "[raft.peers]"
        for ((j = 0; j < n; j++)); do
          echo "$((j + 1)) = { raft = \"127.0.0.1:$((port + 100 + j))\", api = \"http://127.0.0.1:$((port + j))\" }"
        done
      fi
    } >"$cfg"
    if ! running "$dir.pid"; then
      log "starting coordinator $i on 127.0.0.1:$((port + i))"
      RBK_LOG=${RBK_LOG:-info} nohup "$rbk" coordinator --config "$cfg" >"$dir.log" 2>&1 &
      echo $! >"$dir.pid"
    fi
  done
  for ((i = 0; i < n; i++)); do
    wait_for_line "$farm/coordinator-$i.log" "rbk coordinator listening on" "coordinator $i" "$farm/coordinator-$i.pid"
  done
  for ((i = 0; i < nworkers; i++)); do
    local w=$farm/worker-$i metrics_args=()
    mkdir -p "$w"
    [ "${RBK_FARM_METRICS:-1}" = 1 ] && metrics_args=(--metrics-listen "127.0.0.1:$((port + 300 + i))")
    if ! running "$w.pid"; then
      log "starting worker $i (state $w)"
      RBK_WORKER_TOKEN=$(cat "$farm/worker.token") RBK_LOG=${RBK_LOG:-info} nohup "$rbk" worker \
        --coordinator "http://127.0.0.1:$((port + i % n))" --id "local-worker-$i" --labels farm=local \
        --state-dir "$w" "${store_args[@]}" "${metrics_args[@]}" >"$w.log" 2>&1 &
      echo $! >"$w.pid"
    fi
  done
  sleep 1
  for ((i = 0; i < nworkers; i++)); do
    running "$farm/worker-$i.pid" || { log "worker $i exited; see $farm/worker-$i.log:"; head -8 "$farm/worker-$i.log" >&2; exit 1; }
  done
  echo "$n" >"$farm/coordinators"
  print_env
  log "ready; submit a build with:"
  log "  $rbk submit --coordinator http://127.0.0.1:$port --token $(cat "$farm/tenant.token") CONTEXT"
}

# One sample from a /metrics body on stdin: metric name, then labels as
# they appear (e.g. 'result="succeeded"'); empty when absent.
metric() {
  awk -v name="$1" -v labels="${2:-}" '
    $1 == name || index($1, name "{") == 1 { if (labels == "" || index($1, labels)) { print $2; exit } }'
}

status() {
  [ -f "$farm/tenant.token" ] || { log "not set up: $0 up"; exit 1; }
  local n f name pid state body i
  n=$(cat "$farm/coordinators" 2>/dev/null || echo 1)
  for f in "$farm"/coordinator-*.pid "$farm"/worker-*.pid; do
    [ -f "$f" ] || continue
    name=$(basename "$f" .pid); pid=$(cat "$f")
    if running "$f"; then state="running (pid $pid)"; else state="NOT RUNNING (was pid $pid; see $farm/$name.log)"; fi
    i=${name##*-}
    body=""
    if [ "${name%-*}" = coordinator ]; then
      body=$(curl -fsS --max-time 2 "http://127.0.0.1:$((port + 200 + i))/metrics" 2>/dev/null || true)
      if [ -n "$body" ]; then
        local lead="" 
        [ "$n" -gt 1 ] && lead=" leader=$(metric rbk_raft_is_leader <<<"$body" | sed 's/^1$/yes/;s/^0$/no/') term=$(metric rbk_raft_term <<<"$body")"
        state+=" api=127.0.0.1:$((port + i))$lead workers=$(metric rbk_workers_connected <<<"$body") queue=$(metric rbk_queue_depth <<<"$body")"
        state+=" builds ok=$(metric rbk_builds_total 'result="succeeded"' <<<"$body") failed=$(metric rbk_builds_total 'result="failed"' <<<"$body")"
      fi
    else
      body=$(curl -fsS --max-time 2 "http://127.0.0.1:$((port + 300 + i))/metrics" 2>/dev/null || true)
      [ -n "$body" ] && state+=" running_steps=$(metric rbk_worker_steps_running <<<"$body") done=$(metric rbk_worker_steps_total 'result="done"' <<<"$body") failed=$(metric rbk_worker_steps_total 'result="failed"' <<<"$body")"
    fi
    printf '%-14s %s\n' "$name" "$state"
  done
}

print_env() {
  [ -f "$farm/tenant.token" ] || { log "not set up: $0 up"; exit 1; }
  cat <<ENV
export RBK_COORDINATOR=http://127.0.0.1:$port
export RBK_TOKEN=$(cat "$farm/tenant.token")
export RBK_CLIENT_DIR=$farm/client
ENV
}

down() {
  local f pid
  for f in "$farm"/worker-*.pid "$farm"/coordinator-*.pid; do
    [ -f "$f" ] || continue
    if running "$f"; then
      pid=$(cat "$f")
      log "stopping $(basename "$f" .pid) (pid $pid)"
      kill "$pid" 2>/dev/null || true
      for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      kill -9 "$pid" 2>/dev/null || true
    fi
    rm -f "$f"
  done
}

case "${1:-}" in
  up) shift; up "$@" ;;
  env) print_env ;;
  status) status ;;
  down) down ;;
  *) echo "usage: $0 up [1|3|5] | env | status | down" >&2; exit 2 ;;
esac
