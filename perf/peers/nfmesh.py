"""nfmesh as a perf target: ``nfmesh run -c <generated config>`` with one worker.

The generated config (``gateway/config.py`` format) is what the issue's targets are measured
with: an h2c or TLS (ALPN h2) listener, a static route sending every path to the ``backend``
cluster, Prometheus metrics on, access logging on.  The load also carries
``3gpp-sbi-target-apiroot`` toward the same backend, so SCP model C routing reaches it too.

The command is a template so the harness can measure any build or variant: ``{nfmesh}`` (the
venv's ``nfmesh`` script, or ``python -m nfmesh_cli`` from this checkout when the package is
not installed), ``{python}``, ``{config}`` (the generated file), ``{host}``, ``{port}``,
``{backend_port}``, ``{workdir}``, and for TLS runs ``{cert}``, ``{key}``.  Config fields can
be changed per run with ``set_fields`` (``--nfmesh-set logging.access_log=false``), to measure
what a feature costs.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import sys
from pathlib import Path

from perf.peers import TargetSpec

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_CMD = "{nfmesh} run -c {config} --workers 1"
ENV_CMD = "NFMESH_PERF_CMD"
ENV_TLS_ARGS = "NFMESH_PERF_TLS_ARGS"


def find_nfmesh() -> str | None:
    """The ``nfmesh`` script beside the running interpreter (the venv), else on PATH, else
    ``python -m nfmesh_cli`` when this checkout has it (run with the checkout on PYTHONPATH)."""
    beside = Path(sys.executable).with_name("nfmesh")
    if beside.exists():
        return shlex.quote(str(beside))
    found = shutil.which("nfmesh")
    if found:
        return shlex.quote(found)
    if (REPO_ROOT / "nfmesh_cli" / "main.py").exists():
        return f"{shlex.quote(sys.executable)} -m nfmesh_cli"
    return None


def child_env() -> dict[str, str]:
    """The environment for a target: this checkout first on PYTHONPATH."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    return env


def apply_setting(config: dict, assignment: str) -> None:
    """Apply ``dotted.path=value`` (value parsed as YAML: ``false``, ``2``, ``[a, b]``)."""
    import yaml

    path, sep, raw = assignment.partition("=")
    keys = [k for k in path.strip().split(".") if k]
    if not sep or not keys:
        raise ValueError(f"expected dotted.path=value, got {assignment!r}")
    node = config
    for k in keys[:-1]:
        child = node.setdefault(k, {})
        if not isinstance(child, dict):
            raise ValueError(f"{assignment!r}: {k} is not a section")
        node = child
    node[keys[-1]] = yaml.safe_load(raw)


def gateway_config(spec: TargetSpec, set_fields: list[str] | tuple[str, ...] = ()) -> dict:
    """The nfmesh config for one run (JSON is YAML, so it is written as JSON)."""
    listener: dict = {"name": "sbi", "host": spec.host, "port": spec.listen_port,
                      "protocol": "h2c"}
    if spec.tls is not None:
        listener["protocol"] = "tls"
        listener["tls"] = {"cert": str(spec.tls.cert), "key": str(spec.tls.key)}
    config = {
        "gateway": {"name": "perf", "workers": 1},
        "listeners": [listener],
        "clusters": [{"name": "backend",
                      "endpoints": [{"host": "127.0.0.1", "port": spec.backend_port}]}],
        "routes": [{"name": "all", "match": {"path_prefix": "/"}, "cluster": "backend"}],
        "metrics": {"enabled": True, "host": "127.0.0.1", "port": 0},
        # info: the start-up line "worker 0 serving: ... backend=nghttp2" tells which engine ran
        "logging": {"level": "info", "access_log": True},
    }
    for assignment in set_fields:
        apply_setting(config, assignment)
    return config


class Nfmesh:
    """The gateway under test."""

    name = "nfmesh"

    def __init__(self, cmd: str | None = None, tls_args: str | None = None,
                 set_fields: list[str] | tuple[str, ...] = (), name: str = "nfmesh") -> None:
        self.name = name
        self.cmd = cmd or os.environ.get(ENV_CMD) or DEFAULT_CMD
        self.set_fields = tuple(set_fields)
        for assignment in self.set_fields:
            apply_setting({}, assignment)  # a malformed one fails now, not mid-run
        self.tls_args = tls_args or os.environ.get(ENV_TLS_ARGS)
        self.binary = find_nfmesh()

    def unavailable(self, tls: bool) -> str | None:
        if "{nfmesh}" in self.cmd and self.binary is None:
            return "neither an nfmesh script nor nfmesh_cli/main.py found (pip install -e .)"
        return None

    def run_info(self, log_text: str) -> dict:
        """What the target's log says about the run: the HTTP/2 engine its workers used (a
        missing native build silently means the pure ``h2`` engine, many times slower)."""
        engines = sorted(set(re.findall(r"serving: .*?backend=(\w+)", log_text)))
        return {"engine": ",".join(engines) or "unknown"}

    def command(self, spec: TargetSpec) -> list[str]:
        config = spec.workdir / "nfmesh.yaml"
        config.write_text(json.dumps(gateway_config(spec, self.set_fields), indent=1))
        fields = {
            "nfmesh": self.binary or "nfmesh",
            "python": shlex.quote(sys.executable),
            "config": shlex.quote(str(config)),
            "host": spec.host,
            "port": spec.listen_port,
            "backend_port": spec.backend_port,
            "workdir": shlex.quote(str(spec.workdir)),
            "cert": shlex.quote(str(spec.tls.cert)) if spec.tls else "",
            "key": shlex.quote(str(spec.tls.key)) if spec.tls else "",
        }
        text = self.cmd
        if spec.tls is not None and self.tls_args:
            text += " " + self.tls_args
        return shlex.split(text.format(**fields))
