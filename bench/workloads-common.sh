# Sourced by bench/workloads.sh and bench/farm-workloads.sh: where the
# shared workloads, the bench state and the rbk binary are, the workloads
# to run (the script's arguments, default synthetic pip), and the variants
# both time (so the two tables measure the same builds).
# Set REPS before sourcing to change its default of 1.
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
REPS=${REPS:-1}
WORKLOADS_DIR=${WORKLOADS_DIR:-$(cd "$root/../shared/workloads" 2>/dev/null && pwd || echo /work/shared/workloads)}
BENCH_DIR=${BENCH_DIR:-/tmp/rbk-bench}
RBK=${RBK:-$root/target/release/rbk}
workloads=("$@")
[ ${#workloads[@]} -gt 0 ] || workloads=(synthetic pip)

# workload_variant WORKLOAD N: sets ctx and vargs for variant N. synthetic: SEED=N
# (SEED>0 rewrites ~5% of the cache); pip: a copy of the context under
# $BENCH_DIR/ctx/${CTX_PREFIX}pip-N whose requirements.txt ends in the
# comment "# variant N" (changes the COPY's and the pip step's keys; pip
# ignores the comment).
workload_variant() {
  local w=$1 n=$2
  case $w in
    synthetic) ctx=$WORKLOADS_DIR/synthetic; vargs=(--build-arg "SEED=$n")
      [ -z "${SYNTH_FILES:-}" ] || vargs+=(--build-arg "FILES=$SYNTH_FILES") ;;
    pip)
      ctx=$BENCH_DIR/ctx/${CTX_PREFIX:-}pip-$n
      rm -rf "$ctx"; mkdir -p "$ctx"; cp -a "$WORKLOADS_DIR/pip/." "$ctx/"
      [ "$n" = 0 ] || echo "# variant $n" >>"$ctx/requirements.txt"
      vargs=() ;;
    *) echo "unknown workload $w" >&2; exit 2 ;;
  esac
}
