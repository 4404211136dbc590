"""Full NGAP codec on pycrate (TS 38.413 ASN.1, APER): build and decode whole messages.

The proxy's hot path never comes here (``routing_key`` reads the few fields routing needs);
this module is for what needs the whole message: the answers the gateway builds itself
(NG Setup Request/Response/Failure, ErrorIndication, Overload Start/Stop, UE Context Release
Command, NG Reset Acknowledge), the emulated gNBs and AMFs, and the oracle in tests.

pycrate's ASN.1 objects are module-level singletons: these functions are not re-entrant across
threads (the gateway calls them from its one event loop).
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from typing import Any

from pycrate_asn1dir import NGAP as _NGAP

_PDU = _NGAP.NGAP_PDU_Descriptions.NGAP_PDU

# procedure codes (TS 38.413 §9.4.7)
PROC_AMF_CONFIGURATION_UPDATE = 0
PROC_AMF_STATUS_INDICATION = 1
PROC_DOWNLINK_NAS_TRANSPORT = 4
PROC_ERROR_INDICATION = 9
PROC_INITIAL_CONTEXT_SETUP = 14
PROC_INITIAL_UE_MESSAGE = 15
PROC_NG_RESET = 20
PROC_NG_SETUP = 21
PROC_OVERLOAD_START = 22
PROC_OVERLOAD_STOP = 23
PROC_PAGING = 24
PROC_RAN_CONFIGURATION_UPDATE = 35
PROC_UE_CONTEXT_RELEASE = 41
PROC_UE_CONTEXT_RELEASE_REQUEST = 42
PROC_UPLINK_NAS_TRANSPORT = 46

# protocol IE ids
IE_ALLOWED_NSSAI = 0
IE_AMF_NAME = 1
IE_AMF_OVERLOAD_RESPONSE = 2
IE_AMF_SET_ID = 3
IE_AMF_TRAFFIC_LOAD_REDUCTION = 9
IE_AMF_UE_NGAP_ID = 10
IE_CAUSE = 15
IE_DEFAULT_PAGING_DRX = 21
IE_FIVEG_S_TMSI = 26
IE_GLOBAL_RAN_NODE_ID = 27
IE_GUAMI = 28
IE_NAS_PDU = 38
IE_PLMN_SUPPORT_LIST = 80
IE_RAN_NODE_NAME = 82
IE_RAN_UE_NGAP_ID = 85
IE_RELATIVE_AMF_CAPACITY = 86
IE_RRC_ESTABLISHMENT_CAUSE = 90
IE_SECURITY_KEY = 94
IE_SERVED_GUAMI_LIST = 96
IE_SUPPORTED_TA_LIST = 102
IE_TIME_TO_WAIT = 107
IE_UE_CONTEXT_REQUEST = 112
IE_UE_NGAP_IDS = 114
IE_UE_SECURITY_CAPABILITIES = 119
IE_USER_LOCATION_INFORMATION = 121
IE_RESET_TYPE = 88
IE_PAGING_DRX = 50
IE_TAI_LIST_FOR_PAGING = 103
IE_UE_ASSOCIATED_LIST = 111
IE_UE_PAGING_IDENTITY = 115
IE_UNAVAILABLE_GUAMI_LIST = 120

# PDU types: the NGAP-PDU CHOICE index
INITIATING, SUCCESSFUL, UNSUCCESSFUL = 0, 1, 2
PDU_NAMES = ("initiatingMessage", "successfulOutcome", "unsuccessfulOutcome")

# ASN.1 type name of each IE value (what pycrate's open type wants)
_IE_TYPE = {
    IE_ALLOWED_NSSAI: "AllowedNSSAI",
    IE_AMF_NAME: "AMFName",
    IE_AMF_OVERLOAD_RESPONSE: "OverloadResponse",
    IE_AMF_SET_ID: "AMFSetID",
    IE_AMF_TRAFFIC_LOAD_REDUCTION: "TrafficLoadReductionIndication",
    IE_AMF_UE_NGAP_ID: "AMF-UE-NGAP-ID",
    IE_CAUSE: "Cause",
    IE_DEFAULT_PAGING_DRX: "PagingDRX",
    IE_FIVEG_S_TMSI: "FiveG-S-TMSI",
    IE_GLOBAL_RAN_NODE_ID: "GlobalRANNodeID",
    IE_GUAMI: "GUAMI",
    IE_NAS_PDU: "NAS-PDU",
    IE_PLMN_SUPPORT_LIST: "PLMNSupportList",
    IE_RAN_NODE_NAME: "RANNodeName",
    IE_RAN_UE_NGAP_ID: "RAN-UE-NGAP-ID",
    IE_RELATIVE_AMF_CAPACITY: "RelativeAMFCapacity",
    IE_RRC_ESTABLISHMENT_CAUSE: "RRCEstablishmentCause",
    IE_SECURITY_KEY: "SecurityKey",
    IE_SERVED_GUAMI_LIST: "ServedGUAMIList",
    IE_SUPPORTED_TA_LIST: "SupportedTAList",
    IE_TIME_TO_WAIT: "TimeToWait",
    IE_UE_CONTEXT_REQUEST: "UEContextRequest",
    IE_UE_NGAP_IDS: "UE-NGAP-IDs",
    IE_UE_SECURITY_CAPABILITIES: "UESecurityCapabilities",
    IE_USER_LOCATION_INFORMATION: "UserLocationInformation",
    IE_RESET_TYPE: "ResetType",
    IE_PAGING_DRX: "PagingDRX",
    IE_TAI_LIST_FOR_PAGING: "TAIListForPaging",
    IE_UE_ASSOCIATED_LIST: "UE-associatedLogicalNG-connectionList",
    IE_UE_PAGING_IDENTITY: "UEPagingIdentity",
    IE_UNAVAILABLE_GUAMI_LIST: "UnavailableGUAMIList",
}

# (procedure code, pdu type) -> (message type name, procedure criticality)
_MESSAGES = {
    (PROC_AMF_CONFIGURATION_UPDATE, INITIATING): ("AMFConfigurationUpdate", "reject"),
    (PROC_AMF_CONFIGURATION_UPDATE, SUCCESSFUL): ("AMFConfigurationUpdateAcknowledge", "reject"),
    (PROC_AMF_CONFIGURATION_UPDATE, UNSUCCESSFUL): ("AMFConfigurationUpdateFailure", "reject"),
    (PROC_AMF_STATUS_INDICATION, INITIATING): ("AMFStatusIndication", "ignore"),
    (PROC_PAGING, INITIATING): ("Paging", "ignore"),
    (PROC_RAN_CONFIGURATION_UPDATE, UNSUCCESSFUL): ("RANConfigurationUpdateFailure", "reject"),
    (PROC_DOWNLINK_NAS_TRANSPORT, INITIATING): ("DownlinkNASTransport", "ignore"),
    (PROC_ERROR_INDICATION, INITIATING): ("ErrorIndication", "ignore"),
    (PROC_INITIAL_CONTEXT_SETUP, INITIATING): ("InitialContextSetupRequest", "reject"),
    (PROC_INITIAL_CONTEXT_SETUP, SUCCESSFUL): ("InitialContextSetupResponse", "reject"),
    (PROC_INITIAL_CONTEXT_SETUP, UNSUCCESSFUL): ("InitialContextSetupFailure", "reject"),
    (PROC_INITIAL_UE_MESSAGE, INITIATING): ("InitialUEMessage", "ignore"),
    (PROC_NG_RESET, INITIATING): ("NGReset", "reject"),
    (PROC_NG_RESET, SUCCESSFUL): ("NGResetAcknowledge", "reject"),
    (PROC_NG_SETUP, INITIATING): ("NGSetupRequest", "reject"),
    (PROC_NG_SETUP, SUCCESSFUL): ("NGSetupResponse", "reject"),
    (PROC_NG_SETUP, UNSUCCESSFUL): ("NGSetupFailure", "reject"),
    (PROC_OVERLOAD_START, INITIATING): ("OverloadStart", "ignore"),
    (PROC_OVERLOAD_STOP, INITIATING): ("OverloadStop", "reject"),
    (PROC_RAN_CONFIGURATION_UPDATE, INITIATING): ("RANConfigurationUpdate", "reject"),
    (PROC_RAN_CONFIGURATION_UPDATE, SUCCESSFUL): ("RANConfigurationUpdateAcknowledge", "reject"),
    (PROC_UE_CONTEXT_RELEASE, INITIATING): ("UEContextReleaseCommand", "reject"),
    (PROC_UE_CONTEXT_RELEASE, SUCCESSFUL): ("UEContextReleaseComplete", "reject"),
    (PROC_UE_CONTEXT_RELEASE_REQUEST, INITIATING): ("UEContextReleaseRequest", "ignore"),
    (PROC_UPLINK_NAS_TRANSPORT, INITIATING): ("UplinkNASTransport", "ignore"),
}

# criticality of each IE as TS 38.413 gives it for most messages (close enough for what we build)
_IE_CRIT = {
    IE_AMF_UE_NGAP_ID: "reject", IE_RAN_UE_NGAP_ID: "reject", IE_NAS_PDU: "reject",
    IE_USER_LOCATION_INFORMATION: "reject", IE_RRC_ESTABLISHMENT_CAUSE: "ignore",
    IE_FIVEG_S_TMSI: "reject", IE_AMF_SET_ID: "ignore", IE_UE_CONTEXT_REQUEST: "ignore",
    IE_CAUSE: "ignore", IE_GUAMI: "reject", IE_ALLOWED_NSSAI: "reject",
    IE_UE_SECURITY_CAPABILITIES: "reject", IE_SECURITY_KEY: "reject",
    IE_UE_NGAP_IDS: "reject", IE_GLOBAL_RAN_NODE_ID: "reject", IE_RAN_NODE_NAME: "ignore",
    IE_SUPPORTED_TA_LIST: "reject", IE_DEFAULT_PAGING_DRX: "ignore", IE_AMF_NAME: "reject",
    IE_SERVED_GUAMI_LIST: "reject", IE_RELATIVE_AMF_CAPACITY: "ignore",
    IE_PLMN_SUPPORT_LIST: "reject", IE_TIME_TO_WAIT: "ignore",
    IE_AMF_OVERLOAD_RESPONSE: "reject", IE_AMF_TRAFFIC_LOAD_REDUCTION: "ignore",
    IE_RESET_TYPE: "reject", IE_UE_ASSOCIATED_LIST: "ignore", IE_UE_PAGING_IDENTITY: "ignore",
    IE_TAI_LIST_FOR_PAGING: "ignore", IE_PAGING_DRX: "ignore", IE_UNAVAILABLE_GUAMI_LIST: "reject",
}


class NgapCodecError(ValueError):
    """pycrate could not encode or decode a message."""


@dataclass(slots=True)
class Message:
    """A decoded NGAP message: PDU type, procedure, and IE values by id (pycrate values)."""

    pdu_type: int
    procedure_code: int
    name: str
    ies: dict[int, Any] = field(default_factory=dict)


def encode(pdu_type: int, procedure_code: int, ies: list[tuple[int, Any]]) -> bytes:
    """Encode one message from ``[(ie_id, pycrate value), ...]`` in the given order."""
    try:
        name, crit = _MESSAGES[(procedure_code, pdu_type)]
    except KeyError:
        raise NgapCodecError(
            f"no message for procedure {procedure_code} / {PDU_NAMES[pdu_type]}") from None
    fields = [{"id": ie, "criticality": _IE_CRIT.get(ie, "ignore"), "value": (_IE_TYPE[ie], v)}
              for ie, v in ies]
    val = (PDU_NAMES[pdu_type], {"procedureCode": procedure_code, "criticality": crit,
                                 "value": (name, {"protocolIEs": fields})})
    try:
        _PDU.set_val(val)
        return _PDU.to_aper()
    except Exception as exc:
        raise NgapCodecError(f"cannot encode {name}: {exc}") from exc


def decode(data: bytes) -> Message:
    """Full APER decode; raises ``NgapCodecError`` with pycrate's reason."""
    try:
        _PDU.from_aper(data)
        pdu_name, body = _PDU.get_val()
    except Exception as exc:
        raise NgapCodecError(f"undecodable NGAP: {exc}") from exc
    name, content = body["value"]
    ies = {f["id"]: f["value"][1] for f in content.get("protocolIEs", [])}
    return Message(PDU_NAMES.index(pdu_name), body["procedureCode"], name, ies)


