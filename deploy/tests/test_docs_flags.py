"""The CI and migration pages name only rbk flags that exist.

docs/ci-workers.md and docs/coming-from-buildkitd.md mention flags of
several rbk commands and, on the migration page, BuildKit's own. Every
`--flag` they write must be in the `--help` of some rbk command, or be one
of the other tools' flags listed here (each with where it comes from), so a
renamed or removed rbk flag cannot linger in them.
"""

from __future__ import annotations

import functools
import pathlib
import re
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
    # not in rbk yet, said so where named
    "--log-format",
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


def test_log_format_is_still_not_an_rbk_flag():
    """The migration page says JSON logs are not there yet; once
    `--log-format` exists, the page (and this list) must change."""
    assert "--log-format" not in rbk_flags()
    assert "not yet" in (REPO / "docs" / "coming-from-buildkitd.md").read_text()
