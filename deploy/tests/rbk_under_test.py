"""What the deploy tests share: the rbk binary under test and a local farm
(deploy/local/farm.sh) started on free ports. Not a test module: the tests
import it (pytest puts this directory on sys.path)."""

from __future__ import annotations

import contextlib
import os
import pathlib
import socket
import subprocess
from collections.abc import Iterator

import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]
FARM = REPO / "deploy" / "local" / "farm.sh"


def rbk_binary() -> pathlib.Path:
    path = pathlib.Path(os.environ.get("RBK_BIN", REPO / "target" / "debug" / "rbk"))
    if not path.exists():
        pytest.fail(f"{path} does not exist: build it (cargo build -p rbk) or set RBK_BIN")
    return path


def free_port_block() -> int:
    """A base port whose farm.sh neighbours (+0.., +100.., +200.., +300..:
    coordinators, workers, their metrics) are free now."""
    for _ in range(50):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            base = s.getsockname()[1]
        if base + 400 >= 65535:
            continue
        try:
            for off in (0, 1, 2, 100, 101, 102, 200, 201, 202, 300, 301):
                with socket.socket() as s:
                    s.bind(("127.0.0.1", base + off))
            return base
        except OSError:
            continue
    pytest.fail("no free block of ports")


@contextlib.contextmanager
def local_farm(state: pathlib.Path) -> Iterator[dict]:
    """`farm.sh up` with its state under `state`; yields the environment a
    client of the farm runs with (what `up` exported), and stops the farm."""
    if not os.environ.get("RBK_TEST_S3_ENDPOINT"):
        pytest.fail('RBK_TEST_S3_ENDPOINT is not set: run eval "$(deploy/dev/services.sh up)" first')
    env = dict(os.environ, RBK=str(rbk_binary()), RBK_FARM_DIR=str(state), RBK_FARM_PORT=str(free_port_block()))
    up = subprocess.run([FARM, "up"], env=env, capture_output=True, text=True, timeout=120)
    try:
        assert up.returncode == 0, f"farm.sh up failed:\n{up.stderr}"
        for line in up.stdout.splitlines():
            key, _, value = line.removeprefix("export ").partition("=")
            env[key] = value
        yield env
    finally:
        subprocess.run([FARM, "down"], env=env, capture_output=True, timeout=60)
