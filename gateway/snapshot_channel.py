"""The local channel that carries the registry's route snapshot from the control plane to workers.

Choice (documented in the README): a Unix-domain stream socket with length-prefixed msgpack
frames, each frame the *whole* set of registered instances ``{"v": version, "i": [[profile,
status], ...]}``.  Whole snapshots instead of deltas keep the protocol stateless: a worker that
(re)connects gets the current snapshot as its first frame, and a lost frame is mended by the next.
Bursts of registry changes are coalesced into one frame per ``min_interval_s``.  Each worker
compiles the frame into its own immutable ``ModelDSnapshot`` (reusing compiled profiles whose
content did not change) and swaps its router in one assignment; routing never waits on this
channel, and a worker that loses it keeps routing on its last snapshot while it reconnects.

Why not gRPC or shared memory: a gRPC stream would add a protobuf schema and a second event
loop integration (grpc.aio) to every worker for one message type; shared memory would need a
seqlock and a fixed layout for variable-size profiles.  The socket costs one serialization per
change plus one read per worker (``perf/snapshot_bench.py`` measures it for 1,000 profiles).
"""

from __future__ import annotations

import asyncio
import logging
import os
import struct
from collections.abc import Callable, Iterable

import msgspec

log = logging.getLogger("nfmesh.snapshot")

_LEN = struct.Struct(">I")
MAX_FRAME = 256 << 20  # a frame larger than this is refused: bounded memory on the worker
_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder()


def encode_frame(version: int, instances: Iterable[tuple[dict, str]]) -> bytes:
    """One snapshot frame (length prefix included)."""
    payload = _encoder.encode({"v": version, "i": [[p, s] for p, s in instances]})
    return _LEN.pack(len(payload)) + payload


def decode_payload(payload: bytes) -> tuple[int, list[tuple[dict, str]]]:
    """The version and the (profile, status) pairs of one frame's payload."""
    msg = _decoder.decode(payload)
    return int(msg["v"]), [(p, s) for p, s in msg["i"]]


class SnapshotPublisher:
    """Control-plane side: a Unix socket server that sends every subscriber the latest frame."""

    def __init__(self, path: str, snapshot: Callable[[], tuple[int, list[tuple[dict, str]]]],
                 min_interval_s: float = 0.05) -> None:
        self.path = path
        self.snapshot = snapshot
        self.min_interval_s = min_interval_s
        self.frame = b""
        self.version = -1
        self.frames_sent = 0
        self._writers: set[asyncio.StreamWriter] = set()
        self._server: asyncio.AbstractServer | None = None
        self._scheduled = False
        self._last = 0.0

    async def start(self) -> None:
        if os.path.exists(self.path):
            os.unlink(self.path)
        self._rebuild()
        self._server = await asyncio.start_unix_server(self._accept, self.path)

    def _rebuild(self) -> None:
        version, instances = self.snapshot()
        self.version = version
        self.frame = encode_frame(version, instances)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        writer.write(self.frame)
        self.frames_sent += 1
        try:
            await reader.read()  # workers never send; EOF means the worker is gone
        except ConnectionError:
            pass
        finally:
            self._writers.discard(writer)
            writer.close()

    def changed(self) -> None:
        """Registry listener: schedule one broadcast (coalesced)."""
        if self._scheduled:
            return
        self._scheduled = True
        loop = asyncio.get_running_loop()
        delay = max(0.0, self._last + self.min_interval_s - loop.time())
        loop.call_later(delay, self._broadcast)

    def _broadcast(self) -> None:
        self._scheduled = False
        self._last = asyncio.get_running_loop().time()
        self._rebuild()
        for w in list(self._writers):
            if w.transport.get_write_buffer_size() > 4 * len(self.frame) + (1 << 20):
                # a stuck worker: drop it rather than buffer without bound; it reconnects
                w.close()
                self._writers.discard(w)
                continue
            w.write(self.frame)
            self.frames_sent += 1

    @property
    def subscribers(self) -> int:
        return len(self._writers)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for w in list(self._writers):
            w.close()
        if self._server is not None:
            await self._server.wait_closed()
        if os.path.exists(self.path):
            os.unlink(self.path)


class SnapshotSubscriber:
    """Worker side: keeps a connection to the publisher and calls ``apply`` per frame."""

    def __init__(self, path: str, apply: Callable[[int, list[tuple[dict, str]]], None]) -> None:
        self.path = path
        self.apply = apply
        self.version = -1
        self.frames = 0
        self._task: asyncio.Task | None = None
        self.first = asyncio.get_event_loop().create_future()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="snapshot-subscriber")

    async def _run(self) -> None:
        backoff = 0.02
        while True:
            try:
                reader, writer = await asyncio.open_unix_connection(self.path)
            except OSError:
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 1.0)
                continue
            backoff = 0.02
            try:
                while True:
                    head = await reader.readexactly(_LEN.size)
                    (size,) = _LEN.unpack(head)
                    if size > MAX_FRAME:
                        log.error("snapshot frame of %d bytes refused (limit %d)", size, MAX_FRAME)
                        break
                    version, instances = decode_payload(await reader.readexactly(size))
                    self.apply(version, instances)
                    self.version = version
                    self.frames += 1
                    if not self.first.done():
                        self.first.set_result(None)
            except (asyncio.IncompleteReadError, ConnectionError):
                log.warning("snapshot channel lost; routing on snapshot %d while reconnecting", self.version)
            except Exception:  # noqa: BLE001 - a bad frame must not kill the worker
                log.exception("bad snapshot frame; keeping snapshot %d", self.version)
            finally:
                writer.close()

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except (asyncio.CancelledError, Exception):
                pass
