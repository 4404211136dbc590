"""nghttpx as a perf peer: h2c (or TLS) frontend, HTTP/2 backend, one worker."""

from __future__ import annotations

import shutil

from perf.peers import TargetSpec


class Nghttpx:
    """The Debian ``nghttpx`` binary (package nghttp2-proxy)."""

    name = "nghttpx"

    def __init__(self, binary: str = "nghttpx") -> None:
        self.binary = binary

    def unavailable(self, tls: bool) -> str | None:
        if shutil.which(self.binary) is None:
            return f"{self.binary} not found on PATH (Debian package nghttp2-proxy)"
        return None

    def command(self, spec: TargetSpec) -> list[str]:
        frontend = f"--frontend={spec.host},{spec.listen_port}"
        if spec.tls is None:
            frontend += ";no-tls"
        argv = [
            self.binary,
            "--conf=/dev/null",
            frontend,
            f"--backend=127.0.0.1,{spec.backend_port};;proto=h2",
            "--workers=1",
            "--no-ocsp",
            "--frontend-http2-max-concurrent-streams=1000",
            f"--errorlog-file={spec.workdir / 'nghttpx-error.log'}",
        ]
        if spec.tls is not None:
            argv += [str(spec.tls.key), str(spec.tls.cert)]
        return argv
