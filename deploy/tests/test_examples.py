"""The CI examples in docs/examples/ are valid YAML and use only flags the
rbk binary has (`rbk worker --help`, `rbk submit --help`), so the docs
cannot drift from the code unnoticed."""

from __future__ import annotations

import os
import pathlib
import re
import shlex
import subprocess

import pytest
import yaml

REPO = pathlib.Path(__file__).resolve().parents[2]
EXAMPLES = sorted((REPO / "docs" / "examples").glob("*.yml"))


def rbk_binary() -> pathlib.Path:
    path = pathlib.Path(os.environ.get("RBK_BIN", REPO / "target" / "debug" / "rbk"))
    if not path.exists():
        pytest.fail(f"{path} does not exist: build it (cargo build -p rbk) or set RBK_BIN")
    return path


def strings(node):
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for v in node.values():
            yield from strings(v)
    elif isinstance(node, list):
        for v in node:
            yield from strings(v)


def rbk_invocations(text: str) -> list[tuple[str, list[str]]]:
    """(subcommand, flags) of every `... worker ...`/`... submit ...` command."""
    found = []
    for script in strings(yaml.safe_load(text)):
        script = script.replace("\\\n", " ")
        for line in script.splitlines():
            if not re.search(r"\b(worker|submit)\b", line) or " " not in line.strip():
                continue
            try:
                words = shlex.split(re.sub(r"\$\{\{[^}]*\}\}", "X", line), comments=True)
            except ValueError:  # prose (a step name), not a command
                continue
            for sub in ("worker", "submit"):
                if sub in words and (words[0] in ("rbk", "docker") or "rbk" in line):
                    rest = words[words.index(sub) + 1:]
                    found.append((sub, [w.split("=")[0] for w in rest if w.startswith("-")]))
    return found


def help_flags(sub: str) -> set[str]:
    out = subprocess.run([rbk_binary(), sub, "--help"], capture_output=True, text=True, check=True).stdout
    return set(re.findall(r"(?<![\w-])(--?[a-zA-Z][\w-]*)", out))


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_the_example_uses_only_flags_rbk_has(path):
    invocations = rbk_invocations(path.read_text())
    assert invocations, f"{path.name} runs no rbk worker or rbk submit"
    for sub, flags in invocations:
        unknown = set(flags) - help_flags(sub)
        assert not unknown, f"{path.name}: rbk {sub} has no {sorted(unknown)}"
