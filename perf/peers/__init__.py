"""The proxies ``nfmesh perf compare`` measures, one module each, behind one small interface.

A peer knows whether it can run here (``unavailable`` returns the reason it cannot) and writes
its configuration for one run (``command`` returns the argv): an h2c (or TLS, ALPN h2) listener
on ``spec.listen_port`` relaying every request over HTTP/2 to the backend on
``spec.backend_port``.  Starting, pinning, readiness and stopping are ``perf.peers.launcher``'s.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from perf.peers.tls_certs import TlsFiles


@dataclass(frozen=True, slots=True)
class TargetSpec:
    """Where one target listens, where it forwards, and where it may write files."""

    listen_port: int
    backend_port: int
    workdir: Path
    tls: TlsFiles | None = None
    host: str = "127.0.0.1"


class Peer(Protocol):
    """One proxy under test."""

    name: str

    def unavailable(self, tls: bool) -> str | None:
        """None when the peer can run here (with a TLS frontend if ``tls``), else why not."""

    def command(self, spec: TargetSpec) -> list[str]:
        """Write the config files into ``spec.workdir`` and return the argv to start it."""


def all_peers(nfmesh_cmd: str | None = None, nfmesh_tls_args: str | None = None,
              nfmesh_set: list[str] | tuple[str, ...] = ()) -> list[Peer]:
    """nfmesh first, then the reference proxies, in report order."""
    from perf.peers.envoy import Envoy
    from perf.peers.haproxy import HAProxy
    from perf.peers.nfmesh import Nfmesh
    from perf.peers.nghttpx import Nghttpx

    return [Nfmesh(nfmesh_cmd, nfmesh_tls_args, nfmesh_set), HAProxy(), Nghttpx(), Envoy()]


__all__ = ["Peer", "TargetSpec", "TlsFiles", "all_peers"]
