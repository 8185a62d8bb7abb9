"""`make demo` stays honest: examples/demo/run.sh builds the pip workload
cold and warm on worker A and on a fresh worker B (with `rbk build`, then on
a farm of processes) and must show that B compiled no wheel because its
cache mount arrived from the store. Needs root, debootstrap (the python base
is cached under .rbk-dev/bases after the first run) and PyPI."""

from __future__ import annotations

import os
import pathlib
import re
import subprocess

import pytest

from rbk_under_test import rbk_binary

REPO = pathlib.Path(__file__).resolve().parents[2]


def test_the_demo_shows_worker_b_using_worker_as_pip_cache(tmp_path):
    env = dict(os.environ, RBK_DEMO_DIR=str(tmp_path / "demo"))
    run = subprocess.run(
        [REPO / "examples" / "demo" / "run.sh", rbk_binary()],
        capture_output=True, text=True, env=env, timeout=1800,
    )
    out = run.stdout + run.stderr
    assert run.returncode == 0, out[-6000:]
    # run | wall | wheels built | wheels from cache | cache restored
    rows = {
        m.group(1).strip(): (int(m.group(2)), int(m.group(3)))
        for m in re.finditer(r"^((?:rbk build|farm):[^\n]*?)\s+[\d.]+ s\s+(\d+)\s+(\d+)\s", out, re.M)
    }
    assert len(rows) == 6, out[-3000:]
    for label, (built, cached) in rows.items():
        if "cold" in label:
            assert built > 0, (label, rows)
        else:
            assert (built, cached > 0) == (0, True), (label, rows)
    assert "worker B compiled no wheel" in out
