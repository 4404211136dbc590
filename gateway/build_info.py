"""What this installation runs: version, Python, uvloop, and which hot paths are compiled."""

from __future__ import annotations

import importlib
import platform

import gateway

# (hot path, compiled module, pure-Python twin)
HOT_PATHS = [
    ("http2 engine", "dataplane._nghttp2", "dataplane.h2_engine"),
    ("ngap routing keys", "nf_adapters._ngap_fast", "nf_adapters.ngap.routing_key"),
    ("sbi header rewrite", "nf_adapters._sbi_fast", "nf_adapters.sbi_rewrite"),
    ("proxy exchange", "dataplane._proxy_fast", "dataplane.proxy"),
    ("request stats", "gateway._stats_fast", "gateway.stats_core"),
    ("scp model c route", "nf_adapters._scp_fast", "nf_adapters.scp_model_c"),
    ("access log", "gateway._access_log_fast", "gateway.access_log"),
    ("admission", "dataplane._admission_fast", "dataplane.admission"),
]


def _importable(name: str) -> bool:
    try:
        importlib.import_module(name)
    except Exception:
        return False
    return True


def info() -> dict:
    """A dict describing this build (used by `nfmesh version`)."""
    try:
        import uvloop

        uv = uvloop.__version__
    except Exception:
        uv = None
    try:
        from dataplane.engine import load_backend

        backend = load_backend("auto").NAME
    except Exception as exc:  # no backend at all is a broken install
        backend = f"unavailable ({exc})"
    paths = {
        name: ("compiled" if _importable(native) else "pure-python")
        for name, native, _twin in HOT_PATHS
    }
    return {
        "nfmesh": gateway.__version__,
        "python": platform.python_version(),
        "uvloop": uv,
        "http2_backend": backend,
        "hot_paths": paths,
    }


def summary() -> str:
    """One line for humans."""
    i = info()
    paths = ", ".join(f"{k}: {v}" for k, v in i["hot_paths"].items())
    return (
        f"nfmesh {i['nfmesh']} (Python {i['python']}, uvloop {i['uvloop']}, "
        f"HTTP/2 backend {i['http2_backend']}; {paths})"
    )
