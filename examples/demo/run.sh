#!/usr/bin/env bash
# The README's main demo: a warm pip cache follows a build to a fresh machine.
#
# The pip step of ./Dockerfile compiles source-only packages into wheels and
# keeps them in its cache mount. The demo runs it three times, first with
# `rbk build` (the embedded default, no servers), then on a farm of processes
# this script starts itself (`rbk coordinator`, `rbk worker` a and b,
# `rbk submit`; filesystem store):
#   1. worker A, cold: pip downloads and compiles every wheel;
#   2. worker A, warm: a changed requirements comment re-runs the step, and
#      the wheels come from A's cache mount;
#   3. worker B, fresh (an empty state dir sharing only the store and the
#      coordinator): the step runs again and the cache arrives from the store.
# It prints a table and fails unless B used the cache (no wheel rebuilt).
#
# Usage: examples/demo/run.sh [RBK_BINARY]     (root: runc, overlayfs, and
# debootstrap for the base on first use, cached under .rbk-dev/bases)
# env: RBK_DEMO_DIR (scratch dir, default a new temp dir)
set -euo pipefail
rbk=$(realpath "${1:-./target/release/rbk}")
here=$(dirname "$(realpath "$0")")
repo=$(cd "$here/../.." && pwd)
work=${RBK_DEMO_DIR:-$(mktemp -d)}
mkdir -p "$work"
say() { echo "demo: $*" >&2; }
die() { say "$*"; exit 1; }
[ -x "$rbk" ] || die "no rbk binary at $rbk (cargo build --release -p rbk)"

say "the python base (debootstrap on first use, then cached)"
base=$(RBK="$rbk" "$repo/deploy/dev/base-image.sh" python)
ctx=$work/context
rm -rf "$ctx" && mkdir -p "$ctx"
cp "$here/Dockerfile" "$here/requirements.txt" "$here/app.py" "$ctx/"

rows=()
# run LABEL LOG CMD...: one build with a new requirements comment (so the pip
# step runs again, on whatever its cache mount holds); records a table row.
run() {
  local label=$1 out=$2; shift 2
  sed -i '/^# demo run:/d' "$ctx/requirements.txt"
  echo "# demo run: $label" >>"$ctx/requirements.txt"
  echo
  echo "== $label"
  local t0 t1
  t0=$(date +%s.%N)
  if ! "$@" "$ctx" >"$out" 2>&1; then cat "$out"; die "$label failed (log: $out)"; fi
  t1=$(date +%s.%N)
  grep -E 'Building wheel for .*started|Using cached .*-linux_[a-z0-9_]+\.whl|cache: .* restored' "$out" | sed 's/^/  /' || true
  local built cached restored
  built=$( (grep -oE 'Building wheel for [A-Za-z0-9_.-]+' "$out" || true) | sort -u | wc -l)
  cached=$( (grep -oE 'Using cached [^ ]*-linux_[a-z0-9_]+\.whl' "$out" || true) | sort -u | wc -l)
  restored=$( (grep -oE 'cache: [^)]* restored' "$out" || true) | head -1 | sed 's/cache: //; s/ restored//')
  rows+=("$(printf '%-32s %7.1f s %12s %17s %14s' "$label" "$(awk "BEGIN{print $t1-$t0}")" "$built" "$cached" "${restored:--}")")
  echo "$built $cached" >"$out.counts"
}
built() { cut -d' ' -f1 "$1.counts"; }
from_cache() { cut -d' ' -f2 "$1.counts"; }

# --- 1-3 with rbk build: one process, the embedded coordinator and store.
state=$work/state
build() { # WORKER_DIR CONTEXT
  "$rbk" build --progress=plain --state-dir "$state" --worker-dir "$1" \
    --base-image "python-base=$base" -t rbk-demo:latest "$2"
}
run "rbk build: worker A, cold" "$work/a-cold.log" build "$work/worker-a"
run "rbk build: worker A, warm" "$work/a-warm.log" build "$work/worker-a"
run "rbk build: worker B, fresh" "$work/b-fresh.log" build "$work/worker-b"

# --- 1-3 on a farm of processes on this machine.
farm=$work/farm
. "$here/../farm.sh"
submit() { # CONTEXT
  "$rbk" submit --progress=plain --client-dir "$farm/client" \
    --base-image "python-base=$base" -t rbk-demo:latest -o "type=oci,dest=$work/rbk-demo.tar" "$1"
}
worker a
run "farm: worker a, cold" "$work/farm-a-cold.log" submit
run "farm: worker a, warm" "$work/farm-a-warm.log" submit
kill -TERM "$(cat "$farm/worker-a.pid")" # drains and exits
wait "$(cat "$farm/worker-a.pid")" || true
worker b
run "farm: worker b, fresh (a left)" "$work/farm-b-fresh.log" submit

echo
echo "rbk demo: pip with a cache mount, the same requirements each run ($(date -u +%F), $(nproc) cores)"
printf '%-32s %9s %12s %17s %14s\n' "run" "wall" "wheels built" "wheels from cache" "cache restored"
printf '%s\n' "${rows[@]}"
echo "(logs and the image, $work/rbk-demo.tar, in $work)"

[ "$(built "$work/a-cold.log")" -gt 0 ] || die "worker A's cold run compiled no wheel: the demo shows nothing"
for b in a-warm b-fresh farm-a-warm farm-b-fresh; do
  [ "$(built "$work/$b.log")" -eq 0 ] || die "$b rebuilt wheels: its cache mount did not arrive warm (log: $work/$b.log)"
  [ "$(from_cache "$work/$b.log")" -gt 0 ] || die "$b took no wheel from pip's cache (log: $work/$b.log)"
done
grep -q 'cache: .* restored' "$work/b-fresh.log" || die "worker B restored nothing from the store (log: $work/b-fresh.log)"
grep -q 'cache: .* restored' "$work/farm-b-fresh.log" || die "farm worker b restored nothing from the store (log: $work/farm-b-fresh.log)"
echo "demo: worker B compiled no wheel: the pip cache followed the build from A through the store"
