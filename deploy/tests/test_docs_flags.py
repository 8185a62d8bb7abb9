"""The CI and migration pages name only rbk flags that exist.

docs/ci-workers.md and docs/coming-from-buildkitd.md mention flags of
several rbk commands and, on the migration page, BuildKit's own. Every
`--flag` they write must be in the `--help` of some rbk command, or be one
of the other tools' flags listed here (each with where it comes from), so a
renamed or removed rbk flag cannot linger in them.
"""

from __future__ import annotations

import functools
import json
import os
import pathlib
import re
import socket
import subprocess

import pytest

from rbk_under_test import rbk_binary

REPO = pathlib.Path(__file__).resolve().parents[2]
PAGES = [REPO / "docs" / "ci-workers.md", REPO / "docs" / "coming-from-buildkitd.md"]
RBK_COMMANDS = [["submit"], ["worker"], ["build"], ["cache"], ["cache", "prune"], ["cache", "ls"],
                ["coordinator"], ["coordinator", "members", "add"]]
NOT_RBKS = {
    # buildctl / buildkitd, on the migration page
    "--frontend", "--local", "--opt", "--export-cache", "--import-cache",
    "--allow-insecure-entitlement",
    # Dockerfile RUN options
    "--mount", "--network", "--security",
    # docker run
    "--privileged",
}


@functools.cache
def rbk_flags() -> frozenset[str]:
    flags = set()
    for command in RBK_COMMANDS:
        out = subprocess.run([rbk_binary(), *command, "--help"], capture_output=True, text=True, check=True).stdout
        flags |= set(re.findall(r"(?<![\w-])(--[a-z][\w-]*)", out))
    return frozenset(flags)


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_flag_on_the_page_is_rbks_or_a_named_other_tools(page):
    used = set(re.findall(r"(?<![\w-])(--[a-z][a-z-]*[a-z])", page.read_text()))
    assert used
    unknown = used - rbk_flags() - NOT_RBKS
    assert not unknown, f"{page.name}: no rbk command has {sorted(unknown)}"


def test_log_format_json_is_an_rbk_flag_and_the_chart_variable_gives_json_lines(tmp_path):
    """The chart passes `log.format` as RBK_LOG_FORMAT; a worker started
    with it (here against a port nothing listens on, so it logs its
    reconnects and, with --until-idle, exits) writes each log line as one
    JSON object."""
    assert "--log-format" in rbk_flags()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = subprocess.run(
        [rbk_binary(), "worker", "--coordinator", f"http://127.0.0.1:{port}", "--token", "t", "--id", "json-logs",
         "--until-idle", "1s", "--max-backoff", "200ms", "--state-dir", tmp_path],
        env={**os.environ, "RBK_LOG_FORMAT": "json", "RBK_LOG": "warn"},
        capture_output=True, text=True, timeout=60,
    )
    # The worker's own start-up announcements (`rbk worker ID connecting
    # to URL`, which scripts read) stay plain; every log line is JSON.
    lines = [line for line in out.stderr.splitlines() if not line.startswith("rbk worker ")]
    assert lines, f"the worker logged nothing (exit {out.returncode})"
    records = [json.loads(line) for line in lines]
    assert all(r["level"] == "WARN" and r["timestamp"].endswith("Z") for r in records), out.stderr
    assert any(r["coordinator"] == f"http://127.0.0.1:{port}" for r in records), out.stderr


def test_the_migration_page_no_longer_says_json_logs_are_missing():
    page = (REPO / "docs" / "coming-from-buildkitd.md").read_text()
    row = next(line for line in page.splitlines() if line.startswith('| `[log] format = "json"`'))
    assert "--log-format json" in row and "not yet" not in row, row
