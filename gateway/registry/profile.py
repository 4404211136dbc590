"""NFProfile and SubscriptionData validation (TS 29.510 Rel-17, TS 29.571 data types).

Profiles stay plain JSON dicts (what the NF sent, plus what the NRF sets such as
``heartBeatTimer``); this module checks them field by field and reports every problem as an
``InvalidParam`` whose ``param`` is a JSON pointer into the body, with the TS 29.500 cause of the
first problem (MANDATORY_IE_MISSING, MANDATORY_IE_INCORRECT, OPTIONAL_IE_INCORRECT).

The checks are written out rather than run through the OpenAPI files so the gateway needs no
3GPP files at run time; the conformance tests check the responses against those files.
"""

from __future__ import annotations

import ipaddress
import re
import uuid
from dataclasses import dataclass, field

from nf_adapters.discovery import NF_TYPES

NF_STATUSES = frozenset({"REGISTERED", "SUSPENDED", "UNDISCOVERABLE"})
NOTIFICATION_EVENTS = frozenset({"NF_REGISTERED", "NF_DEREGISTERED", "NF_PROFILE_CHANGED"})
URI_SCHEMES = frozenset({"http", "https"})


def _one_of(value: object, allowed: frozenset[str]) -> bool:
    """``value in allowed`` for any JSON value (a list or an object is unhashable: no TypeError)."""
    return isinstance(value, str) and value in allowed
MAX_PROBLEMS = 16
MAX_SERVICES = 256

_FQDN_RE = re.compile(r"^([0-9A-Za-z]([-0-9A-Za-z]{0,61}[0-9A-Za-z])?\.)+[A-Za-z]{2,63}\.?$")
_SD_RE = re.compile(r"^[A-Fa-f0-9]{6}$")
_MCC_RE = re.compile(r"^[0-9]{3}$")
_MNC_RE = re.compile(r"^[0-9]{2,3}$")


@dataclass(slots=True)
class InvalidParam:
    """TS 29.571 InvalidParam: the JSON pointer of the field and why."""

    param: str
    reason: str
    cause: str = "MANDATORY_IE_INCORRECT"

    def to_json(self) -> dict:
        return {"param": self.param, "reason": self.reason}


class ProfileError(ValueError):
    """The body failed validation; ``cause`` and ``invalid_params`` go into ProblemDetails."""

    def __init__(self, cause: str, detail: str, invalid_params: list[InvalidParam]) -> None:
        super().__init__(detail)
        self.cause = cause
        self.detail = detail
        self.invalid_params = invalid_params


@dataclass(slots=True)
class _Checker:
    problems: list[InvalidParam] = field(default_factory=list)

    def bad(self, param: str, reason: str, cause: str) -> None:
        if len(self.problems) < MAX_PROBLEMS:
            self.problems.append(InvalidParam(param, reason, cause))

    def raise_if_any(self, what: str) -> None:
        if self.problems:
            first = self.problems[0]
            raise ProfileError(first.cause, f"{what}: {first.param} {first.reason}", self.problems)


def is_uuid(s: object) -> bool:
    """True for the TS 29.571 NfInstanceId form (an RFC 4122 UUID string)."""
    if not isinstance(s, str) or len(s) != 36:
        return False
    try:
        uuid.UUID(s)
    except ValueError:
        return False
    return True


def is_fqdn(s: object) -> bool:
    return isinstance(s, str) and 4 <= len(s) <= 253 and bool(_FQDN_RE.match(s))


def _is_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _check_int(c: _Checker, obj: dict, key: str, ptr: str, lo: int, hi: int, cause: str) -> None:
    if key in obj:
        v = obj[key]
        if not _is_int(v) or not lo <= v <= hi:
            c.bad(f"{ptr}/{key}", f"must be an integer {lo}..{hi}", cause)


def _check_str(c: _Checker, obj: dict, key: str, ptr: str, cause: str) -> None:
    if key in obj and not isinstance(obj[key], str):
        c.bad(f"{ptr}/{key}", "must be a string", cause)


def _check_ip_list(c: _Checker, obj: dict, key: str, ptr: str, version: int) -> None:
    if key not in obj:
        return
    v = obj[key]
    if not isinstance(v, list) or not v:
        c.bad(f"{ptr}/{key}", "must be a non-empty array", "OPTIONAL_IE_INCORRECT")
        return
    for i, a in enumerate(v):
        if not _is_ip(a, version):
            c.bad(f"{ptr}/{key}/{i}", f"not an IPv{version} address", "OPTIONAL_IE_INCORRECT")


