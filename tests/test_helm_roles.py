"""The chart's role examples (helm/nfmesh/examples: SCP + NRF, N2 proxy, both), the admin
listener and its probes, the Grafana dashboard ConfigMap and the PrometheusRule: rendered with
helm, validated with kubernetes-validate, the config checked by `nfmesh config check`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from tests import test_helm
from tests.test_helm import (
    CHART,
    config_check,
    container,
    gateway_config,
    kinds,
    one,
    render,
    render_error,
    validate_manifests,
)

EXAMPLES = sorted((CHART / "examples").glob("*-values.yaml"))


@pytest.fixture(scope="module")
def helm() -> str:
    return test_helm.helm.__wrapped__()  # the same binary (or skip) as tests/test_helm.py


@pytest.fixture(scope="module")
def k8s_versions() -> list[str]:
    return test_helm.k8s_versions.__wrapped__()


def test_three_roles_are_shipped() -> None:
    assert [p.name for p in EXAMPLES] == ["n2-proxy-values.yaml", "scp-nrf-n2-values.yaml",
                                          "scp-nrf-values.yaml"]


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.name)
def test_role_example_renders_validates_and_checks(helm: str, k8s_versions: list[str],
                                                   tmp_path: Path, example: Path) -> None:
    docs = render(helm, "-f", str(example))
    validate_manifests(docs, k8s_versions)
    report = config_check(docs, tmp_path)
    cfg = gateway_config(docs)
    c = container(docs)
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "admin"}
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "admin"}
    assert cfg["admin"] == {"enabled": True, "host": "0.0.0.0", "port": 9901}
    assert "admin: on 0.0.0.0:9901" in report
    assert {"PrometheusRule", "ConfigMap"} <= kinds(docs)
    assert one(docs, "ConfigMap", "-dashboard")
    name = example.name
    if name.startswith("n2-proxy"):
        assert cfg["ngap"]["enabled"] and not cfg["registry"]["enabled"]
        assert one(docs, "Service", "-n2")["spec"]["ports"][0]["protocol"] == "SCTP"
    if name.startswith("scp-nrf"):
        assert cfg["registry"]["enabled"] and cfg["registry"]["store"] == "etcd"
    if name == "scp-nrf-n2-values.yaml":
        assert cfg["ngap"]["enabled"]
        rules = one(docs, "NetworkPolicy")["spec"]["ingress"]
        admin = [r for r in rules if r["ports"] == [{"protocol": "TCP", "port": 9901}]]
        assert admin and admin[0]["from"][0]["namespaceSelector"]["matchLabels"] == {
            "kubernetes.io/metadata.name": "nfmesh-operators"}


def test_dashboard_configmap_carries_the_file(helm: str) -> None:
    docs = render(helm, "--set", "dashboards.enabled=true",
                  "--set", "dashboards.annotations.grafana_folder=5GC")
    cm = one(docs, "ConfigMap", "-dashboard")
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert cm["metadata"]["annotations"] == {"grafana_folder": "5GC"}
    shipped = json.loads((CHART / "dashboards" / "nfmesh.json").read_text())
    assert json.loads(cm["data"]["nfmesh.json"]) == shipped
    assert "ConfigMap" in kinds(render(helm)) and not any(
        d["metadata"]["name"].endswith("-dashboard") for d in render(helm))  # off by default


def test_prometheusrule_is_the_rule_file(helm: str) -> None:
    pr = one(render(helm, "--set", "prometheusRule.enabled=true",
                    "--set", "prometheusRule.labels.release=kps"), "PrometheusRule")
    assert pr["apiVersion"] == "monitoring.coreos.com/v1"
    assert pr["metadata"]["labels"]["release"] == "kps"
    assert set(pr["spec"]) == {"groups"}
    rules = yaml.safe_load((CHART / "alerts" / "nfmesh-rules.yaml").read_text())
    assert pr["spec"]["groups"] == rules["groups"]
    # the {{ $labels }} templates reach Prometheus as they are, not rendered by helm
    assert "{{ $labels.endpoint }}" in pr["spec"]["groups"][0]["rules"][0]["annotations"]["summary"]
    assert not any(d["kind"] == "PrometheusRule" for d in render(helm))  # off by default


def test_admin_refusals(helm: str) -> None:
    err = render_error(helm, "--set", "admin.host=127.0.0.1")
    assert "admin.host is 127.0.0.1" in err
    err = render_error(helm, "--set", "admin.port=0")
    assert "admin.port 0" in err
    err = render_error(helm, "--set", "prometheusRule.enabled=true", "--set", "metrics.enabled=false")
    assert "prometheusRule.enabled needs metrics.enabled" in err


def test_admin_off_probes_metrics(helm: str, k8s_versions: list[str], tmp_path: Path) -> None:
    docs = render(helm, "--set", "admin.enabled=false")
    validate_manifests(docs, k8s_versions)
    config_check(docs, tmp_path)
    c = container(docs)
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
    assert "admin" not in {p["name"] for p in c["ports"]}
