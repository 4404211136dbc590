"""HAProxy as a perf peer: HTTP/2 on both sides (``proto h2``), one thread, foreground."""

from __future__ import annotations

import shutil

from perf.peers import TargetSpec


class HAProxy:
    """The Debian ``haproxy`` binary."""

    name = "haproxy"

    def __init__(self, binary: str = "haproxy") -> None:
        self.binary = binary

    def unavailable(self, tls: bool) -> str | None:
        if shutil.which(self.binary) is None:
            return f"{self.binary} not found on PATH (Debian package haproxy)"
        return None

    def command(self, spec: TargetSpec) -> list[str]:
        if spec.tls is not None:
            bind = f"bind {spec.host}:{spec.listen_port} ssl crt {spec.tls.combined} alpn h2"
        else:
            bind = f"bind {spec.host}:{spec.listen_port} proto h2"
        cfg = spec.workdir / "haproxy.cfg"
        cfg.write_text(
            "global\n"
            "    nbthread 1\n"
            "    maxconn 4096\n"
            "defaults\n"
            "    mode http\n"
            "    timeout connect 5s\n"
            "    timeout client 30s\n"
            "    timeout server 30s\n"
            "frontend fe\n"
            f"    {bind}\n"
            "    default_backend be\n"
            "backend be\n"
            f"    server s1 127.0.0.1:{spec.backend_port} proto h2\n"
        )
        return [self.binary, "-db", "-f", str(cfg)]
