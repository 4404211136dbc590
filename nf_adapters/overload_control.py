"""3GPP overload and load control for the SCP path (TS 29.500 §6.3, §6.4, §6.11): what the
generic admission layer (``dataplane.admission``) needs to know of SBI requests and
responses.

Requests (called by the routers, once per request):

* ``message_priority(raw)``: ``3gpp-Sbi-Message-Priority`` 0..31 (0 the highest), or the 400
  ProblemDetails that answers a malformed value (never forwarded);
* ``consumer_key(peer, user_agent)``: who sent it, for the per-consumer rate and cap;
* ``scope_keys(...)``: the overload scopes a model D producer service belongs to;
* ``Restamp``: the proxy calls it when it sends a request that carried
  ``3gpp-Sbi-Max-Rsp-Time``: ``3gpp-Sbi-Sender-Timestamp`` becomes now and
  ``3gpp-Sbi-Max-Rsp-Time`` the milliseconds left, so the next hop sees the time that is
  really left after the SCP's queue (§6.11).

Responses (``OverloadResponses``, the proxy's response tap for ``3gpp-sbi-oci`` and
``3gpp-sbi-lci``):

* a valid OCI (any scope the ABNF allows) is kept per scope, newest timestamp wins, until its
  period of validity ends (0 ends it at once), and turned into shedding: the answering
  endpoint's gate and, for model D, every producer of the same NF instance, NF set, service
  instance or service set (``scope_keys``) get that share of their traffic refused, lowest
  priority first;
* a valid LCI updates ``loads`` (NF instance id -> load %), which model D selection prefers to
  the NRF's older ``load``;
* malformed ones are dropped (not relayed) and counted; valid ones are relayed to the consumer.

``scp_oci(...)`` is the gateway's own OCI (scope ``SCP-FQDN``) for when it is overloaded itself.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Callable, Iterable

from dataplane.engine import Headers
from dataplane.routing import LocalResponse
from nf_adapters import sbi_headers as sh
from nf_adapters.problem_details import problem

log = logging.getLogger("nfmesh.overload")

OCI_H = sh.OCI_H
LCI_H = sh.LCI_H
TAPPED_HEADERS = (OCI_H, LCI_H)
_REPEATED = b"\x00"  # what the header scan reports for a repeated single-valued header
_RSP = sh.MAX_RSP_TIME_H
_TS = sh.SENDER_TIMESTAMP_H

# scope kind (as in the ABNF) -> the key prefix the routers use in Forward.scopes
SCOPE_PREFIX = {
    "NF-Instance": "nfinst:", "NF-Set": "nfset:", "NF-Service-Instance": "nfsvcinst:",
    "NF-Service-Set": "nfsvcset:", "SCP-FQDN": "scp:", "SEPP-FQDN": "sepp:",
}


def message_priority(raw: bytes) -> int | LocalResponse:
    """``3gpp-Sbi-Message-Priority`` as an int 0..31, or the 400 answer for a bad or repeated
    value (the request is then never forwarded)."""
    try:
        if raw == _REPEATED:
            raise sh.SbiHeaderError("3gpp-Sbi-Message-Priority", "header repeated")
        return sh.parse_message_priority(raw)
    except sh.SbiHeaderError as exc:
        return problem(400, "OPTIONAL_IE_INCORRECT", f"invalid {exc.header}: {exc.reason}",
                       [(exc.header, exc.reason)])


def consumer_key(peer: dict | None, user_agent: bytes | None) -> object:
    """Who sent the request, for the per-consumer rate and in-flight cap: the NF instance of a
    verified mesh certificate when the listener has identified one, else the ``User-Agent``
    value (TS 29.500 §5.2.2.2: the NF type then the instance id or FQDN), else the downstream
    connection's address (the listener's ``peername`` without the port: a client that
    reconnects, or opens many connections, stays one consumer and cannot come back as a
    newcomer that borrows past its own cap); None when there is none of these."""
    if peer:
        ident = peer.get("nf_identity")
        inst = getattr(ident, "instance_id", None) if ident is not None else None
        if inst:
            return inst
        if user_agent is None:
            name = peer.get("peername")
            return name[0] if type(name) is tuple and name else name
    return user_agent


def scope_keys(nf_instance_id: str, nf_set_ids: Iterable[str], service_instance_id: str = "",
               service_set_ids: Iterable[str] = ()) -> tuple[str, ...]:
    """The ``Forward.scopes`` keys of one producer service (matched against OCI scopes)."""
    keys = [SCOPE_PREFIX["NF-Instance"] + nf_instance_id.lower()]
    keys += [SCOPE_PREFIX["NF-Set"] + s for s in nf_set_ids]
    if service_instance_id:
        keys.append(f"{SCOPE_PREFIX['NF-Service-Instance']}{nf_instance_id.lower()}/"
                    f"{service_instance_id}")
    keys += [SCOPE_PREFIX["NF-Service-Set"] + s for s in service_set_ids]
    return tuple(keys)


def _oci_scope_key(scope: sh.ControlScope) -> str | None:
    prefix = SCOPE_PREFIX.get(scope.kind)
    if prefix is None:
        return None
    if scope.kind == "NF-Instance":
        return prefix + scope.value.lower()
    if scope.kind == "NF-Service-Instance":
        inst = dict(scope.extra).get("NF-Inst", "")
        return f"{prefix}{inst.lower()}/{scope.value}"
    return prefix + scope.value


class Restamp:
    """``restamp(headers, remaining_s)``: the headers with ``3gpp-Sbi-Sender-Timestamp`` set to
    now and ``3gpp-Sbi-Max-Rsp-Time`` to the milliseconds left (at least 1)."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock

    def __call__(self, headers: Headers, remaining_s: float) -> Headers:
        ms = max(1, min(99999, int(remaining_s * 1000)))
        stamp = sh.format_sender_timestamp(dt.datetime.fromtimestamp(self.clock(), dt.UTC))
        out = [(k, v) for k, v in headers if k != _RSP and k != _TS]
        out.append((_TS, stamp))
        out.append((_RSP, str(ms).encode()))
        return out


