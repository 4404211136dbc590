"""The backend every perf target forwards to, and the fixed request and response bodies.

``nghttpd --no-tls`` serves one 227-byte JSON document for every path the load uses (a POST
to it answers 200 with the document), so the backend's cost is the same for every target.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from perf.peers.launcher import Launched

RESPONSE_SIZE = 227
REQUEST_SIZE = 142
RESPONSE_PATH = "/nausf-auth/v1/ue-authentications"


def _padded(obj: dict, key: str, size: int) -> bytes:
    """``obj`` as compact JSON with ``obj[key]`` padded so the document is ``size`` bytes."""
    obj = dict(obj)
    obj[key] = ""
    base = len(json.dumps(obj, separators=(",", ":")).encode())
    if base > size:
        raise ValueError(f"document is {base} bytes before padding, over {size}")
    obj[key] = "0" * (size - base)
    body = json.dumps(obj, separators=(",", ":")).encode()
    assert len(body) == size
    return body


def request_body() -> bytes:
    """A 142-byte AuthenticationInfo (TS 29.509) POST body."""
    return _padded(
        {"supiOrSuci": "suci-0-001-01-0000-0-0-0000000001",
         "servingNetworkName": "5G:mnc001.mcc001.3gppnetwork.org"},
        "pad", REQUEST_SIZE,
    )


def response_body() -> bytes:
    """A 227-byte UEAuthenticationCtx (TS 29.509) response body."""
    return _padded(
        {"authType": "5G_AKA",
         "5gAuthData": {"rand": "4C8A2A1F7E0B3D5A", "autn": "9D1E3C5B7A9F0E2D",
                        "hxresStar": "0A1B2C3D4E5F6071"},
         "_links": {"5g-aka": {"href": "/nausf-auth/v1/ue-authentications/1/5g-aka-confirmation"}}},
        "pad", RESPONSE_SIZE,
    )


def write_docroot(folder: Path) -> Path:
    """Lay out nghttpd's document root with the response at ``RESPONSE_PATH``."""
    target = folder / RESPONSE_PATH.lstrip("/")
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(response_body())
    return folder


def nghttpd_unavailable() -> str | None:
    if shutil.which("nghttpd") is None:
        return "nghttpd not found on PATH (Debian package nghttp2-server)"
    return None


def start_nghttpd(port: int, workdir: Path, cpu: str | None) -> Launched:
    """Start ``nghttpd --no-tls`` on 127.0.0.1:port serving ``workdir/www``."""
    docroot = write_docroot(workdir / "www")
    argv = ["nghttpd", "--no-tls", "-a", "127.0.0.1", "-d", str(docroot), str(port)]
    backend = Launched(argv, workdir / "nghttpd.log", cpu=cpu)
    backend.wait_listening("127.0.0.1", port, timeout_s=5)
    return backend
