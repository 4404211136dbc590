"""Host tests of the N2 pieces around the router: messages the gateway builds (decoded by
pycrate), settings from the real config section, the no-SCTP answer of the demo and tools,
the decode benchmark's output, and the pcap writer (read back by scapy)."""

from __future__ import annotations

import asyncio
import json

import pytest

from dataplane.sctp import sctp_available
from gateway.n2 import N2Settings, from_config, plmn_from_digits
from nf_adapters.ngap import codec as c
from perf.n2_demo import run_n2_demo

NO_SCTP = not sctp_available()[0]


def test_plmn_encoding() -> None:
    assert c.plmn_bytes("001", "01") == bytes.fromhex("00f110")
    assert c.plmn_bytes("310", "410") == bytes.fromhex("130014")
    assert plmn_from_digits("00101") == bytes.fromhex("00f110")
    with pytest.raises(ValueError):
        plmn_from_digits("0010")


def test_error_indication_carries_cause_and_ids() -> None:
    m = c.decode(c.error_indication(("radioNetwork", "unknown-local-UE-NGAP-ID"), 2**40 - 1, 0))
    assert (m.pdu_type, m.procedure_code, m.name) == (c.INITIATING, c.PROC_ERROR_INDICATION,
                                                      "ErrorIndication")
    assert m.ies == {c.IE_AMF_UE_NGAP_ID: 2**40 - 1, c.IE_RAN_UE_NGAP_ID: 0,
                     c.IE_CAUSE: ("radioNetwork", "unknown-local-UE-NGAP-ID")}
    assert c.decode(c.error_indication(("protocol", "transfer-syntax-error"))).ies == {
        c.IE_CAUSE: ("protocol", "transfer-syntax-error")}


def test_ng_setup_response_and_overload_messages() -> None:
    plmn = c.plmn_bytes("001", "01")
    guamis = [c.Guami(plmn, 0xCA, 1023, 63), c.Guami(plmn, 1, 0, 0)]
    m = c.decode(c.ng_setup_response("pool", guamis, 300, [plmn]))
    assert m.ies[c.IE_AMF_NAME] == "pool"
    assert [c.Guami.from_value(g["gUAMI"]) for g in m.ies[c.IE_SERVED_GUAMI_LIST]] == guamis
    assert m.ies[c.IE_RELATIVE_AMF_CAPACITY] == 255  # capped to the IE's range
    start = c.decode(c.overload_start(reduction_percent=40))
    assert start.ies[c.IE_AMF_OVERLOAD_RESPONSE] == ("overloadAction",
                                                     "reject-non-emergency-mo-dt")
    assert start.ies[c.IE_AMF_TRAFFIC_LOAD_REDUCTION] == 40
    assert c.decode(c.overload_stop()).name == "OverloadStop"
    with pytest.raises(c.NgapCodecError):
        c.decode(b"\x00\x15\x00\x30\x00")
    with pytest.raises(c.NgapCodecError):
        c.encode(c.UNSUCCESSFUL, c.PROC_DOWNLINK_NAS_TRANSPORT, [])


def test_settings_from_the_config_section() -> None:
    config = pytest.importorskip("gateway.config")
    section = config.NgapSection(
        enabled=True, listen=["10.0.0.1", "10.0.1.1"], port=38412, streams=8,
        amf_pools=[config.AmfPool(name="p1", endpoints=[config.NgapEndpoint(
            addresses=["10.1.0.1", "10.1.1.1"], port=38413)], plmn="001010", amf_set_id=3,
            relative_capacity=77)],
        heartbeat_interval_ms=5000, rto_min_ms=200, rto_max_ms=2000)
    s = from_config(section)
    assert s.listen == ("10.0.0.1", "10.0.1.1") and s.streams == 8
    assert s.amf_pools[0].endpoints[0].addresses == ("10.1.0.1", "10.1.1.1")
    assert s.amf_pools[0].endpoints[0].port == 38413
    assert (s.amf_pools[0].plmn, s.amf_pools[0].amf_set_id) == ("001010", 3)
    assert (s.heartbeat_interval_ms, s.rto_min_ms, s.rto_max_ms) == (5000, 200, 2000)
    assert from_config({"port": 1234}).port == 1234  # dicts work too; defaults fill the rest
    assert from_config({}) == N2Settings()


@pytest.mark.skipif(not NO_SCTP, reason="the kernel has SCTP: the demo would run for real")
async def test_demo_says_plainly_when_kernel_sctp_is_missing() -> None:
    # a 10-minute demo that answers well inside the (hang-guard) 30 s has not run its traffic
    r = await asyncio.wait_for(run_n2_demo(600.0, gnbs=2, ues=5), 30.0)
    assert r["available"] is False and "errno 93" in r["reason"]
    assert r["ngap_messages"] == 0 and r["ngap_errors"] == 0


@pytest.mark.skipif(not NO_SCTP, reason="the kernel has SCTP")
def test_load_tool_reports_missing_sctp(capsys) -> None:
    from perf.ngap_load import main

    assert main(["--self", "--json"]) == 2
    out = json.loads(capsys.readouterr().out)
    assert out["available"] is False


def test_decode_bench_json(capsys) -> None:
    from perf.ngap_decode_bench import main

    assert main(["--json", "--min-time", "0.005", "--rounds", "1"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["fast_us"] > 0 and out["pycrate_us"] > out["fast_us"]


def test_pcap_holds_sctp_ngap_packets(tmp_path) -> None:
    from scapy.layers.sctp import SCTPChunkData
    from scapy.utils import rdpcap

    from perf.gnb_emulator import PacketLog, write_pcap

    log = PacketLog(local=("10.0.0.2", 40000), remote=("10.0.0.1", 38412))
    sent = c.ng_setup_request(1, c.plmn_bytes("001", "01"))
    log.add(True, sent, 0, 60)
    log.add(False, c.downlink_nas(1, 2, b"x"), 3, 60)
    path = tmp_path / "n2.pcap"
    assert write_pcap(str(path), [log]) == 2
    pkts = rdpcap(str(path))
    chunks = [p[SCTPChunkData] for p in pkts]
    assert [ch.proto_id for ch in chunks] == [60, 60]
    assert [ch.stream_id for ch in chunks] == [0, 3]
    assert bytes(chunks[0].data) == sent
    assert pkts[0]["IP"].dst == "10.0.0.1" and pkts[1]["IP"].src == "10.0.0.1"
