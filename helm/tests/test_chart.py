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
import json
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
GITOPS_VALUES = yaml.safe_load((CHART / "ci" / "gitops-values.yaml").read_text())
AUTOSCALED_VALUES = yaml.safe_load((CHART / "ci" / "autoscaled-values.yaml").read_text())
# The newest Kubernetes kubernetes-validate ships schemas for.
KUBE_VERSION = kubernetes_validate.utils.latest_version()
RELEASE = "farm"
NAMESPACE = "build"
# Objects of CRDs kubernetes-validate has no schema for, checked by hand below.
CRD_KINDS = {("monitoring.coreos.com/v1", "ServiceMonitor"), ("monitoring.coreos.com/v1", "PrometheusRule"),
             ("keda.sh/v1alpha1", "ScaledObject")}


def offline(values: dict | None) -> dict:
    """`values` with auth.generateOffline on unless it or an existing Secret
    is given: these renders have no cluster, and the chart refuses to
    generate tokens without one unless told to (see the GitOps tests)."""
    values = copy.deepcopy(values or {})
    auth = values.setdefault("auth", {})
    if not auth.get("existingSecret"):
        auth.setdefault("generateOffline", True)
    return values


def render_manifests(values: dict | None) -> dict[str, str]:
    with helm.Chart.load(CHART) as chart:
        return chart.render(values=values, name=RELEASE, namespace=NAMESPACE, is_install=True)


def render(values: dict | None = None) -> list[dict]:
    """Every object the chart renders for `values` (offline), in template order."""
    manifests = render_manifests(offline(values))
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


# minimal: the defaults (tokens generated); ha: three coordinators, TLS,
# a cert-manager Ingress; gitops: existingSecret, Ingress TLS for the public
# host only, alerts and dashboard; autoscaled: KEDA-scaled workers.
VALUE_SETS = {"default": {}, "ha": HA_VALUES, "gitops": GITOPS_VALUES, "autoscaled": AUTOSCALED_VALUES}


@pytest.mark.parametrize("name", VALUE_SETS)
def test_chart_lints_clean_in_strict_mode(name):
    report = helm.lint(CHART, values=offline(VALUE_SETS[name]), strict=True, kube_version=f"v{KUBE_VERSION}.0")
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
    pdb = one(objects, "PodDisruptionBudget", "-coordinator")
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
    assert not [o for o in render({}) if o["kind"] == "PodDisruptionBudget" and o["metadata"]["name"].endswith("-coordinator")]


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


def test_the_collector_runs_hourly_with_the_existence_cache_ttl_and_no_budgets_by_default():
    config = coordinator_configs(render())["coordinator-0.toml"]
    assert config["gc"] == {"interval": "1h", "grace": "1h", "existence_ttl": "600s", "batch": 1000}
    assert "eviction" not in config


def test_per_tenant_budgets_and_keep_duration_reach_every_coordinator():
    values = {"coordinator": {"replicas": 3, "eviction": {"keepDuration": "14d", "headsBytes": "20GiB", "actionsBytes": "50GiB",
                                                          "tenants": {"big-team": {"headsBytes": "100GiB"}}}}}
    for name, config in coordinator_configs(render(values)).items():
        assert config["eviction"] == {"keep_duration": "14d", "heads_bytes": "20GiB", "actions_bytes": "50GiB",
                                      "tenants": {"big-team": {"heads_bytes": "100GiB"}}}, name


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


def test_raft_mutual_tls_mounts_its_secret_and_the_probe_dials_https_with_a_client_certificate():
    objects = render(with_values(HA_VALUES, coordinator__raft__tls={"enabled": True, "secretName": "raft-peers"}))
    config = coordinator_configs(objects)["coordinator-0.toml"]
    pod = one(objects, "StatefulSet", "-coordinator")["spec"]["template"]["spec"]
    volume = next(v for v in pod["volumes"] if v["name"] == "raft-tls")
    assert volume["secret"] == {"secretName": "raft-peers"}
    container = pod["containers"][0]
    mount = next(m for m in container["volumeMounts"] if m["name"] == "raft-tls")["mountPath"]
    assert config["raft"]["tls"] == {"cert": f"{mount}/tls.crt", "key": f"{mount}/tls.key", "ca": f"{mount}/ca.crt"}
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert (env["RBK_RAFT_TLS_CERT"], env["RBK_RAFT_TLS_KEY"], env["RBK_RAFT_TLS_CA"]) == (f"{mount}/tls.crt", f"{mount}/tls.key", f"{mount}/ca.crt")
    probe = container["readinessProbe"]["exec"]["command"][-1]
    assert "--coordinator https://127.0.0.1:7071" in probe, probe


def test_raft_tls_without_a_secret_name_is_refused():
    with pytest.raises(helm.HelmError) as refused:
        render(with_values(HA_VALUES, coordinator__raft__tls={"enabled": True}))
    assert "coordinator.raft.tls.secretName is required" in str(refused.value)


