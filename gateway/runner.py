"""Process management for ``nfmesh run``: workers, the control plane, signals, graceful drain.

One worker: the whole gateway (registry included) runs in this process on one uvloop loop.

N workers: this process becomes the supervisor.  When the registry is on it first starts the
control plane (``gateway.control_plane``: the one registry, its NRF API on an internal
listener, the snapshot channel), then starts N worker processes (``python -m gateway.worker``),
each binding the listen ports with SO_REUSEPORT so the kernel spreads connections, each with
its own loop and upstream pools, routing from the snapshots the control plane pushes.

SIGTERM/SIGINT: every worker drains (GOAWAY with the last stream id, in-flight requests
finish, bounded by ``gateway.drain_timeout_s``), then the control plane stops.  A worker that
exits while the gateway is not stopping (killed, crashed, or sent SIGTERM alone to roll it) is
started again; its in-flight requests were finished by its own drain.
"""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import os
import signal
import sys
import tempfile
import time
from typing import Any

log = logging.getLogger("nfmesh")

# young-generation threshold of the cyclic collector in a serving worker (CPython's default 700)
GC_YOUNG_THRESHOLD = 10000


class JsonLogFormatter(logging.Formatter):
    """One JSON object per log line (``logging.format: json``), for log shippers."""

    def format(self, record: logging.LogRecord) -> str:
        out = {"ts": round(record.created, 3), "level": record.levelname.lower(),
               "logger": record.name, "pid": record.process, "msg": record.getMessage()}
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, separators=(",", ":"))


def setup_logging(level: str | None, config: Any) -> None:
    section = getattr(config, "logging", None)
    lvl = (level or getattr(section, "level", None) or "info").upper()
    handler = logging.StreamHandler(sys.stderr)
    if getattr(section, "format", "text") == "json":
        handler.setFormatter(JsonLogFormatter())
    else:
        handler.setFormatter(logging.Formatter(
            "%(asctime)s %(levelname)s %(name)s[%(process)d]: %(message)s"))
    logging.basicConfig(level=getattr(logging, lvl, logging.INFO), handlers=[handler], force=True)


def reload_config(gw: Any, path: str | None) -> bool:
    """SIGHUP: read and validate the file again; apply it, or keep the running config whole."""
    from gateway.config import ConfigError, load_config

    if path is None:
        log.warning("SIGHUP: running without a config file, nothing to reload")
        return False
    try:
        new = load_config(path)
    except ConfigError as exc:
        log.error("reload refused, the running config stays in force:\n%s", exc)
        return False
    except OSError as exc:
        log.error("reload refused, cannot read %s: %s", path, exc.strerror)
        return False
    pending = gw.reload(new)
    log.info("config reloaded from %s%s", path,
             f"; needs a restart to apply: {', '.join(pending)}" if pending else "")
    return True


async def serve_until_signal(config: Any, opts: dict, worker: int,
                             config_path: str | None = None) -> int:
    """Run one gateway until SIGTERM/SIGINT, then drain; SIGHUP reloads the config file.
    Returns the exit status."""
    from gateway.app import Gateway

    gw = Gateway(config, worker=worker, **opts)
    gw.config_path = config_path
    try:
        await gw.start()
    except Exception as exc:  # noqa: BLE001 - reported, then a clean exit status
        # an OSError (a port in use, a missing file) says it all; anything else is a bug:
        # its traceback goes to the log
        log.error("cannot start: %s", exc, exc_info=not isinstance(exc, OSError))
        await gw.stop(drain=False)
        return 1
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGHUP, reload_config, gw, config_path)
    # what start-up built (modules, config, tables) lives as long as the process: keep it out
    # of the cyclic collector's full passes, which would otherwise walk all of it mid-traffic
    gc.collect()
    gc.freeze()
    # The HTTP/2 engine keeps finished exchanges (the stream, the proxy's exchange and what it
    # holds) until the loop's next quiet moment, up to 128 of them (``dataplane.engine``).  At
    # CPython's default young-generation threshold (700 containers) those would start a
    # collection every few hundred requests that walks them all (10% more instructions per
    # request in the closed loop); above what they hold, collections are left to real garbage.
    gc.set_threshold(GC_YOUNG_THRESHOLD, *gc.get_threshold()[1:])
    log.info("worker %d serving: %s (start-up heap frozen: %d objects)", worker, gw.describe(),
             gc.get_freeze_count())
    await stop.wait()
    log.info("worker %d draining", worker)
    await gw.stop(drain=True)
    return 0


def run_gateway(
    config: Any,
    *,
    config_path: str | None = None,
    listen: tuple[str, int] | None = None,
    workers: int | None = None,
    backend: str | None = None,
    metrics: tuple[str, int] | None = None,
    log_level: str | None = None,
) -> int:
    """Run until SIGTERM/SIGINT; returns the exit status."""
    import uvloop

    setup_logging(log_level, config)
    n = workers or config.gateway.workers or os.cpu_count() or 1
    opts: dict = {"listen": listen, "backend": backend, "metrics": metrics, "reuse_port": n > 1}
    try:
        if n == 1:
            return uvloop.run(serve_until_signal(config, opts, 0, config_path))
        spec = {"config_path": config_path, "log_level": log_level, "opts": {
            "listen": list(listen) if listen else None, "backend": backend,
            "metrics": list(metrics) if metrics else None}}
        return uvloop.run(_supervise(config, spec, n))
    except KeyboardInterrupt:
        return 0


