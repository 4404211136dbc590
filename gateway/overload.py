"""Wiring of overload protection into one data-plane worker: the ``overload`` config section
turned into the admission controller (``dataplane.admission``), the 3GPP response tap for
``3gpp-Sbi-Oci``/``3gpp-Sbi-Lci`` and the deadline re-stamping (``nf_adapters.overload_control``),
the gateway's own OCI on its answers while it is overloaded itself, and the Prometheus view.

``OverloadProtection.from_config(cfg)`` is None when ``overload.enabled`` is false: the proxy
then forwards every request as it comes (the build measured "without protection").
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable, Iterable
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from dataplane.admission import load_admission
from dataplane.engine import H2Settings
from dataplane.routing import LocalResponse
from nf_adapters.overload_control import TAPPED_HEADERS, OverloadResponses, Restamp, scp_oci


def _endpoint_label(key: object) -> str:
    host = getattr(key, "host", None)
    port = getattr(key, "port", None)
    if host is None:
        return str(key)
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _band(priority: int, top_band: int) -> str:
    return "high" if priority <= top_band else ("normal" if priority <= 23 else "low")


# per producer endpoint (labels endpoint, cluster): (family, name, help, value from a snapshot)
_ENDPOINT_METRICS = [
    (GaugeMetricFamily, "nfmesh_producer_concurrency_limit",
     "Adaptive concurrency limit per producer endpoint", lambda g: g["limit"]),
    (GaugeMetricFamily, "nfmesh_producer_in_flight",
     "Requests in flight to the producer endpoint", lambda g: g["in_flight"]),
    (GaugeMetricFamily, "nfmesh_producer_queued",
     "Requests waiting at the SCP for the producer endpoint", lambda g: g["queued"]),
    (CounterMetricFamily, "nfmesh_producer_queue_delay_seconds",
     "Time requests waited at the SCP before being sent (sum; _count in "
     "nfmesh_producer_dequeued)", lambda g: g["queue_delay_s_sum"]),
    (CounterMetricFamily, "nfmesh_producer_dequeued",
     "Requests taken from the SCP's wait queue", lambda g: g["queue_delay_n"]),
    (GaugeMetricFamily, "nfmesh_producer_ejected",
     "1 while outlier detection has the endpoint ejected",
     lambda g: 1.0 if g["ejected"] else 0.0),
    (CounterMetricFamily, "nfmesh_producer_ejections",
     "Times outlier detection ejected the endpoint", lambda g: g["ejections"]),
    (GaugeMetricFamily, "nfmesh_producer_oci_reduction_ratio",
     "Share of traffic refused toward the endpoint for a 3gpp-Sbi-Oci (0: none active)",
     lambda g: g["oci_reduction"]),
    (GaugeMetricFamily, "nfmesh_producer_overloaded",
     "1 while requests to the endpoint queue at the SCP longer than the queue interval",
     lambda g: 1.0 if g["overloaded"] else 0.0),
]


class OverloadProtection:
    """The pieces for one worker (see the module doc)."""

    def __init__(self, section: Any, fqdn: str) -> None:
        self.section = section
        self.fqdn = fqdn
        self.controller = load_admission()(section.to_settings())  # compiled when built
        self.responses = OverloadResponses(self.controller)
        self.restamp = Restamp()

    @classmethod
    def from_config(cls, cfg: Any) -> OverloadProtection | None:
        section = cfg.overload
        if not section.enabled:
            return None
        return cls(section, cfg.via_name)

    # ---- what the proxy and the engine get ----------------------------------------------------
    def h2_settings(self, settings: H2Settings) -> H2Settings:
        """``settings`` telling the proxy when a client holds up its response (its admission
        slot goes back then), and with the OCI/LCI response tap."""
        settings = dataclasses.replace(settings, report_response_stall=True)
        if not self.section.honour_oci:
            return settings
        return dataclasses.replace(settings, tap_response_headers=TAPPED_HEADERS)

    def proxy_kwargs(self) -> dict:
        return {"admission": self.controller, "restamp": self.restamp,
                "response_tap": self.responses if self.section.honour_oci else None}

    def error_responder(self, inner: Callable[[int, str, str], LocalResponse]
                        ) -> Callable[[int, str, str], LocalResponse]:
        """``inner`` with the gateway's own ``3gpp-Sbi-Oci`` (scope SCP-FQDN) added to its
        answers while the gateway is overloaded itself."""
        ctl = self.controller
        validity = self.section.own_oci_validity_s
        memo: dict[tuple[int, str, str], LocalResponse] = {}

        def respond(status: int, cause: str, detail: str) -> LocalResponse:
            # under overload most answers are the same few refusals: build each once
            key = (status, cause, detail)
            resp = memo.get(key)
            if resp is None:
                resp = inner(status, cause, detail)
                if len(memo) >= 256:
                    memo.clear()
                memo[key] = resp
            if ctl.self_overloaded:
                reduction = max(10, min(90, round(ctl.lag / max(ctl.settings.self_lag_target_s,
                                                                1e-3) * 25)))
                resp = LocalResponse(resp.status, list(resp.headers) + [
                    (b"3gpp-sbi-oci", scp_oci(self.fqdn, reduction, validity))], resp.body)
            return resp

        return respond

    def start(self) -> None:
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return
        self.controller.start_lag_monitor()

    def stop(self) -> None:
        self.controller.stop()

    def reload(self, section: Any) -> None:
        """A SIGHUP with a validated config: new knobs, learned state kept."""
        self.section = section
        self.controller.configure(section.to_settings())

    # ---- Prometheus ---------------------------------------------------------------------------
    def collect(self) -> Iterable:
        ctl = self.controller
        top = ctl.settings.top_band
        families = [(kind(name, doc, labels=["endpoint", "cluster"]), read)
                    for kind, name, doc, read in _ENDPOINT_METRICS]
        shed = CounterMetricFamily("nfmesh_requests_shed",
                                   "Requests refused by overload protection, by reason and "
                                   "priority band", labels=["endpoint", "reason", "band"])
        for g in ctl.snapshot():
            lab = [_endpoint_label(g["endpoint"]), g["cluster"]]
            for family, read in families:
                family.add_metric(lab, read(g))
            bands: dict[tuple[str, str], int] = {}
            for (reason, prio), n in g["shed"].items():
                k = (reason, _band(prio, top))
                bands[k] = bands.get(k, 0) + n
            for (reason, band), n in sorted(bands.items()):
                shed.add_metric([lab[0], reason, band], n)
        yield from (family for family, _ in families)
        yield shed
        malformed = CounterMetricFamily("nfmesh_overload_headers_malformed",
                                        "3gpp-Sbi-Oci/-Lci from producers that did not parse "
                                        "(dropped, not relayed)", labels=["header"])
        received = CounterMetricFamily("nfmesh_overload_headers_received",
                                       "Valid 3gpp-Sbi-Oci/-Lci received from producers",
                                       labels=["header"])
        for h in ("oci", "lci"):
            malformed.add_metric([h], self.responses.malformed[h])
            received.add_metric([h], self.responses.received[h])
        yield malformed
        yield received
        yield CounterMetricFamily("nfmesh_retries_refused",
                                  "Reselections and retries refused by the retry budget",
                                  value=ctl.retries_refused)
        yield GaugeMetricFamily("nfmesh_gateway_overloaded",
                                "1 while the gateway's own event loop lags past its target",
                                value=1.0 if ctl.self_overloaded else 0.0)
        yield CounterMetricFamily("nfmesh_gateway_shed",
                                  "Requests refused because the gateway itself was overloaded",
                                  value=ctl.self_shed)
