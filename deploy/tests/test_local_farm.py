"""deploy/local/farm.sh: the whole farm as processes on one machine.

Starts it (the S3 server and Redis from deploy/dev/services.sh, a
coordinator, two workers), sends a build through it with `rbk submit`, and
stops it. Needs root (workers run steps in runc), the test services and the
rbk binary (RBK_BIN, default target/debug/rbk).
"""

from __future__ import annotations

import os
import pathlib
import shutil
import subprocess

import pytest

from rbk_under_test import local_farm, rbk_binary

REPO = pathlib.Path(__file__).resolve().parents[2]


@pytest.fixture
def farm(tmp_path):
    with local_farm(tmp_path / "farm") as env:
        yield env


def demo_context(tmp_path: pathlib.Path) -> pathlib.Path:
    ctx = tmp_path / "context"
    ctx.mkdir()
    for name in ("Dockerfile", "hello.txt"):
        shutil.copy(REPO / "examples" / "demo-quick" / name, ctx / name)
    busybox = os.environ.get("RBK_TEST_BIN_BUSYBOX") or shutil.which("busybox")
    assert busybox, "busybox-static is not installed (deploy/dev/setup.sh)"
    shutil.copy(busybox, ctx / "busybox")
    return ctx


def test_a_build_runs_through_the_local_farm(farm, tmp_path):
    image = tmp_path / "demo.tar"
    done = subprocess.run(
        [rbk_binary(), "submit", "--progress=plain", "-t", "demo:farm", "-o", f"type=oci,dest={image}",
         demo_context(tmp_path)],
        env=farm, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"rbk submit failed:\n{done.stderr}"
    assert "local-worker-" in done.stderr, f"no step ran on the farm's workers:\n{done.stderr}"
    assert "cache holds 0 earlier run(s)" in done.stderr, done.stderr
    assert image.stat().st_size > 0