class OverloadResponses:
    """The proxy's response tap: OCI and LCI from producers (see the module doc)."""

    def __init__(self, controller, clock: Callable[[], float] = time.time,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.controller = controller  # dataplane.admission.AdmissionController
        self.clock = clock
        self.monotonic = monotonic
        self.oci: dict[str, tuple[float, int, float]] = {}  # scope -> (timestamp, %, until)
        self.loads: dict[str, tuple[int, float]] = {}  # nf instance id -> (load %, timestamp)
        self.loads_version = 0
        self.malformed = {"oci": 0, "lci": 0}
        self.received = {"oci": 0, "lci": 0}

    def __call__(self, ex, status: int, fields: Headers) -> Headers:
        """``fields``: the tapped response headers of one exchange; returns what to relay."""
        relay: Headers = []
        for name, value in fields:
            if name == OCI_H:
                try:
                    elements = sh.parse_oci(value)
                except sh.SbiHeaderError as exc:
                    self.malformed["oci"] += 1
                    log.debug("dropped a malformed 3gpp-Sbi-Oci from %s: %s", ex.endpoint, exc)
                    continue
                self.received["oci"] += 1
                for e in elements:
                    self._overload(ex, e)
                relay.append((name, value))
            elif name == LCI_H:
                try:
                    loads = sh.parse_lci(value)
                except sh.SbiHeaderError as exc:
                    self.malformed["lci"] += 1
                    log.debug("dropped a malformed 3gpp-Sbi-Lci from %s: %s", ex.endpoint, exc)
                    continue
                self.received["lci"] += 1
                for e in loads:
                    self._load(e)
                relay.append((name, value))
            else:
                relay.append((name, value))
        return relay

    def _overload(self, ex, e: sh.OverloadControl) -> None:
        key = _oci_scope_key(e.scope)
        if key is None:  # a consumer-side scope (NFC-*, Callback-Uri): not ours to apply
            return
        ts = e.timestamp.timestamp()
        held = self.oci.get(key)
        if held is not None and held[0] >= ts:
            return  # not newer than what we hold
        now_wall = self.clock()
        left = min(float(e.validity_s), ts + e.validity_s - now_wall) if e.validity_s else 0.0
        fraction = e.reduction_pct / 100.0 if left > 0 else 0.0
        until = self.monotonic() + left if left > 0 else 0.0
        self.oci[key] = (ts, e.reduction_pct, until)
        ctl = self.controller
        ctl.shed_scope(key, fraction, until)
        gate = ctl.gates.get(ex.endpoint)
        if gate is not None:
            gate.shed(fraction, until)

    def _load(self, e: sh.LoadControl) -> None:
        if e.scope.kind != "NF-Instance":
            return
        inst = e.scope.value.lower()
        ts = e.timestamp.timestamp()
        held = self.loads.get(inst)
        if held is not None and held[1] >= ts:
            return
        if held is None or abs(held[0] - e.load_pct) >= 5:
            self.loads_version += 1  # model D re-weights on a change worth it
        self.loads[inst] = (e.load_pct, ts)

    def active(self) -> dict[str, int]:
        """Scopes under overload control now -> reduction %."""
        now = self.monotonic()
        return {k: pct for k, (_ts, pct, until) in self.oci.items() if until > now}


def scp_oci(fqdn: str, reduction_pct: int, validity_s: int,
            clock: Callable[[], float] = time.time) -> bytes:
    """The gateway's own ``3gpp-Sbi-Oci`` (scope ``SCP-FQDN``)."""
    return sh.format_oci([sh.OverloadControl(
        dt.datetime.fromtimestamp(int(clock()), dt.UTC), validity_s, reduction_pct,
        sh.ControlScope("SCP-FQDN", fqdn))])
