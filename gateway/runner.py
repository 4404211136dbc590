"""Process management for ``nfmesh run``: one event loop per worker, signals, graceful drain.

With one worker the gateway runs in this process.  With N workers the parent forks N
processes before any event loop exists; each binds the listen ports with SO_REUSEPORT so the
kernel spreads connections, runs its own loop and upstream pools, and follows the same route
configuration.  SIGTERM/SIGINT drain gracefully (GOAWAY, in-flight requests finish, then exit);
a worker that dies unexpectedly is restarted while the others keep serving.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
import time
from typing import Any

log = logging.getLogger("nfmesh")


def _setup_logging(level: str | None, config: Any) -> None:
    lvl = (level or getattr(getattr(config, "logging", None), "level", None) or "info").upper()
    logging.basicConfig(
        level=getattr(logging, lvl, logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s[%(process)d]: %(message)s",
        stream=sys.stderr,
    )


async def _serve(config: Any, opts: dict, worker: int) -> int:
    from gateway.app import Gateway

    gw = Gateway(config, worker=worker, **opts)
    try:
        await gw.start()
    except OSError as exc:
        log.error("cannot start: %s", exc)
        await gw.stop(drain=False)
        return 1
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    log.info("worker %d serving: %s", worker, gw.describe())
    await stop.wait()
    log.info("worker %d draining", worker)
    await gw.stop(drain=True)
    return 0


def _run_worker(config: Any, opts: dict, worker: int) -> int:
    import uvloop

    return uvloop.run(_serve(config, opts, worker))


def run_gateway(
    config: Any,
    *,
    listen: tuple[str, int] | None = None,
    workers: int | None = None,
    backend: str | None = None,
    metrics: tuple[str, int] | None = None,
    log_level: str | None = None,
) -> int:
    """Run until SIGTERM/SIGINT; returns the exit status."""
    _setup_logging(log_level, config)
    n = workers or config.gateway.workers or os.cpu_count() or 1
    opts = {"listen": listen, "backend": backend, "metrics": metrics, "reuse_port": n > 1}
    if n > 1 and config.registry.enabled and config.registry.store == "memory":
        log.warning(
            "registry.store=memory keeps registrations in one process: running 1 worker "
            "(use store: etcd to share the registry between %d workers)", n,
        )
        n, opts["reuse_port"] = 1, False
    if n == 1:
        try:
            return _run_worker(config, opts, 0)
        except KeyboardInterrupt:
            return 0
    return _supervise(config, opts, n)


def _supervise(config: Any, opts: dict, n: int) -> int:
    children: dict[int, int] = {}  # pid -> worker index
    stopping = False

    def spawn(index: int) -> None:
        pid = os.fork()
        if pid == 0:
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            code = 1
            try:
                code = _run_worker(config, opts, index)
            finally:
                os._exit(code)
        children[pid] = index

    def forward(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True
        for pid in list(children):
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    for i in range(n):
        spawn(i)
    restarts: list[float] = []
    status = 0
    while children:
        try:
            pid, wstatus = os.wait()
        except ChildProcessError:
            break
        except InterruptedError:
            continue
        index = children.pop(pid, None)
        if index is None:
            continue
        code = os.waitstatus_to_exitcode(wstatus)
        if stopping:
            status = status or (code if code > 0 else 0)
            continue
        now = time.monotonic()
        restarts = [t for t in restarts if now - t < 60] + [now]
        if len(restarts) > 5 * n:
            log.error("workers keep dying (last exit %s); stopping", code)
            forward(signal.SIGTERM, None)
            status = 1
            continue
        log.warning("worker %d (pid %d) exited with %s; restarting it", index, pid, code)
        spawn(index)
    return status
