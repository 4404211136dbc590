"""A small async HTTP/2 client over the engine's ``ClientConnection``.

Used by the emulated NFs, NRF notifications and the load generator.  One connection per
authority is reused (h2c prior knowledge for ``http://``, TLS with ALPN h2 for ``https://``);
another is opened only when the peer's stream limit is reached.

    client = H2Client()
    resp = await client.request("GET", "http://127.0.0.1:8080/nnrf-disc/v1/nf-instances?x=y")
    resp.status, resp.json()
    await client.close()
"""

from __future__ import annotations

import asyncio
import json
import ssl
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from dataplane.engine import H2Settings, Headers, load_backend


class H2ClientError(Exception):
    """The request could not be completed (connect failed, stream reset, connection lost)."""


@dataclass(slots=True)
class Response:
    """A whole HTTP/2 response; header names are lowercase."""

    status: int
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""
    trailers: list[tuple[str, str]] = field(default_factory=list)

    def header(self, name: str, default: str | None = None) -> str | None:
        """The first value of header ``name`` (case-insensitive)."""
        name = name.lower()
        for key, value in self.headers:
            if key == name:
                return value
        return default

    def json(self) -> Any:
        return json.loads(self.body)


class _Done:
    """An already finished awaitable, so ``close()`` works with or without ``await``."""

    def __await__(self):
        return iter(())


def _strs(headers: Headers) -> list[tuple[str, str]]:
    return [(k.decode("latin-1"), v.decode("latin-1")) for k, v in headers]


class H2Client:
    """Reusable HTTP/2 client; see the module docstring."""

    def __init__(
        self,
        backend_name: str = "auto",
        ssl_context: ssl.SSLContext | None = None,
        settings: H2Settings = H2Settings(),
        connect_timeout: float = 5.0,
        max_connections_per_authority: int = 4,
    ) -> None:
        self.backend = load_backend(backend_name)
        self.ssl_context = ssl_context
        self.settings = settings
        self.connect_timeout = connect_timeout
        self.max_connections = max_connections_per_authority
        self._conns: dict[tuple[str, str, int], list] = {}
        self._connecting: dict[tuple[str, str, int], asyncio.Task] = {}

    async def request(
        self,
        method: str,
        url: str,
        headers: list[tuple[str, str]] | None = None,
        body: bytes = b"",
        timeout: float = 5.0,
    ) -> Response:
        """Send one request and return the whole response.

        Raises ``H2ClientError`` when no response comes (and ``TimeoutError`` after ``timeout``)."""
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"unsupported URL {url!r}: need http:// or https:// and a host")
        port = parts.port or (443 if parts.scheme == "https" else 80)
        path = parts.path or "/"
        if parts.query:
            path += "?" + parts.query
        authority = parts.netloc.rsplit("@", 1)[-1]
        hdrs: Headers = [
            (b":method", method.upper().encode()),
            (b":scheme", parts.scheme.encode()),
            (b":authority", authority.encode()),
            (b":path", path.encode()),
        ]
        has_length = False
        for name, value in headers or ():
            lname = name.lower()
            if lname in ("connection", "host", "keep-alive", "transfer-encoding", "upgrade"):
                continue
            has_length = has_length or lname == "content-length"
            hdrs.append((lname.encode(), value.encode()))
        if body and not has_length:
            hdrs.append((b"content-length", str(len(body)).encode()))

        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        key = (parts.scheme, parts.hostname, port)
        async with asyncio.timeout_at(deadline):
            conn = await self._connection(key)
            fut = loop.create_future()

            def on_response(status, rheaders, rbody, trailers, error) -> None:
                if fut.done():
                    return
                if error is not None:
                    fut.set_exception(H2ClientError(f"{method} {url}: {error}"))
                else:
                    fut.set_result(Response(status, _strs(rheaders), rbody, _strs(trailers)))

            try:
                sid = conn.request(hdrs, body or None, on_response)
            except ConnectionError as exc:
                raise H2ClientError(f"{method} {url}: {exc}") from exc
            try:
                return await fut
            except asyncio.CancelledError:
                cancel = getattr(conn, "reset_stream", None)
                if cancel is not None:
                    cancel(sid)
                raise

    async def _connection(self, key: tuple[str, str, int]):
        while True:
            conns = self._conns.setdefault(key, [])
            conns[:] = [c for c in conns if not c.closed]
            for conn in conns:
                if conn.available:
                    return conn
            task = self._connecting.get(key)
            if task is None:
                if len(conns) >= self.max_connections:
                    await asyncio.sleep(0.005)  # all at their stream limit: wait for a slot
                    continue
                task = asyncio.get_running_loop().create_task(self._connect(key))
                self._connecting[key] = task
                task.add_done_callback(lambda t, k=key: self._connect_done(k, t))
            await asyncio.shield(task)

    def _connect_done(self, key: tuple[str, str, int], task: asyncio.Task) -> None:
        self._connecting.pop(key, None)
        if not task.cancelled():
            task.exception()

    async def _connect(self, key: tuple[str, str, int]) -> None:
        scheme, host, port = key
        ctx = None
        if scheme == "https":
            ctx = self.ssl_context
            if ctx is None:
                from dataplane.tls import client_context

                ctx = self.ssl_context = client_context()
        loop = asyncio.get_running_loop()
        factory = self.backend.ClientConnection
        try:
            async with asyncio.timeout(self.connect_timeout):
                transport, conn = await loop.create_connection(
                    lambda: factory(self.settings), host, port, ssl=ctx,
                    server_hostname=host if ctx else None,
                )
                if ctx is not None:
                    sslobj = transport.get_extra_info("ssl_object")
                    if sslobj is None or sslobj.selected_alpn_protocol() != "h2":
                        transport.close()
                        raise H2ClientError(f"{host}:{port} did not negotiate h2 over TLS")
                await conn.ready
        except (OSError, ssl.SSLError) as exc:
            raise H2ClientError(f"cannot connect to {host}:{port}: {exc}") from exc
        except TimeoutError as exc:
            raise H2ClientError(f"connect to {host}:{port} timed out") from exc
        self._conns.setdefault(key, []).append(conn)

    def close(self) -> _Done:
        """Close every connection (can be awaited or not)."""
        for task in self._connecting.values():
            task.cancel()
        for conns in self._conns.values():
            for conn in conns:
                conn.close()
        self._conns.clear()
        return _Done()
