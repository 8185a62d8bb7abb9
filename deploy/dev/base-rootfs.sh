#!/usr/bin/env bash
# Builds the root filesystems the workloads' base images are made from, since
# no public registry is reachable: `python` (debootstrap minbase bookworm +
# python3, pip, gcc), `node` (+ nodejs, npm), `debian` (minbase only).
#
#   deploy/dev/base-rootfs.sh NAME    prints the rootfs directory when done
#
# Cached under $RBK_DEV_DIR/bases/NAME; delete it to rebuild.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
state=${RBK_DEV_DIR:-$(cd "$here/../.." && pwd)/.rbk-dev}
name=${1:?usage: base-rootfs.sh python|node|debian}
case "$name" in
  python) extra=python3,python3-pip,python3-dev,gcc,libc6-dev ;;
  node) extra=nodejs,npm ;;
  debian) extra= ;;
  *) echo "base-rootfs.sh: unknown base $name (python, node, debian)" >&2; exit 2 ;;
esac
dir=$state/bases/$name
if [ -f "$dir/.complete" ]; then echo "$dir"; exit 0; fi
command -v debootstrap >/dev/null || { apt-get update -qq >&2; DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >&2; }
mirror=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
rm -rf "$dir.tmp"
mkdir -p "$state/bases"
debootstrap --variant=minbase ${extra:+--include=$extra} bookworm "$dir.tmp" "${mirror:-http://deb.debian.org/debian}" >&2
rm -rf "$dir.tmp"/var/cache/apt/archives/*.deb "$dir.tmp"/var/lib/apt/lists/*_Packages
rm -rf "$dir"
mv "$dir.tmp" "$dir"
touch "$dir/.complete"
echo "$dir"
