#!/bin/sh
# A worker's disk limit under a stream of 200 distinct builds (issue #18
# item 4; not run in CI: a few minutes). One `rbk coordinator`, one
# `rbk worker --disk-limit 12MiB` and `rbk submit` as processes on
# 127.0.0.1 (the farm test harness, crates/cli/tests/farm/disk_limit.rs):
# every build has its own context (busybox and 256 KiB of its own data)
# and its own cache mount. After each build the worker's state dir is
# measured (apparent bytes, as `du -sb`), checked against the limit, and
# the peak is printed ("worker disk: ...").
#
#   eval "$(deploy/dev/services.sh env)"; bench/worker-disk.sh
set -eu
cd "$(dirname "$0")/.."
exec cargo nextest run -p rbk --test farm --run-ignored only --no-capture \
    disk_limit::two_hundred_distinct_builds_keep_the_worker_under_its_disk_limit
