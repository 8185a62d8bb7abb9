#!/usr/bin/env bash
# The chart tests' tools, in their own virtualenv ($RBK_DEV_DIR/helm-venv,
# default .rbk-dev/helm-venv): helm-python-sdk (Helm's Go library behind a C
# ABI, shipped in the wheel: no helm binary is downloaded), kubernetes-validate
# (the Kubernetes OpenAPI schemas, shipped in the wheel), pytest and promtool
# (unpacked from Debian's prometheus package), and playwright for the
# dashboard's browser tests (it drives Debian's chromium; it never downloads a
# browser). Nothing
# here needs a cluster or the network after installation. Idempotent: prints
# the venv's directory.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
state=${RBK_DEV_DIR:-$(cd "$here/../.." && pwd)/.rbk-dev}
venv=$state/helm-venv
# Versions the chart tests were written against.
want=(helm-python-sdk==0.2.2 kubernetes-validate==1.37.0 pytest==9.2.0 PyYAML==6.0.4 playwright==1.65.2)
stamp="$venv/.installed-$(printf '%s\n' "${want[@]}" | sha256sum | cut -c1-16)"
if [ ! -f "$stamp" ]; then
  echo "helm-tools: installing ${want[*]} into $venv" >&2
  command -v python3 >/dev/null || { echo "helm-tools: python3 is missing (apt-get install python3 python3-venv)" >&2; exit 1; }
  python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' || { echo "helm-tools: python3 >= 3.11 is needed (tomllib)" >&2; exit 1; }
  rm -rf "$venv"
  python3 -m venv "$venv" >&2
  "$venv/bin/pip" install -q "${want[@]}" >&2
  "$venv/bin/python" -c 'import helm_python, kubernetes_validate; helm_python.helm_sdk_version()' >&2
  touch "$stamp"
fi
# promtool (Debian's prometheus package) checks and unit-tests the chart's
# alert rules. Only the binary is unpacked into the venv: installing the
# package would start a Prometheus server where systemd runs.
if [ ! -x "$venv/bin/promtool" ]; then
  if command -v promtool >/dev/null; then
    ln -sf "$(command -v promtool)" "$venv/bin/promtool"
  else
    echo "helm-tools: unpacking promtool from Debian's prometheus package into $venv/bin" >&2
    tmp=$(mktemp -d)
    trap 'rm -rf "$tmp"' EXIT
    (cd "$tmp" && apt-get download prometheus >&2) || { echo "helm-tools: apt-get download prometheus failed (run apt-get update?)" >&2; exit 1; }
    dpkg-deb -x "$tmp"/prometheus_*.deb "$tmp/root"
    install -m 0755 "$tmp/root/usr/bin/promtool" "$venv/bin/promtool"
  fi
fi
echo "$venv"
