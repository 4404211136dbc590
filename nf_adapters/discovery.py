"""NF discovery parameters (TS 29.510 Nnrf_NFDiscovery) as a typed filter, and matching.

The same parameters arrive two ways: as the query string of
``GET /nnrf-disc/v1/nf-instances?target-nf-type=...`` and, for SCP model D, as
``3gpp-Sbi-Discovery-<parameter>`` request headers (TS 29.500 §5.2.3.2.7: same names, same
encoding; JSON-typed parameters such as ``snssais`` and ``tai`` carry JSON text).
``parse_query`` / ``parse_discovery_headers`` turn either into one frozen ``DiscoveryQuery``;
``profile_matches`` / ``matching_services`` check an NFProfile (plain JSON dict) against it.

Costs are bounded: at most ``MAX_LIST_ITEMS`` entries per list parameter and
``MAX_PARAM_LEN`` characters per value; anything else is a ``DiscoveryError`` naming the
parameter, which the callers turn into 400 ProblemDetails.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from urllib.parse import parse_qsl, unquote

NF_TYPES = frozenset(
    """NRF UDM AMF SMF AUSF NEF PCF SMSF NSSF UDR LMF GMLC 5G_EIR SEPP UPF N3IWF AF UDSF BSF CHF
    NWDAF PCSCF CBCF HSS UCMF SOR_AF SPAF MME SCSAS SCEF SCP NSSAAF ICSCF SCSCF DRA IMS_AS AANF
    5G_DDNMF NSACF MFAF EASDF DCCF MB_SMF TSCTSF ADRF GBA_BSF CEF MB_UPF NSWOF PKMF MNPF SMS_GMSC
    SMS_IWMSC MBSF MBSTF PANF""".split()
)

# Every query parameter of GET /nnrf-disc/v1/nf-instances in TS29510_Nnrf_NFDiscovery.yaml
# (Rel-17, TS 29.510 V17.12.0).  ``parse_query`` refuses any other name (400 INVALID_QUERY_PARAM);
# those that nfmesh does not filter on are accepted and ignored.
QUERY_PARAMETERS = frozenset(
    """target-nf-type requester-nf-type preferred-collocated-nf-types requester-nf-instance-id
    service-names requester-nf-instance-fqdn target-plmn-list requester-plmn-list
    target-nf-instance-id target-nf-fqdn hnrf-uri snssais requester-snssais
    plmn-specific-snssai-list requester-plmn-specific-snssai-list dnn ipv4-index ipv6-index
    nsi-list smf-serving-area mbsmf-serving-area tai amf-region-id amf-set-id guami supi
    ue-ipv4-address ip-domain ue-ipv6-prefix pgw-ind preferred-pgw-ind pgw pgw-ip gpsi
    external-group-identity internal-group-identity pfd-data data-set routing-indicator
    group-id-list dnai-list pdu-session-types event-id-list nwdaf-event-list supported-features
    upf-iwk-eps-ind chf-supported-plmn preferred-locality access-type limit required-features
    complex-query max-payload-size max-payload-size-ext atsss-capability upf-ue-ip-addr-ind
    client-type lmf-id an-node-type rat-type preferred-tai preferred-nf-instances target-snpn
    requester-snpn-list af-ee-data w-agf-info tngf-info twif-info target-nf-set-id
    target-nf-service-set-id nef-id notification-type n1-msg-class n2-info-class serving-scope
    imsi ims-private-identity ims-public-identity msisdn preferred-api-versions v2x-support-ind
    redundant-gtpu redundant-transport ipups scp-domain-list address-domain ipv4-addr
    ipv6-prefix served-nf-set-id remote-plmn-id remote-snpn-id data-forwarding
    preferred-full-plmn requester-features realm-id storage-id vsmf-support-ind ismf-support-ind
    nrf-disc-uri preferred-vendor-specific-features preferred-vendor-specific-nf-features
    required-pfcp-features home-pub-key-id prose-support-ind analytics-aggregation-ind
    serving-nf-set-id serving-nf-type ml-analytics-info-list analytics-metadata-prov-ind
    nsacf-capability mbs-session-id-list area-session-id gmlc-number upf-n6-ip tai-list
    preferences-precedence support-onboarding-capability uas-nf-functionality-ind v2x-capability
    prose-capability shared-data-id target-hni target-nw-resolution exclude-nfinst-list
    exclude-nfservinst-list exclude-nfserviceset-list exclude-nfset-list
    preferred-analytics-delays high-latency-com nsac-sai""".split()
)

MAX_LIST_ITEMS = 64
MAX_PARAM_LEN = 4096
DISCOVERY_HEADER_PREFIX = b"3gpp-sbi-discovery-"

_SD_RE = re.compile(r"^[A-Fa-f0-9]{6}$")
_TAC_RE = re.compile(r"^([A-Fa-f0-9]{4}|[A-Fa-f0-9]{6})$")
# TS 29.571: Mcc, Mnc, Nid, AmfId patterns (ASCII digits only)
_MCC_RE = re.compile(r"[0-9]{3}")
_MNC_RE = re.compile(r"[0-9]{2,3}")
_NID_RE = re.compile(r"[A-Fa-f0-9]{11}")
_AMF_ID_RE = re.compile(r"[A-Fa-f0-9]{6}")
_ASCII_DIGITS = re.compile(r"[0-9]+")  # str.isdigit() also takes "²" or "٣", which int() refuses
_BIG = 1 << 62  # an integer without a schema maximum: longer values are clamped to this


class DiscoveryError(ValueError):
    """A discovery parameter is missing or malformed; ``param`` names it (the first, when
    ``invalid_params`` lists several), ``cause`` is the TS 29.500 application error."""

    def __init__(self, param: str, reason: str, cause: str = "INVALID_QUERY_PARAM",
                 more: tuple[str, ...] = ()) -> None:
        super().__init__(f"{param}: {reason}")
        self.param = param
        self.reason = reason
        self.cause = cause
        self.invalid_params = [{"param": p, "reason": reason} for p in (param, *more)]


@dataclass(frozen=True, slots=True)
class Snssai:
    """S-NSSAI: slice/service type and optional slice differentiator (lowercase hex)."""

    sst: int
    sd: str | None = None


@dataclass(frozen=True, slots=True)
class Tai:
    """Tracking area identity: PLMN (mcc, mnc) and TAC (lowercase hex)."""

    mcc: str
    mnc: str
    tac: str


@dataclass(frozen=True, slots=True)
class DiscoveryQuery:
    """The discovery parameters nfmesh filters on; the other parameters of the yaml are accepted
    and ignored (``parse_query`` refuses names that the yaml does not define)."""

    target_nf_type: str
    requester_nf_type: str | None = None
    service_names: tuple[str, ...] = ()
    target_nf_instance_id: str | None = None
    target_nf_set_id: str | None = None
    snssais: tuple[Snssai, ...] = ()
    requester_snssais: tuple[Snssai, ...] = ()
    dnn: str | None = None
    tai: Tai | None = None
    preferred_locality: str | None = None
    requester_nf_instance_fqdn: str | None = None
    requester_nf_instance_id: str | None = None
    requester_plmn_list: tuple[tuple[str, str], ...] = ()  # (mcc, mnc)
    limit: int | None = None
    max_payload_size: int | None = None  # kilo-octets (TS 29.510: default 124, max 2000)


# ---------------------------------------------------------------- parsing


def parse_query(query: str, *, require_requester: bool = True) -> DiscoveryQuery:
    """Parse a discovery query string (without the leading ``?``)."""
    if len(query) > 16 * MAX_PARAM_LEN:
        raise DiscoveryError("query", "query string too long")
    multi: dict[str, list[str]] = {}
    try:
        pairs = parse_qsl(query, keep_blank_values=True, strict_parsing=False, max_num_fields=256)
    except ValueError as exc:
        raise DiscoveryError("query", str(exc)) from None
    for k, v in pairs:
        multi.setdefault(k, []).append(v)
    unknown = [k for k in multi if k not in QUERY_PARAMETERS]
    if unknown:
        raise DiscoveryError(unknown[0], "unknown query parameter", more=tuple(unknown[1:]))
    return _build(multi, require_requester=require_requester)


def parse_discovery_headers(
    headers: list[tuple[bytes, bytes]], *, user_agent_fallback: bool = True
) -> DiscoveryQuery | None:
    """Build a query from ``3gpp-sbi-discovery-*`` headers; None when target-nf-type is absent.

    The requester NF type defaults to the NF type that starts ``User-Agent`` (TS 29.500 §5.2.2.2).
    """
    multi: dict[str, list[str]] = {}
    ua = None
    plen = len(DISCOVERY_HEADER_PREFIX)
    for name, value in headers:
        if name.startswith(DISCOVERY_HEADER_PREFIX):
            text = value.decode("latin-1")
            if "%" in text:  # some NFs percent-encode JSON values as in the query string
                text = unquote(text)
            multi.setdefault(name[plen:].decode("latin-1"), []).append(text)
        elif name == b"user-agent":
            ua = value.decode("latin-1")
    if "target-nf-type" not in multi:
        return None
    if "requester-nf-type" not in multi and user_agent_fallback and ua:
        head = ua.split("-", 1)[0].strip().upper()
        if head in NF_TYPES:
            multi["requester-nf-type"] = [head]
    query = _build(multi, require_requester=False)
    _guami(multi)  # model D's headers only: the NRF API accepts the parameters it ignores
    return query


def _one(multi: dict[str, list[str]], name: str) -> str | None:
    vals = multi.get(name)
    if not vals:
        return None
    v = vals[-1].strip()
    if len(v) > MAX_PARAM_LEN:
        raise DiscoveryError(name, "value too long")
    return v


def _csv(multi: dict[str, list[str]], name: str) -> tuple[str, ...]:
    """A form-style array (TS 29.510: minItems 1): comma-separated, no empty item."""
    out: list[str] = []
    for raw in multi.get(name, ()):
        if len(raw) > MAX_PARAM_LEN:
            raise DiscoveryError(name, "value too long")
        items = [p.strip() for p in raw.split(",")]
        if not all(items):
            raise DiscoveryError(name, "empty item (an array of at least one name)")
        out.extend(items)
    if len(out) > MAX_LIST_ITEMS:
        raise DiscoveryError(name, f"more than {MAX_LIST_ITEMS} items")
    return tuple(dict.fromkeys(out))


def _json(multi: dict[str, list[str]], name: str) -> object | None:
    v = _one(multi, name)
    if v is None:
        return None
    try:
        return json.loads(v)
    except ValueError:
        raise DiscoveryError(name, "not valid JSON") from None


def _int(multi: dict[str, list[str]], name: str, lo: int, hi: int | None) -> int | None:
    """An integer parameter in ``lo..hi`` (``hi`` None: no maximum, clamped to ``_BIG``)."""
    v = _one(multi, name)
    if v is None:
        return None
    if not _ASCII_DIGITS.fullmatch(v):
        raise DiscoveryError(name, "not a non-negative integer (ASCII digits)")
    digits = v.lstrip("0") or "0"
    n = int(digits) if len(digits) < 19 else _BIG
    if n < lo or (hi is not None and n > hi):
        raise DiscoveryError(name, f"must be >= {lo}" if hi is None else f"out of range {lo}..{hi}")
    return n


def parse_snssai(obj: object, name: str) -> Snssai:
    """One ``Snssai`` JSON object -> ``Snssai`` (sst 0..255, sd 6 hex digits)."""
    if not isinstance(obj, dict):
        raise DiscoveryError(name, "S-NSSAI must be an object")
    sst = obj.get("sst")
    if not isinstance(sst, int) or isinstance(sst, bool) or not 0 <= sst <= 255:
        raise DiscoveryError(name, "sst must be an integer 0..255")
    sd = obj.get("sd")
    if sd is not None:
        if not isinstance(sd, str) or not _SD_RE.match(sd):
            raise DiscoveryError(name, "sd must be 6 hex digits")
        sd = sd.lower()
    return Snssai(sst, sd)


def _snssais(multi: dict[str, list[str]], name: str) -> tuple[Snssai, ...]:
    arr = _json(multi, name)
    if arr is None:
        return ()
    if not isinstance(arr, list) or not arr:  # TS 29.510: array of Snssai, minItems 1
        raise DiscoveryError(name, "must be a non-empty JSON array of Snssai")
    if len(arr) > MAX_LIST_ITEMS:
        raise DiscoveryError(name, f"more than {MAX_LIST_ITEMS} items")
    return tuple(parse_snssai(o, name) for o in arr)


def _plmns(multi: dict[str, list[str]], name: str) -> tuple[tuple[str, str], ...]:
    arr = _json(multi, name)
    if arr is None:
        return ()
    if not isinstance(arr, list) or not arr or len(arr) > MAX_LIST_ITEMS:
        raise DiscoveryError(name, f"must be a JSON array of 1..{MAX_LIST_ITEMS} PlmnId")
    return tuple(_plmn_id(p, name) for p in arr)


def _plmn_id(p: object, name: str, nid: bool = False) -> tuple[str, str]:
    """A TS 29.571 PlmnId (PlmnIdNid when ``nid``): mcc 3 digits, mnc 2-3 digits."""
    if not isinstance(p, dict):
        raise DiscoveryError(name, "PlmnId must be an object {mcc, mnc}")
    mcc, mnc = p.get("mcc"), p.get("mnc")
    if not isinstance(mcc, str) or not _MCC_RE.fullmatch(mcc):
        raise DiscoveryError(name, "PlmnId mcc must be 3 digits")
    if not isinstance(mnc, str) or not _MNC_RE.fullmatch(mnc):
        raise DiscoveryError(name, "PlmnId mnc must be 2 or 3 digits")
    if nid and "nid" in p and not (isinstance(p["nid"], str) and _NID_RE.fullmatch(p["nid"])):
        raise DiscoveryError(name, "PlmnIdNid nid must be 11 hex digits")
    return mcc, mnc


def _guami(multi: dict[str, list[str]]) -> None:
    """TS 29.571 Guami: {plmnId: PlmnIdNid, amfId: 6 hex digits} (checked, not filtered on)."""
    obj = _json(multi, "guami")
    if obj is None:
        return
    if not isinstance(obj, dict):
        raise DiscoveryError("guami", "must be a JSON object {plmnId, amfId}")
    _plmn_id(obj.get("plmnId"), "guami", nid=True)
    amf_id = obj.get("amfId")
    if not isinstance(amf_id, str) or not _AMF_ID_RE.fullmatch(amf_id):
        raise DiscoveryError("guami", "amfId must be 6 hex digits")


def _tai(multi: dict[str, list[str]]) -> Tai | None:
    obj = _json(multi, "tai")
    if obj is None:
        return None
    if not isinstance(obj, dict):
        raise DiscoveryError("tai", "must be a JSON object")
    plmn = obj.get("plmnId")
    tac = obj.get("tac")
    if not isinstance(plmn, dict) or not isinstance(tac, str) or not _TAC_RE.match(tac):
        raise DiscoveryError("tai", "needs plmnId {mcc, mnc} and tac (4 or 6 hex digits)")
    mcc, mnc = _plmn_id(plmn, "tai", nid=True)
    return Tai(mcc, mnc, tac.lower())


def _build(multi: dict[str, list[str]], *, require_requester: bool) -> DiscoveryQuery:
    target = _one(multi, "target-nf-type")
    if not target:
        raise DiscoveryError("target-nf-type", "is required", "MANDATORY_QUERY_PARAM_MISSING")
    requester = _one(multi, "requester-nf-type")
    if require_requester and not requester:
        raise DiscoveryError("requester-nf-type", "is required", "MANDATORY_QUERY_PARAM_MISSING")
    if target not in NF_TYPES:
        raise DiscoveryError("target-nf-type", f"unknown NF type {target!r}",
                             "MANDATORY_QUERY_PARAM_INCORRECT")
    if requester and requester not in NF_TYPES:
        raise DiscoveryError("requester-nf-type", f"unknown NF type {requester!r}",
                             "MANDATORY_QUERY_PARAM_INCORRECT")
    return DiscoveryQuery(
        target_nf_type=target,
        requester_nf_type=requester or None,
        service_names=_csv(multi, "service-names"),
        target_nf_instance_id=(_one(multi, "target-nf-instance-id") or None),
        target_nf_set_id=(_one(multi, "target-nf-set-id") or None),
        snssais=_snssais(multi, "snssais"),
        requester_snssais=_snssais(multi, "requester-snssais"),
        dnn=(_one(multi, "dnn") or None),
        tai=_tai(multi),
        preferred_locality=(_one(multi, "preferred-locality") or None),
        requester_nf_instance_fqdn=(_one(multi, "requester-nf-instance-fqdn") or None),
        requester_nf_instance_id=(_one(multi, "requester-nf-instance-id") or None),
        requester_plmn_list=_plmns(multi, "requester-plmn-list"),
        limit=_int(multi, "limit", 1, None),  # the yaml: minimum 1, no maximum
        max_payload_size=_int(multi, "max-payload-size", 1, 2000),
    )


# ---------------------------------------------------------------- matching
#
# Profiles are JSON from the NFs; only part of them is validated at registration (smfInfo,
# amfInfo, sdRanges... are kept as sent), so the matching reads every member through _dicts /
# _strs: a member of the wrong type matches nothing instead of raising in every later discovery.


def _dicts(v: object) -> list[dict]:
    """The objects of a JSON array (anything else: none)."""
    return [x for x in v if isinstance(x, dict)] if isinstance(v, list) else []


def _str(v: object) -> str | None:
    return v if isinstance(v, str) else None


def _snssai_in(want: Snssai, offered: object) -> bool:
    for o in _dicts(offered):
        sst = o.get("sst")
        if isinstance(sst, bool) or sst != want.sst:
            continue
        osd = _str(o.get("sd"))
        if want.sd is None or o.get("wildcardSd") is True:
            return True
        if osd is not None and osd.lower() == want.sd:
            return True
        for rng in _dicts(o.get("sdRanges")):
            lo, hi = _str(rng.get("start")), _str(rng.get("end"))
            if lo and hi and lo.lower() <= want.sd <= hi.lower():
                return True
    return False


def snssais_match(wanted: tuple[Snssai, ...], offered: list | None) -> bool:
    """True when the NF (or service) supports at least one wanted S-NSSAI.

    No ``sNssais`` offered means "all slices" (TS 29.510 §6.1.6.2.2/3)."""
    if not wanted or not offered:
        return True
    return any(_snssai_in(w, offered) for w in wanted)


def _infos(profile: dict, key: str) -> list[dict]:
    out: list[dict] = []
    one = profile.get(key)
    if isinstance(one, dict):
        out.append(one)
    many = profile.get(key + "List")
    if isinstance(many, dict):
        out.extend(v for v in many.values() if isinstance(v, dict))
    return out


def _dnn_match(profile: dict, dnn: str) -> bool:
    infos = _infos(profile, "smfInfo") + _infos(profile, "upfInfo")
    if not infos:
        return True  # the NF announces no DNN restriction
    for info in infos:
        lst = info.get("sNssaiSmfInfoList") or info.get("sNssaiUpfInfoList")
        for item in _dicts(lst):
            for d in _dicts(item.get("dnnSmfInfoList") or item.get("dnnUpfInfoList")):
                if d.get("dnn") == dnn or d.get("dnn") == "*":
                    return True
    return False


def _tai_match(profile: dict, tai: Tai) -> bool:
    infos = _infos(profile, "amfInfo") + _infos(profile, "smfInfo")
    lists = [i.get("taiList") for i in infos if i.get("taiList")]
    if not lists:
        return True
    for lst in lists:
        for t in _dicts(lst):
            p = t.get("plmnId")
            tac = _str(t.get("tac"))
            if (
                isinstance(p, dict)
                and p.get("mcc") == tai.mcc
                and p.get("mnc") == tai.mnc
                and tac is not None
                and tac.lower() == tai.tac
            ):
                return True
    return False


def _domain_allowed(patterns: list | None, fqdn: str | None) -> bool:
    if not patterns:
        return True
    if not fqdn:
        return False
    for p in patterns:
        try:
            if re.fullmatch(p, fqdn):
                return True
        except (re.error, TypeError):
            continue
    return False


def requester_allowed(obj: dict, q: DiscoveryQuery) -> bool:
    """Access checks of a profile or service: allowedNfTypes, allowedNssais, allowedNfDomains,
    allowedPlmns (each applies only when the requester said the matching thing about itself)."""
    allowed_types = obj.get("allowedNfTypes")
    if allowed_types and q.requester_nf_type and q.requester_nf_type not in allowed_types:
        return False
    allowed_nssais = obj.get("allowedNssais")
    if allowed_nssais and q.requester_snssais:
        if not any(_snssai_in(s, allowed_nssais) for s in q.requester_snssais):
            return False
    if not _domain_allowed(obj.get("allowedNfDomains"), q.requester_nf_instance_fqdn):
        return False
    allowed_plmns = obj.get("allowedPlmns")
    if allowed_plmns and q.requester_plmn_list:
        offered = {(p.get("mcc"), p.get("mnc")) for p in allowed_plmns if isinstance(p, dict)}
        if not any(p in offered for p in q.requester_plmn_list):
            return False
    return True


def services_of(profile: dict) -> list[dict]:
    """The NF services of a profile: ``nfServiceList`` (map) or the older ``nfServices`` array."""
    lst = profile.get("nfServiceList")
    if isinstance(lst, dict):
        return [s for s in lst.values() if isinstance(s, dict)]
    arr = profile.get("nfServices")
    if isinstance(arr, list):
        return [s for s in arr if isinstance(s, dict)]
    return []


def service_matches(service: dict, q: DiscoveryQuery) -> bool:
    """One NF service against service names, S-NSSAIs and access rules (status not checked)."""
    if q.service_names and service.get("serviceName") not in q.service_names:
        return False
    if not snssais_match(q.snssais, service.get("sNssais")):
        return False
    return requester_allowed(service, q)


def profile_matches(profile: dict, q: DiscoveryQuery, *, status: str | None = None) -> bool:
    """True when an NFProfile satisfies the query.  ``status`` overrides ``nfStatus``
    (the registry passes the effective status, e.g. SUSPENDED after missed heartbeats)."""
    if (status or profile.get("nfStatus")) != "REGISTERED":
        return False
    if profile.get("nfType") != q.target_nf_type:
        return False
    if q.target_nf_instance_id and profile.get("nfInstanceId") != q.target_nf_instance_id:
        return False
    if q.target_nf_set_id and q.target_nf_set_id not in (profile.get("nfSetIdList") or ()):
        return False
    if not requester_allowed(profile, q):
        return False
    if not snssais_match(q.snssais, profile.get("sNssais")):
        return False
    if q.dnn and not _dnn_match(profile, q.dnn):
        return False
    if q.tai and not _tai_match(profile, q.tai):
        return False
    if q.service_names:
        return bool(matching_services(profile, q))
    return True


def matching_services(profile: dict, q: DiscoveryQuery) -> list[dict]:
    """REGISTERED services of ``profile`` that satisfy the service-level parts of ``q``."""
    return [
        s
        for s in services_of(profile)
        if s.get("nfServiceStatus", "REGISTERED") == "REGISTERED" and service_matches(s, q)
    ]
