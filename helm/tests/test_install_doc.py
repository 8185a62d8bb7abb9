"""docs/install-kubernetes.md, checked against the chart it describes.

A person following the page literally must find no wrong name, port, value
or flag: every `helm`, `kubectl` and `rbk` command in its code blocks is
parsed, and what it names is looked up in the chart rendered for the
page's release (`rbk` in namespace `build`) and in `rbk --help`.

Run as part of helm/tests (see test_chart.py); needs RBK_BIN for the rbk
flags.
"""

from __future__ import annotations

import copy
import functools
import os
import pathlib
import re
import shlex
import subprocess

import pytest

import helm_python as helm
import yaml

REPO = pathlib.Path(__file__).resolve().parents[2]
CHART = REPO / "helm" / "rbk"
DOC = REPO / "docs" / "install-kubernetes.md"
RELEASE, NAMESPACE = "rbk", "build"
DEFAULTS = yaml.safe_load((CHART / "values.yaml").read_text())

# Names the page has the operator create (Secrets, a bucket, a
# Certificate, issuers, a file): not the chart's, so not looked up in it.
OPERATOR_NAMES = {"rbk-s3", "rbk-tokens-own", "rbk-grpc-tls", "rbk-grpc", "rbk-public-tls", "rbk-redis",
                  "rbk-cache", "rbk-image", "rbk.build.example.com", "rbk.example.com", "rbk-registry-auth"}
# Secrets whose keys are one docker config per tenant (`<tenant>.json`,
# `coordinator.registries.authSecret`), not keys the chart names.
TENANT_FILE_SECRETS = {"rbk-registry-auth"}
# Keys of a kubernetes.io/tls Secret the page names, not values.
TLS_SECRET_KEYS = {"tls.crt", "tls.key"}
# The helm flags the page may use (Helm 3's spelling).
HELM_FLAGS = {"-n", "--namespace", "--set", "-f", "--values", "--reuse-values", "--dry-run", "--create-namespace"}


def commands() -> list[tuple[int, list[str]]]:
    """(line, argv) of every helm/kubectl/rbk command in the page's code
    blocks (indented or fenced), continuation lines joined, pipelines and
    `&&`/`;`/`&` split, `$(...)` substitutions searched too."""
    lines = DOC.read_text().splitlines()
    found, i, fenced = [], 0, False
    while i < len(lines):
        line = lines[i]
        if line.strip().startswith("```"):
            fenced = not fenced
            i += 1
            continue
        start = i
        if fenced or line.startswith("    "):
            text = line
            while text.endswith("\\") and i + 1 < len(lines):
                i += 1
                text = text[:-1] + " " + lines[i].strip()
            pieces = [text] + re.findall(r"\$\(([^()]*)\)", text)
            for piece in pieces:
                piece = re.sub(r"\$\([^()]*\)", "SUBST", piece)
                for part in re.split(r"\|\||\||&&|;|(?<![>&])&(?!\w)", piece):
                    try:
                        argv = shlex.split(part, comments=True)
                    except ValueError:
                        continue
                    if argv and argv[0] == "export" and "=" in argv[-1]:
                        continue
                    if argv and argv[0] in ("helm", "kubectl", "rbk"):
                        found.append((start + 1, argv))
        i += 1
    return found


def of(tool: str, *first: str) -> list[tuple[int, list[str]]]:
    return [(n, a) for n, a in commands() if a[0] == tool and (not first or a[1] in first)]


def option(argv: list[str], *names: str) -> list[str]:
    """Values of a flag given as `--f v`, `--f=v` or `-f v`."""
    values = []
    for i, word in enumerate(argv):
        for name in names:
            if word == name and i + 1 < len(argv):
                values.append(argv[i + 1])
            elif word.startswith(name + "="):
                values.append(word[len(name) + 1:])
    return values


def set_path(values: dict, dotted: str, value) -> None:
    keys = dotted.split(".")
    for key in keys[:-1]:
        values = values.setdefault(key, {})
    values[keys[-1]] = value


def has_path(values: dict, dotted: str) -> bool:
    node = values
    for key in dotted.split("."):
        if not isinstance(node, dict) or key not in node:
            return False
        node = node[key]
    return True


def typed(text: str):
    return yaml.safe_load(text) if re.fullmatch(r"-?\d+|true|false", text) else text


def render(values: dict) -> list[dict]:
    values = copy.deepcopy(values)
    if not values.get("auth", {}).get("existingSecret"):
        values.setdefault("auth", {})["generateOffline"] = True
    with helm.Chart.load(CHART) as chart:
        manifests = chart.render(values=values, name=RELEASE, namespace=NAMESPACE, is_install=True)
    return [d for path, text in manifests.items() if not path.endswith("NOTES.txt")
            for d in yaml.safe_load_all(text) if d]


