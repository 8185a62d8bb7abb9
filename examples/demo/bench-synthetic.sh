#!/bin/bash
# rbk build on the synthetic workload (../shared/workloads/synthetic): cold,
# warm on the same worker, warm on a fresh worker sharing only the store and
# the embedded coordinator state. Needs the python rootfs deploy/dev/setup.sh
# makes in .rbk-dev/bases/python. Usage: bench-synthetic.sh [RBK] [WORKLOADS]
set -euo pipefail
R=$(realpath "${1:-./target/release/rbk}")
W=$(realpath "${2:-../shared/workloads}")
ROOTFS=$(realpath .rbk-dev/bases/python)
work=$(mktemp -d)
cd "$work"
printf 'FROM scratch\nCOPY . /\n' > base.Dockerfile
printf 'dev\nproc\nsys\n.complete\n' > base.Dockerfile.dockerignore
t() { local s=$(date +%s.%N); "$@"; local e=$(date +%s.%N); echo "TIME $(echo "$e - $s" | bc)"; }
echo "== base"; t $R build --state-dir S --worker-dir WA -t python-base -f base.Dockerfile "$ROOTFS" 2>&1 | tail -3
B="--base-image python-base=$work/WA/images:python-base"
echo "== cold"; t $R build --state-dir S --worker-dir WA $B "$W/synthetic" 2>&1 | tail -6
echo "== warm same"; t $R build --state-dir S --worker-dir WA --no-cache $B "$W/synthetic" 2>&1 | tail -6
echo "== warm fresh"; t $R build --state-dir S --worker-dir WB --no-cache $B "$W/synthetic" 2>&1 | tail -6