def test_each_pod_reads_the_config_of_its_own_ordinal():
    sts = one(render(HA_VALUES), "StatefulSet", "-coordinator")
    container = sts["spec"]["template"]["spec"]["containers"][0]
    assert container["args"] == ["coordinator", "--config", "/etc/rbk/config/coordinator-$(RBK_NODE_INDEX).toml"], "ci/ha-values.yaml has TLS: no --insecure-plaintext"
    env = {e["name"]: e for e in container["env"]}
    assert env["RBK_NODE_INDEX"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.labels['apps.kubernetes.io/pod-index']"


def test_a_single_coordinator_is_a_one_voter_raft_group():
    configs = coordinator_configs(render({}))
    assert list(configs) == ["coordinator-0.toml"]
    raft = configs["coordinator-0.toml"]["raft"]
    assert raft["node_id"] == 1 and list(raft["peers"]) == ["1"]
    assert raft["data_dir"].startswith("/var/lib/rbk/"), "the state must live on the PVC"


def test_raft_without_a_secret_key_is_refused():
    with pytest.raises(helm.HelmError) as refused:
        render({"coordinator": {"raft": {"secretKey": ""}}})
    assert "coordinator.raft.secretKey is required" in str(refused.value)


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


def test_the_worker_keeps_its_state_under_four_fifths_of_the_volume_by_default():
    args = worker_pod(render({"worker": {"localStorage": {"sizeGiB": 50}}}))["containers"][0]["args"]
    assert args[args.index("--disk-limit") + 1] == "40GiB"


def test_an_explicit_disk_limit_reaches_the_worker():
    pod = worker_pod(render({"worker": {"localStorage": {"sizeGiB": 100, "diskLimitGiB": 70}}}))
    args = pod["containers"][0]["args"]
    assert args[args.index("--disk-limit") + 1] == "70GiB"


def test_a_disk_limit_that_leaves_no_room_for_step_scratch_is_refused():
    with pytest.raises(helm.HelmError) as refused:
        render({"worker": {"localStorage": {"sizeGiB": 30, "diskLimitGiB": 30}}})
    assert "worker.localStorage.sizeGiB (30) must exceed worker.localStorage.diskLimitGiB (30)" in str(refused.value)


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
    values = [secret["tenant-token"], secret["worker-token"], secret["raft-secret"], secret["admin-token"]]
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
    # Without an Ingress TLS list of its own, the Ingress uses the coordinators' certificate.
    objects = render(with_values(HA_VALUES, coordinator__ingress__tls=[]))
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
    coordinator = one(objects, "StatefulSet", "-coordinator")["spec"]["template"]["spec"]["containers"][0]
    assert "--insecure-plaintext" not in coordinator["args"]


def test_without_tls_coordinators_serve_plain_http2():
    objects = render()
    assert all("tls" not in c for c in coordinator_configs(objects).values())
    coordinator = one(objects, "StatefulSet", "-coordinator")["spec"]["template"]["spec"]["containers"][0]
    assert "--insecure-plaintext" in coordinator["args"], "the coordinator refuses plain h2c on 0.0.0.0 without it"
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
    "a budget without a unit rbk knows": ({"coordinator": {"eviction": {"headsBytes": "20G"}}}, "headsBytes"),
    "a gc interval without a unit": ({"coordinator": {"gc": {"interval": "60"}}}, "interval"),
}


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
    if "admin-token" in secret:
        (tmp_path / "admin-token").write_text(secret["admin-token"])
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


def test_the_admin_token_is_generated_and_mounted_beside_the_token_file_as_the_admin_token_file():
    objects = render({})
    secret = one(objects, "Secret", "-tokens")["stringData"]
    assert len(secret["admin-token"]) >= 16
    assert secret["admin-token"] not in (secret["tenant-token"], secret["worker-token"])
    pod = one(objects, "StatefulSet", "-coordinator")["spec"]["template"]["spec"]
    tokens = next(v for v in pod["volumes"] if v["name"] == "tokens")
    assert {"key": "admin-token", "path": "admin-token"} in tokens["secret"]["items"]
    mount = next(m for m in pod["containers"][0]["volumeMounts"] if m["name"] == "tokens")
    assert coordinator_configs(objects)["coordinator-0.toml"]["admin"] == {"token_file": f"{mount['mountPath']}/admin-token"}
    env = {e["name"]: e for e in pod["containers"][0]["env"]}
    assert env["RBK_ADMIN_TOKEN"]["valueFrom"]["secretKeyRef"] == {"name": "farm-rbk-tokens", "key": "admin-token"}
    assert env["RBK_COORDINATOR"]["value"] == "http://farm-rbk-coordinator.build.svc:7070"


def test_without_an_admin_token_key_the_coordinators_offer_no_admin_service():
    objects = render({"auth": {"adminTokenKey": ""}})
    assert "admin" not in coordinator_configs(objects)["coordinator-0.toml"]
    assert "admin-token" not in one(objects, "Secret", "-tokens")["stringData"]
    container = one(objects, "StatefulSet", "-coordinator")["spec"]["template"]["spec"]["containers"][0]
    assert "RBK_ADMIN_TOKEN" not in {e["name"] for e in container["env"]}


