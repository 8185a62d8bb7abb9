#!/usr/bin/env bash
# The headline benchmark: the shared workloads (../shared/workloads) built
# cold, warm on the same worker and warm on a FRESH worker, by `rbk build`
# and by BuildKit (Docker 20.10's built-in builder), in one run.
#
# Usage (root; slow, NOT part of `make test`):
#   bench/workloads.sh [WORKLOAD...]        default: synthetic pip
#   env: REPS=3 (median of REPS runs per cell), RBK=path/to/rbk (default
#        target/release/rbk, built if it lacks `build`), WORKLOADS_DIR,
#        BENCH_DIR (scratch, default /tmp/rbk-bench), SKIP_BUILDKIT=1,
#        SYNTH_FILES=N (smaller synthetic cache, for a quick smoke run).
#
# Set-up (idempotent): the dev services, the python base rootfs
# (deploy/dev/base-rootfs.sh python, /dev entries left out: image layers must
# not carry device nodes), a release rbk, dockerd (--bridge=none
# --iptables=false, started in the background if not running), the base
# imported into docker as `python-base` and copied with skopeo into an OCI
# layout that `rbk build --base-image python-base=DIR:latest` loads. Both
# builders start from the very same bytes.
#
# What each column means (every cell is the wall time of one build command):
#   rbk cold        empty state dir, empty worker dir, empty store; variant 0.
#   rbk warm same   same state/worker/store; variant 1 (the step re-runs because
#                   its key changed; its cache mount is warm on the worker).
#   rbk warm fresh  same coordinator state dir and content store (filesystem),
#                   a NEW empty --worker-dir; variant 2. The worker holds
#                   nothing: the base layers and the cache mount's head come
#                   from the store. (`rbk build` keeps cache-mount heads in the
#                   coordinator state, so a fresh worker keeps the state dir,
#                   exactly as a farm worker keeps its coordinator. It takes only
#                   a store directory, no S3 config, so this is the filesystem
#                   store.)
#   rbk fresh, base held
#                   like rbk warm fresh, on another new --worker-dir that was
#                   first given the base image (an untimed `FROM BASE` +
#                   `RUN true` build with its own state and store, so it has
#                   never seen the cache); variant 3. This is what BuildKit's
#                   "fresh" columns measure: docker's image store keeps the
#                   base through `docker builder prune`.
#   BK cold         `docker builder prune -af`, then variant 0.
#   BK warm same    variant 1 on the same builder.
#   BK fresh prune  `docker builder prune -af`, then variant 2 (what a fresh
#                   CI machine gets: the cache mount is empty).
#   BK fresh dance  the "cache dance": the cache mount is tarred out after
#                   warm-same (not timed), the builder pruned, then timed:
#                   injecting the tar into the cache mount + variant 2. The tar
#                   never crosses a network, so this is a lower bound.
# Variants: synthetic uses --build-arg SEED=N (SEED>0 rewrites ~5% of the cache
# as the workload's README says); pip appends the comment "# variant N" to
# requirements.txt in a copy of the context (changes the key of the COPY and
# the pip step on both builders; pip ignores the comment).
set -euo pipefail
REPS=${REPS:-3}
. "$(dirname "$0")/workloads-common.sh"
DOCKER=/usr/bin/docker # the docker first on PATH refuses BuildKit without buildx
export DOCKER_BUILDKIT=1
mkdir -p "$BENCH_DIR"
log() { echo "bench: $*" >&2; }

# ---- set-up -------------------------------------------------------------
if [ -x deploy/dev/services.sh ]; then eval "$(deploy/dev/services.sh up)" >/dev/null 2>&1 || log "services.sh up failed (not needed: filesystem store)"; fi
base_rootfs=$root/.rbk-dev/bases/python
[ -e "$base_rootfs/.complete" ] || deploy/dev/base-rootfs.sh python
if ! "$RBK" build --help >/dev/null 2>&1; then
  log "building release rbk (about 7 minutes)"
  cargo build --release -p rbk
  RBK=$root/target/release/rbk
fi
if ! "$DOCKER" info >/dev/null 2>&1; then
  log "starting dockerd"
  (setsid nohup dockerd --bridge=none --iptables=false >"$BENCH_DIR/dockerd.log" 2>&1 &)
  for _ in $(seq 60); do "$DOCKER" info >/dev/null 2>&1 && break; sleep 1; done
  "$DOCKER" info >/dev/null 2>&1 || { log "dockerd did not start, see $BENCH_DIR/dockerd.log"; exit 1; }
