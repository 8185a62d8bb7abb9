#!/usr/bin/env bash
# Issue #6, test 8: the `pip` workload (../shared/workloads/pip) built on a
# debootstrap Python base, and the result checked by running it.
#
# Slow (debootstrap on first use, PyPI downloads, ~1-3 minutes after that)
# and needs PyPI, so it is NOT part of `make test` / CI. Run it by hand (root):
#
#   bench/pip-workload-check.sh            # rbk build (embedded default)
#   env: RBK=path/to/rbk (default target/release/rbk, else target/debug/rbk),
#        WORKLOADS_DIR, CHECK_DIR (scratch, default /tmp/rbk-pip-check).
#
# What it does, all with rbk itself (no docker needed):
#   1. the python base rootfs (deploy/dev/base-rootfs.sh python), without its
#      /dev entries and with this host's CA bundle (PyPI may be reached
#      through a TLS-inspecting proxy), becomes an OCI image: `FROM scratch`
#      + `COPY . /`, exported with --output type=oci;
#   2. the pip workload is built on it, cold, then again warm with a changed
#      requirements.txt (the pip step re-runs on the warm cache mount; the
#      progress line must report it), exported as an OCI archive;
#   3. a check build `FROM` that image runs python in it: every requirement
#      imports (rcssmin and rjsmin were compiled from source by the pip
#      step), Django has the pinned version, and the app copied by the last
#      COPY is there. Any failure exits non-zero with the build's log.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
WORKLOADS_DIR=${WORKLOADS_DIR:-$(cd "$root/../shared/workloads" 2>/dev/null && pwd || echo /work/shared/workloads)}
CHECK_DIR=${CHECK_DIR:-/tmp/rbk-pip-check}
if [ -z "${RBK:-}" ]; then
  if [ -x target/release/rbk ]; then RBK=$root/target/release/rbk; else RBK=$root/target/debug/rbk; fi
fi
[ -x "$RBK" ] || { echo "pip-check: no rbk binary at $RBK (cargo build -p rbk)" >&2; exit 2; }
log() { echo "pip-check: $*" >&2; }
fail() { log "FAILED: $*"; exit 1; }
run() { # LOG CMD... : runs CMD, on failure prints the log's tail and exits
  local out=$1; shift
  if ! "$@" >"$out" 2>&1; then tail -30 "$out" >&2; fail "$* (log: $out)"; fi
}
rm -rf "$CHECK_DIR"; mkdir -p "$CHECK_DIR"
state=$CHECK_DIR/state

# 1. The base image.
rootfs=$(deploy/dev/base-rootfs.sh python)
ctx=$CHECK_DIR/base-ctx
log "staging the python base from $rootfs"
cp -al "$rootfs" "$ctx" 2>/dev/null || cp -a "$rootfs" "$ctx"
rm -rf "$ctx/dev" "$ctx/.complete" "$ctx/etc/ssl/certs/ca-certificates.crt"
mkdir -p "$ctx/dev" "$ctx/etc/ssl/certs"
cp /etc/ssl/certs/ca-certificates.crt "$ctx/etc/ssl/certs/"
printf 'FROM scratch\nCOPY . /\n' >"$CHECK_DIR/Dockerfile.base"
log "building the base image"
run "$CHECK_DIR/base.log" "$RBK" build --progress=plain --state-dir "$state" \
  -f "$CHECK_DIR/Dockerfile.base" -o "type=oci,dest=$CHECK_DIR/base.tar" -t python-base:latest "$ctx"
mkdir -p "$CHECK_DIR/base-oci" && tar -C "$CHECK_DIR/base-oci" -xf "$CHECK_DIR/base.tar"

# 2. The pip workload, cold then warm.
app=$CHECK_DIR/pip-ctx
cp -a "$WORKLOADS_DIR/pip/." "$app/" 2>/dev/null || { mkdir -p "$app"; cp -a "$WORKLOADS_DIR/pip/." "$app/"; }
chmod -R u+w "$app"
build_pip() { # LOG
  run "$1" "$RBK" build --progress=plain --state-dir "$state" \
    --base-image "python-base=$CHECK_DIR/base-oci" -o "type=oci,dest=$CHECK_DIR/pip.tar" -t pip-app:latest "$app"
}
log "building the pip workload (cold)"
build_pip "$CHECK_DIR/pip-cold.log"
echo "# warm variant" >>"$app/requirements.txt"
log "building the pip workload (warm cache mount)"
build_pip "$CHECK_DIR/pip-warm.log"
grep -q 'RUN --mount=type=cache,target=/root/.cache/pip' "$CHECK_DIR/pip-warm.log" || fail "the warm build did not run the pip step"
grep -q 'CACHED.*RUN --mount=type=cache' "$CHECK_DIR/pip-warm.log" && fail "the warm build reused the pip step instead of running it"
mkdir -p "$CHECK_DIR/pip-oci" && tar -C "$CHECK_DIR/pip-oci" -xf "$CHECK_DIR/pip.tar"

# 3. Run the result.
check=$CHECK_DIR/check-ctx; mkdir -p "$check"
cat >"$check/Dockerfile" <<'EOF'
FROM pip-app
RUN cd /usr/src/app && test -f app.py && test -f requirements.txt && python3 -c '\
import importlib.metadata as md, django, click, pytz, rcssmin, redis, rjsmin, rq, six, sqlparse; \
reqs = [l.split("#")[0].strip() for l in open("requirements.txt")]; \
pins = dict(r.split("==") for r in reqs if r); \
bad = {n: (v, md.version(n)) for n, v in pins.items() if md.version(n) != v}; \
assert not bad, bad; \
assert rcssmin.cssmin("a  {  b : c ; }") == "a{b:c}"; \
assert rjsmin.jsmin("var  a = 1 ;") == "var a=1;"; \
print("pip workload OK:", len(pins), "pinned packages, django", django.get_version())'
EOF
log "running the built image"
run "$CHECK_DIR/check.log" "$RBK" build --progress=plain --no-cache --state-dir "$state" \
  --base-image "pip-app=$CHECK_DIR/pip-oci" "$check"
# The output line (the command line echoed in the progress has no digits there).
ok=$(grep -oE 'pip workload OK: [0-9]+ pinned packages, django [0-9.]+' "$CHECK_DIR/check.log" | head -1)
[ -n "$ok" ] || { tail -30 "$CHECK_DIR/check.log" >&2; fail "the check step printed no OK line"; }
log "$ok; logs in $CHECK_DIR"