def test_with_tls_store_gc_in_a_coordinator_pod_dials_https_and_trusts_the_ca():
    objects = render(with_values(HA_VALUES, tls__caKey="ca.crt"))
    env = {e["name"]: e for e in one(objects, "StatefulSet", "-coordinator")["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["RBK_COORDINATOR"]["value"].startswith("https://")
    assert env["RBK_TLS_CA"]["value"] == "/etc/rbk/tls/ca.crt"


def test_store_gc_run_as_kubectl_exec_in_a_coordinator_pod_collects_with_the_mounted_token(tmp_path):
    objects = render({})
    container = one(objects, "StatefulSet", "-coordinator")["spec"]["template"]["spec"]["containers"][0]
    with running_coordinator(objects, tmp_path / "coordinator") as addr:
        # The pod's environment, as the kubelet sets it; only the Service
        # name, which does not resolve here, is replaced by the address.
        env = dict(pod_env(container, objects), RBK_COORDINATOR=f"http://{addr}")
        gc = subprocess.run([rbk_binary(), "store", "gc", "--dry-run"], env=env, capture_output=True, text=True, timeout=60)
        assert gc.returncode == 0, gc.stderr
        refused = subprocess.run([rbk_binary(), "store", "gc", "--dry-run"], env=dict(env, RBK_ADMIN_TOKEN="not-the-admin-token-at-all"),
                                 capture_output=True, text=True, timeout=60)
        assert refused.returncode != 0, "a wrong admin token was accepted"


def test_the_rendered_budgets_start_the_real_coordinator(tmp_path):
    start_coordinator(render({"coordinator": {"eviction": {"keepDuration": "7d", "headsBytes": "1GiB",
                                                           "tenants": {"big-team": {"actionsBytes": "500MB"}}}}}), tmp_path)


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


def test_the_pool_policy_keeps_32_bit_system_calls_off_unless_asked():
    policy = lambda values: json.loads(one(render(values), "ConfigMap", "-policy")["data"]["policy.json"])
    assert policy({})["compat_syscall_arches"] is False
    assert policy({"worker": {"policy": {"compatSyscallArches": True}}})["compat_syscall_arches"] is True


def local_policy(objects, tmp_path) -> str:
    """Writes the rendered worker policy ConfigMap where the worker's
    `--policy` will read it; returns the directory standing in for
    /etc/rbk/policy/."""
    d = tmp_path / "policy"
    d.mkdir(exist_ok=True)
    (d / "policy.json").write_text(one(objects, "ConfigMap", "-policy")["data"]["policy.json"])
    return f"{d}/"


def local_worker_args(container: dict, objects: list, tmp_path: pathlib.Path, coordinator: str) -> list[str]:
    """The worker container's args with the cluster's coordinator address,
    volume mounts and metrics address replaced by local ones."""
    return [a.replace("http://farm-rbk-coordinator.build.svc:7070", coordinator)
             .replace("/var/lib/rbk-worker/", f"{tmp_path}/worker/")
             .replace("/etc/rbk/policy/", local_policy(objects, tmp_path))
             .replace("/etc/rbk/store/", f"{tmp_path}/store/")
             .replace("0.0.0.0:9465", "127.0.0.1:0") for a in container["args"]]


def assert_worker_drains_on_sigterm_after(line: str, args: list[str], env: dict) -> None:
    """Starts `rbk ARGS`, waits for its output to say `line`, then sends
    SIGTERM at once: the worker drains (exit 0; killed by the signal it
    would be -15)."""
    worker = subprocess.Popen([rbk_binary(), *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        seen = read_until(worker.stdout, line, 30)
        assert any(line in l for l in seen), "".join(seen)
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(timeout=30) == 0, "".join(seen)
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()


def test_a_worker_started_as_the_chart_says_registers_and_drains(tmp_path):
    endpoint = s3_endpoint()
    objects = render({"store": {"s3": {"bucket": new_bucket(endpoint), "endpoint": endpoint, "region": "us-east-1",
                                       "existingSecret": "rbk-s3"}}})
    (tmp_path / "store").mkdir()
    (tmp_path / "store" / "store.toml").write_text(one(objects, "ConfigMap", "-worker-store")["data"]["store.toml"])
    container = worker_pod(objects)["containers"][0]
    with running_coordinator(objects, tmp_path / "coordinator", env=s3_env()) as addr:
        # SIGTERM drains from the moment rbk worker starts.
        args = local_worker_args(container, objects, tmp_path, f"http://{addr}")
        assert_worker_drains_on_sigterm_after("registered with", args, pod_env(container, objects))


def test_a_worker_terminated_as_it_starts_drains_instead_of_dying(tmp_path):
    # The kubelet may stop a pod at any moment, also while rbk worker is
    # still connecting: its first line is printed once SIGTERM drains.
    objects = render({})
    container = worker_pod(objects)["containers"][0]
    args = local_worker_args(container, objects, tmp_path, f"http://127.0.0.1:{free_port()}")
    assert_worker_drains_on_sigterm_after("connecting to", args, pod_env(container, objects))


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


# Conventions operators expect of a chart (issue #24): escape hatches,
# Ingress TLS of its own, GitOps-safe tokens, probes and budgets for
# workers, autoscaling, alerts and a dashboard.

def notes(values: dict | None = None) -> str:
    return next(text for path, text in render_manifests(offline(values)).items() if path.endswith("NOTES.txt"))


def coordinator_pod(objects: list[dict]) -> dict:
    return one(objects, "StatefulSet", "-coordinator")["spec"]["template"]


def role_pod(objects: list[dict], role: str) -> dict:
    return coordinator_pod(objects) if role == "coordinator" else one(objects, "Deployment", "-worker")["spec"]["template"]


def test_rendering_without_a_cluster_refuses_to_generate_tokens():
    with pytest.raises(helm.HelmError) as refused:
        render_manifests({})
    message = str(refused.value)
    assert "rendering without a cluster" in message
    assert "auth.existingSecret" in message and "auth.generateOffline=true" in message


def test_gitops_renders_are_identical_and_create_no_token_secret():
    first, second = render_manifests(GITOPS_VALUES), render_manifests(GITOPS_VALUES)
    assert first == second, "two renders of the same values differ: a GitOps tool would see drift on every sync"
    objects = render(GITOPS_VALUES)
    assert not [o for o in objects if o["kind"] == "Secret"]
    env = {e["name"]: e for e in worker_pod(objects)["containers"][0]["env"]}
    assert env["RBK_WORKER_TOKEN"]["valueFrom"]["secretKeyRef"]["name"] == "rbk-tokens"


def test_generated_tokens_are_opt_in_offline():
    secret = one(render({"auth": {"generateOffline": True}}), "Secret", "-tokens")
    assert len(secret["stringData"]["worker-token"]) >= 16


def test_the_ingress_serves_tls_for_the_public_host_while_coordinators_speak_h2c():
    values = {"coordinator": {"ingress": {"enabled": True, "host": "rbk.example.com",
                                          "annotations": {"cert-manager.io/cluster-issuer": "letsencrypt"},
                                          "tls": [{"hosts": ["rbk.example.com"], "secretName": "rbk-public-tls"}]}}}
    objects = render(values)
    ingress = one(objects, "Ingress")
    assert ingress["spec"]["tls"] == [{"hosts": ["rbk.example.com"], "secretName": "rbk-public-tls"}]
    annotations = ingress["metadata"]["annotations"]
    assert annotations["cert-manager.io/cluster-issuer"] == "letsencrypt"
    assert annotations["nginx.ingress.kubernetes.io/backend-protocol"] == "GRPC"
    assert all("tls" not in c for c in coordinator_configs(objects).values())
    assert "from outside, https://rbk.example.com." in notes(values)


def test_with_backend_tls_the_ingress_re_encrypts():
    annotations = one(render(with_values(HA_VALUES, coordinator__ingress__annotations={})), "Ingress")["metadata"]["annotations"]
    assert annotations["nginx.ingress.kubernetes.io/backend-protocol"] == "GRPCS"


def test_the_ha_example_keeps_the_public_certificate_apart_from_the_coordinators():
    """cert-manager's ingress-shim writes the Ingress's secretName: were it
    the coordinators' Secret, it would replace their certificate with one
    naming only the public host."""
    ingress = one(render(HA_VALUES), "Ingress")
    assert ingress["metadata"]["annotations"]["cert-manager.io/cluster-issuer"] == "internal-ca"
    assert [t["secretName"] for t in ingress["spec"]["tls"]] == ["rbk-public-tls"] != [HA_VALUES["tls"]["existingSecret"]]


def test_ingress_nginx_gets_no_body_limit_and_long_stream_timeouts():
    annotations = one(render({"coordinator": {"ingress": {"enabled": True}}}), "Ingress")["metadata"]["annotations"]
    assert annotations["nginx.ingress.kubernetes.io/proxy-body-size"] == "0"
    assert annotations["nginx.ingress.kubernetes.io/proxy-read-timeout"] == "3600"
    assert annotations["nginx.ingress.kubernetes.io/proxy-send-timeout"] == "3600"


def test_the_operators_ingress_annotations_win_over_the_nginx_defaults():
    values = {"coordinator": {"ingress": {"enabled": True, "annotations": {"nginx.ingress.kubernetes.io/proxy-body-size": "512m"}}}}
    annotations = one(render(values), "Ingress")["metadata"]["annotations"]
    assert annotations["nginx.ingress.kubernetes.io/proxy-body-size"] == "512m"


def test_the_nginx_defaults_can_be_turned_off():
    ingress = one(render({"coordinator": {"ingress": {"enabled": True, "nginx": {"enabled": False}}}}), "Ingress")
    assert "annotations" not in ingress["metadata"]


def test_an_ingress_without_tls_says_http_and_warns():
    text = notes({"coordinator": {"ingress": {"enabled": True, "host": "rbk.example.com"}}})
    assert "from outside, http://rbk.example.com." in text
    assert "The Ingress has no TLS" in text


@pytest.mark.parametrize("tls,app_protocol", [(False, "kubernetes.io/h2c"), (True, None)])
def test_the_service_declares_h2c_only_without_tls(tls, app_protocol):
    values = {"tls": {"enabled": True, "existingSecret": "rbk-grpc-tls"}} if tls else {}
    port = one(render(values), "Service", "-coordinator")["spec"]["ports"][0]
    assert port.get("appProtocol") == app_protocol


@pytest.mark.parametrize("role", ["coordinator", "worker"])
def test_log_level_and_format_reach_both_roles(role):
    pod = role_pod(render({"log": {"level": "info,rbk_coordinator=debug", "format": "json"}}), role)
    env = pod["spec"]["containers"][0]["env"]
    assert {"name": "RBK_LOG", "value": "info,rbk_coordinator=debug"} in env
    assert {"name": "RBK_LOG_FORMAT", "value": "json"} in env


@pytest.mark.parametrize("role", ["coordinator", "worker"])
def test_extra_env_volumes_and_mounts_are_added_to_the_pod(role):
    extras = {"extraEnv": [{"name": "HTTPS_PROXY", "value": "http://proxy:3128"}],
              "extraEnvFrom": [{"configMapRef": {"name": "proxy-env"}}],
              "extraVolumes": [{"name": "ca-bundle", "configMap": {"name": "corp-ca"}}],
              "extraVolumeMounts": [{"name": "ca-bundle", "mountPath": "/etc/ssl/corp", "readOnly": True}]}
    pod = role_pod(render({role: extras}), role)["spec"]
    container = pod["containers"][0]
    assert extras["extraEnv"][0] in container["env"]
    assert container["envFrom"] == extras["extraEnvFrom"]
    assert extras["extraVolumes"][0] in pod["volumes"]
    assert extras["extraVolumeMounts"][0] in container["volumeMounts"]


@pytest.mark.parametrize("role", ["coordinator", "worker"])
def test_pod_labels_and_priority_class_are_set_without_touching_the_selector(role):
    objects = render({role: {"podLabels": {"team": "build"}, "priorityClassName": "rbk-critical"}})
    pod = role_pod(objects, role)
    assert pod["metadata"]["labels"]["team"] == "build"
    assert pod["spec"]["priorityClassName"] == "rbk-critical"
    kind = "StatefulSet" if role == "coordinator" else "Deployment"
    assert "team" not in one(objects, kind, f"-{role}")["spec"]["selector"]["matchLabels"]


@pytest.mark.parametrize("role", ["coordinator", "worker"])
def test_topology_spread_gets_the_roles_selector_when_none_is_given(role):
    constraint = {"maxSkew": 1, "topologyKey": "topology.kubernetes.io/zone", "whenUnsatisfiable": "ScheduleAnyway"}
    objects = render({role: {"topologySpreadConstraints": [constraint]}})
    kind = "StatefulSet" if role == "coordinator" else "Deployment"
    rendered = role_pod(objects, role)["spec"]["topologySpreadConstraints"]
    assert rendered == [dict(constraint, labelSelector={"matchLabels": one(objects, kind, f"-{role}")["spec"]["selector"]["matchLabels"]})]


@pytest.mark.parametrize("role", ["coordinator", "worker"])
def test_node_placement_applies_to_each_role_separately(role):
    placement = {"nodeSelector": {"pool": role}, "tolerations": [{"key": "builds", "operator": "Exists"}],
                 "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
                     {"matchExpressions": [{"key": "pool", "operator": "In", "values": [role]}]}]}}}}
    objects = render({role: placement})
    spec = role_pod(objects, role)["spec"]
    assert (spec["nodeSelector"], spec["tolerations"], spec["affinity"]) == (
        placement["nodeSelector"], placement["tolerations"], placement["affinity"])
    other = role_pod(objects, "worker" if role == "coordinator" else "coordinator")["spec"]
    assert "nodeSelector" not in other and "tolerations" not in other