fi
# The base gets this host's CA bundle: PyPI is reached through a TLS-inspecting
# egress proxy here, and pip in the container must trust it like the host does.
base_oci=$BENCH_DIR/python-oci
stamp="python-base v2 (no /dev entries, host CA bundle) $(stat -c %Y "$base_rootfs/.complete")"
if [ "$(cat "$BENCH_DIR/python-base.stamp" 2>/dev/null)" != "$stamp" ] || ! "$DOCKER" image inspect python-base >/dev/null 2>&1 || [ ! -e "$base_oci/index.json" ]; then
  log "importing the python base into docker and into an OCI layout"
  rm -rf "$base_oci" "$BENCH_DIR/python-base.stamp" "$BENCH_DIR/ca"
  mkdir -p "$BENCH_DIR/ca/etc/ssl/certs"
  cp /etc/ssl/certs/ca-certificates.crt "$BENCH_DIR/ca/etc/ssl/certs/"
  tar -C "$base_rootfs" --exclude='./dev/*' --exclude='./etc/ssl/certs/ca-certificates.crt' -cf "$BENCH_DIR/base.tar" .
  tar -C "$BENCH_DIR/ca" -rf "$BENCH_DIR/base.tar" ./etc/ssl/certs/ca-certificates.crt
  "$DOCKER" import "$BENCH_DIR/base.tar" python-base >/dev/null
  rm -f "$BENCH_DIR/base.tar"
  skopeo copy -q docker-daemon:python-base:latest "oci:$base_oci:latest"
  echo "$stamp" >"$BENCH_DIR/python-base.stamp"
fi

# ---- helpers ------------------------------------------------------------
now() { date +%s.%N; }
# cache_target WORKLOAD: the cache mount's target (BuildKit's default cache id).
cache_target() { case $1 in synthetic) echo /cache ;; pip) echo /root/.cache/pip ;; *) echo "unknown workload $1" >&2; exit 2 ;; esac; }
# workload_variant WORKLOAD N (workloads-common.sh): sets ctx and vargs.
# timed LOG CMD...: runs CMD with output to LOG, prints wall seconds; fails loudly.
timed() {
  local out=$1; shift
  local t0 t1
  t0=$(now)
  if ! "$@" >"$out" 2>&1; then log "FAILED: $* (log: $out)"; tail -20 "$out" >&2; exit 1; fi
  t1=$(now)
  awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.1f", b-a}'
}
rbk_build() { # DIR WORKER N WORKLOAD
  local d=$1 wk=$2 n=$3 w=$4
  workload_variant "$w" "$n"
  "$RBK" build --progress=plain --state-dir "$d/state" --worker-dir "$d/$wk" --store "$d/store" \
    --base-image "python-base=$base_oci:latest" "${vargs[@]}" -t "bench-$w:latest" "$ctx"
}
seed_base() { # DIR WORKER — the worker unpacks the base, never sees the cache
  local d=$1 wk=$2 s=$BENCH_DIR/seed-ctx
  mkdir -p "$s"; printf 'FROM python-base\nRUN true\n' >"$s/Dockerfile"
  "$RBK" build --progress=plain --state-dir "$d/seed-state" --worker-dir "$d/$wk" --store "$d/seed-store" \
    --base-image "python-base=$base_oci:latest" "$s"
}
bk_build() { # N WORKLOAD
  workload_variant "$2" "$1"
  "$DOCKER" build --network host --progress=plain --build-arg BASE=python-base "${vargs[@]}" -t "bench-$2:latest" "$ctx"
}
bk_prune() { "$DOCKER" builder prune -af >/dev/null; }
bk_export_cache() { # WORKLOAD DEST.tar — the first half of the cache dance (not timed)
  local t d; t=$(cache_target "$1"); d=$BENCH_DIR/dance-out
  rm -rf "$d" "$2"; mkdir -p "$d"
  printf 'FROM python-base AS x\nRUN --mount=type=cache,target=%s tar -C %s -cf /cache.tar .\nFROM scratch\nCOPY --from=x /cache.tar /\n' "$t" "$t" >"$d/Dockerfile"
  "$DOCKER" build --network host -q --no-cache -o "type=local,dest=$d/out" "$d" >/dev/null
  mv "$d/out/cache.tar" "$2"
}
bk_inject_and_build() { # N WORKLOAD TAR — the second half, timed with the build
  local t d; t=$(cache_target "$2"); d=$BENCH_DIR/dance-in
  rm -rf "$d"; mkdir -p "$d"; ln "$3" "$d/cache.tar" 2>/dev/null || cp "$3" "$d/cache.tar"
  printf 'FROM python-base\nRUN --mount=type=bind,source=cache.tar,target=/cache.tar --mount=type=cache,target=%s tar -C %s -xf /cache.tar\n' "$t" "$t" >"$d/Dockerfile"
  "$DOCKER" build --network host --progress=plain "$d" && bk_build "$1" "$2"
}
median() { tr ' ' '\n' | { grep -v '^$' || true; } | sort -n | awk '{a[NR]=$1} END{if(NR==0){print "-"} else if(NR%2){print a[(NR+1)/2]} else {printf "%.1f", (a[NR/2]+a[NR/2+1])/2}}'; }

