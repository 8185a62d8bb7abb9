"""The CI examples in docs/examples/, the GitHub Action
(.github/actions/rbk-submit) and the GitLab CI template
(deploy/ci/rbk.gitlab-ci.yml) are valid YAML and use only flags the rbk
binary has (`rbk worker --help`, `rbk submit --help`), so they cannot drift
from the code unnoticed; the action and the template submit to a real farm
(deploy/local/farm.sh) and report the image's digest and id."""

from __future__ import annotations

import json
import os
import pathlib
import re
import shlex
import subprocess
import tarfile

import pytest
import yaml

from rbk_under_test import local_farm, rbk_binary

REPO = pathlib.Path(__file__).resolve().parents[2]
EXAMPLES = sorted((REPO / "docs" / "examples").glob("*.yml"))
ACTION_DIR = REPO / ".github" / "actions" / "rbk-submit"
ACTION = yaml.safe_load((ACTION_DIR / "action.yml").read_text())
GITLAB_TEMPLATE = REPO / "deploy" / "ci" / "rbk.gitlab-ci.yml"


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


def built_flags(script: str) -> list[str]:
    """Flags a script appends to an rbk command line it builds up
    (`args+=(--tag "$t")` in bash, `set -- "$@" --tag "$t"` in sh)."""
    flags = []
    for line in script.splitlines():
        if re.search(r"args\+?=\(|set -- ", line):
            flags += re.findall(r"(?<![\w$-])(--[a-z][a-z-]*)", line)
    return flags


def uses_the_action(text: str) -> list[dict]:
    """The `with:` of every step that uses the rbk-submit action."""
    steps = [s for job in (yaml.safe_load(text).get("jobs") or {}).values() for s in job.get("steps", [])]
    return [s.get("with", {}) for s in steps if "/actions/rbk-submit" in s.get("uses", "")]


def extends_the_template(text: str) -> list[str]:
    return [job["extends"] for job in yaml.safe_load(text).values() if isinstance(job, dict) and "extends" in job]


@pytest.mark.parametrize("path", EXAMPLES + [GITLAB_TEMPLATE], ids=lambda p: p.name)
def test_the_example_uses_only_flags_rbk_has(path):
    text = path.read_text()
    invocations = rbk_invocations(text)
    assert invocations or uses_the_action(text) or extends_the_template(text), (
        f"{path.name} runs no rbk worker or rbk submit, and uses neither the action nor the template")
    for sub, flags in invocations:
        unknown = set(flags) - help_flags(sub)
        assert not unknown, f"{path.name}: rbk {sub} has no {sorted(unknown)}"


def test_the_action_passes_only_flags_rbk_submit_has():
    flags = built_flags((ACTION_DIR / "submit.sh").read_text())
    assert len(flags) >= 10, flags
    unknown = set(flags) - help_flags("submit")
    assert not unknown, f"submit.sh: rbk submit has no {sorted(unknown)}"


def test_the_gitlab_template_passes_only_flags_rbk_submit_has():
    script = "\n".join(yaml.safe_load(GITLAB_TEMPLATE.read_text())[".rbk-submit"]["script"])
    flags = built_flags(script)
    assert len(flags) >= 5, flags
    unknown = set(flags) - help_flags("submit")
    assert not unknown, f"rbk.gitlab-ci.yml: rbk submit has no {sorted(unknown)}"


def test_the_examples_use_only_inputs_the_action_has_and_its_outputs():
    text = (REPO / "docs" / "examples" / "github-actions-submit.yml").read_text()
    uses = uses_the_action(text)
    assert uses, "the submit example does not use the action"
    for given in uses:
        unknown = set(given) - set(ACTION["inputs"])
        assert not unknown, f"the action has no input {sorted(unknown)}"
        missing = {k for k, v in ACTION["inputs"].items() if v.get("required")} - set(given)
        assert not missing, f"required inputs not given: {sorted(missing)}"
    for output in re.findall(r"steps\.image\.outputs\.([\w-]+)", text):
        assert output in ACTION["outputs"], output


def test_every_action_input_reaches_rbk_submit():
    steps = ACTION["runs"]["steps"]
    used = " ".join(yaml.safe_dump(s) for s in steps)
    for name in ACTION["inputs"]:
        assert f"inputs.{name}" in used, f"input {name} is declared but never used"
    script = (ACTION_DIR / "submit.sh").read_text()
    env = next(s for s in steps if s.get("id") == "submit")["env"]
    for var in set(re.findall(r"\$\{?(INPUT_[A-Z_]+)", script)):
        assert var in env, f"submit.sh reads {var}, which the action does not set"