# ---- value helpers -------------------------------------------------------------------------


def plmn_bytes(mcc: str, mnc: str) -> bytes:
    """PLMN identity (TS 24.501 BCD, 3 octets) from e.g. ("001", "01")."""
    if len(mcc) != 3 or len(mnc) not in (2, 3) or not (mcc + mnc).isdigit():
        raise ValueError(f"bad PLMN {mcc}/{mnc}")
    d = [int(c) for c in mcc + mnc]
    mnc3 = d[5] if len(mnc) == 3 else 0xF
    return bytes([(d[1] << 4) | d[0], (mnc3 << 4) | d[2], (d[4] << 4) | d[3]])


@dataclass(frozen=True, slots=True)
class Guami:
    """Globally Unique AMF Identifier."""

    plmn: bytes
    region_id: int  # 8 bits
    set_id: int  # 10 bits
    pointer: int  # 6 bits

    def value(self) -> dict:
        return {"pLMNIdentity": self.plmn, "aMFRegionID": (self.region_id, 8),
                "aMFSetID": (self.set_id, 10), "aMFPointer": (self.pointer, 6)}

    @classmethod
    def from_value(cls, v: dict) -> Guami:
        return cls(v["pLMNIdentity"], v["aMFRegionID"][0], v["aMFSetID"][0], v["aMFPointer"][0])


