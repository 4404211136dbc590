"""The access log: one line per request (JSON or text), written in batches.

``AccessLog`` here is the pure-Python reference; ``gateway._access_log_fast`` is its compiled
twin (same API, byte-identical output).  ``load_access_log()`` returns the class to use: the
compiled one when it is built, unless ``NFMESH_ACCESS_LOG=pure|cython`` says otherwise.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from typing import Any

# the text line of a record (durations to the microsecond: a float's shortest repr costs
# three times as much to format)
_LOG_TEXT = ("method=%s path=%s status=%s cluster=%s upstream=%s duration_s=%.6f error_code=%s "
             "peer=%s")
_LOG_MAX_ROWS = 512  # rows waiting before a write, whatever the timer says
_LOG_MAX_BYTES = 65536  # about this many bytes waiting: write now

ACCESS_LOGS = ("cython", "pure")


class AccessLog:
    """One line per request (JSON or text) on stderr, written in batches.

    Lines are collected in memory and written at most every ``flush_s`` seconds (or when 64 KiB
    or 512 lines are waiting), so a busy gateway makes one write() per batch instead of one per
    request.  The proxy calls ``record`` (positional, the raw values: nothing is formatted per
    request, the batch is formatted at once when written); ``log(**fields)`` takes any fields.
    """

    def __init__(self, fmt: str = "json", out: Any = None, flush_s: float = 0.2) -> None:
        import msgspec

        self.fmt = fmt
        self.out = out if out is not None else sys.stderr
        self.flush_s = flush_s
        self._rows: list = []  # str (a formatted line) or a record() tuple
        self._size = 0
        self._timer: asyncio.TimerHandle | None = None
        self._dumps = json.JSONEncoder(separators=(",", ":"), default=str).encode
        self._encode_lines = msgspec.json.Encoder(enc_hook=str).encode_lines

    def __call__(self, /, **fields: Any) -> None:  # "self" may be a field too
        if self.fmt == "json":
            line = self._dumps(fields)
        else:
            line = " ".join(f"{k}={v}" for k, v in fields.items())
        self._add(line, len(line))

    def record(self, method: str, path: str, status: int, cluster: str, upstream: Any,
               duration_s: float, error_code: int, peer_info: dict) -> None:
        """One finished request: ``upstream`` an ``Endpoint`` or None, ``peer_info`` the
        connection's (its ``peername`` is logged).  Same fields as the keyword form."""
        rows = self._rows
        rows.append((method, path, status, cluster, upstream, duration_s, error_code, peer_info))
        self._size += len(path) + 120
        if self._size > _LOG_MAX_BYTES or len(rows) >= _LOG_MAX_ROWS:
            self.flush()
        elif self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self.flush_s, self.flush)

    def _add(self, line: str, size: int) -> None:
        self._rows.append(line)
        self._size += size
        if self._size > _LOG_MAX_BYTES or len(self._rows) >= _LOG_MAX_ROWS:
            self.flush()
        elif self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self.flush_s, self.flush)

    def _format(self, rows: list) -> str:
        # endpoint text per Endpoint object in this batch (the rows hold them: ids stay valid)
        upstreams: dict = {}
        if self.fmt == "json":
            out: list = []
            objs: list = []  # records in a row, encoded in one call
            for r in rows:
                if type(r) is str:
                    if objs:
                        out.append(self._encode_lines(objs))
                        objs = []
                    out.append(r.encode() + b"\n")
                    continue
                ep = r[4]
                up = upstreams.get(id(ep)) if ep is not None else ""
                if up is None:
                    up = upstreams[id(ep)] = _endpoint_text(ep)
                objs.append({
                    "method": r[0], "path": r[1], "status": r[2], "cluster": r[3],
                    "upstream": up, "duration_s": r[5], "error_code": r[6],
                    "peer": r[7].get("peername")})
            if objs:
                out.append(self._encode_lines(objs))
            return b"".join(out).decode("utf-8", "replace")
        lines = []
        peers: dict = {}  # peer text per connection (its peer_info dict) in this batch
        text = _LOG_TEXT
        append = lines.append
        last_ep = last_info = up = peer = None  # consecutive rows mostly share both
        for r in rows:
            if type(r) is str:
                append(r)
                continue
            method, path, status, cluster, ep, duration, error_code, info = r
            if ep is not last_ep or up is None:
                last_ep = ep
                up = upstreams.get(id(ep)) if ep is not None else ""
                if up is None:
                    up = upstreams[id(ep)] = _endpoint_text(ep)
            if info is not last_info or peer is None:
                last_info = info
                peer = peers.get(id(info))
                if peer is None:
                    peer = peers[id(info)] = str(info.get("peername"))
            append(text % (method, path, status, cluster, up, duration, error_code, peer))
        lines.append("")
        return "\n".join(lines)

    def flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._rows:
            rows, self._rows, self._size = self._rows, [], 0
            try:
                self.out.write(self._format(rows))
                self.out.flush()
            except (OSError, ValueError):
                pass  # a closed log stream must never stop the data plane


def _endpoint_text(endpoint: Any) -> str:
    host = endpoint.host
    return f"[{host}]:{endpoint.port}" if ":" in host else f"{host}:{endpoint.port}"


def load_access_log(name: str = "auto") -> type[AccessLog]:
    """Return the ``AccessLog`` class: ``cython`` (``gateway._access_log_fast``, record and
    formatting compiled, same API and output), ``pure`` (this module's), or ``auto``: the
    compiled one when built, unless the environment variable ``NFMESH_ACCESS_LOG`` names one."""
    if name == "auto":
        name = os.environ.get("NFMESH_ACCESS_LOG") or "auto"
    if name in ("auto", "cython"):
        try:
            from gateway._access_log_fast import AccessLog as fast
        except ImportError:
            if name == "cython":
                raise
        else:
            return fast  # type: ignore[no-any-return]
    if name in ("auto", "pure"):
        return AccessLog
    raise ValueError(f"unknown access log implementation {name!r}; choose one of auto, "
                     f"{', '.join(ACCESS_LOGS)}")


def available_access_logs() -> list[str]:
    """Names of the access log implementations that import here."""
    names = []
    for name in ACCESS_LOGS:
        try:
            load_access_log(name)
        except ImportError:
            continue
        names.append(name)
    return names
