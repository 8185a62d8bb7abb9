#!/usr/bin/env bash
# Turns a base-rootfs.sh root filesystem into an OCI image layout that
# `rbk build --base-image NAME=DIR` loads (no registry is reachable here).
# rbk itself makes the image: `FROM scratch` + `COPY . /` of the rootfs
# (device nodes under /dev left out: the runtime creates /dev).
#
#   deploy/dev/base-image.sh NAME     (python, node, debian) prints the layout dir
#   env: RBK=path/to/rbk (default target/release/rbk, else target/debug/rbk)
#
# Cached under $RBK_DEV_DIR/bases/NAME-oci; delete it to rebuild.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
state=${RBK_DEV_DIR:-$repo/.rbk-dev}
name=${1:?usage: base-image.sh python|node|debian}
rbk=${RBK:-}
if [ -z "$rbk" ]; then
  for c in "$repo/target/release/rbk" "$repo/target/debug/rbk"; do [ -x "$c" ] && { rbk=$c; break; }; done
fi
[ -x "${rbk:-}" ] || { echo "base-image.sh: no rbk binary: cargo build --release -p rbk (or set RBK)" >&2; exit 1; }
rootfs=$("$here/base-rootfs.sh" "$name")
out=$state/bases/$name-oci
if [ -f "$out/.complete" ] && [ "$out/.complete" -nt "$rootfs/.complete" ]; then echo "$out"; exit 0; fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
printf 'FROM scratch\nCOPY . /\n' >"$work/Dockerfile"
printf 'dev/*\n.complete\n' >"$work/Dockerfile.dockerignore"
"$rbk" build --state-dir "$work/state" -f "$work/Dockerfile" -t "$name:latest" \
  -o "type=oci,dest=$work/image.tar" --progress=quiet "$rootfs" >&2
rm -rf "$out.tmp" "$out"
mkdir -p "$out.tmp"
tar -C "$out.tmp" -xf "$work/image.tar"
touch "$out.tmp/.complete"
mv "$out.tmp" "$out"
echo "$out"