@functools.cache
def everything() -> tuple[dict, ...]:
    """Every object the page's install can render: five coordinators (the
    page scales to five), the Ingress, alerts, dashboard, autoscaling."""
    return tuple(render({"coordinator": {"replicas": 5, "ingress": {"enabled": True}},
                         "store": {"s3": {"bucket": "rbk-cache"}},
                         "metrics": {"prometheusRule": {"enabled": True}, "grafanaDashboard": {"enabled": True}}}))


def named(kind: str) -> dict[str, dict]:
    return {o["metadata"]["name"]: o for o in everything() if o["kind"] == kind}


def pods() -> dict[str, dict]:
    """Pod name -> pod spec, for the StatefulSet's pods."""
    out = {}
    for name, sts in named("StatefulSet").items():
        for i in range(sts["spec"]["replicas"]):
            out[f"{name}-{i}"] = sts["spec"]["template"]["spec"]
    return out


def container_ports(spec: dict) -> set[int]:
    return {p["containerPort"] for c in spec["containers"] for p in c.get("ports", [])}


def service_ports(name: str) -> set[int]:
    return {p["port"] for p in named("Service")[name]["spec"]["ports"]}


def test_the_page_has_commands_to_check():
    tools = {a[0] for _, a in commands()}
    assert tools == {"helm", "kubectl", "rbk"}, tools


def test_every_helm_command_names_the_chart_the_release_and_known_flags():
    for line, argv in of("helm"):
        assert argv[1] in ("install", "upgrade", "template", "lint"), (line, argv)
        positional = [a for i, a in enumerate(argv[2:], 2) if not a.startswith("-")
                      and not (argv[i - 1] in ("-n", "--set", "-f", "--values", "--namespace"))]
        if argv[1] == "lint":
            assert positional == ["helm/rbk"], (line, argv)
        else:
            assert positional == [RELEASE, "helm/rbk"], (line, argv)
            assert option(argv, "-n", "--namespace") == [NAMESPACE], f"line {line}: no -n {NAMESPACE}"
        flags = {a.split("=")[0] for a in argv if a.startswith("-")}
        assert flags <= HELM_FLAGS, f"line {line}: {sorted(flags - HELM_FLAGS)}"
        assert (REPO / "helm" / "rbk" / "Chart.yaml").exists()


def test_every_helm_set_names_a_value_the_chart_has_and_renders():
    values: dict = {}
    for line, argv in of("helm", "install", "upgrade", "template", "lint"):
        current = copy.deepcopy(values) if "--reuse-values" in argv else {}
        for assignment in option(argv, "--set"):
            key, _, value = assignment.partition("=")
            assert has_path(DEFAULTS, key), f"line {line}: --set {key}: no such value in values.yaml"
            set_path(current, key, typed(value))
        render(current)  # refused values raise, naming the value
        if argv[1] in ("install", "upgrade"):
            values = current


def test_every_kubectl_command_works_in_the_release_namespace_on_rendered_objects():
    secrets = {**named("Secret")}
    for line, argv in of("kubectl"):
        if argv[1:3] == ["create", "namespace"]:
            assert argv[3] == NAMESPACE
            continue
        assert option(argv, "-n", "--namespace") == [NAMESPACE], f"line {line}: kubectl without -n {NAMESPACE}"
        words = [a for a in argv[1:] if not a.startswith("-") and a != NAMESPACE]
        verb = words[0]
        if verb == "get" and words[1] == "secret":
            secret = secrets.get(words[2])
            assert secret, f"line {line}: no Secret {words[2]} is rendered"
            for key in re.findall(r"\{\.data\.([-\w.]+)\}", " ".join(argv)):
                assert key in secret["stringData"], f"line {line}: Secret {words[2]} has no key {key}"
        elif verb == "get" and words[1] == "pods":
            for selector in option(argv, "-l"):
                k, v = selector.split("=")
                assert all(p["metadata"]["labels"].get(k) == v for p in
                           (s["spec"]["template"] for s in named("StatefulSet").values())), f"line {line}: {selector}"
        elif verb == "port-forward":
            target, port = words[1], int(words[2].split(":")[-1])
            if target.startswith("svc/"):
                assert port in service_ports(target[4:]), f"line {line}: Service {target[4:]} has no port {port}"
            else:
                assert target in pods(), f"line {line}: no pod {target}"
                assert port in container_ports(pods()[target]), f"line {line}: {target} has no port {port}"
        elif verb in ("logs", "rollout"):
            ref = words[-1]
            kind, name = ref.split("/")
            assert name in named({"statefulset": "StatefulSet", "deployment": "Deployment"}[kind]), f"line {line}: {ref}"
        elif verb == "create" and words[1] == "secret":
            # The operator's own Secret: its keys must be the ones the chart reads.
            chart_keys = {v for v in yaml.safe_dump(DEFAULTS).split() if re.fullmatch(r"[a-z]+(-[a-z]+)+|tokens\.toml", v)}
            per_tenant = words[3] in TENANT_FILE_SECRETS
            for literal in option(argv, "--from-literal") + option(argv, "--from-file"):
                key = literal.split("=")[0]
                if per_tenant:
                    assert re.fullmatch(r"[a-z0-9-]+\.json", key), f"line {line}: {key} is no <tenant>.json"
                    continue
                assert key in chart_keys, f"line {line}: the chart reads no key {key}"
        else:
            pytest.fail(f"line {line}: kubectl {verb} is not checked by this test: add it")