def _is_ip(a: object, version: int) -> bool:
    if not isinstance(a, str):
        return False
    try:
        return ipaddress.ip_address(a).version == version
    except ValueError:
        return False


def _check_snssais(c: _Checker, obj: dict, key: str, ptr: str) -> None:
    if key not in obj:
        return
    v = obj[key]
    if not isinstance(v, list) or not v:
        c.bad(f"{ptr}/{key}", "must be a non-empty array", "OPTIONAL_IE_INCORRECT")
        return
    for i, s in enumerate(v):
        p = f"{ptr}/{key}/{i}"
        if not isinstance(s, dict):
            c.bad(p, "must be an object", "OPTIONAL_IE_INCORRECT")
            continue
        sst = s.get("sst")
        if not _is_int(sst) or not 0 <= sst <= 255:
            c.bad(f"{p}/sst", "must be an integer 0..255", "OPTIONAL_IE_INCORRECT")
        if "sd" in s and not (isinstance(s["sd"], str) and _SD_RE.match(s["sd"])):
            c.bad(f"{p}/sd", "must be 6 hex digits", "OPTIONAL_IE_INCORRECT")


def _check_plmns(c: _Checker, obj: dict, key: str, ptr: str) -> None:
    if key not in obj:
        return
    v = obj[key]
    if not isinstance(v, list) or not v:
        c.bad(f"{ptr}/{key}", "must be a non-empty array", "OPTIONAL_IE_INCORRECT")
        return
    for i, p in enumerate(v):
        if not (
            isinstance(p, dict)
            and isinstance(p.get("mcc"), str)
            and _MCC_RE.match(p["mcc"])
            and isinstance(p.get("mnc"), str)
            and _MNC_RE.match(p["mnc"])
        ):
            c.bad(f"{ptr}/{key}/{i}", "must be a PlmnId {mcc: 3 digits, mnc: 2-3 digits}",
                  "OPTIONAL_IE_INCORRECT")


def _check_nf_types(c: _Checker, obj: dict, key: str, ptr: str) -> None:
    if key not in obj:
        return
    v = obj[key]
    if not isinstance(v, list) or not v:
        c.bad(f"{ptr}/{key}", "must be a non-empty array", "OPTIONAL_IE_INCORRECT")
        return
    for i, t in enumerate(v):
        if not _one_of(t, NF_TYPES):
            c.bad(f"{ptr}/{key}/{i}", "unknown NF type", "OPTIONAL_IE_INCORRECT")


def _check_str_list(c: _Checker, obj: dict, key: str, ptr: str) -> None:
    if key in obj:
        v = obj[key]
        if not isinstance(v, list) or not v or not all(isinstance(x, str) for x in v):
            c.bad(f"{ptr}/{key}", "must be a non-empty array of strings", "OPTIONAL_IE_INCORRECT")


