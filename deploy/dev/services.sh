#!/usr/bin/env bash
# Test services for rbk on 127.0.0.1: redis-server, an S3-compatible server
# (moto), docker-registry; and the programs tests run (runc, crun,
# busybox-static, skopeo).
#
#   deploy/dev/services.sh up     install what is missing, start what is not
#                                 running, then print the environment (eval it)
#   deploy/dev/services.sh env    print the variables tests read
#   deploy/dev/services.sh down   stop what `up` started (by pid file)
#
# Idempotent: `up` twice starts nothing twice. State lives in $RBK_DEV_DIR
# (default: .rbk-dev in the repository).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
state=${RBK_DEV_DIR:-$repo/.rbk-dev}
redis_port=${RBK_DEV_REDIS_PORT:-16379}
s3_port=${RBK_DEV_S3_PORT:-19000}
registry_port=${RBK_DEV_REGISTRY_PORT:-15000}
venv=$state/venv

log() { echo "services: $*" >&2; }

install_packages() {
  local want=() pkg
  for pkg in redis-server docker-registry runc crun passt busybox-static skopeo python3-venv; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || want+=("$pkg")
  done
  if [ ${#want[@]} -gt 0 ]; then
    log "installing ${want[*]}"
    if [ "$(id -u)" != 0 ]; then log "need root to apt-get install ${want[*]}"; exit 1; fi
    apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${want[@]}" >&2
  fi
  if [ ! -x "$venv/bin/moto_server" ]; then
    log "installing moto[server] into $venv"
    rm -rf "$venv"
    python3 -m venv "$venv" >&2
    "$venv/bin/pip" install -q 'moto[server]' >&2
  fi
}

running() { # pidfile
  [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null
}

wait_port() { # port name
  local i
  for i in $(seq 1 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.1
  done
  log "$2 did not start on 127.0.0.1:$1; see $state/$2.log"
  exit 1
}

start() {
  mkdir -p "$state"
  if ! running "$state/redis.pid"; then
    log "starting redis-server on 127.0.0.1:$redis_port"
    redis-server --bind 127.0.0.1 --port "$redis_port" --save '' --appendonly no \
      --daemonize yes --pidfile "$state/redis.pid" --logfile "$state/redis.log" --dir "$state" >&2
    wait_port "$redis_port" redis
  fi
  if ! running "$state/s3.pid"; then
    log "starting moto_server (S3) on 127.0.0.1:$s3_port"
    nohup "$venv/bin/moto_server" -H 127.0.0.1 -p "$s3_port" >"$state/s3.log" 2>&1 &
    echo $! >"$state/s3.pid"
    wait_port "$s3_port" s3
  fi
  if ! running "$state/registry.pid"; then
    log "starting docker-registry on 127.0.0.1:$registry_port"
    mkdir -p "$state/registry"
    cat >"$state/registry.yml" <<YML
version: 0.1
log: { level: warn }
storage:
  filesystem: { rootdirectory: $state/registry }
  delete: { enabled: true }
http: { addr: 127.0.0.1:$registry_port }
YML
    nohup docker-registry serve "$state/registry.yml" >"$state/registry.log" 2>&1 &
    echo $! >"$state/registry.pid"
    wait_port "$registry_port" registry
  fi
}

print_env() {
  cat <<ENV
export RBK_TEST_S3_ENDPOINT=http://127.0.0.1:$s3_port
export RBK_TEST_S3_REGION=us-east-1
export RBK_TEST_S3_ACCESS_KEY=testing
export RBK_TEST_S3_SECRET_KEY=testing
export RBK_TEST_REDIS_URL=redis://127.0.0.1:$redis_port
export RBK_TEST_REGISTRY=127.0.0.1:$registry_port
export RBK_TEST_BIN_MOTO_SERVER=$venv/bin/moto_server
export RBK_TEST_BIN_REDIS_SERVER=$(command -v redis-server || echo /usr/bin/redis-server)
export RBK_TEST_BIN_RUNC=$(command -v runc || echo /usr/sbin/runc)
export RBK_TEST_BIN_CRUN=$(command -v crun || echo /usr/bin/crun)
export RBK_TEST_BIN_BUSYBOX=/bin/busybox
export RBK_TEST_BIN_SKOPEO=$(command -v skopeo || echo /usr/bin/skopeo)
ENV
}

stop() {
  local name pid
  for name in registry s3 redis; do
    if running "$state/$name.pid"; then
      pid=$(cat "$state/$name.pid")
      log "stopping $name (pid $pid)"
      kill "$pid" 2>/dev/null || true
      for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    fi
    rm -f "$state/$name.pid"
  done
}

case "${1:-}" in
  up) install_packages; start; print_env ;;
  env) print_env ;;
  down) stop ;;
  *) echo "usage: $0 up|env|down" >&2; exit 2 ;;
esac
