# cython: annotation_typing=False
"""The access log: one line per request (JSON or text), written in batches.

One source, two twins: this file is the pure-Python ``AccessLog`` and, compiled a second time
with ``access_log.pxd`` beside it (Cython's pure-Python mode, setup.py's TWINS), the extension
type ``gateway._access_log_fast.AccessLog``.  The compiled twin formats its batches with the C
formatter ``gateway._access_log_batch`` (byte-identical output; the tests compare both);
everything else, batching, flush triggers, the byte path to a UTF-8 stream, is this code.
``load_access_log()`` returns the class to use: the compiled one when it is built, unless
``NFMESH_ACCESS_LOG=pure|cython`` says otherwise.
"""

from __future__ import annotations

import asyncio
import codecs
import io
import json
import sys
from typing import Any

try:
    import cython
except ImportError:  # no Cython here: this file runs as plain Python
    from dataplane import _no_cython as cython

if cython.compiled:  # the compiled twin formats a batch in C
    from gateway import _access_log_batch as _batch

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
    ``flush`` detaches the batch before formatting it, so a record made meanwhile starts the
    next one.
    """

    def __init__(self, fmt: str = "json", out: Any = None, flush_s: float = 0.2) -> None:
        import msgspec

        self.fmt = fmt
        self.out = out if out is not None else sys.stderr
        self.flush_s = flush_s
        self._rows = []  # str (a formatted keyword line) or a record() tuple
        self._size = 0
        self._timer = None
        self._dumps = json.JSONEncoder(separators=(",", ":"), default=str).encode
        encoder = msgspec.json.Encoder(enc_hook=str)
        self._encode = encoder.encode
        self._encode_lines = encoder.encode_lines
        self._flush = self.flush  # one bound method for every timer

    @property
    def pending(self) -> int:
        """Rows waiting for the next write."""
        return len(self._rows)

    def __call__(self, /, **fields: Any) -> None:  # "self" may be a field too
        if self.fmt == "json":
            line = self._dumps(fields)
        else:
            line = " ".join(f"{k}={v}" for k, v in fields.items())
        self._rows.append(line)
        self._size += len(line)
        self._after_add()

    def record(self, method: str, path: str, status: int, cluster: str, upstream: Any,
               duration_s: float, error_code: int, peer_info: dict) -> None:
        """One finished request: ``upstream`` an ``Endpoint`` or None, ``peer_info`` the
        connection's (its ``peername`` is logged).  Same fields as the keyword form."""
        self._rows.append(
            (method, path, status, cluster, upstream, duration_s, error_code, peer_info))
        self._size += len(path) + 120
        self._after_add()

    def _after_add(self) -> int:
        if self._size > _LOG_MAX_BYTES or len(self._rows) >= _LOG_MAX_ROWS:
            self.flush()
        elif self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self.flush_s, self._flush)
        return 0

    def flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._rows:
            rows = self._rows
            self._rows = []
            self._size = 0
            try:
                out = self.out
                sink = _byte_sink(out)
                data = self._format_rows(rows, sink is not None)
                if type(data) is bytes:  # UTF-8 already: no decoding and encoding again
                    out.flush()  # what the text layer holds goes first
                    sink.write(data)
                else:
                    out.write(data)
                out.flush()
            except (OSError, ValueError):
                pass  # a closed log stream must never stop the data plane

    def _format(self, rows: list) -> str:
        """The text of a batch (record tuples and keyword lines): for tests and comparisons."""
        return self._format_rows(rows, False)

    def _format_rows(self, rows: list, utf8_bytes: bool) -> Any:
        """The batch as str, or as UTF-8 bytes when ``utf8_bytes`` and it is made as such."""
        if not cython.compiled:
            if self.fmt == "json":
                data = _format_json(rows, self._encode_lines)
                return data if utf8_bytes else data.decode("utf-8", "replace")
            return _format_text(rows)
        if self.fmt == "json":
            return _batch.format_json(rows, self._encode, utf8_bytes)
        return _batch.format_text(rows, utf8_bytes)


def _format_json(rows: list, encode_lines: Any) -> bytes:
    upstreams: dict = {}  # endpoint text per Endpoint object in this batch (ids stay valid)
    out: list = []
    objs: list = []  # records in a row, encoded in one call
    for r in rows:
        if type(r) is str:
            if objs:
                out.append(encode_lines(objs))
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
        out.append(encode_lines(objs))
    return b"".join(out)


def _format_text(rows: list) -> str:
    upstreams: dict = {}  # endpoint text per Endpoint object in this batch
    peers: dict = {}  # peer text per connection (its peer_info dict) in this batch
    lines: list = []
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


def _byte_sink(out: Any) -> Any:
    """``out``'s binary buffer when ``out`` is a text file writing UTF-8 (stderr, a log file):
    a batch that is UTF-8 already goes there as bytes.  None for anything else (StringIO, other
    encodings), which gets text.  Asked at every write (a stream can be reconfigured; the codec
    registry caches the lookup)."""
    if type(out) is not io.TextIOWrapper:
        return None
    try:
        if codecs.lookup(out.encoding).name == "utf-8":
            return out.buffer
    except (LookupError, AttributeError, ValueError):
        pass
    return None


def _endpoint_text(endpoint: Any) -> str:
    host = endpoint.host
    return f"[{host}]:{endpoint.port}" if ":" in host else f"{host}:{endpoint.port}"


def load_access_log(name: str = "auto") -> type[AccessLog]:
    """Return the ``AccessLog`` class: ``cython`` (``gateway._access_log_fast``: this very file
    compiled with ``access_log.pxd``, see setup.py's TWINS), ``pure`` (this module's), or
    ``auto``: the compiled one when built, unless ``NFMESH_ACCESS_LOG`` names one (A/B runs)."""
    from dataplane.twins import load_twin

    return load_twin(name, ("gateway._access_log_fast", "AccessLog"), AccessLog,  # type: ignore
                     "NFMESH_ACCESS_LOG", "access log")


def available_access_logs() -> list[str]:
    """Names of the access log implementations that import here."""
    from dataplane.twins import available_twins

    return available_twins(load_access_log)
