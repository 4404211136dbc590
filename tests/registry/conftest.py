"""Fixtures of the registry tests: NF profiles, registries on each store, the official 3GPP
schemas (the repository's copy, see tests/spec_files.py), a real HTTP/2 notification sink
(python-hyper ``h2``), and a real etcd."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from dataplane.routing import Request
from gateway.nrf_api import NrfApi
from gateway.registry.memory_store import MemoryStore
from gateway.registry.notifier import Notifier
from gateway.registry.registry import Registry
from gateway.registry.settings import RegistrySettings
from tests.spec_files import COMMON, DISC, NFM, SchemaChecker, schema_checker  # noqa: F401 (the registry tests import the file names from here)
from tests.waiting import wait_until_blocking

# ---------------------------------------------------------------- 3GPP schemas


@pytest.fixture(scope="session")
def schemas() -> SchemaChecker:
    """The vendored official OpenAPI files (specs/3gpp), ready to validate against."""
    return schema_checker()


# ---------------------------------------------------------------- profiles


def make_profile(nf_type: str = "UDM", nf_id: str | None = None, *, services: tuple[str, ...] = ("nudm-sdm",),
                 ip: str = "127.0.0.10", port: int = 8080, **extra: object) -> dict:
    """A valid NFProfile with one service per name on ``ip:port``."""
    nf_id = nf_id or str(uuid.uuid4())
    svc = {}
    for i, name in enumerate(services):
        sid = f"{name}-{i}"
        svc[sid] = {
            "serviceInstanceId": sid,
            "serviceName": name,
            "versions": [{"apiVersionInUri": "v2", "apiFullVersion": "2.2.0"}],
            "scheme": "http",
            "nfServiceStatus": "REGISTERED",
            "ipEndPoints": [{"ipv4Address": ip, "transport": "TCP", "port": port}],
        }
    p: dict = {
        "nfInstanceId": nf_id,
        "nfType": nf_type,
        "nfStatus": "REGISTERED",
        "ipv4Addresses": [ip],
        "nfServiceList": svc,
    }
    p.update(extra)
    return p


def req(method: str, path: str, body: bytes = b"", ctype: str | None = "application/json",
        extra: list[tuple[bytes, bytes]] | None = None) -> Request:
    headers = [(b":method", method.encode()), (b":scheme", b"http"),
               (b":authority", b"nrf.test:8000"), (b":path", path.encode())]
    if ctype:
        headers.append((b"content-type", ctype.encode()))
    headers.extend(extra or [])
    return Request(method, path, headers, body)


class RecordingSender:
    """A notification ``Sender`` that records what it was asked to send (for API tests that
    check what would go out; the delivery path itself is tested over real HTTP/2)."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes]] = []
        self.event = asyncio.Event()

    async def __call__(self, method: str, url: str, headers: list, body: bytes, timeout: float) -> int:
        self.sent.append((url, body))
        self.event.set()
        return 204


@pytest.fixture
def settings() -> RegistrySettings:
    return RegistrySettings(heartbeat_timer_s=2, heartbeat_grace_s=0.3, sweep_interval_s=0.05,
                            api_root="http://nrf.test:8000")


@pytest.fixture
async def sender() -> RecordingSender:
    return RecordingSender()


@pytest.fixture
async def registry(settings: RegistrySettings, sender: RecordingSender) -> AsyncIterator[Registry]:
    reg = Registry(settings, MemoryStore(None), Notifier(sender, backoff_s=0.01))
    await reg.start()
    try:
        yield reg
    finally:
        await reg.close()


@pytest.fixture
def api(registry: Registry) -> NrfApi:
    return NrfApi(registry)


# ---------------------------------------------------------------- HTTP/2 notification sink


