#!/usr/bin/env bash
# Freezes today's wire protocol as released: proto/compat/<major.minor>.binpb,
# a protobuf FileDescriptorSet of proto/*.proto. Run when a minor version is
# released. crates/proto/tests/wire_compat.rs checks today's protocol against
# every frozen one inside the version-skew window (this minor version and the
# one before) and refuses a change that would break such a caller (a field
# renumbered, retyped or removed without `reserved`, a method removed); frozen
# files older than the window may be deleted.
set -euo pipefail
cd "$(dirname "$0")/../.."
version=$(sed -n 's/^version = "\([0-9]*\.[0-9]*\)\..*"/\1/p' Cargo.toml | head -1)
protoc=$(find "${CARGO_HOME:-$HOME/.cargo}/registry/src" -path '*protoc-bin-vendored-linux-x86_64*/bin/protoc' | head -1)
[ -x "$protoc" ] || { echo "freeze-proto: no vendored protoc found; run cargo build -p rbk-proto first" >&2; exit 1; }
"$protoc" -Iproto --descriptor_set_out="proto/compat/$version.binpb" proto/*.proto
echo "froze proto/compat/$version.binpb"
