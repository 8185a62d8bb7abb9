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
  # git, openssh-client/-server: git build contexts (file://, git daemon,
  # and ssh:// against an sshd the test runs on a port of its own).
  for pkg in redis-server docker-registry runc crun passt busybox-static skopeo python3-venv git openssh-client openssh-server; do
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

# The IAM calls that make the test key: CreateUser, PutUserPolicy,
# CreateAccessKey (moto's INITIAL_NO_AUTH_ACTION_COUNT).
s3_setup_actions=3

# Creates a user allowed everything on the fresh moto and prints its
# access key id and secret (one line, space-separated).
s3_credentials() {
  "$venv/bin/python" - "http://127.0.0.1:$s3_port" <<'PY'
import json, sys
import boto3
iam = boto3.client("iam", endpoint_url=sys.argv[1], region_name="us-east-1",
                   aws_access_key_id="bootstrap", aws_secret_access_key="bootstrap")
iam.create_user(UserName="rbk-test")
allow_all = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}
iam.put_user_policy(UserName="rbk-test", PolicyName="allow-all", PolicyDocument=json.dumps(allow_all))
key = iam.create_access_key(UserName="rbk-test")["AccessKey"]
print(key["AccessKeyId"], key["SecretAccessKey"])
PY
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
  if running "$state/s3.pid" && [ ! -f "$state/s3.credentials" ]; then
    # Started by an older version of this script, without auth.
    log "restarting moto_server with auth on"
    stop_one s3
  fi
  if ! running "$state/s3.pid"; then
    log "starting moto_server (S3, auth on) on 127.0.0.1:$s3_port"
    rm -f "$state/s3.credentials"
    # Auth on, so that wrong keys fail as they would on S3. Moto checks
    # keys against its own IAM: the first $s3_setup_actions requests (the
    # set-up below) go unchecked, every later one needs the key it creates.
    INITIAL_NO_AUTH_ACTION_COUNT=$s3_setup_actions nohup "$venv/bin/moto_server" -H 127.0.0.1 -p "$s3_port" >"$state/s3.log" 2>&1 &
    echo $! >"$state/s3.pid"
    wait_port "$s3_port" s3
    s3_credentials >"$state/s3.credentials.tmp"
    mv "$state/s3.credentials.tmp" "$state/s3.credentials"
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
  local s3_key s3_secret
  if [ ! -f "$state/s3.credentials" ]; then
    log "no S3 credentials in $state/s3.credentials (moto runs with auth on); run: $0 up"
    exit 1
  fi
  read -r s3_key s3_secret <"$state/s3.credentials"
  cat <<ENV
export RBK_TEST_S3_ENDPOINT=http://127.0.0.1:$s3_port
export RBK_TEST_S3_REGION=us-east-1
export RBK_TEST_S3_ACCESS_KEY=$s3_key
export RBK_TEST_S3_SECRET_KEY=$s3_secret
export RBK_TEST_REDIS_URL=redis://127.0.0.1:$redis_port
export RBK_TEST_REGISTRY=127.0.0.1:$registry_port
export RBK_TEST_BIN_MOTO_SERVER=$venv/bin/moto_server
export RBK_TEST_BIN_REDIS_SERVER=$(command -v redis-server || echo /usr/bin/redis-server)
export RBK_TEST_BIN_RUNC=$(command -v runc || echo /usr/sbin/runc)
export RBK_TEST_BIN_CRUN=$(command -v crun || echo /usr/bin/crun)
export RBK_TEST_BIN_BUSYBOX=/bin/busybox
export RBK_TEST_BIN_BUSYBOX_ARM64=$state/arm64-busybox/bin/busybox
export RBK_TEST_BIN_SKOPEO=$(command -v skopeo || echo /usr/bin/skopeo)
ENV
}

stop_one() { # name
  local pid
  if running "$state/$1.pid"; then
    pid=$(cat "$state/$1.pid")
    log "stopping $1 (pid $pid)"
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  fi
  rm -f "$state/$1.pid"
}

stop() {
  local name
  for name in registry s3 redis; do
    stop_one "$name"
  done
  # The key lived in moto's memory only.
  rm -f "$state/s3.credentials"
}

case "${1:-}" in
  up) install_packages; start; print_env ;;
  env) print_env ;;
  down) stop ;;
  *) echo "usage: $0 up|env|down" >&2; exit 2 ;;
esac