def test_the_action_keeps_the_client_dir_with_actions_cache():
    steps = ACTION["runs"]["steps"]
    cache = next(s for s in steps if s.get("uses", "").startswith("actions/cache@"))
    client = next(s for s in steps if "RBK_CLIENT_DIR=" in s.get("run", ""))
    assert "${{ runner.temp }}/rbk-client" == cache["with"]["path"]
    assert "RBK_CLIENT_DIR=$RUNNER_TEMP/rbk-client" in client["run"]
    assert "--client-dir" in help_flags("submit"), "rbk submit reads RBK_CLIENT_DIR as --client-dir"
    assert set(ACTION["outputs"]) == {"digest", "imageid", "metadata"}


# The action and the template against a real farm.

@pytest.fixture(scope="module")
def farm(tmp_path_factory):
    with local_farm(tmp_path_factory.mktemp("farm")) as env:
        yield env


def project(tmp_path: pathlib.Path, farm_env: dict) -> tuple[pathlib.Path, dict]:
    """A project directory with a Dockerfile (no RUN: no runtime needed),
    and the environment of a CI job: rbk on PATH, the farm's URL and token."""
    ctx = tmp_path / "project"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text("FROM scratch\nCOPY hello.txt /hello.txt\n")
    (ctx / "hello.txt").write_text(f"hello from {tmp_path.name}\n")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "rbk").symlink_to(rbk_binary())
    env = dict(farm_env, PATH=f"{bin_dir}:{os.environ['PATH']}", HOME=str(tmp_path))
    return ctx, env


def oci_ids(archive: pathlib.Path) -> tuple[str, str]:
    """(manifest digest, config digest) of an OCI archive."""
    with tarfile.open(archive) as tar:
        index = json.load(tar.extractfile("index.json"))
        digest = index["manifests"][0]["digest"]
        manifest = json.load(tar.extractfile(f"blobs/sha256/{digest.removeprefix('sha256:')}"))
    return digest, manifest["config"]["digest"]


def test_the_action_submits_and_reports_digest_imageid_metadata_and_a_summary(farm, tmp_path):
    ctx, env = project(tmp_path, farm)
    archive = tmp_path / "image.tar"
    outputs, summary = tmp_path / "github-output", tmp_path / "summary.md"
    env.update(RBK_CLIENT_DIR=str(tmp_path / "client"), GITHUB_OUTPUT=str(outputs), GITHUB_STEP_SUMMARY=str(summary),
               INPUT_CONTEXT=str(ctx), INPUT_TAGS="app:one, app:two", INPUT_BUILD_ARGS="A=1\nB=2\n",
               INPUT_OUTPUTS=f"type=oci,dest={archive}", INPUT_PROGRESS="plain", INPUT_PUSH="false")
    done = subprocess.run([ACTION_DIR / "submit.sh"], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    got = dict(line.split("=", 1) for line in outputs.read_text().splitlines())
    digest, config = oci_ids(archive)
    assert (got["digest"], got["imageid"]) == (digest, config)
    assert json.loads(got["metadata"]) == {"containerimage.digest": digest, "containerimage.config.digest": config,
                                           "image.name": "app:one,app:two"}
    assert f"| digest | `{digest}` |" in summary.read_text()


def test_the_action_fails_when_the_build_fails(farm, tmp_path):
    ctx, env = project(tmp_path, farm)
    (ctx / "Dockerfile").write_text("FROM scratch\nCOPY missing.txt /missing.txt\n")
    env.update(RBK_CLIENT_DIR=str(tmp_path / "client"), INPUT_CONTEXT=str(ctx), GITHUB_OUTPUT=str(tmp_path / "out"))
    done = subprocess.run([ACTION_DIR / "submit.sh"], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode != 0
    assert not (tmp_path / "out").exists(), "no outputs for a failed build"


def test_the_gitlab_template_submits_and_writes_a_dotenv_report(farm, tmp_path):
    ctx, env = project(tmp_path, farm)
    job = yaml.safe_load(GITLAB_TEMPLATE.read_text())[".rbk-submit"]
    variables = {k: v.replace("$CI_PROJECT_DIR", str(ctx)) for k, v in job["variables"].items()}
    env.update(variables, CI_PROJECT_DIR=str(ctx), RBK_TAGS="app:gitlab", RBK_OUTPUT="type=oci,dest=image.tar")
    # GitLab runs a job's script lines in one shell, stopping at the first failure.
    done = subprocess.run(["sh", "-e", "-c", "\n".join(job["script"])], cwd=ctx, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    report = dict(line.split("=", 1) for line in (ctx / "rbk.env").read_text().splitlines())
    digest, config = oci_ids(ctx / "image.tar")
    assert (report["RBK_DIGEST"], report["RBK_IMAGEID"]) == (digest, config)
    assert json.loads(report["RBK_METADATA"])["image.name"] == "app:gitlab"
    assert (ctx / ".rbk-client").is_dir(), "the client dir GitLab caches is the one rbk used"
    assert yaml.safe_load(GITLAB_TEMPLATE.read_text())[".rbk-submit"]["cache"]["paths"] == [".rbk-client"]
