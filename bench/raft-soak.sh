#!/bin/sh
# Failover soak of the replicated coordinator (issue #7; not run in CI):
# three `rbk coordinator` processes on 127.0.0.1, a worker following the
# leader, builds submitted without pause, and the leader SIGKILLed KILLS
# times (restarted on its data each time). Prints every failover (kill →
# a new leader answering clients) and a table with min/median/max; exits
# non-zero if any accepted build was lost or did not succeed.
#
#   bench/raft-soak.sh            # 50 kills, release build
#   KILLS=5 PROFILE=debug bench/raft-soak.sh
set -eu
cd "$(dirname "$0")/.."
KILLS="${KILLS:-50}"
PROFILE="${PROFILE:-release}"
# rbk-bench starts the `rbk` built next to it for the coordinator nodes.
if [ "$PROFILE" = release ]; then cargo build --release -p rbk -p rbk-bench; else cargo build -p rbk -p rbk-bench; fi
exec "target/$PROFILE/rbk-bench" raft --soak-kills "$KILLS"
