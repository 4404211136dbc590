"""One gateway instance on one event loop: wires config, routers, engine, proxy and services.

``Gateway(config).start()`` builds, in order: the HTTP/2 backend and settings, the route
snapshot (static routes + SCP model C, with the registry's NRF API and model D routers in front
when the registry is on), the upstream pools, the proxy, the listeners, the metrics endpoint,
and the N2 service.  ``stop(drain=True)`` sends GOAWAY on every downstream connection, lets
in-flight requests finish (bounded by ``gateway.drain_timeout_s``), then closes everything.

The data plane holds the router in a ``RouterSlot``; ``publish_router`` swaps it in one
assignment, so the data plane never waits on the control plane.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from dataplane.engine import load_backend
from dataplane.routing import Router, RouterSlot
from gateway.access_log import AccessLog, load_access_log  # noqa: F401 (AccessLog: re-exported)
from gateway.metrics import MetricsServer, load_request_stats, new_registry

log = logging.getLogger("nfmesh.gateway")


class StaticRoutes:
    """The static routes + model C router behind one indirection, so that a config reload can
    replace it under routers that hold it (the registry's chain, the workers' chains)."""

    __slots__ = ("current",)

    def __init__(self, router: Any) -> None:
        self.current = router

    def try_route(self, headers: Any, peer: dict) -> Any:
        return self.current.try_route(headers, peer)

    def route(self, headers: Any, peer: dict) -> Any:
        return self.current.route(headers, peer)

    def hop_stamp(self, headers: Any) -> Any:
        return self.current.hop_stamp(headers)


# config sections a reload applies at once; the others need a restart (listeners, engine, ...)
HOT_SECTIONS = ("clusters", "routes", "scp", "authz", "overload", "tracing")


class Gateway:
    """The gateway's pieces for one worker."""

    def __init__(
        self,
        config: Any,
        *,
        worker: int = 0,
        listen: tuple[str, int] | None = None,
        backend: str | None = None,
        metrics: tuple[str, int] | None = None,
        reuse_port: bool = False,
        control_plane: dict | None = None,
        metrics_socket: str | None = None,
        admin_socket: str | None = None,
    ) -> None:
        self.config = config
        self.worker = worker
        self.listen_override = listen
        self.backend_name = backend or config.gateway.backend
        self.metrics_override = metrics
        self.reuse_port = reuse_port
        self.control_plane = control_plane
        self.metrics_socket = metrics_socket
        self.snapshots: Any = None
        self.backend: Any = None
        self.stats = load_request_stats()()  # compiled when built (NFMESH_STATS to choose)
        self.ports: dict[str, int] = {}
        self.metrics_port: int | None = None
        self.router_slot: RouterSlot | None = None
        self.registry: Any = None
        self.n2: Any = None
        self._servers: list[asyncio.AbstractServer] = []
        self._metrics: MetricsServer | None = None
        self.proxy: Any = None
        self.pools: Any = None
        self.started_at = 0.0
        self.static_routes: StaticRoutes | None = None
        self.worker_routing: Any = None
        self.overload: Any = None  # gateway.overload.OverloadProtection, when enabled
        self.admin_socket = admin_socket  # a worker: its supervisor serves the admin port
        self.admin: Any = None  # gateway.admin.GatewayAdmin
        self.admin_port: int | None = None
        self.config_path: str | None = None  # for the admin API's reload
        self.draining = False
        self.span_export: Any = None  # gateway.span_batcher.SpanBatcher with tracing.otlp_endpoint
        self.started_tracing = config.tracing  # the tracing section the span export started with

    # -- routing ---------------------------------------------------------------------------
    def _static_router(self) -> Router:
        from nf_adapters.scp_router import ScpRouter

        return ScpRouter.from_config(self.config)

    def _endpoint_limits(self) -> dict:
        """Each cluster endpoint's ``(max_connections, connect_timeout_s)`` for the upstream
        pools; an endpoint in several clusters gets the smaller of each."""
        from nf_adapters.scp_router import cluster_endpoints

        limits: dict = {}
        for c in self.config.clusters:
            mine = (c.max_connections, c.connect_timeout_s)
            for ep in cluster_endpoints(c):
                have = limits.get(ep)
                limits[ep] = mine if have is None else (min(have[0], mine[0]),
                                                         min(have[1], mine[1]))
        return limits

    def publish_router(self, router: Router) -> None:
        """Swap the data plane's router atomically (called by the control plane).  With
        ``authz`` on, every router is wrapped so that a caller's NF type (from its mesh
        certificate) is checked against the service before any routing."""
        assert self.router_slot is not None
        authz = self.config.authz
        if authz.enabled:
            from gateway.identity import peer_nf_types
            from nf_adapters.authz import NfTypeAuthzRouter, NfTypePolicy

            policy = NfTypePolicy(authz.services, default_allow=authz.default == "allow")
            router = NfTypeAuthzRouter(router, policy, peer_nf_types)
        from gateway import cert_renewal, token_checks  # mesh_ca.csr_api, oauth2.verify

        tracing = self.config.tracing
        if tracing.enabled:  # W3C traceparent of this hop on every forwarded request
            from gateway.tracing import TraceContextRouter

            spans = self.span_export.submit if self.span_export is not None else None
            router = TraceContextRouter(router, tracing.sample_ratio, spans=spans)
        self.router_slot.current = cert_renewal.wrap(self, token_checks.wrap(self, router))

    def reload(self, new: Any) -> list[str]:
        """Apply a new, already validated config: static routes, clusters, SCP options and
        authorisation at once (in-flight requests keep the route they got); returns the
        sections that changed but only take effect after a restart."""
        import msgspec

        from gateway.tls_reload import reload_now

        reload_now(self)  # TLS certificates, keys, CA bundles and CRLs read again
        pending = [name for name in type(new).__struct_fields__
                   if name not in HOT_SECTIONS
                   and msgspec.to_builtins(getattr(new, name)) != msgspec.to_builtins(getattr(self.config, name))]
        if _span_export_settings(new.tracing) != _span_export_settings(self.started_tracing):
            pending.append("tracing")  # the OTLP export settings: read at start only
        self.config = msgspec.structs.replace(self.config, **{k: getattr(new, k) for k in HOT_SECTIONS})
        static = self._static_router()
        if self.pools is not None:
            self.pools.set_endpoint_limits(self._endpoint_limits())
        if self.overload is not None and new.overload.enabled:
            self.overload.reload(new.overload)
        elif (self.overload is not None) != new.overload.enabled:
            pending.append("overload")  # switching it on or off needs a restart
        if self.static_routes is None:
            self.publish_router(static)
            return pending
        self.static_routes.current = static
        # rebuild the outer chain too, so that a changed authz policy wraps it
        publisher = getattr(self.registry, "publisher", None)
        if publisher is not None:
            publisher.publish()
        elif self.worker_routing is not None and self.worker_routing.last is not None:
            self.worker_routing.apply(*self.worker_routing.last)
        return pending

    # -- life cycle -------------------------------------------------------------------------
    async def start(self) -> None:
        from dataplane.listener import serve
        from dataplane.proxy import load_proxy
        from dataplane.upstream_pool import UpstreamPools
        from gateway.overload import OverloadProtection
        from nf_adapters.problem_details import problem_responder

        cfg = self.config
        self.started_at = time.monotonic()
        self.backend = load_backend(self.backend_name)
        settings = cfg.http2.to_h2_settings()
        self.overload = OverloadProtection.from_config(cfg)
        static: Any = self._static_router()
        self.router_slot = RouterSlot(static)
        if cfg.tracing.otlp_endpoint:  # hop spans, exported by a thread (gateway.otlp_export)
            from gateway.otlp_export import start_span_export

            self.span_export = start_span_export(
                cfg.tracing, instance=f"{cfg.gateway.name}-{self.worker}")
        if cfg.registry.enabled:
            static = self.static_routes = StaticRoutes(static)
        self.publish_router(static)
        if cfg.registry.enabled and self.control_plane is not None:
            await self._follow_control_plane(static)
        elif cfg.registry.enabled:
            from gateway.registry.startup import start_registry

            # NRF API first, then model D (3gpp-Sbi-Discovery-*), then model C / static routes
            self.registry = await start_registry(cfg, static, self.publish_router)
            publisher = getattr(self.registry, "publisher", None)
            if publisher is not None and self.overload is not None:
                publisher.live_loads = self.overload.responses  # Lci steers model D
                publisher.publish()
        from gateway.upstream_tls import pool_options  # upstream_tls: contexts, producer identity

        self.pools = UpstreamPools(self.backend, settings, connect_timeout=2.0,
                                   **pool_options(cfg))
        self.pools.set_endpoint_limits(self._endpoint_limits())
        access_log = load_access_log()(cfg.logging.format) if cfg.logging.access_log else None
        self.access_log = access_log
        responder = problem_responder
        proxy_kwargs: dict = {}
        if self.overload is not None:
            settings = self.overload.h2_settings(settings)
            responder = self.overload.error_responder(problem_responder)
            proxy_kwargs = self.overload.proxy_kwargs()
            self.overload.controller.report_completions = self.backend.report_completions
            self.overload.start()
        self.proxy = load_proxy()(self.router_slot, self.pools, error_responder=responder,
                                  stats=self.stats, access_log=access_log, **proxy_kwargs)
        listeners = list(cfg.listeners)
        if self.listen_override is not None:
            host, port = self.listen_override
            listeners = [_H2cListener("sbi", host, port)]
        for lst in listeners:
            ssl_ctx = None
            if lst.protocol == "tls":  # files watched: rotation, CRL, revoked peers cut
                from gateway.tls_reload import listener_context

                ssl_ctx = listener_context(self, lst.tls, lst.name)
            server = await serve(lst.host, lst.port, lambda: self.proxy, self.backend, settings,
                                 ssl_context=ssl_ctx, reuse_port=self.reuse_port)
            self._servers.append(server)
            self.ports[lst.name] = server.sockets[0].getsockname()[1]
        if getattr(cfg, "ngap", None) is not None and cfg.ngap.enabled:
            from gateway.n2 import start_n2

            self.n2 = await start_n2(cfg.ngap)
        mcfg = cfg.metrics
        # workers of --workers N serve it on a Unix socket; their supervisor has the port
        admin_on = bool(self.admin_socket) or (cfg.admin.enabled and not self.reuse_port)
        if mcfg.enabled or self.metrics_override or self.metrics_socket or admin_on:
            collectors: list[object] = [self.stats]
            if self.registry is not None and hasattr(self.registry, "collectors"):
                collectors.extend(self.registry.collectors())
            if self.n2 is not None:
                collectors.append(self.n2)  # N2: associations, UEs, messages, path state
            if self.overload is not None:
                collectors.append(self.overload)  # limits, queues, shed, ejections, OCI
            from gateway.cert_expiry import CertificateExpiry

            collectors.append(CertificateExpiry(cfg))  # TLS listeners' certificate expiry
            from gateway.security_metrics import SecurityCollector

            collectors.append(SecurityCollector(self))  # tokens, TLS reloads, revocation
            if self.span_export is not None:
                from gateway.otlp_export import SpanExportCollector

                collectors.append(SpanExportCollector(self.span_export))
            self._metrics = MetricsServer(new_registry(*collectors), ready=lambda: bool(self._servers),
                                          before_scrape=self.report_completions)
            if not (mcfg.enabled or self.metrics_override or self.metrics_socket):
                pass  # only the admin API's /metrics
            elif self.metrics_socket:  # a worker: its supervisor serves the port and scrapes this
                await self._metrics.start_unix(self.metrics_socket)
            else:
                host, port = self.metrics_override or (mcfg.host, mcfg.port)
                self.metrics_port = await self._metrics.start(host, port)
        if admin_on:
            await self._start_admin()

    async def _start_admin(self) -> None:
        """The admin API (``gateway.admin``); a port already taken is logged, not fatal."""
        from gateway.admin import GatewayAdmin

        self.admin = GatewayAdmin(self, metrics=self._metrics._body if self._metrics else None)
        if self.admin_socket:
            await self.admin.http.start_unix(self.admin_socket)
            return
        acfg = self.config.admin
        try:
            self.admin_port = await self.admin.http.start(acfg.host, acfg.port)
        except OSError as exc:
            log.warning("admin API: cannot listen on %s:%s (%s); serving without it",
                        acfg.host, acfg.port, exc.strerror or exc)
            self.admin = None

    async def begin_drain(self) -> None:
        """Admin ``/drain``: stop accepting, GOAWAY every connection, readiness goes 503;
        the process keeps running (and answering the admin API) until it is stopped."""
        if self.draining:
            return
        self.draining = True
        log.info("draining (admin API): listeners closed, GOAWAY sent")
        for server in self._servers:
            server.close()
        if self.proxy is not None:
            self.proxy.drain()

    async def _follow_control_plane(self, static: Router) -> None:
        """Worker mode: route from the snapshots the control plane pushes (see runner)."""
        from gateway.control_plane import ControlPlaneAddress, NrfForwardRouter, WorkerRouting
        from gateway.registry.startup import settings_of
        from gateway.snapshot_channel import SnapshotSubscriber

        address = ControlPlaneAddress.from_json(self.control_plane or {})
        own_root = settings_of(self.config).api_root
        routing = WorkerRouting(static, NrfForwardRouter(address, (own_root,)), self.publish_router)
        self.worker_routing = routing
        if self.overload is not None:
            routing.live_loads = self.overload.responses  # Lci steers model D
        self.snapshots = SnapshotSubscriber(address.snapshot_socket, routing.apply)
        self.snapshots.start()
        try:  # start with the current registry; if the control plane is slow, route without it
            await asyncio.wait_for(asyncio.shield(self.snapshots.first), 5.0)
        except TimeoutError:
            log.warning("no route snapshot from the control plane yet; model D waits for it")

    def describe(self) -> str:
        parts = [f"{name}=:{port}" for name, port in self.ports.items()]
        if self.metrics_port:
            parts.append(f"metrics=:{self.metrics_port}")
        if self.admin_port:
            parts.append(f"admin=:{self.admin_port}")
        parts.append(f"backend={self.backend.NAME if self.backend else '?'}")
        if self.registry is not None:
            parts.append("registry=on")
        return " ".join(parts)

    async def stop(self, drain: bool = True) -> None:
        timeout = float(getattr(self.config.gateway, "drain_timeout_s", 10) or 10)
        for server in self._servers:
            server.close()
        if self.proxy is not None:
            if drain:
                self.proxy.drain()
                if not await self.proxy.wait_drained(timeout):
                    log.warning("drain did not finish in %.0f s; closed the rest", timeout)
            else:
                await self.proxy.wait_drained(0)
        for server in self._servers:
            try:
                await asyncio.wait_for(server.wait_closed(), 1.0)
            except TimeoutError:
                pass
        if self.pools is not None:
            self.pools.close()
        if self.overload is not None:
            self.overload.stop()
        if self.n2 is not None:
            await self.n2.close()
        if self.registry is not None:
            await self.registry.close()
        if self.snapshots is not None:
            await self.snapshots.close()
        if self._metrics is not None:
            await self._metrics.close()
        if self.admin is not None:
            await self.admin.http.close()
        self.report_completions()  # the last exchanges reach metrics and the access log
        if getattr(self, "access_log", None) is not None:
            self.access_log.flush()
        if self.span_export is not None:  # the last spans go out (in a thread: it may wait)
            await asyncio.to_thread(self.span_export.close, 5.0)

    def report_completions(self) -> None:
        """Let the HTTP/2 engine tell the proxy now of every exchange that has finished
        (it otherwise waits for a quiet moment of the loop: ``dataplane.engine``)."""
        if self.backend is not None:
            self.backend.report_completions()


def _span_export_settings(tracing: Any) -> tuple:
    """The tracing fields the span export reads when the gateway starts (not on a reload)."""
    return (tracing.otlp_endpoint, tracing.otlp_timeout_s, tracing.service_name,
            tracing.otlp_queue_size, tracing.otlp_batch_size, tracing.otlp_flush_interval_ms)


class _H2cListener:
    """The listener ``--listen HOST:PORT`` stands for."""

    def __init__(self, name: str, host: str, port: int) -> None:
        self.name, self.host, self.port, self.protocol, self.tls = name, host, port, "h2c", None