def test_workers_take_a_pod_security_context():
    pod = worker_pod(render({"worker": {"podSecurityContext": {"fsGroup": 1000, "fsGroupChangePolicy": "OnRootMismatch"}}}))
    assert pod["securityContext"] == {"fsGroup": 1000, "fsGroupChangePolicy": "OnRootMismatch"}


def test_the_workers_emptydir_is_requested_as_ephemeral_storage():
    resources = worker_pod(render({"worker": {"localStorage": {"sizeGiB": 80}}}))["containers"][0]["resources"]
    assert resources["requests"]["ephemeral-storage"] == "80Gi"
    assert resources["requests"]["cpu"] == "1", "the other default requests stay"


def test_an_ephemeral_storage_request_given_is_kept():
    values = {"worker": {"resources": {"requests": {"cpu": "2", "ephemeral-storage": "60Gi"}}}}
    requests = worker_pod(render(values))["containers"][0]["resources"]["requests"]
    assert (requests["cpu"], requests["ephemeral-storage"]) == ("2", "60Gi")


def test_a_host_path_worker_requests_no_ephemeral_storage():
    resources = worker_pod(render({"worker": {"localStorage": {"type": "hostPath"}}}))["containers"][0]["resources"]
    assert "ephemeral-storage" not in resources["requests"]