# ---- measure ------------------------------------------------------------
declare -A R
for w in "${workloads[@]}"; do
  for rep in $(seq "$REPS"); do
    d=$BENCH_DIR/rbk-$w
    rm -rf "$d"; mkdir -p "$d"
    logs=$BENCH_DIR/logs/$w-$rep; mkdir -p "$logs"
    R[$w,rc]+="$(timed "$logs/rbk-cold.log" rbk_build "$d" worker-a 0 "$w") "
    R[$w,rs]+="$(timed "$logs/rbk-same.log" rbk_build "$d" worker-a 1 "$w") "
    R[$w,rf]+="$(timed "$logs/rbk-fresh.log" rbk_build "$d" worker-b 2 "$w") "
    timed "$logs/rbk-seed.log" seed_base "$d" worker-c >/dev/null
    R[$w,rh]+="$(timed "$logs/rbk-fresh-base.log" rbk_build "$d" worker-c 3 "$w") "
    grep -q 'restored' "$logs/rbk-fresh.log" && grep -o '(cache: [^)]*)' "$logs/rbk-fresh.log" | sed 's/^/bench: rbk fresh: /' >&2 || true
    if [ "${SKIP_BUILDKIT:-}" != 1 ]; then
      bk_prune
      R[$w,bc]+="$(timed "$logs/bk-cold.log" bk_build 0 "$w") "
      R[$w,bs]+="$(timed "$logs/bk-same.log" bk_build 1 "$w") "
      bk_export_cache "$w" "$BENCH_DIR/dance-$w.tar"
      bk_prune
      R[$w,bp]+="$(timed "$logs/bk-fresh-prune.log" bk_build 2 "$w") "
      bk_prune
      R[$w,bd]+="$(timed "$logs/bk-fresh-dance.log" bk_inject_and_build 2 "$w" "$BENCH_DIR/dance-$w.tar") "
    fi
    log "$w run $rep: rbk ${R[$w,rc]}| ${R[$w,rs]}| ${R[$w,rf]}| ${R[$w,rh]}; buildkit ${R[$w,bc]:-}| ${R[$w,bs]:-}| ${R[$w,bp]:-}| ${R[$w,bd]:-}"
  done
done

# ---- report -------------------------------------------------------------
echo "REPS=$REPS (median of $REPS run(s) per cell), wall seconds; $(nproc) cores; rbk=$RBK; $("$DOCKER" version -f 'docker {{.Server.Version}}')"
echo
echo "| workload | rbk cold | rbk warm same | rbk warm fresh | rbk warm fresh, base held | BuildKit cold | BuildKit warm same | BuildKit fresh (prune) | BuildKit fresh (cache dance) | rbk fresh ÷ rbk same | rbk fresh ÷ BuildKit same | rbk fresh, base held ÷ rbk same | rbk fresh, base held ÷ BuildKit same |"
echo "|---|---|---|---|---|---|---|---|---|---|---|---|---|"
for w in "${workloads[@]}"; do
  rc=$(echo "${R[$w,rc]}" | median); rs=$(echo "${R[$w,rs]}" | median); rf=$(echo "${R[$w,rf]}" | median)
  rh=$(echo "${R[$w,rh]}" | median)
  bc=$(echo "${R[$w,bc]:-}" | median); bs=$(echo "${R[$w,bs]:-}" | median)
  bp=$(echo "${R[$w,bp]:-}" | median); bd=$(echo "${R[$w,bd]:-}" | median)
  r1=$(awk -v a="$rf" -v b="$rs" 'BEGIN{printf "%.2f", a/b}')
  r2=$(awk -v a="$rf" -v b="$bs" 'BEGIN{if (b=="-"||b==0) print "-"; else printf "%.2f", a/b}')
  r3=$(awk -v a="$rh" -v b="$rs" 'BEGIN{printf "%.2f", a/b}')
  r4=$(awk -v a="$rh" -v b="$bs" 'BEGIN{if (b=="-"||b==0) print "-"; else printf "%.2f", a/b}')
  echo "| $w | $rc | $rs | $rf | $rh | $bc | $bs | $bp | $bd | $r1 | $r2 | $r3 | $r4 |"
done