def slice_list(plmn: bytes, ssts: tuple[int, ...] = (1,)) -> list[dict]:
    return [{"s-NSSAI": {"sST": bytes([s])}} for s in ssts]


# ---- the messages the gateway and the emulators build --------------------------------------


def supported_ta_list(plmn: bytes, tacs: tuple[int, ...] = (1,),
                      plmns: tuple[bytes, ...] | None = None,
                      ssts: tuple[int, ...] = (1,)) -> list[dict]:
    """SupportedTAList value: each TAC broadcast for each PLMN with the given slices."""
    return [{"tAC": tac.to_bytes(3, "big"), "broadcastPLMNList": [
        {"pLMNIdentity": p, "tAISliceSupportList": slice_list(p, ssts)}
        for p in (plmns or (plmn,))]} for tac in tacs]


def ng_setup_request(gnb_id: int, plmn: bytes, tac: int = 1, name: str | None = None,
                     tacs: tuple[int, ...] | None = None,
                     plmns: tuple[bytes, ...] | None = None,
                     ssts: tuple[int, ...] = (1,), ta_list: list[dict] | None = None) -> bytes:
    ies: list[tuple[int, Any]] = [
        (IE_GLOBAL_RAN_NODE_ID, ("globalGNB-ID", {"pLMNIdentity": plmn,
                                                  "gNB-ID": ("gNB-ID", (gnb_id, 32))})),
    ]
    if name:
        ies.append((IE_RAN_NODE_NAME, name))
    ies += [
        (IE_SUPPORTED_TA_LIST, ta_list or supported_ta_list(plmn, tacs or (tac,), plmns, ssts)),
        (IE_DEFAULT_PAGING_DRX, "v128"),
    ]
    return encode(INITIATING, PROC_NG_SETUP, ies)