def _check_service(c: _Checker, s: object, ptr: str) -> None:
    if not isinstance(s, dict):
        c.bad(ptr, "NFService must be an object", "OPTIONAL_IE_INCORRECT")
        return
    for req in ("serviceInstanceId", "serviceName", "versions", "scheme", "nfServiceStatus"):
        if req not in s:
            c.bad(f"{ptr}/{req}", "is missing", "MANDATORY_IE_MISSING")
    for key in ("serviceInstanceId", "serviceName"):
        if key in s and (not isinstance(s[key], str) or not s[key]):
            c.bad(f"{ptr}/{key}", "must be a non-empty string", "MANDATORY_IE_INCORRECT")
    if "versions" in s:
        vs = s["versions"]
        if not isinstance(vs, list) or not vs:
            c.bad(f"{ptr}/versions", "must be a non-empty array", "MANDATORY_IE_INCORRECT")
        else:
            for i, v in enumerate(vs):
                if not (
                    isinstance(v, dict)
                    and isinstance(v.get("apiVersionInUri"), str)
                    and isinstance(v.get("apiFullVersion"), str)
                ):
                    c.bad(f"{ptr}/versions/{i}", "needs apiVersionInUri and apiFullVersion strings",
                          "MANDATORY_IE_INCORRECT")
    if "scheme" in s and not _one_of(s["scheme"], URI_SCHEMES):
        c.bad(f"{ptr}/scheme", "must be http or https", "MANDATORY_IE_INCORRECT")
    if "nfServiceStatus" in s and not _one_of(s["nfServiceStatus"], NF_STATUSES):
        c.bad(f"{ptr}/nfServiceStatus", "unknown NFServiceStatus", "MANDATORY_IE_INCORRECT")
    if "fqdn" in s and not is_fqdn(s["fqdn"]):
        c.bad(f"{ptr}/fqdn", "not a valid FQDN", "OPTIONAL_IE_INCORRECT")
    _check_str(c, s, "apiPrefix", ptr, "OPTIONAL_IE_INCORRECT")
    if isinstance(s.get("apiPrefix"), str) and s["apiPrefix"]:
        ap = s["apiPrefix"]
        if not re.match(r"^https?://[^/?#\s]+(/[^?#\s]*)?$", ap) and not ap.startswith("/"):
            c.bad(f"{ptr}/apiPrefix", "must be a URI prefix or an absolute path",
                  "OPTIONAL_IE_INCORRECT")
    if "ipEndPoints" in s:
        eps = s["ipEndPoints"]
        if not isinstance(eps, list) or not eps:
            c.bad(f"{ptr}/ipEndPoints", "must be a non-empty array", "OPTIONAL_IE_INCORRECT")
        else:
            for i, ep in enumerate(eps):
                p = f"{ptr}/ipEndPoints/{i}"
                if not isinstance(ep, dict):
                    c.bad(p, "must be an object", "OPTIONAL_IE_INCORRECT")
                    continue
                if "ipv4Address" in ep and not _is_ip(ep["ipv4Address"], 4):
                    c.bad(f"{p}/ipv4Address", "not an IPv4 address", "OPTIONAL_IE_INCORRECT")
                if "ipv6Address" in ep and not _is_ip(ep["ipv6Address"], 6):
                    c.bad(f"{p}/ipv6Address", "not an IPv6 address", "OPTIONAL_IE_INCORRECT")
                _check_int(c, ep, "port", p, 0, 65535, "OPTIONAL_IE_INCORRECT")
                if "transport" in ep and ep["transport"] != "TCP":
                    c.bad(f"{p}/transport", "must be TCP", "OPTIONAL_IE_INCORRECT")
    _check_int(c, s, "priority", ptr, 0, 65535, "OPTIONAL_IE_INCORRECT")
    _check_int(c, s, "capacity", ptr, 0, 65535, "OPTIONAL_IE_INCORRECT")
    _check_int(c, s, "load", ptr, 0, 100, "OPTIONAL_IE_INCORRECT")
    _check_snssais(c, s, "sNssais", ptr)
    _check_snssais(c, s, "allowedNssais", ptr)
    _check_nf_types(c, s, "allowedNfTypes", ptr)


def validate_profile(body: object, path_instance_id: str) -> dict:
    """Check an NFProfile for ``PUT .../nf-instances/{path_instance_id}``; return it or raise."""
    c = _Checker()
    if not isinstance(body, dict):
        raise ProfileError("INVALID_MSG_FORMAT", "NFProfile must be a JSON object", [])
    if not is_uuid(path_instance_id):
        c.bad("nfInstanceId", "path segment is not a UUID", "MANDATORY_IE_INCORRECT")
    for req in ("nfInstanceId", "nfType", "nfStatus"):
        if req not in body:
            c.bad(f"/{req}", "is missing", "MANDATORY_IE_MISSING")
    if "nfInstanceId" in body:
        nid = body["nfInstanceId"]
        if not is_uuid(nid):
            c.bad("/nfInstanceId", "must be a UUID string", "MANDATORY_IE_INCORRECT")
        elif nid.lower() != path_instance_id.lower():
            c.bad("/nfInstanceId", "does not match the nfInstanceId in the URI",
                  "MANDATORY_IE_INCORRECT")
    if "nfType" in body and not _one_of(body["nfType"], NF_TYPES):
        c.bad("/nfType", "unknown NF type", "MANDATORY_IE_INCORRECT")
    if "nfStatus" in body and not _one_of(body["nfStatus"], NF_STATUSES):
        c.bad("/nfStatus", "unknown NFStatus", "MANDATORY_IE_INCORRECT")
    if not any(k in body for k in ("fqdn", "ipv4Addresses", "ipv6Addresses")):
        c.bad("/fqdn", "one of fqdn, ipv4Addresses, ipv6Addresses is required",
              "MANDATORY_IE_MISSING")
    if "fqdn" in body and not is_fqdn(body["fqdn"]):
        c.bad("/fqdn", "not a valid FQDN", "MANDATORY_IE_INCORRECT")
    _check_ip_list(c, body, "ipv4Addresses", "", 4)
    _check_ip_list(c, body, "ipv6Addresses", "", 6)
    _check_int(c, body, "heartBeatTimer", "", 1, 86400, "OPTIONAL_IE_INCORRECT")
    _check_int(c, body, "priority", "", 0, 65535, "OPTIONAL_IE_INCORRECT")
    _check_int(c, body, "capacity", "", 0, 65535, "OPTIONAL_IE_INCORRECT")
    _check_int(c, body, "load", "", 0, 100, "OPTIONAL_IE_INCORRECT")
    _check_str(c, body, "nfInstanceName", "", "OPTIONAL_IE_INCORRECT")
    _check_str(c, body, "locality", "", "OPTIONAL_IE_INCORRECT")
    _check_snssais(c, body, "sNssais", "")
    _check_snssais(c, body, "allowedNssais", "")
    _check_plmns(c, body, "plmnList", "")
    _check_plmns(c, body, "allowedPlmns", "")
    _check_nf_types(c, body, "allowedNfTypes", "")
    _check_str_list(c, body, "nfSetIdList", "")
    _check_str_list(c, body, "allowedNfDomains", "")
    services_seen = 0
    if "nfServiceList" in body:
        lst = body["nfServiceList"]
        if not isinstance(lst, dict):
            c.bad("/nfServiceList", "must be an object keyed by serviceInstanceId",
                  "OPTIONAL_IE_INCORRECT")
        else:
            services_seen += len(lst)
            for key, s in lst.items():
                ptr = f"/nfServiceList/{key}"
                _check_service(c, s, ptr)
                if isinstance(s, dict) and s.get("serviceInstanceId", key) != key:
                    c.bad(f"{ptr}/serviceInstanceId", "differs from its map key",
                          "MANDATORY_IE_INCORRECT")
    if "nfServices" in body:
        arr = body["nfServices"]
        if not isinstance(arr, list):
            c.bad("/nfServices", "must be an array", "OPTIONAL_IE_INCORRECT")
        else:
            services_seen += len(arr)
            for i, s in enumerate(arr):
                _check_service(c, s, f"/nfServices/{i}")
    if services_seen > MAX_SERVICES:
        c.bad("/nfServiceList", f"more than {MAX_SERVICES} services", "OPTIONAL_IE_INCORRECT")
    c.raise_if_any("NFProfile")
    return body


