"""The Helm chart (helm/rbk), rendered offline and checked as a specification.

Renders with the Helm SDK (helm-python-sdk: Helm's Go library behind a C ABI,
no helm binary, no cluster), validates every object against the Kubernetes
OpenAPI schemas with kubernetes-validate in strict mode, and asserts the
properties operators rely on. Where the rendered config can be read by the
real rbk binary, it is.

Run: deploy/dev/helm-tools.sh (once) then
     .rbk-dev/helm-venv/bin/pytest helm/tests     (make test does both)
"""

from __future__ import annotations

import contextlib
import copy
import datetime
import hashlib
import hmac
import os
import pathlib
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import tomllib
import urllib.parse
import urllib.request
import uuid

import pytest

try:
    import helm_python as helm
    import kubernetes_validate
    import yaml
except ImportError as e:  # pragma: no cover - the message is the point
    sys.exit(
        f"helm/tests: {e.name} is missing; run deploy/dev/helm-tools.sh and use "
        ".rbk-dev/helm-venv/bin/pytest"
    )

REPO = pathlib.Path(__file__).resolve().parents[2]
CHART = REPO / "helm" / "rbk"
HA_VALUES = yaml.safe_load((CHART / "ci" / "ha-values.yaml").read_text())
# The newest Kubernetes kubernetes-validate ships schemas for.
KUBE_VERSION = kubernetes_validate.utils.latest_version()
RELEASE = "farm"
NAMESPACE = "build"
# Objects of CRDs kubernetes-validate has no schema for, checked by hand below.
CRD_KINDS = {("monitoring.coreos.com/v1", "ServiceMonitor")}


def render(values: dict | None = None) -> list[dict]:
    """Every object the chart renders for `values`, in template order."""
    with helm.Chart.load(CHART) as chart:
        manifests = chart.render(values=values, name=RELEASE, namespace=NAMESPACE, is_install=True)
    objects = []
    for path, text in sorted(manifests.items()):
        if path.endswith("NOTES.txt"):
            continue
        for doc in yaml.safe_load_all(text):
            if doc:
                doc.setdefault("metadata", {})
                objects.append(doc)
    return objects


def one(objects: list[dict], kind: str, name_suffix: str = "") -> dict:
    found = [o for o in objects if o["kind"] == kind and o["metadata"]["name"].endswith(name_suffix)]
    assert len(found) == 1, f"expected one {kind} *{name_suffix}, got {[o['metadata']['name'] for o in found]}"
    return found[0]


def with_values(base: dict, **paths) -> dict:
    """A copy of `base` with dotted paths (coordinator__replicas=5) set."""
    values = copy.deepcopy(base)
    for dotted, value in paths.items():
        node = values
        keys = dotted.split("__")
        for key in keys[:-1]:
            node = node.setdefault(key, {})
        node[keys[-1]] = value
    return values


VALUE_SETS = {"default": {}, "ha": HA_VALUES}


@pytest.mark.parametrize("name", VALUE_SETS)
def test_chart_lints_clean_in_strict_mode(name):
    report = helm.lint(CHART, values=VALUE_SETS[name], strict=True, kube_version=f"v{KUBE_VERSION}.0")
    problems = [m for m in report["messages"] if m["severity"] >= 2] + report["errors"]
    assert not problems, problems


@pytest.mark.parametrize("name", VALUE_SETS)
def test_every_rendered_object_validates_strictly_against_kubernetes(name):
    objects = render(VALUE_SETS[name])
    assert objects
    for obj in objects:
        if (obj["apiVersion"], obj["kind"]) in CRD_KINDS:
            continue
        try:
            kubernetes_validate.validate(obj, KUBE_VERSION, strict=True)
        except kubernetes_validate.ValidationError as e:
            path = ".".join(str(p) for p in e.path)
            pytest.fail(f"{name}: {obj['kind']}/{obj['metadata']['name']}: {path}: {e.message}")


def test_workers_serve_metrics_where_they_are_scraped():
    pod = one(render({}), "Deployment", "-worker")["spec"]["template"]
    port = int(pod["metadata"]["annotations"]["prometheus.io/port"])
    container = pod["spec"]["containers"][0]
    assert container["args"][container["args"].index("--metrics-listen") + 1] == f"0.0.0.0:{port}"
    assert {"name": "metrics", "containerPort": port, "protocol": "TCP"} in container["ports"]
    worker = one(render({"metrics": {"enabled": False}}), "Deployment", "-worker")["spec"]["template"]
    assert "--metrics-listen" not in worker["spec"]["containers"][0]["args"]