def test_worker_probes_ask_the_metrics_endpoint():
    container = worker_pod(render({}))["containers"][0]
    for probe in ("readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"] == {"path": "/metrics", "port": "metrics"}, probe
    assert {p["name"] for p in container["ports"]} == {"metrics"}
    bare = worker_pod(render({"metrics": {"enabled": False}}))["containers"][0]
    assert "readinessProbe" not in bare and "livenessProbe" not in bare


def test_workers_have_a_disruption_budget():
    objects = render({})
    pdb = one(objects, "PodDisruptionBudget", "-worker")
    assert pdb["spec"]["maxUnavailable"] == 1
    assert pdb["spec"]["selector"]["matchLabels"] == one(objects, "Deployment", "-worker")["spec"]["selector"]["matchLabels"]
    assert not [o for o in render({"worker": {"pdb": {"enabled": False}}}) if o["metadata"]["name"].endswith("-worker")
                and o["kind"] == "PodDisruptionBudget"]


def test_autoscaled_workers_follow_queue_depth_through_keda():
    objects = render(AUTOSCALED_VALUES)
    scaled = one(objects, "ScaledObject")
    deployment = one(objects, "Deployment", "-worker")
    assert "replicas" not in deployment["spec"], "KEDA owns the replica count"
    assert scaled["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": deployment["metadata"]["name"]}
    assert (scaled["spec"]["minReplicaCount"], scaled["spec"]["maxReplicaCount"]) == (0, 20)
    trigger = scaled["spec"]["triggers"][0]
    assert trigger["type"] == "prometheus" and trigger["metricType"] == "AverageValue"
    assert trigger["metadata"]["query"] == (
        'max(rbk_queue_depth{namespace="build",container="coordinator"})'
        ' + max(rbk_steps_running{namespace="build",container="coordinator"})')
    assert trigger["metadata"]["threshold"] == "4", "one worker per maxParallel steps of demand"
    assert not [o for o in render({}) if o["kind"] == "ScaledObject"], "off by default"


