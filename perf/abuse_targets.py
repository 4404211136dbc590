"""The targets of ``nfmesh perf abuse``: what is started, where it listens, which processes'
memory counts.

Proxy targets (the default): ``nfmesh-nghttp2`` and ``nfmesh-h2`` (the gateway as a user runs
it, ``nfmesh run`` with one worker and a config routing every path to the origin, the engine
chosen with ``gateway.backend``), ``haproxy`` and ``nghttpx``, each an h2c front proxy on
127.0.0.1 before the same origin: one ``nghttpd --no-tls`` started once per run
(``perf.peers.backend``), which answers the legit client's GET, holds a request whose body
never ends and serves a ``BIG_SIZE`` (1 MiB) document at ``BIG_PATH`` (``zero_window``).  The launchers are ``perf.peers``'s, the ones ``nfmesh perf compare`` uses.

Engine targets (``engine-nghttp2``, ``engine-h2``): a responder process, the engine's
``ServerConnection`` answering every request itself (``/hold`` never, ``BIG_PATH`` with a
``BIG_SIZE`` body), one process, no proxying: the engine's own defence.

A target's memory is the RSS of its process tree (nfmesh: supervisor and worker; nghttpx:
master and worker), never the origin's.
"""

from __future__ import annotations

import contextlib
import sys
from dataclasses import dataclass
from pathlib import Path

from dataplane.engine import available_backends
from perf.abuse_attacks import BIG_PATH, BIG_SIZE
from perf.peers import Peer, TargetSpec
from perf.peers.backend import nghttpd_unavailable, start_nghttpd
from perf.peers.haproxy import HAProxy
from perf.peers.launcher import Launched, LaunchError, free_port
from perf.peers.nfmesh import Nfmesh, child_env
from perf.peers.nghttpx import Nghttpx
from perf.proc_stats import ProcessGone, descendants, rss_bytes

PROXY_TARGETS = ("nfmesh-nghttp2", "nfmesh-h2", "haproxy", "nghttpx")
ENGINE_TARGETS = ("engine-nghttp2", "engine-h2")
ALL_TARGETS = (*PROXY_TARGETS, *ENGINE_TARGETS)
START_TIMEOUT_S = 20.0

_RESPONDER = r"""
import asyncio, sys, uvloop
from dataplane.engine import H2Settings, load_backend
from dataplane.listener import serve

BIG_PATH, BIG = sys.argv[4].encode(), b"b" * int(sys.argv[5])

class Responder:
    def on_request(self, conn, sid, headers, end):
        path = dict(headers).get(b":path")
        if path == b"/hold":
            return  # never answered: holds a stream (stream-limit exhaustion)
        if path == BIG_PATH:  # zero_window: a large response to a reader that does not read
            conn.respond(sid, 200, [(b"content-type", b"application/octet-stream")], BIG)
            return
        conn.respond(sid, 200, [(b"content-type", b"application/json")], b'{"ok":true}')
    def on_connection_lost(self, conn):
        pass

async def main():
    await serve("127.0.0.1", int(sys.argv[2]), Responder, load_backend(sys.argv[1]), H2Settings())
    await asyncio.sleep(float(sys.argv[3]))

uvloop.run(main())
"""


def _peer(name: str) -> Peer | None:
    if name == "nfmesh-nghttp2":
        return Nfmesh(set_fields=["gateway.backend=nghttp2"], name=name)
    if name == "nfmesh-h2":
        return Nfmesh(set_fields=["gateway.backend=h2"], name=name)
    if name == "haproxy":
        return HAProxy()
    if name == "nghttpx":
        return Nghttpx()
    return None


def unavailable(name: str) -> str | None:
    """None when target ``name`` can run here, else why not (a skip reason)."""
    if name not in ALL_TARGETS:
        return "unknown target"
    if name.startswith("engine-"):
        backend = name.removeprefix("engine-")
        return None if backend in available_backends() else f"engine {backend} does not import"
    if name == "nfmesh-nghttp2" and "nghttp2" not in available_backends():
        return "the nghttp2 engine is not built (setup.py build_ext --inplace)"
    peer = _peer(name)
    assert peer is not None
    return peer.unavailable(False) or nghttpd_unavailable()


@dataclass
class Running:
    """One started target: where it listens and whose memory counts."""

    name: str
    port: int
    process: Launched
    info: dict

    def pids(self) -> list[int]:
        """The target's process tree now (read once per case: it does not fork mid-run)."""
        return [self.process.pid, *descendants(self.process.pid)]

    def alive(self) -> bool:
        return self.process.proc.poll() is None


def tree_rss(pids: list[int]) -> int:
    """Summed RSS of ``pids`` (those that have exited count 0)."""
    total = 0
    for pid in pids:
        try:
            total += rss_bytes(pid)
        except ProcessGone:
            continue
    return total


class Targets:
    """Starts targets on demand within one run and stops all of them (and the origin) at
    ``close``."""

    def __init__(self, workdir: Path, lifetime_s: float) -> None:
        self.workdir = workdir
        self.lifetime_s = lifetime_s
        self._origin: tuple[Launched, int] | None = None
        self._stack = contextlib.ExitStack()

    def origin_port(self) -> int:
        """The origin's port, starting it (once per run) with its docroot and the big file."""
        if self._origin is None:
            port = free_port()
            folder = self.workdir / "origin"
            big = folder / "www" / BIG_PATH.lstrip("/")  # docroot: start_nghttpd adds the rest
            big.parent.mkdir(parents=True)
            big.write_bytes(b"b" * BIG_SIZE)
            origin = start_nghttpd(port, folder, cpu=None)
            self._stack.callback(origin.stop)
            self._origin = (origin, port)
        return self._origin[1]

    def start(self, name: str) -> Running:
        """Start target ``name`` and wait until it listens; ``LaunchError`` when it does not."""
        port = free_port()
        folder = self.workdir / name
        n = 1
        while folder.exists():  # a restart
            n += 1
            folder = self.workdir / f"{name}-{n}"
        folder.mkdir()
        info: dict = {}
        if name.startswith("engine-"):
            argv = [sys.executable, "-c", _RESPONDER, name.removeprefix("engine-"), str(port),
                    str(self.lifetime_s), BIG_PATH, str(BIG_SIZE)]
            proc = Launched(argv, folder / "target.log", env=child_env())
            info["origin"] = "none: the engine answers itself"
        else:
            peer = _peer(name)
            assert peer is not None
            spec = TargetSpec(listen_port=port, backend_port=self.origin_port(), workdir=folder)
            proc = Launched(peer.command(spec), folder / "target.log", env=child_env())
            info["origin"] = "nghttpd --no-tls"
        self._stack.callback(proc.stop)
        try:
            proc.wait_listening("127.0.0.1", port, START_TIMEOUT_S)
        except LaunchError:
            proc.stop()
            raise
        return Running(name, port, proc, info)

    def engine_of(self, running: Running) -> str | None:
        """For nfmesh: the engine its worker says it serves with (read from its log)."""
        peer = _peer(running.name)
        read = getattr(peer, "run_info", None)
        if read is None:
            return None
        return read(running.process.log_text()).get("engine")

    def close(self) -> None:
        self._stack.close()
