"""Emulated 5G core NFs (AUSF, UDM, SMF, ...) that answer real SBI requests with realistic JSON.

Each ``EmulatedNF`` is an HTTP/2 server on the project's engine (h2c, either backend) that
answers the service operations it knows with bodies shaped after the 3GPP OpenAPI files
(TS 29.509 Nausf_UEAuthentication, TS 29.503 Nudm_SDM / Nudm_UECM / Nudm_UEAU, TS 29.502
Nsmf_PDUSession), and with a TS 29.500 ProblemDetails for anything else.  It can register
itself in an NRF (the gateway's own registry) with an NFProfile and keep heartbeating.

Used by ``nfmesh demo``, the tests and the load generator's backends.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

from dataplane.engine import H2Settings, Headers, ServerConnection, load_backend

JSON = b"application/json"


def _json(status: int, obj: object, extra: Headers | None = None) -> tuple[int, Headers, bytes]:
    body = json.dumps(obj, separators=(",", ":")).encode()
    return status, [(b"content-type", JSON), *(extra or [])], body


def _problem(status: int, cause: str, detail: str) -> tuple[int, Headers, bytes]:
    body = json.dumps({"status": status, "cause": cause, "detail": detail}).encode()
    return status, [(b"content-type", b"application/problem+json")], body


def _json_object(body: bytes) -> dict | None:
    """The request body as a JSON object, or None when it is not one."""
    try:
        obj = json.loads(body or b"{}")
    except ValueError:
        return None
    return obj if isinstance(obj, dict) else None


NOT_JSON = _problem(400, "MANDATORY_IE_INCORRECT", "body is not a JSON object")


def _hex(n: int) -> str:
    return os.urandom(n).hex().upper()


# --- service operations: (method, path regex) -> answer(match, body, api_root) ----------------

def _ausf_authenticate(m: re.Match, body: bytes, api_root: str) -> tuple[int, Headers, bytes]:
    req = _json_object(body)
    if req is None:
        return NOT_JSON
    if "supiOrSuci" not in req or "servingNetworkName" not in req:
        return _problem(400, "MANDATORY_IE_MISSING", "supiOrSuci and servingNetworkName are required")
    ctx = uuid.uuid4().hex
    link = f"{api_root}/nausf-auth/v1/ue-authentications/{ctx}/5g-aka-confirmation"
    return _json(201, {
        "authType": "5G_AKA",
        "5gAuthData": {"rand": _hex(16), "autn": _hex(16), "hxresStar": _hex(16)},
        "_links": {"5g-aka": {"href": link}},
        "servingNetworkName": req["servingNetworkName"],
    }, [(b"location", f"{api_root}/nausf-auth/v1/ue-authentications/{ctx}".encode())])


def _ausf_confirm(m: re.Match, body: bytes, api_root: str) -> tuple[int, Headers, bytes]:
    return _json(200, {"authResult": "AUTHENTICATION_SUCCESS", "supi": "imsi-001010000000001",
                       "kseaf": _hex(32)})


def _udm_am_data(m: re.Match, body: bytes, api_root: str) -> tuple[int, Headers, bytes]:
    return _json(200, {
        "gpsis": ["msisdn-" + m.group(1)[-10:]],
        "subscribedUeAmbr": {"uplink": "1 Gbps", "downlink": "2 Gbps"},
        "nssai": {"defaultSingleNssais": [{"sst": 1, "sd": "000001"}]},
        "ratRestrictions": [],
    })


def _udm_sm_data(m: re.Match, body: bytes, api_root: str) -> tuple[int, Headers, bytes]:
    return _json(200, [{
        "singleNssai": {"sst": 1, "sd": "000001"},
        "dnnConfigurations": {"internet": {
            "pduSessionTypes": {"defaultSessionType": "IPV4"},
            "sscModes": {"defaultSscMode": "SSC_MODE_1"},
            "5gQosProfile": {"5qi": 9, "arp": {"priorityLevel": 8, "preemptCap": "NOT_PREEMPT",
                                                "preemptVuln": "PREEMPTABLE"}},
            "sessionAmbr": {"uplink": "100 Mbps", "downlink": "200 Mbps"},
        }},
    }])


def _udm_uecm_register(m: re.Match, body: bytes, api_root: str) -> tuple[int, Headers, bytes]:
    reg = _json_object(body)
    if reg is None:
        return NOT_JSON
    if "amfInstanceId" not in reg:
        return _problem(400, "MANDATORY_IE_MISSING", "amfInstanceId is required")
    return _json(201, reg, [(b"location", f"{api_root}/nudm-uecm/v1/{m.group(1)}/registrations/amf-3gpp-access".encode())])


def _udm_generate_av(m: re.Match, body: bytes, api_root: str) -> tuple[int, Headers, bytes]:
    return _json(200, {"authType": "5G_AKA", "supi": m.group(1), "authenticationVector": {
        "avType": "5G_HE_AKA", "rand": _hex(16), "autn": _hex(16), "xresStar": _hex(16),
        "kausf": _hex(32)}})


def _smf_create(m: re.Match, body: bytes, api_root: str) -> tuple[int, Headers, bytes]:
    data = _json_object(body)
    if data is None:
        return NOT_JSON
    if "supi" not in data and "unauthenticatedSupi" not in data:
        return _problem(400, "MANDATORY_IE_MISSING", "supi is required")
    ref = uuid.uuid4().hex[:16]
    return _json(201, {"upCnxState": "ACTIVATING", "pduSessionId": data.get("pduSessionId", 1),
                       "sNssai": data.get("sNssai", {"sst": 1}), "dnn": data.get("dnn", "internet")},
                 [(b"location", f"{api_root}/nsmf-pdusession/v1/sm-contexts/{ref}".encode())])


def _smf_release(m: re.Match, body: bytes, api_root: str) -> tuple[int, Headers, bytes]:
    return 204, [], b""


Operation = tuple[str, re.Pattern, Callable[[re.Match, bytes, str], tuple[int, Headers, bytes]]]

OPERATIONS: dict[str, list[Operation]] = {
    "AUSF": [
        ("POST", re.compile(r"^/nausf-auth/v1/ue-authentications$"), _ausf_authenticate),
        ("PUT", re.compile(r"^/nausf-auth/v1/ue-authentications/[^/]+/5g-aka-confirmation$"), _ausf_confirm),
    ],
    "UDM": [
        ("GET", re.compile(r"^/nudm-sdm/v2/([^/]+)/am-data$"), _udm_am_data),
        ("GET", re.compile(r"^/nudm-sdm/v2/([^/]+)/sm-data$"), _udm_sm_data),
        ("PUT", re.compile(r"^/nudm-uecm/v1/([^/]+)/registrations/amf-3gpp-access$"), _udm_uecm_register),
        ("POST", re.compile(r"^/nudm-ueau/v1/([^/]+)/security-information/generate-auth-data$"), _udm_generate_av),
    ],
    "SMF": [
        ("POST", re.compile(r"^/nsmf-pdusession/v1/sm-contexts$"), _smf_create),
        ("POST", re.compile(r"^/nsmf-pdusession/v1/sm-contexts/[^/]+/release$"), _smf_release),
    ],
}

SERVICES = {
    "AUSF": [("nausf-auth", "v1")],
    "UDM": [("nudm-sdm", "v2"), ("nudm-uecm", "v1"), ("nudm-ueau", "v1")],
    "SMF": [("nsmf-pdusession", "v1")],
}


@dataclass
class NFCounters:
    requests: int = 0
    errors: int = 0
    by_user_agent: dict[str, int] = field(default_factory=dict)


class EmulatedNFHandler:
    """A ``ServerHandler`` answering the operations of one NF type."""

    def __init__(self, nf_type: str, api_root: str, instance_id: str) -> None:
        self.nf_type = nf_type
        self.api_root = api_root
        self.instance_id = instance_id
        self.ops = OPERATIONS.get(nf_type, [])
        self.counters = NFCounters()
        self.connections: set[ServerConnection] = set()

    def on_request(self, conn: ServerConnection, stream_id: int, headers: Headers, end_stream: bool) -> None:
        self.connections.add(conn)
        h = dict(headers)
        method = h.get(b":method", b"").decode()
        path = h.get(b":path", b"").decode().split("?", 1)[0]
        ua = h.get(b"user-agent", b"-").decode(errors="replace").split("-", 1)[0]
        self.counters.requests += 1
        self.counters.by_user_agent[ua] = self.counters.by_user_agent.get(ua, 0) + 1
        for op_method, pattern, answer in self.ops:
            m = pattern.match(path)
            if m and op_method == method:
                def reply(body: bytes | None, trailers: Headers, m: re.Match = m, answer=answer) -> None:
                    if body is None:
                        return
                    status, hdrs, out = answer(m, body, self.api_root)
                    self._send(conn, stream_id, status, hdrs, out)
                if end_stream:
                    reply(b"", [])
                else:
                    conn.read_body(stream_id, 1 << 20, reply)
                return
        self.counters.errors += 1
        status, hdrs, out = _problem(404, "RESOURCE_URI_STRUCTURE_NOT_FOUND", f"{self.nf_type} has no {method} {path}")
        if end_stream:
            self._send(conn, stream_id, status, hdrs, out)
        else:
            conn.read_body(stream_id, 1 << 20, lambda b, t: b is not None and self._send(conn, stream_id, status, hdrs, out))

    def _send(self, conn: ServerConnection, stream_id: int, status: int, headers: Headers, body: bytes) -> None:
        conn.respond(stream_id, status, headers, body)

    def on_stream_reset(self, conn: ServerConnection, stream_id: int, error_code: int) -> None:
        pass

    def on_connection_lost(self, conn: ServerConnection) -> None:
        self.connections.discard(conn)


class EmulatedNF:
    """An emulated NF listening on h2c 127.0.0.1:<port>."""

    def __init__(self, nf_type: str, host: str = "127.0.0.1", port: int = 0,
                 backend: str = "auto", instance_id: str | None = None) -> None:
        self.nf_type = nf_type
        self.host = host
        self.port = port
        self.backend = load_backend(backend)
        self.instance_id = instance_id or str(uuid.uuid4())
        self.handler: EmulatedNFHandler | None = None
        self._server: asyncio.AbstractServer | None = None
        self.ssl_context = None  # set before start(): serve TLS (ALPN h2), profile scheme https
        self.tls = None  # the demo's ReloadableServerContext behind ssl_context, when rotating

    @property
    def scheme(self) -> str:
        return "https" if self.ssl_context is not None else "http"

    @property
    def api_root(self) -> str:
        return f"{self.scheme}://{self.host}:{self.port}"

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        settings = H2Settings()
        # the port is known only after bind; the handler reads api_root lazily
        self.handler = EmulatedNFHandler(self.nf_type, "", self.instance_id)
        self._server = await loop.create_server(
            lambda: self.backend.ServerConnection(self.handler, settings), self.host, self.port,
            ssl=self.ssl_context,
        )
        self.port = self._server.sockets[0].getsockname()[1]
        self.handler.api_root = self.api_root

    def profile(self, capacity: int = 100, priority: int = 1, snssais: list | None = None) -> dict:
        """The NFProfile this NF registers (TS 29.510 NFProfile)."""
        snssais = snssais or [{"sst": 1, "sd": "000001"}]
        services = [
            {
                "serviceInstanceId": f"{name}-1",
                "serviceName": name,
                "versions": [{"apiVersionInUri": ver, "apiFullVersion": f"{ver[1:]}.0.0"}],
                "scheme": self.scheme,
                "nfServiceStatus": "REGISTERED",
                "ipEndPoints": [{"ipv4Address": self.host, "port": self.port}],
                "allowedNfTypes": ["AMF", "SMF", "AUSF", "UDM", "PCF", "NEF", "SCP"],
                "priority": priority,
                "capacity": capacity,
            }
            for name, ver in SERVICES.get(self.nf_type, [])
        ]
        return {
            "nfInstanceId": self.instance_id,
            "nfType": self.nf_type,
            "nfStatus": "REGISTERED",
            "heartBeatTimer": 10,
            "ipv4Addresses": [self.host],
            "sNssais": snssais,
            "priority": priority,
            "capacity": capacity,
            "load": 0,
            "nfServices": services,
        }

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            for conn in list(self.handler.connections if self.handler else []):
                conn.close()
            await self._server.wait_closed()