def ta_list_of(tas: dict[tuple[bytes, int], frozenset]) -> list[dict]:
    """SupportedTAList value from {(PLMN, TAC): {(SST, SD)}} (what a gNB-side node serves)."""
    by_tac: dict[int, list[dict]] = {}
    for (plmn, tac), slices in sorted(tas.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        items = [{"s-NSSAI": ({"sST": sst} if sd is None else {"sST": sst, "sD": sd})}
                 for sst, sd in sorted(slices, key=repr)] or slice_list(plmn)
        by_tac.setdefault(tac, []).append({"pLMNIdentity": plmn, "tAISliceSupportList": items})
    return [{"tAC": tac.to_bytes(3, "big"), "broadcastPLMNList": b} for tac, b in by_tac.items()]


def ran_configuration_update(plmn: bytes, tacs: tuple[int, ...],
                             plmns: tuple[bytes, ...] | None = None,
                             ssts: tuple[int, ...] = (1,)) -> bytes:
    """RAN Configuration Update (TS 38.413 §8.7.2) with a new Supported TA List."""
    return encode(INITIATING, PROC_RAN_CONFIGURATION_UPDATE, [
        (IE_SUPPORTED_TA_LIST, supported_ta_list(plmn, tacs, plmns, ssts))])


def slice_key(item: dict) -> tuple[bytes, bytes | None]:
    """(SST, SD or None) of a slice list item ({"s-NSSAI": ...})."""
    s = item["s-NSSAI"]
    return s["sST"], s.get("sD")


def ran_node_key(value: Any) -> str:
    """A Global RAN Node ID as a short stable text ("gnb-<PLMN hex>-<id>/<bits>")."""
    if not value:
        return ""
    kind, v = value
    if kind == "globalGNB-ID" and isinstance(v, dict):
        gid = v.get("gNB-ID", ("", (0, 0)))[1]
        return f"gnb-{v['pLMNIdentity'].hex()}-{gid[0]}/{gid[1]}"
    return f"{kind}-{zlib.crc32(repr(v).encode()):08x}"


def supported_tas(ta_list: list[dict]) -> list[tuple[bytes, int, frozenset]]:
    """A decoded SupportedTAList -> [(PLMN, TAC, frozenset of (SST, SD)), ...]."""
    out = []
    for ta in ta_list:
        tac = int.from_bytes(ta["tAC"], "big")
        for b in ta["broadcastPLMNList"]:
            out.append((b["pLMNIdentity"], tac,
                        frozenset(slice_key(i) for i in b.get("tAISliceSupportList", []))))
    return out


def ng_setup_response(amf_name: str, guamis: list[Guami], relative_capacity: int,
                      plmns: list[bytes], ssts: tuple[int, ...] = (1,)) -> bytes:
    return encode(SUCCESSFUL, PROC_NG_SETUP, [
        (IE_AMF_NAME, amf_name),
        (IE_SERVED_GUAMI_LIST, [{"gUAMI": g.value()} for g in guamis]),
        (IE_RELATIVE_AMF_CAPACITY, max(0, min(255, relative_capacity))),
        (IE_PLMN_SUPPORT_LIST, [{"pLMNIdentity": p, "sliceSupportList": slice_list(p, ssts)}
                                for p in plmns]),
    ])


def amf_configuration_update(guamis: list[Guami], relative_capacity: int,
                             plmns: list[bytes], ssts: tuple[int, ...] = (1,)) -> bytes:
    """AMF Configuration Update (TS 38.413 §8.7.3): the pool's served GUAMIs changed."""
    return encode(INITIATING, PROC_AMF_CONFIGURATION_UPDATE, [
        (IE_SERVED_GUAMI_LIST, [{"gUAMI": g.value()} for g in guamis]),
        (IE_RELATIVE_AMF_CAPACITY, max(0, min(255, relative_capacity))),
        (IE_PLMN_SUPPORT_LIST, [{"pLMNIdentity": p, "sliceSupportList": slice_list(p, ssts)}
                                for p in plmns]),
    ])


def ng_setup_failure(cause: tuple[str, str], time_to_wait: str | None = "v10s") -> bytes:
    ies: list[tuple[int, Any]] = [(IE_CAUSE, cause)]
    if time_to_wait:
        ies.append((IE_TIME_TO_WAIT, time_to_wait))
    return encode(UNSUCCESSFUL, PROC_NG_SETUP, ies)


def error_indication(cause: tuple[str, str], amf_ue_id: int | None = None,
                     ran_ue_id: int | None = None) -> bytes:
    """ErrorIndication (TS 38.413 §8.7.5); the UE ids when the error is UE-associated."""
    ies: list[tuple[int, Any]] = []
    if amf_ue_id is not None:
        ies.append((IE_AMF_UE_NGAP_ID, amf_ue_id))
    if ran_ue_id is not None:
        ies.append((IE_RAN_UE_NGAP_ID, ran_ue_id))
    ies.append((IE_CAUSE, cause))
    return encode(INITIATING, PROC_ERROR_INDICATION, ies)


def overload_start(action: str = "reject-non-emergency-mo-dt",
                   reduction_percent: int | None = None) -> bytes:
    ies: list[tuple[int, Any]] = [(IE_AMF_OVERLOAD_RESPONSE, ("overloadAction", action))]
    if reduction_percent is not None:
        ies.append((IE_AMF_TRAFFIC_LOAD_REDUCTION, max(1, min(99, reduction_percent))))
    return encode(INITIATING, PROC_OVERLOAD_START, ies)


def overload_stop() -> bytes:
    return encode(INITIATING, PROC_OVERLOAD_STOP, [])


def _reset_items(items: list[tuple[int | None, int | None]]) -> list[dict]:
    out = []
    for amf_id, ran_id in items:
        d: dict[str, int] = {}
        if amf_id is not None:
            d["aMF-UE-NGAP-ID"] = amf_id
        if ran_id is not None:
            d["rAN-UE-NGAP-ID"] = ran_id
        out.append(d)
    return out


def reset_items(value: list[dict]) -> list[tuple[int | None, int | None]]:
    """A decoded UE-associatedLogicalNG-connectionList -> [(AMF UE id, RAN UE id), ...]."""
    return [(i.get("aMF-UE-NGAP-ID"), i.get("rAN-UE-NGAP-ID")) for i in value]


def ng_reset_acknowledge(items: list[tuple[int | None, int | None]] | None = None) -> bytes:
    """NG Reset Acknowledge; ``items`` = the (AMF UE id, RAN UE id) list of a partial reset."""
    ies: list[tuple[int, Any]] = []
    if items:
        ies.append((IE_UE_ASSOCIATED_LIST, _reset_items(items)))
    return encode(SUCCESSFUL, PROC_NG_RESET, ies)


def ng_reset_all(cause: tuple[str, str] = ("misc", "unspecified")) -> bytes:
    return encode(INITIATING, PROC_NG_RESET, [(IE_CAUSE, cause),
                                              (IE_RESET_TYPE, ("nG-Interface", "reset-all"))])


def ng_reset_part(items: list[tuple[int | None, int | None]],
                  cause: tuple[str, str] = ("misc", "unspecified")) -> bytes:
    """NG Reset of some UE-associated connections: [(AMF UE id, RAN UE id), ...], either None."""
    return encode(INITIATING, PROC_NG_RESET, [
        (IE_CAUSE, cause), (IE_RESET_TYPE, ("partOfNG-Interface", _reset_items(items)))])


def paging(s_tmsi: tuple[int, int, int], tais: list[tuple[bytes, int]]) -> bytes:
    """Paging (TS 38.413 §8.5.1): 5G-S-TMSI (set, pointer, TMSI) and the TAIs to page in."""
    return encode(INITIATING, PROC_PAGING, [
        (IE_UE_PAGING_IDENTITY, ("fiveG-S-TMSI", {
            "aMFSetID": (s_tmsi[0], 10), "aMFPointer": (s_tmsi[1], 6),
            "fiveG-TMSI": s_tmsi[2].to_bytes(4, "big")})),
        (IE_TAI_LIST_FOR_PAGING, [{"tAI": {"pLMNIdentity": p, "tAC": t.to_bytes(3, "big")}}
                                  for p, t in tais]),
    ])


def paging_tais(ies: dict) -> set[tuple[bytes, int]]:
    return {(i["tAI"]["pLMNIdentity"], int.from_bytes(i["tAI"]["tAC"], "big"))
            for i in ies.get(IE_TAI_LIST_FOR_PAGING, [])}


def amf_status_indication(guamis: list[Guami], backup: str | None = None) -> bytes:
    """AMF Status Indication (TS 38.413 §8.7.6): these GUAMIs are unavailable; ``backup``
    names the AMF to take their UEs (Backup AMF Name)."""
    items = []
    for g in guamis:
        item: dict[str, Any] = {"gUAMI": g.value()}
        if backup:
            item["backupAMFName"] = backup
        items.append(item)
    return encode(INITIATING, PROC_AMF_STATUS_INDICATION, [(IE_UNAVAILABLE_GUAMI_LIST, items)])


def user_location(plmn: bytes, cell_id: int, tac: int = 1) -> tuple:
    return ("userLocationInformationNR", {
        "nR-CGI": {"pLMNIdentity": plmn, "nRCellIdentity": (cell_id, 36)},
        "tAI": {"pLMNIdentity": plmn, "tAC": tac.to_bytes(3, "big")}})


def initial_ue_message(ran_ue_id: int, nas: bytes, plmn: bytes, cell_id: int = 1,
                       s_tmsi: tuple[int, int, int] | None = None,
                       amf_set_id: int | None = None,
                       allowed_ssts: tuple[int, ...] | None = None) -> bytes:
    """InitialUEMessage; ``s_tmsi`` = (AMF set id, AMF pointer, 5G-TMSI); ``allowed_ssts``
    the UE's slices (Allowed NSSAI IE)."""
    ies: list[tuple[int, Any]] = [
        (IE_RAN_UE_NGAP_ID, ran_ue_id), (IE_NAS_PDU, nas),
        (IE_USER_LOCATION_INFORMATION, user_location(plmn, cell_id)),
        (IE_RRC_ESTABLISHMENT_CAUSE, "mo-Signalling"),
    ]
    if s_tmsi is not None:
        ies.append((IE_FIVEG_S_TMSI, {"aMFSetID": (s_tmsi[0], 10), "aMFPointer": (s_tmsi[1], 6),
                                      "fiveG-TMSI": s_tmsi[2].to_bytes(4, "big")}))
    if amf_set_id is not None:
        ies.append((IE_AMF_SET_ID, (amf_set_id, 10)))
    ies.append((IE_UE_CONTEXT_REQUEST, "requested"))
    if allowed_ssts is not None:
        ies.append((IE_ALLOWED_NSSAI, slice_list(plmn, allowed_ssts)))
    return encode(INITIATING, PROC_INITIAL_UE_MESSAGE, ies)


def downlink_nas(amf_ue_id: int, ran_ue_id: int, nas: bytes) -> bytes:
    return encode(INITIATING, PROC_DOWNLINK_NAS_TRANSPORT, [
        (IE_AMF_UE_NGAP_ID, amf_ue_id), (IE_RAN_UE_NGAP_ID, ran_ue_id), (IE_NAS_PDU, nas)])


def uplink_nas(amf_ue_id: int, ran_ue_id: int, nas: bytes, plmn: bytes,
               cell_id: int = 1) -> bytes:
    return encode(INITIATING, PROC_UPLINK_NAS_TRANSPORT, [
        (IE_AMF_UE_NGAP_ID, amf_ue_id), (IE_RAN_UE_NGAP_ID, ran_ue_id), (IE_NAS_PDU, nas),
        (IE_USER_LOCATION_INFORMATION, user_location(plmn, cell_id))])


def initial_context_setup_request(amf_ue_id: int, ran_ue_id: int, guami: Guami,
                                  nas: bytes | None = None) -> bytes:
    ies: list[tuple[int, Any]] = [
        (IE_AMF_UE_NGAP_ID, amf_ue_id), (IE_RAN_UE_NGAP_ID, ran_ue_id),
        (IE_GUAMI, guami.value()),
        (IE_ALLOWED_NSSAI, slice_list(guami.plmn)),
        (IE_UE_SECURITY_CAPABILITIES, {
            "nRencryptionAlgorithms": (0xE000, 16), "nRintegrityProtectionAlgorithms": (0xE000, 16),
            "eUTRAencryptionAlgorithms": (0, 16), "eUTRAintegrityProtectionAlgorithms": (0, 16)}),
        (IE_SECURITY_KEY, (0x0123456789ABCDEF << 192, 256)),
    ]
    if nas is not None:
        ies.append((IE_NAS_PDU, nas))
    return encode(INITIATING, PROC_INITIAL_CONTEXT_SETUP, ies)


def initial_context_setup_response(amf_ue_id: int, ran_ue_id: int) -> bytes:
    return encode(SUCCESSFUL, PROC_INITIAL_CONTEXT_SETUP, [
        (IE_AMF_UE_NGAP_ID, amf_ue_id), (IE_RAN_UE_NGAP_ID, ran_ue_id)])


def ue_context_release_command(amf_ue_id: int, ran_ue_id: int | None,
                               cause: tuple[str, str] = ("nas", "normal-release")) -> bytes:
    ids = (("uE-NGAP-ID-pair", {"aMF-UE-NGAP-ID": amf_ue_id, "rAN-UE-NGAP-ID": ran_ue_id})
           if ran_ue_id is not None else ("aMF-UE-NGAP-ID", amf_ue_id))
    return encode(INITIATING, PROC_UE_CONTEXT_RELEASE, [(IE_UE_NGAP_IDS, ids),
                                                        (IE_CAUSE, cause)])


def ue_context_release_complete(amf_ue_id: int, ran_ue_id: int) -> bytes:
    return encode(SUCCESSFUL, PROC_UE_CONTEXT_RELEASE, [
        (IE_AMF_UE_NGAP_ID, amf_ue_id), (IE_RAN_UE_NGAP_ID, ran_ue_id)])


def ue_context_release_request(amf_ue_id: int, ran_ue_id: int,
                               cause: tuple[str, str] = ("radioNetwork", "user-inactivity")
                               ) -> bytes:
    return encode(INITIATING, PROC_UE_CONTEXT_RELEASE_REQUEST, [
        (IE_AMF_UE_NGAP_ID, amf_ue_id), (IE_RAN_UE_NGAP_ID, ran_ue_id), (IE_CAUSE, cause)])