class WorkerRestarts:
    """``nfmesh_worker_restarts_total``: workers the supervisor started again."""

    def __init__(self) -> None:
        self.value = 0

    def collect(self) -> Any:
        from prometheus_client.core import CounterMetricFamily

        yield CounterMetricFamily("nfmesh_worker_restarts",
                                  "Worker processes that exited and were started again",
                                  value=self.value)


async def _supervise(config: Any, spec: dict, n: int) -> int:
    control = None
    tmp = tempfile.mkdtemp(prefix="nfmesh-")
    if config.registry.enabled:
        from gateway.control_plane import ControlPlane

        control = ControlPlane(config, os.path.join(tmp, "snapshot.sock"))
        spec["control_plane"] = (await control.start()).to_json()
    metrics_server = None
    restart_count = WorkerRestarts()
    sockets = [os.path.join(tmp, f"metrics-{i}.sock") for i in range(n)]
    mcfg = config.metrics
    if mcfg.enabled or spec["opts"].get("metrics"):
        from gateway.metrics import MetricsServer, WorkerMetricsAggregator, new_registry

        local = new_registry(restart_count, *((control.stats, *control.service.collectors())
                                              if control else ()))
        agg = WorkerMetricsAggregator(sockets, local)
        # ready once every worker is up (a worker opens its metrics socket after its listeners)
        metrics_server = MetricsServer(None, ready=lambda: all(os.path.exists(p) for p in sockets),
                                       exposition=agg.exposition)
        host, port = spec["opts"].get("metrics") or (mcfg.host, mcfg.port)
        await metrics_server.start(host, port)
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    procs: dict[int, asyncio.subprocess.Process] = {}

    def forward_hup() -> None:  # each worker reloads the file itself (and keeps it if bad)
        for p in procs.values():
            if p.returncode is None:
                p.send_signal(signal.SIGHUP)

    loop.add_signal_handler(signal.SIGHUP, forward_hup)
    admin = None
    admin_sockets = [os.path.join(tmp, f"admin-{i}.sock") for i in range(n)]
    if config.admin.enabled:
        from gateway.admin import SupervisorAdmin

        admin = SupervisorAdmin(config, spec.get("config_path"), admin_sockets, control,
                                metrics=metrics_server._body if metrics_server else None,
                                reload_workers=forward_hup)
        try:
            admin.admin_port = await admin.http.start(config.admin.host, config.admin.port)
        except OSError as exc:
            log.warning("admin API: cannot listen on %s:%s (%s); serving without it",
                        config.admin.host, config.admin.port, exc.strerror or exc)
            admin = None
    restarts: list[float] = []
    status = 0

    async def spawn(index: int) -> None:
        if os.path.exists(sockets[index]):
            os.unlink(sockets[index])
        if os.path.exists(admin_sockets[index]):
            os.unlink(admin_sockets[index])
        worker_spec = {**spec, "index": index, "metrics_socket": sockets[index] if metrics_server else None,
                       "admin_socket": admin_sockets[index] if admin else None}
        env = dict(os.environ, NFMESH_WORKER=json.dumps(worker_spec))
        procs[index] = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "gateway.worker", env=env)

    for i in range(n):
        await spawn(i)
    log.info("supervisor: %d workers started%s", n, " with the control plane" if control else "")
    while not stopping.is_set():
        waits = {asyncio.create_task(p.wait()): i for i, p in procs.items()}
        stop_wait = asyncio.create_task(stopping.wait())
        done, _ = await asyncio.wait({*waits, stop_wait}, return_when=asyncio.FIRST_COMPLETED)
        for t in waits:
            if t not in done:
                t.cancel()
        stop_wait.cancel()
        if stopping.is_set():
            break
        for t in done:
            if t in waits:
                index = waits[t]
                code = t.result()
                now = time.monotonic()
                restarts = [r for r in restarts if now - r < 60] + [now]
                if len(restarts) > 5 * n:
                    log.error("workers keep exiting (last status %s); stopping", code)
                    status = 1
                    stopping.set()
                    break
                log.warning("worker %d exited with status %s; starting it again", index, code)
                restart_count.value += 1
                await spawn(index)
    for p in procs.values():
        if p.returncode is None:
            p.send_signal(signal.SIGTERM)
    drain = float(getattr(config.gateway, "drain_timeout_s", 10) or 10)
    for p in procs.values():
        try:
            await asyncio.wait_for(p.wait(), drain + 5)
        except TimeoutError:
            p.kill()
            await p.wait()
    if control is not None:
        await control.close()
    if metrics_server is not None:
        await metrics_server.close()
    if admin is not None:
        await admin.http.close()
    for path in sockets + admin_sockets:
        if os.path.exists(path):
            os.unlink(path)
    try:
        os.rmdir(tmp)
    except OSError:
        pass
    return status
