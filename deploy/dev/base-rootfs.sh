#!/usr/bin/env bash
# Builds the root filesystems the workloads' base images are made from, since
# no public registry is reachable: `python` (debootstrap minbase bookworm +
# python3, pip, gcc), `node` (+ nodejs, npm), `debian` (minbase only).
#
#   deploy/dev/base-rootfs.sh NAME    prints the rootfs directory when done
#
# Cached under $RBK_DEV_DIR/bases/NAME; delete it to rebuild.
#
# The rootfs trusts what this host trusts: its CA bundle is this host's
# (package registries may be reached through a TLS-inspecting proxy whose CA
# only the host knows). A changed host bundle is copied into a cached rootfs
# and its .complete touched, so base-image.sh makes the image again.
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
host_ca=/etc/ssl/certs/ca-certificates.crt
trust_host_ca() { # ROOTFS: true when it changed the rootfs
  [ -f "$host_ca" ] || return 1
  cmp -s "$host_ca" "$1/etc/ssl/certs/ca-certificates.crt" && return 1
  mkdir -p "$1/etc/ssl/certs"
  cp "$host_ca" "$1/etc/ssl/certs/ca-certificates.crt"
}
if [ -f "$dir/.complete" ]; then
  if trust_host_ca "$dir"; then touch "$dir/.complete"; fi
  echo "$dir"
  exit 0
fi
command -v debootstrap >/dev/null || { apt-get update -qq >&2; DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >&2; }
mirror=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
rm -rf "$dir.tmp"
mkdir -p "$state/bases"
debootstrap --variant=minbase ${extra:+--include=$extra} bookworm "$dir.tmp" "${mirror:-http://deb.debian.org/debian}" >&2
rm -rf "$dir.tmp"/var/cache/apt/archives/*.deb "$dir.tmp"/var/lib/apt/lists/*_Packages
trust_host_ca "$dir.tmp" || true
rm -rf "$dir"
mv "$dir.tmp" "$dir"
touch "$dir/.complete"
echo "$dir"