def test_the_service_monitor_selects_the_metrics_service():
    objects = render(HA_VALUES)
    monitor = one(objects, "ServiceMonitor")
    service = one(objects, "Service", "-metrics")
    selector = monitor["spec"]["selector"]["matchLabels"]
    assert selector.items() <= service["metadata"]["labels"].items()
    assert monitor["spec"]["endpoints"][0]["port"] == service["spec"]["ports"][0]["name"] == "metrics"
    assert monitor["metadata"]["labels"]["release"] == "prometheus"


def test_coordinators_serve_metrics_where_they_are_scraped():
    objects = render({"metrics": {"enabled": True}})
    config = coordinator_configs(objects)["coordinator-0.toml"]
    pod = one(objects, "StatefulSet", "-coordinator")["spec"]["template"]
    assert pod["metadata"]["annotations"]["prometheus.io/scrape"] == "true"
    port = int(pod["metadata"]["annotations"]["prometheus.io/port"])
    assert config["metrics_listen"] == f"0.0.0.0:{port}"
    assert {"name": "metrics", "containerPort": port, "protocol": "TCP"} in pod["spec"]["containers"][0]["ports"]
    assert "metrics_listen" not in coordinator_configs(render({"metrics": {"enabled": False}}))["coordinator-0.toml"]


@pytest.mark.parametrize("replicas", [1, 3, 5])
def test_coordinators_are_a_statefulset_of_the_requested_size(replicas):
    objects = render({"coordinator": {"replicas": replicas}})
    sts = one(objects, "StatefulSet", "-coordinator")
    assert sts["spec"]["replicas"] == replicas
    headless = one(objects, "Service", "-coordinator-headless")
    assert sts["spec"]["serviceName"] == headless["metadata"]["name"]
    assert headless["spec"]["clusterIP"] == "None"
    assert headless["spec"]["publishNotReadyAddresses"] is True
    claim = sts["spec"]["volumeClaimTemplates"][0]
    mounts = {m["name"]: m["mountPath"] for m in sts["spec"]["template"]["spec"]["containers"][0]["volumeMounts"]}
    assert mounts[claim["metadata"]["name"]] == "/var/lib/rbk"


@pytest.mark.parametrize("replicas,max_unavailable", [(3, 1), (5, 2)])
def test_the_disruption_budget_keeps_a_majority(replicas, max_unavailable):
    objects = render({"coordinator": {"replicas": replicas}})
    pdb = one(objects, "PodDisruptionBudget")
    assert pdb["spec"]["maxUnavailable"] == max_unavailable
    assert replicas - max_unavailable > replicas // 2
    sts = one(objects, "StatefulSet", "-coordinator")
    assert pdb["spec"]["selector"]["matchLabels"] == sts["spec"]["selector"]["matchLabels"]


