"""A RUN step's own network (pasta egress, issue #14) still reaches the
package registries the workloads use: apt installs from the Debian mirror
and the npm registry answers over HTTPS, on the python base that
`deploy/dev/base-image.sh python` builds (debootstrap, cached under
.rbk-dev/bases). Needs root, runc, pasta and the network to those registries."""

from __future__ import annotations

import os
import pathlib
import subprocess

from rbk_under_test import rbk_binary

REPO = pathlib.Path(__file__).resolve().parents[2]

DOCKERFILE = """\
FROM python-base
RUN --mount=type=cache,target=/var/cache/apt,sharing=locked \\
    --mount=type=cache,target=/var/lib/apt/lists,sharing=locked \\
    rm -f /etc/apt/apt.conf.d/docker-clean && \\
    apt-get update -q && apt-get install -y -q --no-install-recommends hello && hello
RUN python3 -c "import json, urllib.request; \\
print('npm registry:', json.load(urllib.request.urlopen('https://registry.npmjs.org/left-pad', timeout=60))['name'])"
RUN grep -E '^Seccomp:' /proc/self/status
"""


def test_apt_and_the_npm_registry_work_from_a_sandboxed_step(tmp_path):
    rbk = rbk_binary()
    base = subprocess.run([REPO / "deploy" / "dev" / "base-image.sh", "python"], env=dict(os.environ, RBK=str(rbk)),
                          capture_output=True, text=True, timeout=1800)
    assert base.returncode == 0, base.stderr[-3000:]
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(DOCKERFILE)
    run = subprocess.run(
        [rbk, "build", "--progress=plain", "--state-dir", tmp_path / "state", "--worker-dir", tmp_path / "worker",
         "--base-image", f"python-base={base.stdout.strip()}", ctx],
        capture_output=True, text=True, timeout=900,
    )
    out = run.stdout + run.stderr
    assert run.returncode == 0, out[-6000:]
    assert "Hello, world!" in out, out[-3000:]
    assert "npm registry: left-pad" in out, out[-3000:]
    assert "Seccomp:\t2" in out, out[-3000:]