def validate_subscription(body: object) -> dict:
    """Check a SubscriptionData body for ``POST /subscriptions`` and return it."""
    c = _Checker()
    if not isinstance(body, dict):
        raise ProfileError("INVALID_MSG_FORMAT", "SubscriptionData must be a JSON object", [])
    uri = body.get("nfStatusNotificationUri")
    if uri is None:
        c.bad("/nfStatusNotificationUri", "is missing", "MANDATORY_IE_MISSING")
    elif not isinstance(uri, str) or not re.match(r"^https?://[^/?#\s]+", uri):
        c.bad("/nfStatusNotificationUri", "must be an http(s) URI", "MANDATORY_IE_INCORRECT")
    if "reqNotifEvents" in body:
        ev = body["reqNotifEvents"]
        if not isinstance(ev, list) or not ev:
            c.bad("/reqNotifEvents", "must be a non-empty array", "OPTIONAL_IE_INCORRECT")
        else:
            for i, e in enumerate(ev):
                if not _one_of(e, NOTIFICATION_EVENTS):
                    c.bad(f"/reqNotifEvents/{i}", "unknown NotificationEventType",
                          "OPTIONAL_IE_INCORRECT")
    if "reqNfType" in body and not _one_of(body["reqNfType"], NF_TYPES):
        c.bad("/reqNfType", "unknown NF type", "OPTIONAL_IE_INCORRECT")
    if "reqNfInstanceId" in body and not is_uuid(body["reqNfInstanceId"]):
        c.bad("/reqNfInstanceId", "must be a UUID string", "OPTIONAL_IE_INCORRECT")
    if "validityTime" in body and not isinstance(body["validityTime"], str):
        c.bad("/validityTime", "must be a DateTime string", "OPTIONAL_IE_INCORRECT")
    if "subscrCond" in body:
        cond = body["subscrCond"]
        if not isinstance(cond, dict):
            c.bad("/subscrCond", "must be an object", "OPTIONAL_IE_INCORRECT")
        else:
            if "nfType" in cond and not _one_of(cond["nfType"], NF_TYPES):
                c.bad("/subscrCond/nfType", "unknown NF type", "OPTIONAL_IE_INCORRECT")
            if "nfInstanceId" in cond and not is_uuid(cond["nfInstanceId"]):
                c.bad("/subscrCond/nfInstanceId", "must be a UUID string", "OPTIONAL_IE_INCORRECT")
            if "serviceName" in cond and not isinstance(cond["serviceName"], str):
                c.bad("/subscrCond/serviceName", "must be a string", "OPTIONAL_IE_INCORRECT")
    c.raise_if_any("SubscriptionData")
    return body