def test_autoscaling_a_daemonset_is_refused():
    with pytest.raises(helm.HelmError) as refused:
        render({"worker": {"kind": "DaemonSet", "autoscaling": {"enabled": True}}})
    assert "worker.autoscaling needs worker.kind Deployment" in str(refused.value)


def test_autoscaling_with_max_below_min_is_refused():
    with pytest.raises(helm.HelmError) as refused:
        render({"worker": {"autoscaling": {"enabled": True, "minReplicas": 5, "maxReplicas": 2}}})
    assert "maxReplicas (2) is below minReplicas (5)" in str(refused.value)


@pytest.mark.parametrize("feature,values", [
    ("metrics.prometheusRule needs metrics.enabled", {"metrics": {"enabled": False, "prometheusRule": {"enabled": True}}}),
    ("worker.autoscaling needs metrics.enabled", {"metrics": {"enabled": False}, "worker": {"autoscaling": {"enabled": True}}}),
])
def test_what_reads_the_metrics_is_refused_without_them(feature, values):
    with pytest.raises(helm.HelmError) as refused:
        render(values)
    assert feature in str(refused.value)


def documented_metrics() -> set[str]:
    text = (REPO / "docs" / "metrics.md").read_text()
    return set(re.findall(r"`(rbk_[a-z_]+)`", text))


def metric_names(expr: str) -> set[str]:
    return {re.sub(r"_(bucket|sum|count)$", "", name) for name in re.findall(r"\brbk_[a-z_]+", expr)}


def prometheus_rule(values: dict | None = None) -> dict:
    return one(render(with_values(values or {}, metrics__prometheusRule__enabled=True)), "PrometheusRule")


def promtool() -> str:
    """The promtool deploy/dev/helm-tools.sh puts beside the venv's python,
    else one on PATH."""
    import shutil
    beside = pathlib.Path(sys.executable).parent / "promtool"
    path = str(beside) if beside.exists() else shutil.which("promtool")
    if not path:
        pytest.fail("promtool is missing: deploy/dev/helm-tools.sh unpacks it from Debian's prometheus package")
    return path


