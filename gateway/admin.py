"""The admin API: a small HTTP/1.1 JSON API on its own listener (``admin`` in the config,
127.0.0.1:9901 by default), for the probes, ``nfmesh ctl``, ``nfmesh top`` and operators.

=================  ======  =====================================================================
path               method  answer
=================  ======  =====================================================================
/healthz           GET     ``{"status": "ok"}`` while the process serves its loop (liveness)
/readyz            GET     200 when listeners are up, the registry store answers and the gateway
                           is not draining, else 503; ``{"ready", "checks": {...}}``
/status            GET     name, version, uptime, pid, workers, backend, ports, readiness, totals
/config            GET     the effective config (defaults included), secrets redacted
/routes            GET     static routes in match order, model C/D state
/clusters          GET     clusters with their endpoints: health, adaptive limit, in flight,
                           queued, ejections, OCI reduction, overload state; and the producers
                           the admission controller knows outside any configured cluster
/nf-instances      GET     the registry's NF instances (summary); ``/nf-instances/ID`` one profile
/metrics           GET     the Prometheus text exposition (the same as the metrics endpoint)
/drain             POST    stop accepting, GOAWAY every connection, readiness goes 503
/reload            POST    read and validate the config file again and apply it (as SIGHUP)
=================  ======  =====================================================================

``/drain`` and ``/reload`` change the gateway: they are answered only to loopback peers (and on
the workers' Unix sockets), 403 otherwise.  In a pod that is ``kubectl exec ... nfmesh ctl``
or ``kubectl port-forward``, while the kubelet's probes reach the read-only paths.

Field names are stable (scripts read them); new fields may be added, none renamed.  Every
answer is one JSON object except ``/metrics``.

One worker: the gateway serves this itself.  ``--workers N``: every worker serves it on a Unix
socket, and the supervisor serves the TCP listener: ``/clusters`` sums the workers' endpoint
counters (``workers`` lists each one's), ``/routes`` is worker 0's, ``/drain`` and ``/reload``
go to every worker.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import time
from collections.abc import Awaitable, Callable
from typing import Any

log = logging.getLogger("nfmesh.admin")

REDACTED = "<redacted>"
# config keys whose values are secrets wherever they appear (none of today's fields is one:
# TLS keys are file paths; this is the rule for fields to come and for URLs with credentials)
_SECRET_KEY = re.compile(r"(password|passwd|secret|token|credential|private_key)$", re.I)
_URL_USERINFO = re.compile(r"^([a-z][a-z0-9+.-]*://)[^/@\s]+@", re.I)

Answer = tuple[int, Any]  # (HTTP status, JSON-able object or bytes for /metrics)


def redact(value: Any, key: str = "") -> Any:
    """``value`` (plain config data) with secrets replaced by ``<redacted>``: values of keys
    named like a secret, and the user:password part of URLs."""
    if isinstance(value, dict):
        return {k: redact(v, str(k)) for k, v in value.items()}
    if isinstance(value, list):
        return [redact(v, key) for v in value]
    if key and _SECRET_KEY.search(key) and value not in (None, "", False):
        return REDACTED
    if isinstance(value, str) and _URL_USERINFO.match(value):
        return _URL_USERINFO.sub(lambda m: m.group(1) + REDACTED + "@", value)
    return value


def endpoint_address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _health(g: dict) -> str:
    if g.get("ejected"):
        return "ejected"
    if g.get("oci_reduction"):
        return "oci"
    if g.get("overloaded"):
        return "overloaded"
    return "healthy"


def _gate_view(g: dict) -> dict:
    """One admission gate (``AdmissionController.snapshot()`` entry) as stable JSON."""
    shed: dict[str, int] = {}
    for (reason, _prio), n in g.get("shed", {}).items():
        shed[reason] = shed.get(reason, 0) + n
    rtt = g.get("rtt_noload_s")
    return {
        "health": _health(g),
        "limit": g["limit"], "in_flight": g["in_flight"], "queued": g["queued"],
        "forwarded": g.get("forwarded", 0),
        "queue_delay_s_sum": round(g.get("queue_delay_s_sum", 0.0), 6),
        "dequeued": g.get("queue_delay_n", 0),
        "rtt_noload_ms": None if rtt is None else round(rtt * 1000.0, 3),
        "ejected": bool(g["ejected"]), "ejections": g["ejections"],
        "oci_reduction": g["oci_reduction"], "overloaded": bool(g["overloaded"]),
        "shed": shed,
    }


def _no_gate() -> dict:
    return {"health": "healthy", "limit": None, "in_flight": 0, "queued": 0, "forwarded": 0,
            "queue_delay_s_sum": 0.0, "dequeued": 0, "rtt_noload_ms": None, "ejected": False,
            "ejections": 0, "oci_reduction": 0.0, "overloaded": False, "shed": {}}


def nf_summary(profile: dict, status: str) -> dict:
    """The fields of an NF profile a table shows."""
    services = profile.get("nfServices") or profile.get("nfServiceList") or []
    if isinstance(services, dict):
        services = list(services.values())
    names = sorted({s.get("serviceName", "") for s in services if isinstance(s, dict)} - {""})
    return {
        "nf_instance_id": profile.get("nfInstanceId", ""),
        "nf_type": profile.get("nfType", ""),
        "status": status,
        "fqdn": profile.get("fqdn"),
        "addresses": list(profile.get("ipv4Addresses") or []) + list(profile.get("ipv6Addresses") or []),
        "priority": profile.get("priority"),
        "capacity": profile.get("capacity"),
        "load": profile.get("load"),
        "services": names,
    }


# ---------------------------------------------------------------------------------------------
# the HTTP/1.1 side (same shape as the metrics endpoint: one request per connection)

class AdminHttp:
    """Serves ``handler(method, path) -> (status, body)`` over HTTP/1.1 on TCP or a Unix socket."""

    def __init__(self, handler: Callable[[str, str], Awaitable[Answer]]) -> None:
        self.handler = handler
        self._server: asyncio.AbstractServer | None = None

    async def start(self, host: str, port: int) -> int:
        self._server = await asyncio.start_server(self._serve, host, port)
        return self._server.sockets[0].getsockname()[1]

    async def start_unix(self, path: str) -> None:
        self._server = await asyncio.start_unix_server(self._serve, path)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            line = await asyncio.wait_for(reader.readline(), 5)
            length = 0
            while True:
                h = await asyncio.wait_for(reader.readline(), 5)
                if h in (b"\r\n", b"\n", b""):
                    break
                name, _, value = h.partition(b":")
                if name.strip().lower() == b"content-length" and value.strip().isdigit():
                    length = min(int(value.strip()), 1 << 16)
            if length:
                await asyncio.wait_for(reader.readexactly(length), 5)  # no handler reads a body
            parts = line.decode("latin-1").split()
            method, path = (parts[0], parts[1]) if len(parts) >= 2 else ("GET", "")
            path = path.split("?", 1)[0]
            try:
                if path in POST_PATHS and not _local_peer(writer.get_extra_info("peername")):
                    status, body = 403, {"error": f"{path} is answered to loopback peers only "
                                                  "(kubectl exec, kubectl port-forward)"}
                else:
                    status, body = await self.handler(method.upper(), path)
            except Exception as exc:  # noqa: BLE001 - an admin bug must not kill the connection
                log.exception("admin %s %s failed", method, path)
                status, body = 500, {"error": f"{type(exc).__name__}: {exc}"}
            if isinstance(body, bytes):
                ctype = "text/plain; version=0.0.4; charset=utf-8"
                data = body
            else:
                ctype = "application/json"
                data = json.dumps(body, default=str, separators=(",", ":")).encode() + b"\n"
            reason = {200: "OK", 403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed",
                      409: "Conflict", 500: "Internal Server Error",
                      503: "Service Unavailable"}.get(status, "OK")
            writer.write(f"HTTP/1.1 {status} {reason}\r\nContent-Type: {ctype}\r\n"
                         f"Content-Length: {len(data)}\r\nCache-Control: no-store\r\n"
                         "Connection: close\r\n\r\n".encode() + data)
            await writer.drain()
        except (TimeoutError, ConnectionError, asyncio.LimitOverrunError,
                asyncio.IncompleteReadError, ValueError):
            pass
        finally:
            writer.close()


def _local_peer(peer: Any) -> bool:
    """A Unix-socket peer (no address) or a loopback address."""
    if not peer or not isinstance(peer, tuple):
        return True
    import ipaddress

    try:
        return ipaddress.ip_address(str(peer[0]).split("%", 1)[0]).is_loopback
    except ValueError:
        return False


GET_PATHS = ("/healthz", "/readyz", "/status", "/config", "/routes", "/clusters",
             "/nf-instances", "/metrics")
POST_PATHS = ("/drain", "/reload")


def _method_check(method: str, path: str) -> Answer | None:
    base = "/nf-instances" if path.startswith("/nf-instances/") else path
    if base in GET_PATHS:
        return None if method in ("GET", "HEAD") else (405, {"error": "use GET"})
    if base in POST_PATHS:
        return None if method == "POST" else (405, {"error": "use POST"})
    return 404, {"error": f"no such path: {path}",
                 "paths": list(GET_PATHS) + list(POST_PATHS)}


def _version() -> str:
    try:
        from gateway import build_info

        return str(build_info.info().get("nfmesh", "?"))
    except Exception:  # noqa: BLE001
        return "?"


def _config_view(config: Any, path: str | None) -> dict:
    from gateway.config import to_dict

    return {"source": path, "config": redact(to_dict(config))}


def _nf_instances(registry: Any) -> dict:
    if registry is None:
        return {"enabled": False, "count": 0, "by_type": {}, "by_status": {}, "instances": []}
    reg = registry.registry
    items = [nf_summary(p, status) for p, status in reg.instances()]
    items.sort(key=lambda i: (i["nf_type"], i["nf_instance_id"]))
    by_type: dict[str, int] = {}
    by_status: dict[str, int] = {}
    for i in items:
        by_type[i["nf_type"]] = by_type.get(i["nf_type"], 0) + 1
        by_status[i["status"]] = by_status.get(i["status"], 0) + 1
    return {"enabled": True, "store": registry.settings.store if hasattr(registry.settings, "store") else None,
            "version": reg.version, "count": len(items), "by_type": by_type,
            "by_status": by_status, "instances": items}


def _nf_instance(registry: Any, nf_id: str) -> Answer:
    if registry is None:
        return 404, {"error": "the registry is off"}
    from gateway.registry.registry import NotFound, public_view

    try:
        p = registry.registry.get(nf_id)
    except NotFound:
        return 404, {"error": f"no NF instance {nf_id}"}
    return 200, {"nf_instance_id": p.get("nfInstanceId", nf_id), "status": p.get("nfStatus"),
                 "profile": public_view(p, p.get("nfStatus", "REGISTERED"))}


async def store_reachable(registry: Any, timeout: float = 1.0) -> bool | None:
    """None without a registry; else whether its store answers (a store without ``ping``,
    the memory store, is this process and always answers)."""
    if registry is None:
        return None
    ping = getattr(registry.registry.store, "ping", None)
    if ping is None:
        return True
    try:
        await asyncio.wait_for(ping(), timeout)
        return True
    except Exception:  # noqa: BLE001 - any failure means not reachable
        return False


def reload_from_file(apply: Callable[[Any], list[str]], path: str | None) -> Answer:
    """``POST /reload``: the file validated and applied, or refused with its errors."""
    from gateway.config import ConfigError, load_config

    if path is None:
        return 409, {"reloaded": False, "errors": ["running without a config file"]}
    try:
        new = load_config(path)
    except ConfigError as exc:
        return 409, {"reloaded": False, "errors": str(exc).splitlines()}
    except OSError as exc:
        return 409, {"reloaded": False, "errors": [f"cannot read {path}: {exc.strerror}"]}
    pending = apply(new)
    log.info("config reloaded from %s (admin API)%s", path,
             f"; needs a restart to apply: {', '.join(pending)}" if pending else "")
    return 200, {"reloaded": True, "source": path, "pending_restart": pending}


# ---------------------------------------------------------------------------------------------
# one gateway (one worker, or the whole gateway with --workers 1)

class GatewayAdmin:
    """The admin API over one ``gateway.app.Gateway``."""

    def __init__(self, gw: Any, *, metrics: Callable[[], Awaitable[bytes]] | None = None) -> None:
        self.gw = gw
        self.metrics = metrics
        self.http = AdminHttp(self.handle)

    # -- views (plain data; also used by the supervisor through the Unix socket) -------------
    async def readiness(self) -> dict:
        gw = self.gw
        listeners = bool(gw._servers) and all(s.is_serving() for s in gw._servers)
        store = await store_reachable(gw.registry)
        checks = {"listeners": listeners, "registry_store": store,
                  "draining": bool(getattr(gw, "draining", False))}
        ready = listeners and store is not False and not checks["draining"]
        return {"ready": ready, "checks": checks}

    def routes(self) -> dict:
        gw = self.gw
        cfg = gw.config
        from nf_adapters.scp_router import RouteTable

        table = RouteTable.from_config(cfg)
        return {
            "model_c": bool(cfg.scp.model_c),
            "model_d": bool(cfg.registry.enabled),
            "nrf_api": bool(cfg.registry.enabled and cfg.registry.nrf_api),
            "authz": bool(cfg.authz.enabled),
            "routes": [{"name": r.name, "path_prefix": r.path_prefix, "authority": r.authority,
                        "cluster": r.cluster, "timeout_s": r.timeout_s} for r in table.routes],
        }

    def clusters(self) -> dict:
        from nf_adapters.scp_router import cluster_endpoints

        gw = self.gw
        ctl = gw.overload.controller if gw.overload is not None else None
        gates = {}
        if ctl is not None:
            for g in ctl.snapshot():
                ep = g["endpoint"]
                gates[(getattr(ep, "host", str(ep)), getattr(ep, "port", 0))] = g
        seen: set = set()
        clusters = []
        for c in gw.config.clusters:
            eps = []
            for spec, ep in zip(c.endpoints, cluster_endpoints(c), strict=False):
                key = (ep.host, ep.port)
                seen.add(key)
                g = gates.get(key)
                eps.append({"address": endpoint_address(ep.host, ep.port), "host": ep.host,
                            "port": ep.port, "tls": ep.tls, "weight": spec.weight,
                            **(_gate_view(g) if g is not None else _no_gate())})
            clusters.append({"name": c.name, "lb": c.lb, "connect_timeout_s": c.connect_timeout_s,
                             "request_timeout_s": c.request_timeout_s,
                             "max_connections": c.max_connections, "endpoints": eps})
        producers = []
        for key, g in sorted(gates.items(), key=lambda kv: str(kv[0])):
            if key in seen:
                continue
            producers.append({"address": endpoint_address(str(key[0]), int(key[1] or 0)),
                              "host": key[0], "port": key[1], "cluster": g.get("cluster"),
                              **_gate_view(g)})
        overload: dict[str, Any] = {"enabled": ctl is not None}
        if ctl is not None:
            overload.update({"gateway_overloaded": bool(ctl.self_overloaded),
                             "loop_lag_ms": round(float(getattr(ctl, "lag", 0.0)) * 1000.0, 3),
                             "gateway_shed": int(ctl.self_shed),
                             "retries_refused": int(ctl.retries_refused)})
        return {"clusters": clusters, "producers": producers, "overload": overload}

    def totals(self) -> dict:
        gw = self.gw
        gw.report_completions()
        stats = gw.stats
        requests = getattr(stats, "requests", None) or {}
        if callable(requests):
            requests = requests()
        errors = sum(n for (_c, _m, s), n in requests.items() if str(s)[:1] == "5")
        return {"requests": int(sum(requests.values())), "errors_5xx": int(errors)}

    async def status(self) -> dict:
        gw = self.gw
        return {
            "name": gw.config.gateway.name, "version": _version(), "pid": os.getpid(),
            "uptime_s": round(time.monotonic() - gw.started_at, 3) if gw.started_at else 0.0,
            "workers": 1, "backend": gw.backend.NAME if gw.backend is not None else None,
            "listeners": dict(gw.ports), "metrics_port": gw.metrics_port,
            "admin_port": getattr(gw, "admin_port", None),
            "registry": gw.registry is not None or bool(gw.config.registry.enabled),
            "n2": gw.n2 is not None,
            "draining": bool(getattr(gw, "draining", False)),
            "readiness": await self.readiness(),
            "overload": {"enabled": gw.overload is not None},
            **self.totals(),
            "nf_instances": _nf_instances(gw.registry)["count"],
            "n2_associations": _n2_summary(gw.n2),
        }

    # -- HTTP ---------------------------------------------------------------------------------
    async def handle(self, method: str, path: str) -> Answer:
        refused = _method_check(method, path)
        if refused is not None:
            return refused
        gw = self.gw
        if path == "/healthz":
            return 200, {"status": "ok"}
        if path == "/readyz":
            r = await self.readiness()
            return (200 if r["ready"] else 503), r
        if path == "/status":
            return 200, await self.status()
        if path == "/config":
            return 200, _config_view(gw.config, getattr(gw, "config_path", None))
        if path == "/routes":
            return 200, self.routes()
        if path == "/clusters":
            return 200, self.clusters()
        if path == "/nf-instances":
            return 200, _nf_instances(gw.registry)
        if path.startswith("/nf-instances/"):
            return _nf_instance(gw.registry, path.rsplit("/", 1)[1])
        if path == "/metrics":
            if self.metrics is None:
                return 404, {"error": "metrics are off"}
            return 200, await self.metrics()
        if path == "/drain":
            await gw.begin_drain()
            return 200, {"draining": True}
        if path == "/reload":
            return reload_from_file(gw.reload, getattr(gw, "config_path", None))
        return 404, {"error": f"no such path: {path}"}


def _n2_summary(n2: Any) -> dict | None:
    if n2 is None:
        return None
    try:
        return {"gnb": len(n2.gnb_assocs), "amf": len(n2.amf_assocs),
                "ue_contexts": int(n2.router.ue_count)}
    except AttributeError:
        return None


# ---------------------------------------------------------------------------------------------
# the supervisor of --workers N: TCP listener, fan-out to the workers' Unix sockets

async def request_unix(path: str, method: str, url: str, timeout: float = 3.0) -> Answer | None:
    """One HTTP/1.1 request to a worker's admin socket; None when it does not answer."""
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_unix_connection(path), timeout)
    except (OSError, TimeoutError):
        return None
    try:
        writer.write(f"{method} {url} HTTP/1.1\r\nHost: worker\r\nContent-Length: 0\r\n"
                     "Connection: close\r\n\r\n".encode())
        raw = await asyncio.wait_for(reader.read(), timeout)
    except (OSError, TimeoutError):
        return None
    finally:
        writer.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    try:
        status = int(head.split(b" ", 2)[1])
        return status, json.loads(body) if b"application/json" in head else body
    except (IndexError, ValueError):
        return None


