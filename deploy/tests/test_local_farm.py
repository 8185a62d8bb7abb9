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
import socket
import subprocess

import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]
FARM = REPO / "deploy" / "local" / "farm.sh"


def rbk_binary() -> pathlib.Path:
    path = pathlib.Path(os.environ.get("RBK_BIN", REPO / "target" / "debug" / "rbk"))
    if not path.exists():
        pytest.fail(f"{path} does not exist: build it (cargo build -p rbk) or set RBK_BIN")
    return path


def free_port_block(size: int = 400) -> int:
    """A base port whose +0, +100, +200 and +300 (worker metrics) neighbours are free now."""
    for _ in range(50):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            base = s.getsockname()[1]
        if base + size >= 65535:
            continue
        try:
            for off in (0, 1, 2, 100, 101, 102, 200, 201, 202, 300, 301):
                with socket.socket() as s:
                    s.bind(("127.0.0.1", base + off))
            return base
        except OSError:
            continue
    pytest.fail("no free block of ports")


@pytest.fixture
def farm(tmp_path):
    if not os.environ.get("RBK_TEST_S3_ENDPOINT"):
        pytest.fail('RBK_TEST_S3_ENDPOINT is not set: run eval "$(deploy/dev/services.sh up)" first')
    env = dict(os.environ, RBK=str(rbk_binary()), RBK_FARM_DIR=str(tmp_path / "farm"),
               RBK_FARM_PORT=str(free_port_block()))
    up = subprocess.run([FARM, "up"], env=env, capture_output=True, text=True, timeout=120)
    try:
        assert up.returncode == 0, f"farm.sh up failed:\n{up.stderr}"
        for line in up.stdout.splitlines():
            key, _, value = line.removeprefix("export ").partition("=")
            env[key] = value
        yield env
    finally:
        subprocess.run([FARM, "down"], env=env, capture_output=True, timeout=60)


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