def rbk_binary() -> pathlib.Path:
    path = pathlib.Path(os.environ.get("RBK_BIN", REPO / "target" / "debug" / "rbk"))
    if not path.exists():
        pytest.fail(f"{path} does not exist: build it (cargo build -p rbk) or set RBK_BIN")
    return path


@functools.cache
def help_text(*subcommands: str) -> str:
    done = subprocess.run([rbk_binary(), *subcommands, "--help"], capture_output=True, text=True)
    assert done.returncode == 0, f"rbk {' '.join(subcommands)}: {done.stderr}"
    return done.stdout


def test_every_rbk_command_uses_subcommands_and_flags_rbk_has():
    for line, argv in of("rbk"):
        chain = []
        for word in argv[1:]:
            if word.startswith("-"):
                break
            if re.search(rf"^\s+{re.escape(word)}\s", help_text(*chain), re.M):
                chain.append(word)
            else:
                break
        assert chain, f"line {line}: {argv}"
        flags = {a.split("=")[0] for a in argv if a.startswith("-")}
        known = set(re.findall(r"(?<![\w-])(--?[a-zA-Z][\w-]*)", help_text(*chain)))
        assert flags <= known, f"line {line}: rbk {' '.join(chain)} has no {sorted(flags - known)}"


def test_every_rbk_object_name_on_the_page_is_rendered_or_the_operators():
    rendered = {o["metadata"]["name"] for o in everything()} | set(pods())
    text = DOC.read_text()
    names = set(re.findall(r"(?<![\w./-])(rbk-[a-z0-9-]*[a-z0-9]|rbk\.[a-z.]+[a-z])", text))
    unknown = {n for n in names if n not in rendered and n not in OPERATOR_NAMES}
    assert not unknown, f"named on the page but not rendered: {sorted(unknown)}"


def test_every_in_cluster_address_on_the_page_resolves_to_a_rendered_port():
    text = DOC.read_text().replace("$svc", "rbk-coordinator-headless.build.svc")
    addresses = re.findall(r"(?<![\w.-])((?:rbk-[a-z0-9-]+\.)?rbk-[a-z0-9-]+)\.build\.svc(?::(\d+))?", text)
    assert addresses
    for host, port in addresses:
        if "." in host:
            pod, headless = host.split(".")
            assert named("StatefulSet")[pod.rsplit("-", 1)[0]]["spec"]["serviceName"] == headless, host
            assert pod in pods(), f"no pod {pod}"
            ports = container_ports(pods()[pod])
        else:
            assert host in named("Service"), f"no Service {host}"
            ports = service_ports(host)
        if port:
            assert int(port) in ports, f"{host}.build.svc:{port}: not one of {sorted(ports)}"


def test_every_service_address_with_a_port_on_the_page_is_a_port_of_it():
    for host, port in re.findall(r"`(rbk-[a-z0-9-]+):(\d+)`", DOC.read_text()):
        assert int(port) in service_ports(host), f"{host}:{port}"


def test_every_value_the_page_names_exists():
    text = DOC.read_text()
    paths = set(re.findall(r"`((?:" + "|".join(DEFAULTS) + r")(?:\.[A-Za-z*]+)+)`", text))
    assert len(paths) > 20
    for path in sorted(paths - TLS_SECRET_KEYS):
        parts = path.split(".")
        if parts[-1] == "*":
            parts = parts[:-1]
        assert has_path(DEFAULTS, ".".join(parts)), f"{path} is not in values.yaml"
    for wildcard in set(re.findall(r"`\*\.([A-Za-z]+)`", text)):
        for role in ("coordinator", "worker"):
            assert wildcard in DEFAULTS[role], f"*.{wildcard}: {role} has no {wildcard}"


def test_the_ports_the_page_gives_are_the_charts_defaults():
    text = DOC.read_text()
    assert "raft port 7071, API port 7070" in text
    assert DEFAULTS["coordinator"]["raft"]["port"] == 7071 and DEFAULTS["coordinator"]["port"] == 7070
    assert f"port `metrics.workerPort` ({DEFAULTS['metrics']['workerPort']})" in text
    assert f"on, port {DEFAULTS['metrics']['port']}" in text


def test_the_page_spells_names_for_its_own_release():
    """`<release>-rbk-coordinator` is not the Service of the release `rbk`
    (the chart drops the doubled `rbk`): names must be the rendered ones."""
    wrong = re.findall(r"<release>-rbk-[a-z-]+", DOC.read_text())
    assert not wrong, wrong