_SUMMED = ("in_flight", "queued", "forwarded", "queue_delay_s_sum", "dequeued", "ejections")


def merge_endpoint(into: dict, other: dict) -> None:
    """Add a worker's endpoint view to ``into`` (counters summed, states or-ed, the worst
    health kept, the limit summed: each worker limits on its own)."""
    for k in _SUMMED:
        into[k] = (into.get(k) or 0) + (other.get(k) or 0)
    if other.get("limit") is not None:
        into["limit"] = (into.get("limit") or 0) + other["limit"]
    into["ejected"] = bool(into.get("ejected")) or bool(other.get("ejected"))
    into["overloaded"] = bool(into.get("overloaded")) or bool(other.get("overloaded"))
    into["oci_reduction"] = max(into.get("oci_reduction") or 0.0, other.get("oci_reduction") or 0.0)
    rank = ("healthy", "overloaded", "oci", "ejected")
    if rank.index(other.get("health", "healthy")) > rank.index(into.get("health", "healthy")):
        into["health"] = other["health"]
    shed = dict(into.get("shed") or {})
    for r, n in (other.get("shed") or {}).items():
        shed[r] = shed.get(r, 0) + n
    into["shed"] = shed


def merge_clusters(views: list[dict]) -> dict:
    """The workers' ``/clusters`` answers as one (same shape, ``workers`` added)."""
    if not views:
        return {"clusters": [], "producers": [], "overload": {"enabled": False}, "workers": 0}
    import copy

    out = copy.deepcopy(views[0])
    for v in views[1:]:
        for c_out, c in zip(out["clusters"], v["clusters"], strict=False):
            for e_out, e in zip(c_out["endpoints"], c["endpoints"], strict=False):
                merge_endpoint(e_out, e)
        known = {p["address"]: p for p in out["producers"]}
        for p in v["producers"]:
            if p["address"] in known:
                merge_endpoint(known[p["address"]], p)
            else:
                out["producers"].append(copy.deepcopy(p))
                known[p["address"]] = out["producers"][-1]
        ov, o = out["overload"], v["overload"]
        if o.get("enabled"):
            ov["gateway_overloaded"] = bool(ov.get("gateway_overloaded")) or bool(o.get("gateway_overloaded"))
            ov["loop_lag_ms"] = max(ov.get("loop_lag_ms", 0.0), o.get("loop_lag_ms", 0.0))
            for k in ("gateway_shed", "retries_refused"):
                ov[k] = ov.get(k, 0) + o.get(k, 0)
    out["workers"] = len(views)
    return out