class H2Sink:
    """A real HTTP/2 (h2c prior knowledge) server that records POSTs and answers ``status``."""

    def __init__(self) -> None:
        self.received: list[tuple[dict[str, str], bytes]] = []
        self.status = 204
        self.fail_first = 0  # answer 503 to this many requests first
        self.arrived = asyncio.Event()
        self.server: asyncio.AbstractServer | None = None
        self.port = 0

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._conn, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()

    async def _conn(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        import h2.config
        import h2.connection
        import h2.events

        conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False))
        conn.initiate_connection()
        writer.write(conn.data_to_send())
        streams: dict[int, tuple[dict[str, str], bytearray]] = {}
        try:
            while True:
                data = await reader.read(65536)
                if not data:
                    break
                for ev in conn.receive_data(data):
                    if isinstance(ev, h2.events.RequestReceived):
                        hdrs = {k.decode() if isinstance(k, bytes) else k: v.decode() if isinstance(v, bytes) else v
                                for k, v in ev.headers}
                        streams[ev.stream_id] = (hdrs, bytearray())
                    elif isinstance(ev, h2.events.DataReceived):
                        streams[ev.stream_id][1].extend(ev.data)
                        conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
                    elif isinstance(ev, h2.events.StreamEnded):
                        hdrs, body = streams.pop(ev.stream_id)
                        if self.fail_first > 0:
                            self.fail_first -= 1
                            status = 503
                        else:
                            status = self.status
                            self.received.append((hdrs, bytes(body)))
                            self.arrived.set()
                        conn.send_headers(ev.stream_id, [(":status", str(status))], end_stream=True)
                writer.write(conn.data_to_send())
                await writer.drain()
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()


@pytest.fixture
async def h2sink() -> AsyncIterator[H2Sink]:
    sink = H2Sink()
    await sink.start()
    try:
        yield sink
    finally:
        await sink.close()


def curl_sender():
    """A notification sender over curl (a real HTTP/2 client: --http2-prior-knowledge)."""
    curl = shutil.which("curl")
    if curl is None:
        pytest.skip("curl not installed")

    async def send(method: str, url: str, headers: list, body: bytes, timeout: float) -> int:
        args = [curl, "-s", "-o", "/dev/null", "-w", "%{http_code}", "--http2-prior-knowledge",
                "-X", method, "--max-time", str(timeout), "--data-binary", "@-"]
        for k, v in headers:
            args += ["-H", f"{k}: {v}"]
        args.append(url)
        proc = await asyncio.create_subprocess_exec(*args, stdin=subprocess.PIPE,
                                                    stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        out, _ = await proc.communicate(body)
        return int(out or b"0")

    return send


# ---------------------------------------------------------------- etcd


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class EtcdProcess:
    """Debian's ``etcd`` on free loopback ports in a temp dir."""

    def __init__(self) -> None:
        self.dir = tempfile.mkdtemp(prefix="nfmesh-etcd-")
        self.client_port = _free_port()
        self.peer_port = _free_port()
        self.endpoint = f"127.0.0.1:{self.client_port}"
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        exe = shutil.which("etcd")
        assert exe
        url = f"http://127.0.0.1:{self.client_port}"
        peer = f"http://127.0.0.1:{self.peer_port}"
        self.proc = subprocess.Popen(
            [exe, "--name", "t", "--data-dir", os.path.join(self.dir, "data"),
             "--listen-client-urls", url, "--advertise-client-urls", url,
             "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
             "--initial-cluster", f"t={peer}", "--heartbeat-interval", "50", "--election-timeout", "500", "--log-level", "error", "--logger", "zap"],
            stdout=subprocess.DEVNULL, stderr=open(os.path.join(self.dir, "etcd.log"), "w"),  # noqa: SIM115
        )
        def serving() -> bool:
            if self.proc.poll() is not None:
                raise RuntimeError("etcd exited: " + Path(self.dir, "etcd.log").read_text()[-2000:])
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.client_port), 0.2):
                # the port answers; wait until it serves requests
                import urllib.request
                try:
                    urllib.request.urlopen(f"{url}/health", timeout=5).read()
                    return True
                except Exception:  # noqa: BLE001
                    pass
            return False

        wait_until_blocking(serving, what="etcd serves /health")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def etcd() -> Iterator[EtcdProcess]:
    if shutil.which("etcd") is None:
        pytest.skip("etcd binary not installed (Debian package etcd-server)")
    e = EtcdProcess()
    e.start()
    try:
        yield e
    finally:
        e.cleanup()
