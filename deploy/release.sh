#!/usr/bin/env bash
# A release: the rbk image, built by rbk itself from deploy/Dockerfile, and
# the Helm chart, packaged, both pushed to one OCI registry as
#
#   REGISTRY/rbk:VERSION               (the image)
#   oci://REGISTRY/charts/rbk:VERSION  (the chart: helm install ... oci://REGISTRY/charts/rbk --version VERSION)
#
# VERSION is the workspace's (Cargo.toml); the chart's version and
# appVersion must be the same (checked before anything is built).
#
#   cargo build --release -p rbk
#   deploy/release.sh REGISTRY [--base-image debian:bookworm-slim=LAYOUT[:REF]] [--plain-http]
#
# --base-image: FROM debian:bookworm-slim from an OCI layout instead of a
#   registry pull (deploy/dev/base-image.sh debian makes one);
# --plain-http: the registry speaks HTTP, not HTTPS (a local one).
# Registries that need a login: log in with skopeo (`skopeo login`) first;
# the chart push uses the same credentials file.
#
# Environment: RBK (the rbk that builds; default target/release/rbk),
# RBK_BINARY (the binary put into the image, relative to the context;
# default target/release/rbk), RELEASE_CONTEXT (default: the repository),
# RELEASE_STATE (rbk build's state dir; default .rbk-dev/release),
# RELEASE_BUILD_FLAGS (more `rbk build` flags, e.g. --runtime-path).
# Prints the image's and the chart's digests.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

usage() { echo "usage: deploy/release.sh REGISTRY [--base-image NAME=LAYOUT[:REF]] [--plain-http]" >&2; exit 2; }
[ $# -ge 1 ] || usage
registry=${1%/}
shift
base_image=()
plain_http=false
while [ $# -gt 0 ]; do
  case $1 in
    --base-image) [ $# -ge 2 ] || usage; base_image=(--base-image "$2"); shift 2 ;;
    --plain-http) plain_http=true; shift ;;
    *) echo "release: unknown argument $1" >&2; usage ;;
  esac
done

version=$(sed -n 's/^version = "\(.*\)"$/\1/p' "$repo/Cargo.toml" | head -1)
[ -n "$version" ] || { echo "release: no version = \"...\" in $repo/Cargo.toml" >&2; exit 1; }
chart_version=$(sed -n 's/^version: *//p' "$repo/helm/rbk/Chart.yaml")
app_version=$(sed -n 's/^appVersion: *"\{0,1\}\([^"]*\)"\{0,1\}$/\1/p' "$repo/helm/rbk/Chart.yaml")
if [ "$chart_version" != "$version" ] || [ "$app_version" != "$version" ]; then
  echo "release: helm/rbk/Chart.yaml has version $chart_version, appVersion $app_version; Cargo.toml has $version: make them equal" >&2
  exit 1
fi

rbk=${RBK:-$repo/target/release/rbk}
[ -x "$rbk" ] || { echo "release: $rbk is not there: cargo build --release -p rbk (or set RBK)" >&2; exit 1; }
context=${RELEASE_CONTEXT:-$repo}
state=${RELEASE_STATE:-$repo/.rbk-dev/release}
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
tls=(--dest-tls-verify=true)
$plain_http && tls=(--dest-tls-verify=false)

echo "release: building $registry/rbk:$version with $rbk" >&2
# shellcheck disable=SC2086 # RELEASE_BUILD_FLAGS is a list of flags
"$rbk" build --state-dir "$state" ${RELEASE_BUILD_FLAGS:-} -f "$repo/deploy/Dockerfile" \
  --build-arg "RBK_BINARY=${RBK_BINARY:-target/release/rbk}" "${base_image[@]}" \
  -t "$registry/rbk:$version" -o "type=oci,dest=$out/rbk-image.tar" "$context" >&2
skopeo copy -q "${tls[@]}" "oci-archive:$out/rbk-image.tar" "docker://$registry/rbk:$version" >&2
inspect_tls=(--tls-verify=true)
$plain_http && inspect_tls=(--tls-verify=false)
image_digest=$(skopeo inspect "${inspect_tls[@]}" --format '{{.Digest}}' "docker://$registry/rbk:$version")

echo "release: packaging and pushing the chart to oci://$registry/charts" >&2
venv=$("$repo/deploy/dev/helm-tools.sh")
chart_digest=$("$venv/bin/python" - "$repo/helm/rbk" "$out" "$version" "oci://$registry/charts" "$plain_http" <<'EOF'
import sys
import helm_python

chart, dest, version, remote, plain = sys.argv[1:]
archive = helm_python.package(chart, destination=dest, version=version, app_version=version)
pushed = helm_python.push(archive, remote, plain_http=plain == "true")
print(pushed.get("digest") or pushed.get("Digest") or pushed)
EOF
)
echo "image $registry/rbk:$version $image_digest"
echo "chart oci://$registry/charts/rbk:$version $chart_digest"