class SupervisorAdmin:
    """The admin API of ``--workers N``; ``control`` is the control plane (the registry) or None."""

    def __init__(self, config: Any, config_path: str | None, worker_sockets: list[str],
                 control: Any = None,
                 metrics: Callable[[], Awaitable[bytes]] | None = None,
                 reload_workers: Callable[[], None] | None = None) -> None:
        self.config = config
        self.config_path = config_path
        self.sockets = worker_sockets
        self.control = control
        self.metrics = metrics
        self.reload_workers = reload_workers
        self.started_at = time.monotonic()
        self.draining = False
        self.admin_port: int | None = None
        self.http = AdminHttp(self.handle)

    async def _all(self, method: str, url: str) -> list[Answer | None]:
        return list(await asyncio.gather(*(request_unix(p, method, url) for p in self.sockets)))

    async def readiness(self) -> dict:
        answers = await self._all("GET", "/readyz")
        workers = [a is not None and a[0] == 200 for a in answers]
        registry = self.control.service if self.control is not None else None
        store = await store_reachable(registry)
        checks = {"listeners": all(workers), "workers_ready": sum(workers),
                  "workers": len(workers), "registry_store": store, "draining": self.draining}
        return {"ready": all(workers) and store is not False and not self.draining,
                "checks": checks}

    async def handle(self, method: str, path: str) -> Answer:
        refused = _method_check(method, path)
        if refused is not None:
            return refused
        registry = self.control.service if self.control is not None else None
        if path == "/healthz":
            return 200, {"status": "ok"}
        if path == "/readyz":
            r = await self.readiness()
            return (200 if r["ready"] else 503), r
        if path == "/config":
            return 200, _config_view(self.config, self.config_path)
        if path == "/nf-instances":
            return 200, _nf_instances(registry)
        if path.startswith("/nf-instances/"):
            return _nf_instance(registry, path.rsplit("/", 1)[1])
        if path == "/metrics":
            if self.metrics is None:
                return 404, {"error": "metrics are off"}
            return 200, await self.metrics()
        if path == "/routes":
            for a in await self._all("GET", "/routes"):
                if a is not None and a[0] == 200:
                    return a
            return 503, {"error": "no worker answered"}
        if path == "/clusters":
            views = [a[1] for a in await self._all("GET", "/clusters")
                     if a is not None and a[0] == 200 and isinstance(a[1], dict)]
            return 200, merge_clusters(views)
        if path == "/status":
            answers = [a[1] for a in await self._all("GET", "/status")
                       if a is not None and a[0] == 200 and isinstance(a[1], dict)]
            first = answers[0] if answers else {}
            return 200, {
                "name": self.config.gateway.name, "version": _version(), "pid": os.getpid(),
                "uptime_s": round(time.monotonic() - self.started_at, 3),
                "workers": len(self.sockets), "workers_answering": len(answers),
                "backend": first.get("backend"), "listeners": first.get("listeners", {}),
                "metrics_port": None, "admin_port": self.admin_port,
                "registry": registry is not None, "n2": any(a.get("n2") for a in answers),
                "draining": self.draining, "readiness": await self.readiness(),
                "overload": first.get("overload", {"enabled": False}),
                "requests": sum(a.get("requests", 0) for a in answers),
                "errors_5xx": sum(a.get("errors_5xx", 0) for a in answers),
                "nf_instances": _nf_instances(registry)["count"],
                "n2_associations": first.get("n2_associations"),
            }
        if path == "/drain":
            self.draining = True
            await self._all("POST", "/drain")
            return 200, {"draining": True}
        if path == "/reload":
            def apply(new: Any) -> list[str]:
                self.config = new
                if self.reload_workers is not None:
                    self.reload_workers()  # each worker reads the file again (SIGHUP)
                return []
            return reload_from_file(apply, self.config_path)
        return 404, {"error": f"no such path: {path}"}