@pytest.mark.parametrize("name", ["default", "ha"])
def test_the_prometheus_rules_pass_promtool(name, tmp_path):
    rules = tmp_path / "rules.yaml"
    rules.write_text(yaml.safe_dump(prometheus_rule(with_values(VALUE_SETS[name], metrics__prometheusRule__workerDiskUsageMetric="ephemeral_storage_pod_usage"))["spec"]))
    done = subprocess.run([promtool(), "check", "rules", rules], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS: 8 rules found" in done.stdout, done.stdout


def test_the_alerts_cover_what_operators_page_on():
    alerts = {r["alert"] for g in prometheus_rule()["spec"]["groups"] for r in g["rules"]}
    assert {"RbkNoRaftLeader", "RbkRaftFollowerLagging", "RbkQueueGrowing", "RbkStepFailureRateHigh", "RbkS3Errors",
            "RbkWorkerEvicted", "RbkWorkersGone"} <= alerts


def test_the_alerts_use_only_metrics_rbk_exports():
    exported = documented_metrics()
    for group in prometheus_rule()["spec"]["groups"]:
        for rule in group["rules"]:
            unknown = metric_names(rule["expr"]) - exported
            assert not unknown, f"{rule['alert']}: {sorted(unknown)} are not in docs/metrics.md"


def test_no_leader_fires_only_once_no_coordinator_leads(tmp_path):
    """Quiet while a coordinator leads (a worker's rbk_raft_is_leader 0
    beside it), firing 2 minutes after none does (promtool test rules)."""
    rules = tmp_path / "rules.yaml"
    rules.write_text(yaml.safe_dump(prometheus_rule()["spec"]))
    coordinator = 'rbk_raft_is_leader{namespace="build",container="coordinator",pod="farm-rbk-coordinator-0"}'
    worker = 'rbk_raft_is_leader{namespace="build",container="worker",pod="farm-rbk-worker-a"}'
    test = {
        "rule_files": [str(rules)],
        "evaluation_interval": "1m",
        "tests": [{
            "interval": "1m",
            # The coordinator leads for 10 minutes, then loses leadership.
            "input_series": [{"series": coordinator, "values": "1x10 0x10"}, {"series": worker, "values": "0x20"}],
            "alert_rule_test": [
                {"eval_time": "9m", "alertname": "RbkNoRaftLeader", "exp_alerts": []},
                {"eval_time": "15m", "alertname": "RbkNoRaftLeader",
                 "exp_alerts": [{"exp_labels": {"severity": "critical"}, "exp_annotations": prometheus_rule()["spec"]["groups"][0]["rules"][0]["annotations"]}]},
            ],
        }],
    }
    (tmp_path / "test.yaml").write_text(yaml.safe_dump(test))
    done = subprocess.run([promtool(), "test", "rules", tmp_path / "test.yaml"], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_rule_labels_let_a_prometheus_select_it():
    rule = prometheus_rule({"metrics": {"prometheusRule": {"labels": {"release": "prometheus"}}}})
    assert rule["metadata"]["labels"]["release"] == "prometheus"
    assert not [o for o in render({}) if o["kind"] == "PrometheusRule"], "off by default"


def test_a_custom_matcher_selects_the_coordinators_series():
    rule = prometheus_rule({"metrics": {"coordinatorMatcher": 'job="rbk-coordinators"'}})
    no_leader = rule["spec"]["groups"][0]["rules"][0]
    assert no_leader["expr"] == 'sum(rbk_raft_is_leader{job="rbk-coordinators"}) < 1'


def test_the_grafana_dashboard_is_a_labelled_config_map_of_rbk_metrics():
    objects = render({"metrics": {"grafanaDashboard": {"enabled": True, "annotations": {"grafana_folder": "rbk"}}}})
    config_map = one(objects, "ConfigMap", "-dashboard")
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert config_map["metadata"]["annotations"] == {"grafana_folder": "rbk"}
    dashboard = json.loads(config_map["data"]["rbk.json"])
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    assert exprs
    exported = documented_metrics()
    for expr in exprs:
        assert metric_names(expr) and metric_names(expr) <= exported, expr
    assert not [o for o in render({}) if o["metadata"]["name"].endswith("-dashboard")], "off by default"


# Every new value, refused when wrong (the schema stays strict).
NEW_BAD_VALUES = {
    "an unknown log format": ({"log": {"format": "xml"}}, "format"),
    "an empty log level": ({"log": {"level": ""}}, "level"),
    "generateOffline not a boolean": ({"auth": {"generateOffline": "yes"}}, "generateOffline"),
    "an ingress tls entry without hosts": ({"coordinator": {"ingress": {"tls": [{"secretName": "x"}]}}}, "hosts"),
    "an ingress tls entry with a typo": ({"coordinator": {"ingress": {"tls": [{"hosts": ["a"], "secret": "x"}]}}}, "secret"),
    "a proxy body size with a unit nginx lacks": ({"coordinator": {"ingress": {"nginx": {"proxyBodySize": "1GiB"}}}}, "proxyBodySize"),
    "a zero stream timeout": ({"coordinator": {"ingress": {"nginx": {"streamTimeoutSeconds": 0}}}}, "streamTimeoutSeconds"),
    "coordinator extraEnv without a name": ({"coordinator": {"extraEnv": [{"value": "x"}]}}, "name"),
    "worker extraEnv not a list": ({"worker": {"extraEnv": {"A": "b"}}}, "extraEnv"),
    "coordinator extraEnvFrom not a list": ({"coordinator": {"extraEnvFrom": {}}}, "extraEnvFrom"),
    "worker extraVolumes without a name": ({"worker": {"extraVolumes": [{"emptyDir": {}}]}}, "name"),
    "coordinator extraVolumeMounts with a relative path": ({"coordinator": {"extraVolumeMounts": [{"name": "a", "mountPath": "etc"}]}}, "mountPath"),
    "a pod label value with a space": ({"worker": {"podLabels": {"team": "build farm"}}}, "podLabels"),
    "a coordinator priority class with capitals": ({"coordinator": {"priorityClassName": "High"}}, "priorityClassName"),
    "a worker priority class with capitals": ({"worker": {"priorityClassName": "High"}}, "priorityClassName"),
    "a spread constraint without topologyKey": ({"worker": {"topologySpreadConstraints": [{"maxSkew": 1, "whenUnsatisfiable": "DoNotSchedule"}]}}, "topologyKey"),
    "a spread constraint with an unknown policy": ({"coordinator": {"topologySpreadConstraints": [{"maxSkew": 1, "topologyKey": "zone", "whenUnsatisfiable": "Maybe"}]}}, "whenUnsatisfiable"),
    "worker podSecurityContext not an object": ({"worker": {"podSecurityContext": "root"}}, "podSecurityContext"),
    "a misspelt probes key": ({"worker": {"probes": {"enable": True}}}, "enable"),
    "a worker pdb of zero": ({"worker": {"pdb": {"maxUnavailable": 0}}}, "maxUnavailable"),
    "a worker pdb percentage over 100": ({"worker": {"pdb": {"maxUnavailable": "150%"}}}, "maxUnavailable"),
    "autoscaling max of zero": ({"worker": {"autoscaling": {"maxReplicas": 0}}}, "maxReplicas"),
    "autoscaling negative min": ({"worker": {"autoscaling": {"minReplicas": -1}}}, "minReplicas"),
    "autoscaling negative steps per worker": ({"worker": {"autoscaling": {"stepsPerWorker": -1}}}, "stepsPerWorker"),
    "a prometheus address without a scheme": ({"worker": {"autoscaling": {"prometheusServerAddress": "prometheus:9090"}}}, "prometheusServerAddress"),
    "autoscaling query not a string": ({"worker": {"autoscaling": {"query": 3}}}, "query"),
    "a zero polling interval": ({"worker": {"autoscaling": {"pollingInterval": 0}}}, "pollingInterval"),
    "a negative cooldown": ({"worker": {"autoscaling": {"cooldownPeriod": -1}}}, "cooldownPeriod"),
    "a matcher that is not PromQL": ({"metrics": {"coordinatorMatcher": "container=coordinator"}}, "coordinatorMatcher"),
    "a misspelt rule key": ({"metrics": {"prometheusRule": {"enable": True}}}, "enable"),
    "rule labels not strings": ({"metrics": {"prometheusRule": {"labels": {"release": 1}}}}, "labels"),
    "a zero follower lag": ({"metrics": {"prometheusRule": {"followerLagEntries": 0}}}, "followerLagEntries"),
    "a zero queue depth": ({"metrics": {"prometheusRule": {"queueDepth": 0}}}, "queueDepth"),
    "a queue duration without a unit": ({"metrics": {"prometheusRule": {"queueFor": "15"}}}, "queueFor"),
    "a failure ratio above one": ({"metrics": {"prometheusRule": {"stepFailureRatio": 1.5}}}, "stepFailureRatio"),
    "a zero S3 error rate": ({"metrics": {"prometheusRule": {"s3ErrorsPerSecond": 0}}}, "s3ErrorsPerSecond"),
    "a disk metric that is not a name": ({"metrics": {"prometheusRule": {"workerDiskUsageMetric": "rate(x[5m])"}}}, "workerDiskUsageMetric"),
    "a disk ratio above one": ({"metrics": {"prometheusRule": {"diskNearLimitRatio": 2}}}, "diskNearLimitRatio"),
    "a misspelt dashboard key": ({"metrics": {"grafanaDashboard": {"enable": True}}}, "enable"),
    "an admin token key with a slash": ({"auth": {"adminTokenKey": "../admin"}}, "adminTokenKey"),
    "a disk limit of zero": ({"worker": {"localStorage": {"diskLimitGiB": 0}}}, "diskLimitGiB"),
    "dashboard annotations not strings": ({"metrics": {"grafanaDashboard": {"annotations": {"a": 1}}}}, "annotations"),
}


ALL_BAD_VALUES = BAD_VALUES | NEW_BAD_VALUES
assert len(ALL_BAD_VALUES) == len(BAD_VALUES) + len(NEW_BAD_VALUES), "a case named twice"


@pytest.mark.parametrize("case", ALL_BAD_VALUES)
def test_the_schema_refuses(case):
    values, field = ALL_BAD_VALUES[case]
    with pytest.raises(helm.HelmError) as refused:
        render(values)
    assert field in str(refused.value), str(refused.value)


def test_the_worker_answers_its_probes_when_started_as_the_chart_says(tmp_path):
    objects = render({})
    container = worker_pod(objects)["containers"][0]
    probe = container["livenessProbe"]["httpGet"]
    tokens = one(objects, "Secret", "-tokens")["stringData"]
    port = free_port()
    env = dict(os.environ, RBK_WORKER_TOKEN=tokens["worker-token"])
    with running_coordinator(objects, tmp_path / "coordinator") as addr:
        args = [a.replace("http://farm-rbk-coordinator.build.svc:7070", f"http://{addr}")
                 .replace("/var/lib/rbk-worker/", f"{tmp_path}/worker/").replace("/etc/rbk/policy/", local_policy(objects, tmp_path))
                 .replace("0.0.0.0:9465", f"127.0.0.1:{port}") for a in container["args"]]
        worker = subprocess.Popen([rbk_binary(), *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            seen = read_until(worker.stdout, "rbk metrics listening on", 30)
            assert any("rbk metrics listening on" in l for l in seen), "".join(seen)
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{probe['path']}", timeout=10) as answer:
                assert answer.status == 200
        finally:
            worker.kill()
            worker.wait()


def test_coordinators_serve_the_dashboard_on_its_port_with_secure_cookies_under_tls():
    objects = render({})
    config = coordinator_configs(objects)["coordinator-0.toml"]
    assert config["dashboard"] == {"listen": "0.0.0.0:7080"}
    pod = one(objects, "StatefulSet", "-coordinator")["spec"]["template"]
    assert {"name": "dashboard", "containerPort": 7080, "protocol": "TCP"} in pod["spec"]["containers"][0]["ports"]
    service = one(objects, "Service", "-coordinator")
    assert {"name": "dashboard", "port": 7080, "targetPort": "dashboard", "protocol": "TCP"} in service["spec"]["ports"]
    assert coordinator_configs(render(HA_VALUES))["coordinator-0.toml"]["dashboard"]["secure_cookies"] is True
    off = coordinator_configs(render({"coordinator": {"dashboard": {"enabled": False}}}))["coordinator-0.toml"]
    assert "dashboard" not in off


def test_the_dashboard_ingress_is_its_own_and_speaks_https_to_tls_coordinators():
    values = with_values(HA_VALUES, coordinator__dashboard__ingress={"enabled": True, "host": "dash.build.internal"})
    ingress = one(render(values), "Ingress", "-dashboard")
    assert ingress["metadata"]["annotations"]["nginx.ingress.kubernetes.io/backend-protocol"] == "HTTPS"
    assert ingress["metadata"]["annotations"]["nginx.ingress.kubernetes.io/proxy-buffering"] == "off"
    rule = ingress["spec"]["rules"][0]
    assert rule["host"] == "dash.build.internal"
    assert rule["http"]["paths"][0]["backend"]["service"]["port"] == {"name": "dashboard"}
    assert ingress["spec"]["tls"] == [{"hosts": ["dash.build.internal"], "secretName": HA_VALUES["tls"]["existingSecret"]}]
    assert not [o for o in render({}) if o["kind"] == "Ingress" and o["metadata"]["name"].endswith("-dashboard")]