def test_voters_prefer_different_nodes_unless_affinity_is_given():
    sts = one(render({"coordinator": {"replicas": 3}}), "StatefulSet", "-coordinator")
    term = sts["spec"]["template"]["spec"]["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"][0]
    assert term["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"
    assert term["podAffinityTerm"]["labelSelector"]["matchLabels"] == sts["spec"]["selector"]["matchLabels"]
    required = HA_VALUES["coordinator"]["affinity"]
    assert one(render(HA_VALUES), "StatefulSet", "-coordinator")["spec"]["template"]["spec"]["affinity"] == required


def test_a_single_coordinator_gets_no_disruption_budget():
    assert not [o for o in render({}) if o["kind"] == "PodDisruptionBudget"]


def coordinator_configs(objects: list[dict]) -> dict[str, dict]:
    data = one(objects, "ConfigMap", "-coordinator")["data"]
    return {name: tomllib.loads(text) for name, text in data.items()}


def test_each_coordinator_gets_its_node_id_and_every_peer_address():
    objects = render(HA_VALUES)
    configs = coordinator_configs(objects)
    host = "farm-rbk-coordinator-{}.farm-rbk-coordinator-headless.build.svc"
    # The HA values enable TLS: the leader URL followers hand out is https.
    expected = {str(i + 1): {"raft": f"{host.format(i)}:7071", "api": f"https://{host.format(i)}:7070"} for i in range(3)}
    assert sorted(configs) == ["coordinator-0.toml", "coordinator-1.toml", "coordinator-2.toml"]
    for i in range(3):
        raft = configs[f"coordinator-{i}.toml"]["raft"]
        assert raft["node_id"] == i + 1
        assert raft["peers"] == expected
        assert raft["listen"] == "0.0.0.0:7071"
        assert raft["data_dir"].startswith("/var/lib/rbk/")
    # The peer names are the pods' DNS names under the headless Service,
    # which publishes the raft port before the pods are ready.
    sts = one(objects, "StatefulSet", "-coordinator")
    assert host.format(0).startswith(f"{sts['metadata']['name']}-0.{sts['spec']['serviceName']}.")
    headless = one(objects, "Service", "-coordinator-headless")
    assert {p["name"]: p["port"] for p in headless["spec"]["ports"]} == {"grpc": 7070, "raft": 7071}


def test_coordinators_beyond_the_bootstrap_voters_join_at_run_time():
    configs = coordinator_configs(render({"coordinator": {"replicas": 5, "raft": {"bootstrapVoters": 3}}}))
    for i in range(5):
        raft = configs[f"coordinator-{i}.toml"]["raft"]
        assert sorted(raft["peers"]) == ["1", "2", "3"]
        assert raft.get("join", False) is (i >= 3), i


def test_more_bootstrap_voters_than_replicas_are_refused():
    with pytest.raises(helm.HelmError) as refused:
        render({"coordinator": {"replicas": 3, "raft": {"bootstrapVoters": 5}}})
    assert "bootstrapVoters (5) cannot exceed coordinator.replicas (3)" in str(refused.value)


def test_the_raft_secret_file_is_mounted_from_the_auth_secret():
    objects = render(HA_VALUES)
    config = coordinator_configs(objects)["coordinator-0.toml"]
    pod = one(objects, "StatefulSet", "-coordinator")["spec"]["template"]["spec"]
    volume = next(v for v in pod["volumes"] if v["name"] == "raft-secret")
    assert volume["secret"] == {"secretName": "rbk-tokens", "items": [{"key": "raft-secret", "path": "raft-secret"}]}
    mount = next(m for m in pod["containers"][0]["volumeMounts"] if m["name"] == "raft-secret")
    assert config["raft"]["secret_file"] == f"{mount['mountPath']}/raft-secret"


def test_each_pod_reads_the_config_of_its_own_ordinal():
    sts = one(render(HA_VALUES), "StatefulSet", "-coordinator")
    container = sts["spec"]["template"]["spec"]["containers"][0]
    assert container["args"] == ["coordinator", "--config", "/etc/rbk/config/coordinator-$(RBK_NODE_INDEX).toml"]
    env = {e["name"]: e for e in container["env"]}
    assert env["RBK_NODE_INDEX"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.labels['apps.kubernetes.io/pod-index']"


def test_a_single_coordinator_is_a_one_voter_raft_group():
    configs = coordinator_configs(render({}))
    assert list(configs) == ["coordinator-0.toml"]
    raft = configs["coordinator-0.toml"]["raft"]
    assert raft["node_id"] == 1 and list(raft["peers"]) == ["1"]
    assert raft["data_dir"].startswith("/var/lib/rbk/"), "the state must live on the PVC"


def test_a_single_coordinator_may_keep_its_state_in_memory():
    configs = coordinator_configs(render({"coordinator": {"raft": {"enabled": False}}}))
    assert "raft" not in configs["coordinator-0.toml"]
    sts = one(render({"coordinator": {"raft": {"enabled": False}}}), "StatefulSet", "-coordinator")
    assert sts["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["tcpSocket"] == {"port": "grpc"}


def test_the_cluster_domain_completes_peer_addresses():
    configs = coordinator_configs(render(with_values(HA_VALUES, clusterDomain="cluster.local")))
    assert configs["coordinator-0.toml"]["raft"]["peers"]["3"]["raft"] == (
        "farm-rbk-coordinator-2.farm-rbk-coordinator-headless.build.svc.cluster.local:7071"
    )


def worker_pod(objects: list[dict], kind: str = "Deployment") -> dict:
    return one(objects, kind, "-worker")["spec"]["template"]["spec"]


def test_workers_run_privileged_by_default_and_coordinators_do_not():
    objects = render({})
    worker = worker_pod(objects)["containers"][0]
    assert worker["securityContext"] == {"privileged": True}
    coordinator = one(objects, "StatefulSet", "-coordinator")["spec"]["template"]["spec"]["containers"][0]
    sc = coordinator["securityContext"]
    assert sc["runAsNonRoot"] is True and sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"]["drop"] == ["ALL"]


def test_workers_may_use_capabilities_instead_of_privileged():
    caps = {"privileged": False, "capabilities": {"add": ["SYS_ADMIN", "SYS_CHROOT", "NET_ADMIN"]},
            "seccompProfile": {"type": "Unconfined"}}
    worker = worker_pod(render({"worker": {"securityContext": caps}}))["containers"][0]
    assert worker["securityContext"] == caps


def test_the_local_volume_holds_the_worker_state_and_caches_within_its_size_limit():
    pod = worker_pod(render({"worker": {"localStorage": {"sizeGiB": 30}}}))
    volume = next(v for v in pod["volumes"] if v["name"] == "local")
    assert volume["emptyDir"]["sizeLimit"] == "30Gi"
    mounts = {m["name"]: m["mountPath"] for m in pod["containers"][0]["volumeMounts"]}
    args = pod["containers"][0]["args"]
    for flag in ("--state-dir", "--cache-dir"):
        assert args[args.index(flag) + 1].startswith(mounts["local"] + "/")


def test_the_worker_evicts_layers_at_the_layer_store_size_below_the_volume_limit():
    pod = worker_pod(render({"worker": {"localStorage": {"sizeGiB": 8, "layerStoreGiB": 5}}}))
    volume = next(v for v in pod["volumes"] if v["name"] == "local")
    assert volume["emptyDir"]["sizeLimit"] == "8Gi"
    args = pod["containers"][0]["args"]
    assert args[args.index("--max-layer-bytes") + 1] == "5GiB"


def test_a_size_limit_without_room_above_the_layer_store_is_refused():
    with pytest.raises(helm.HelmError) as refused:
        render({"worker": {"localStorage": {"sizeGiB": 20, "layerStoreGiB": 20}}})
    assert "worker.localStorage.sizeGiB (20) must exceed worker.localStorage.layerStoreGiB (20)" in str(refused.value)


def test_a_host_path_volume_keeps_layers_on_the_node():
    pod = worker_pod(render({"worker": {"localStorage": {"type": "hostPath", "hostPath": "/srv/rbk"}}}))
    volume = next(v for v in pod["volumes"] if v["name"] == "local")
    assert volume["hostPath"] == {"path": "/srv/rbk", "type": "DirectoryOrCreate"}


def test_workers_get_a_grace_period_long_enough_for_a_step():
    pod = worker_pod(render({}))
    assert pod["terminationGracePeriodSeconds"] >= 600
    assert "lifecycle" not in pod["containers"][0], "SIGTERM itself drains the worker"


def test_workers_as_a_daemonset_with_labels_and_the_s3_store():
    objects = render(HA_VALUES)
    pod = worker_pod(objects, "DaemonSet")
    args = pod["containers"][0]["args"]
    # The HA values enable TLS, served by the coordinators themselves.
    assert args[:3] == ["worker", "--coordinator", "https://farm-rbk-coordinator.build.svc:7070"]
    labels = [args[i + 1] for i, a in enumerate(args) if a == "--labels"]
    assert labels == ["disk=ssd", "pool=linux-amd64"]
    assert args[args.index("--runtime") + 1] == "crun"
    store = tomllib.loads(one(objects, "ConfigMap", "-worker-store")["data"]["store.toml"])["store"]
    s3 = store["inner"]["inner"]["inner"]
    assert (store["type"], s3["type"], s3["bucket"], s3["endpoint"], s3["region"], s3["prefix"]) == (
        "existence_cache", "s3", "rbk-cache", "https://s3.storage.internal:9000", "eu-west-1", "farm-a")


def test_coordinators_and_workers_share_one_store():
    objects = render(HA_VALUES)
    worker = tomllib.loads(one(objects, "ConfigMap", "-worker-store")["data"]["store.toml"])["store"]
    for name, config in coordinator_configs(objects).items():
        assert config["store"] == worker, name
    env = one(objects, "StatefulSet", "-coordinator")["spec"]["template"]["spec"]["containers"][0]["env"]
    assert {"name": "RBK_S3_SECRET_ACCESS_KEY", "valueFrom": {"secretKeyRef": {"name": "rbk-s3", "key": "secret-access-key"}}} in env


def test_without_s3_the_coordinator_keeps_blobs_on_its_volume():
    config = coordinator_configs(render({}))["coordinator-0.toml"]
    assert config["store"] == {"dir": "/var/lib/rbk/store"}


def test_secrets_reach_pods_only_through_secret_references():
    objects = render(HA_VALUES)
    env = {e["name"]: e for e in worker_pod(objects, "DaemonSet")["containers"][0]["env"]}
    assert "--token" not in worker_pod(objects, "DaemonSet")["containers"][0]["args"]
    for name, secret, key in [("RBK_WORKER_TOKEN", "rbk-tokens", "worker-token"),
                              ("RBK_S3_ACCESS_KEY_ID", "rbk-s3", "access-key-id"),
                              ("RBK_S3_SECRET_ACCESS_KEY", "rbk-s3", "secret-access-key"),
                              ("RBK_REDIS_URL", "rbk-redis", "redis-url")]:
        assert env[name]["valueFrom"]["secretKeyRef"] == {"name": secret, "key": key}, name
    assert not [o for o in objects if o["kind"] == "Secret"], "an existing Secret was given; none is created"


def test_generated_tokens_appear_in_no_config_map_or_pod_spec():
    objects = render({"redis": {"enabled": True, "url": "redis://redis:6379"}, "coordinator": {"replicas": 3}})
    secret = one(objects, "Secret", "-tokens")["stringData"]
    values = [secret["tenant-token"], secret["worker-token"], secret["raft-secret"]]
    for obj in objects:
        if obj["kind"] != "Secret":
            assert not any(v in yaml.safe_dump(obj) for v in values), f"{obj['kind']}/{obj['metadata']['name']}"


def test_tokens_are_generated_when_no_secret_is_given():
    secret = one(render({}), "Secret", "-tokens")
    assert len(secret["stringData"]["raft-secret"]) >= 32
    tokens = tomllib.loads(secret["stringData"]["tokens.toml"])
    worker_token = secret["stringData"]["worker-token"]
    assert tokens["workers"] == {worker_token: "default"}
    assert tokens["tenants"] == {secret["stringData"]["tenant-token"]: "default"}
    assert len(worker_token) >= 16


def test_irsa_annotations_land_on_the_service_account_both_workloads_use():
    arn = "arn:aws:iam::123456789012:role/rbk-cache"
    objects = render({"serviceAccount": {"annotations": {"eks.amazonaws.com/role-arn": arn}}})
    account = one(objects, "ServiceAccount")
    assert account["metadata"]["annotations"]["eks.amazonaws.com/role-arn"] == arn
    assert worker_pod(objects)["serviceAccountName"] == account["metadata"]["name"]
    sts = one(objects, "StatefulSet", "-coordinator")
    assert sts["spec"]["template"]["spec"]["serviceAccountName"] == account["metadata"]["name"]


def test_tls_from_a_secret_terminates_at_the_ingress_and_is_mounted():
    objects = render(HA_VALUES)
    ingress = one(objects, "Ingress")
    assert ingress["spec"]["tls"] == [{"hosts": ["rbk.build.internal"], "secretName": "rbk-grpc-tls"}]
    volumes = one(objects, "StatefulSet", "-coordinator")["spec"]["template"]["spec"]["volumes"]
    assert {"name": "tls", "secret": {"secretName": "rbk-grpc-tls"}} in volumes


def test_with_tls_the_coordinators_serve_it_and_workers_dial_https():
    objects = render(with_values(HA_VALUES, tls__caKey="ca.crt"))
    for name, config in coordinator_configs(objects).items():
        assert config["tls"] == {"cert": "/etc/rbk/tls/tls.crt", "key": "/etc/rbk/tls/tls.key"}, name
        assert all(p["api"].startswith("https://") for p in config["raft"]["peers"].values()), name
    worker = worker_pod(objects, "DaemonSet")["containers"][0]
    url = worker["args"][worker["args"].index("--coordinator") + 1]
    assert url.startswith("https://") and ".build.svc:" in url
    assert {"name": "RBK_TLS_CA", "value": "/etc/rbk/tls-ca/ca.crt"} in worker["env"]
    assert {"name": "tls-ca", "mountPath": "/etc/rbk/tls-ca", "readOnly": True} in worker["volumeMounts"]


def test_without_tls_coordinators_serve_plain_http2():
    objects = render()
    assert all("tls" not in c for c in coordinator_configs(objects).values())
    worker = worker_pod(objects)["containers"][0]
    assert worker["args"][worker["args"].index("--coordinator") + 1].startswith("http://")


def test_network_policies_keep_the_raft_port_among_coordinators():
    objects = render(HA_VALUES)
    coordinator = one(objects, "NetworkPolicy", "-coordinator")
    sts = one(objects, "StatefulSet", "-coordinator")
    rules = {r["ports"][0]["port"]: r.get("from") for r in coordinator["spec"]["ingress"]}
    assert rules["grpc"] is None, "clients and workers reach the API from anywhere"
    assert rules["raft"] == [{"podSelector": {"matchLabels": sts["spec"]["selector"]["matchLabels"]}}]
    assert rules["metrics"] == HA_VALUES["networkPolicy"]["metricsFrom"]
    worker = one(objects, "NetworkPolicy", "-worker")
    assert [r["ports"][0]["port"] for r in worker["spec"]["ingress"]] == ["metrics"]
    no_metrics = one(render(with_values(HA_VALUES, metrics__enabled=False)), "NetworkPolicy", "-worker")
    assert no_metrics["spec"]["ingress"] == []
    assert not [o for o in render({}) if o["kind"] == "NetworkPolicy"]


BAD_VALUES = {
    "an even number of coordinators": ({"coordinator": {"replicas": 2}}, "replicas"),
    "a misspelt key": ({"coordinator": {"replica": 3}}, "replica"),
    "a worker without privileges or SYS_ADMIN": ({"worker": {"securityContext": {"privileged": False}}}, "securityContext"),
    "an unknown worker kind": ({"worker": {"kind": "StatefulSet"}}, "kind"),
    "an unknown runtime": ({"worker": {"runtime": "docker"}}, "runtime"),
    "redis on without a url": ({"redis": {"enabled": True}}, "redis"),
    "tls on without a secret": ({"tls": {"enabled": True}}, "existingSecret"),
    "a grace period too short for a step": ({"worker": {"terminationGracePeriodSeconds": 5}}, "terminationGracePeriodSeconds"),
    "an S3 endpoint without a scheme": ({"store": {"s3": {"endpoint": "minio:9000"}}}, "endpoint"),
}


@pytest.mark.parametrize("case", BAD_VALUES)
def test_the_schema_refuses(case):
    values, field = BAD_VALUES[case]
    with pytest.raises(helm.HelmError) as refused:
        render(values)
    assert field in str(refused.value), str(refused.value)


# The rendered configs, read by the real rbk binary.

def rbk_binary() -> pathlib.Path:
    path = pathlib.Path(os.environ.get("RBK_BIN", REPO / "target" / "debug" / "rbk"))
    if not path.exists():
        pytest.fail(f"{path} does not exist: build it (cargo build -p rbk) or set RBK_BIN")
    return path


def read_until(stream, marker: str, timeout: float) -> list[str]:
    """Lines of `stream` up to the first holding `marker`, or all read
    within `timeout` seconds (a thread reads, so buffering cannot hide one)."""
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=lambda: [lines.put(l) for l in iter(stream.readline, "")] and None, daemon=True).start()
    seen, deadline = [], time.monotonic() + timeout
    while not any(marker in l for l in seen):
        try:
            seen.append(lines.get(timeout=max(0.0, deadline - time.monotonic())))
        except queue.Empty:
            break
    return seen


@contextlib.contextmanager
def running_coordinator(objects: list[dict], tmp_path: pathlib.Path, env: dict | None = None, raft_port: int = 0):
    """The real coordinator on coordinator-0.toml of `objects`, relocated
    from the pod's paths to `tmp_path` (ports: 0, raft: `raft_port`);
    yields its API address."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    text = one(objects, "ConfigMap", "-coordinator")["data"]["coordinator-0.toml"]
    secret = one(objects, "Secret", "-tokens")["stringData"]
    tokens = secret["tokens.toml"]
    text = text.replace('"0.0.0.0:7071"', f'"127.0.0.1:{raft_port}"')
    text = re.sub(r'"0\.0\.0\.0:[0-9]+"', '"127.0.0.1:0"', text)
    text = text.replace("/etc/rbk/tokens/", f"{tmp_path}/").replace("/var/lib/rbk/", f"{tmp_path}/data/")
    text = text.replace("/etc/rbk/raft/", f"{tmp_path}/")
    (tmp_path / "raft-secret").write_text(secret["raft-secret"])
    (tmp_path / "tokens.toml").write_text(tokens)
    (tmp_path / "coordinator.toml").write_text(text)
    proc = subprocess.Popen([rbk_binary(), "coordinator", "--config", tmp_path / "coordinator.toml"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        # Other lines (the raft node's, the metrics endpoint's) may come first.
        seen = "".join(read_until(proc.stdout, "rbk coordinator listening on", 20))
        if "rbk coordinator listening on" not in seen:
            proc.kill()
            pytest.fail(f"coordinator did not start with the chart's config:\n{text}\n{seen}{proc.stderr.read()}")
        yield seen.split("rbk coordinator listening on", 1)[1].split()[0]
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=20)


def start_coordinator(objects: list[dict], tmp_path: pathlib.Path, env: dict | None = None) -> None:
    with running_coordinator(objects, tmp_path, env):
        pass


def test_the_rendered_coordinator_config_starts_the_real_coordinator(tmp_path):
    start_coordinator(render({"metrics": {"enabled": True}}), tmp_path)


def test_the_rendered_s3_coordinator_config_starts_the_real_coordinator(tmp_path):
    endpoint = s3_endpoint()
    bucket = new_bucket(endpoint)
    objects = render({"store": {"s3": {"bucket": bucket, "endpoint": endpoint, "region": "us-east-1",
                                       "existingSecret": "rbk-s3"}},
                      "redis": {"enabled": True, "url": os.environ.get("RBK_TEST_REDIS_URL", "redis://127.0.0.1:6379")}})
    container = one(objects, "StatefulSet", "-coordinator")["spec"]["template"]["spec"]["containers"][0]
    env = pod_env(container, objects)
    with running_coordinator(objects, tmp_path, env=env):
        # The coordinator touches neither S3 nor Redis as it starts, so
        # starting proves nothing about bucket, endpoint or keys: run real
        # store operations through the [store] table it runs with, with
        # the environment its pod gets (credentials from the Secret).
        done = subprocess.run([rbk_binary(), "store", "selftest", "--config", tmp_path / "coordinator.toml"],
                              env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert re.search(r"existence_cache\(.*\) > verify > compress\(3\) > s3\(" + bucket, done.stdout), done.stdout


def s3_endpoint() -> str:
    endpoint = os.environ.get("RBK_TEST_S3_ENDPOINT")
    if not endpoint:
        pytest.fail("RBK_TEST_S3_ENDPOINT is not set: run eval \"$(deploy/dev/services.sh up)\" first")
    return endpoint


def new_bucket(endpoint: str) -> str:
    bucket = f"helm-{uuid.uuid4().hex[:12]}"
    urllib.request.urlopen(signed_s3_request("PUT", endpoint, f"/{bucket}"), timeout=10).close()
    return bucket


def signed_s3_request(method: str, endpoint: str, path: str) -> urllib.request.Request:
    """An empty-bodied S3 request signed with AWS Signature Version 4 and
    the test key (the S3 server checks keys, as S3 does)."""
    key, secret = s3_test_key()
    region, host = os.environ.get("RBK_TEST_S3_REGION", "us-east-1"), urllib.parse.urlsplit(endpoint).netloc
    now = datetime.datetime.now(datetime.timezone.utc)
    amz_date, day = now.strftime("%Y%m%dT%H%M%SZ"), now.strftime("%Y%m%d")
    payload = hashlib.sha256(b"").hexdigest()
    headers = {"host": host, "x-amz-content-sha256": payload, "x-amz-date": amz_date}
    signed = ";".join(sorted(headers))
    canonical = "\n".join([method, path, "", *(f"{k}:{headers[k]}" for k in sorted(headers)), "", signed, payload])
    scope = f"{day}/{region}/s3/aws4_request"
    to_sign = "\n".join(["AWS4-HMAC-SHA256", amz_date, scope, hashlib.sha256(canonical.encode()).hexdigest()])
    k = f"AWS4{secret}".encode()
    for part in (day, region, "s3", "aws4_request"):
        k = hmac.new(k, part.encode(), hashlib.sha256).digest()
    signature = hmac.new(k, to_sign.encode(), hashlib.sha256).hexdigest()
    headers["authorization"] = f"AWS4-HMAC-SHA256 Credential={key}/{scope}, SignedHeaders={signed}, Signature={signature}"
    del headers["host"]
    return urllib.request.Request(f"{endpoint}{path}", method=method, headers=headers)


def s3_test_key() -> tuple[str, str]:
    key, secret = os.environ.get("RBK_TEST_S3_ACCESS_KEY"), os.environ.get("RBK_TEST_S3_SECRET_KEY")
    if not key or not secret:
        pytest.fail("RBK_TEST_S3_ACCESS_KEY/RBK_TEST_S3_SECRET_KEY are not set: run eval \"$(deploy/dev/services.sh up)\" first")
    return key, secret


def pod_env(container: dict, objects: list[dict]) -> dict:
    """This process's environment plus `container`'s env as the kubelet
    would set it: Secret references resolved against the chart's Secrets
    and an `rbk-s3` Secret holding the test key."""
    secrets = {}
    for obj in objects:
        if obj["kind"] == "Secret":
            secrets.update({(obj["metadata"]["name"], k): v for k, v in obj.get("stringData", {}).items()})
    secrets[("rbk-s3", "access-key-id")], secrets[("rbk-s3", "secret-access-key")] = s3_test_key()
    env = dict(os.environ)
    for e in container["env"]:
        if "value" in e:
            env[e["name"]] = e["value"]
        elif ref := e.get("valueFrom", {}).get("secretKeyRef"):
            env[e["name"]] = secrets[(ref["name"], ref["key"])]
    return env


def s3_env() -> dict:
    key, secret = s3_test_key()
    return dict(os.environ, RBK_S3_ACCESS_KEY_ID=key, RBK_S3_SECRET_ACCESS_KEY=secret)


def test_the_rendered_worker_store_config_round_trips_blobs_through_real_s3(tmp_path):
    endpoint = s3_endpoint()
    bucket = new_bucket(endpoint)
    objects = render({"store": {"s3": {"bucket": bucket, "endpoint": endpoint, "region": "us-east-1",
                                       "prefix": "chart", "existingSecret": "rbk-s3"}}})
    (tmp_path / "store.toml").write_text(one(objects, "ConfigMap", "-worker-store")["data"]["store.toml"])
    done = subprocess.run([rbk_binary(), "store", "selftest", "--config", tmp_path / "store.toml"],
                          env=s3_env(), capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert re.search(r"existence_cache\(lru\) > verify > compress\(3\) > s3\(" + bucket, done.stdout), done.stdout


def test_a_worker_started_as_the_chart_says_registers_and_drains(tmp_path):
    endpoint = s3_endpoint()
    objects = render({"store": {"s3": {"bucket": new_bucket(endpoint), "endpoint": endpoint, "region": "us-east-1",
                                       "existingSecret": "rbk-s3"}}})
    (tmp_path / "store").mkdir()
    (tmp_path / "store" / "store.toml").write_text(one(objects, "ConfigMap", "-worker-store")["data"]["store.toml"])
    container = worker_pod(objects)["containers"][0]
    env = pod_env(container, objects)
    with running_coordinator(objects, tmp_path / "coordinator", env=s3_env()) as addr:
        args = [a.replace("http://farm-rbk-coordinator.build.svc:7070", f"http://{addr}")
                 .replace("/var/lib/rbk-worker/", f"{tmp_path}/worker/").replace("/etc/rbk/store/", f"{tmp_path}/store/")
                 .replace("0.0.0.0:9465", "127.0.0.1:0") for a in container["args"]]
        worker = subprocess.Popen([rbk_binary(), *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            seen = read_until(worker.stdout, "registered with", 30)
            assert any("registered with" in l for l in seen), "".join(seen)
            # At once: SIGTERM drains from the moment rbk worker starts
            # (exit 0; killed by the signal it would be -15).
            worker.send_signal(signal.SIGTERM)
            assert worker.wait(timeout=30) == 0, "".join(seen)
        finally:
            if worker.poll() is None:
                worker.kill()
                worker.wait()


def test_a_worker_terminated_as_it_starts_drains_instead_of_dying(tmp_path):
    # The kubelet may stop a pod at any moment, also while rbk worker is
    # still connecting: its first line is printed once SIGTERM drains.
    objects = render({})
    container = worker_pod(objects)["containers"][0]
    args = [a.replace("http://farm-rbk-coordinator.build.svc:7070", f"http://127.0.0.1:{free_port()}")
             .replace("/var/lib/rbk-worker/", f"{tmp_path}/worker/").replace("0.0.0.0:9465", "127.0.0.1:0")
            for a in container["args"]]
    worker = subprocess.Popen([rbk_binary(), *args], env=pod_env(container, objects),
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        seen = read_until(worker.stdout, "connecting to", 30)
        assert any("connecting to" in l for l in seen), "".join(seen)
        worker.send_signal(signal.SIGTERM)
        # 0: drained; killed by the signal it would be -15.
        assert worker.wait(timeout=30) == 0, "".join(seen)
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_the_readiness_probe_passes_once_the_node_is_a_raft_member(tmp_path):
    objects = render({})
    container = one(objects, "StatefulSet", "-coordinator")["spec"]["template"]["spec"]["containers"][0]
    probe = container["readinessProbe"]["exec"]["command"]
    port = free_port()
    probe = [arg.replace("http://127.0.0.1:7071", f"http://127.0.0.1:{port}") for arg in probe]
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "rbk").symlink_to(rbk_binary())
    secret = one(objects, "Secret", "-tokens")["stringData"]["raft-secret"]
    env = dict(os.environ, PATH=f"{bin_dir}:{os.environ['PATH']}", RBK_RAFT_SECRET=secret)
    assert {"name": "RBK_RAFT_SECRET", "valueFrom": {"secretKeyRef": {"name": "farm-rbk-tokens", "key": "raft-secret"}}} in container["env"]

    def probe_exit(node_index: int) -> subprocess.CompletedProcess:
        return subprocess.run(probe, env=dict(env, RBK_NODE_INDEX=str(node_index)), capture_output=True, text=True, timeout=20)

    with running_coordinator(objects, tmp_path / "coordinator", raft_port=port):
        deadline = time.monotonic() + 20
        while (done := probe_exit(0)).returncode != 0 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert done.returncode == 0, done.stderr
        assert probe_exit(4).returncode != 0, "node 5 is not a member, yet it reads as ready"
    assert probe_exit(0).returncode != 0, "ready with the coordinator gone"
