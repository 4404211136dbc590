"""Issue 17 on the real Linux SCTP stack (inside the VM): NG Setup checks, paging by TAI and
NG Reset both ways with per-UE lists, through the gateway's N2Service.  Kept small: Python
runs ~18x slower in the emulated CPU; the logic's corner cases are host tests
(tests/test_ngap_carrier.py).
"""

from __future__ import annotations

import asyncio

import pytest

from gateway.n2 import AmfEndpointSettings, AmfPoolSettings, N2Service, N2Settings
from nf_adapters.ngap import codec as c
from perf.amf_emulator import AmfLogic, AmfServer
from perf.gnb_emulator import GnbClient, GnbLogic, PacketLog

pytestmark = pytest.mark.sctp

PLMN = c.plmn_bytes("001", "01")


async def wait_for(pred, timeout: float = 30.0) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not pred():
        if loop.time() > end:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)


async def test_ng_setup_checks_paging_and_ng_reset() -> None:
    l1 = AmfLogic("amf1", set_id=1, pointer=1, id_base=1000)
    l2 = AmfLogic("amf2", set_id=1, pointer=2, id_base=5000)
    amfs = [AmfServer(l1), AmfServer(l2)]
    for a in amfs:
        await a.start(["127.0.0.1"], 0)
    settings = N2Settings(listen=("127.0.0.1",), port=0, heartbeat_interval_ms=1000,
                          rto_min_ms=100, rto_max_ms=1000, amf_pools=(AmfPoolSettings(
                              "pool", tuple(AmfEndpointSettings(("127.0.0.1",), a.port)
                                            for a in amfs), tacs=(1, 2)),))
    service = await N2Service(settings).start()
    clients: list[GnbClient] = []
    try:
        await wait_for(lambda: sum(a.state == "up" for a in service.router.amfs) == 2)
        # unserved PLMN, then unserved TAC: NG Setup Failure with the cause
        for logic in (GnbLogic(8, plmn=c.plmn_bytes("999", "70")), GnbLogic(9, tacs=(7,))):
            log = PacketLog()
            bad = GnbClient(logic, log)
            clients.append(bad)
            with pytest.raises(ConnectionRefusedError):
                await bad.connect(["127.0.0.1"], service.port)
            answer = c.decode(log.packets[-1][2])
            assert answer.pdu_type == c.UNSUCCESSFUL
            assert answer.ies[c.IE_CAUSE] == ("misc", "unknown-PLMN-or-SNPN")
        assert service.router.stats["ng_setup_failures"] == 2

        g1 = GnbClient(GnbLogic(1, tacs=(1,), hold=True))
        g2 = GnbClient(GnbLogic(2, tacs=(2,), hold=True))
        clients += [g1, g2]
        for cl in (g1, g2):
            await cl.connect(["127.0.0.1"], service.port)
        for i in range(1, 5):
            g1.start_ue(i)
        await wait_for(lambda: len(g1.logic.amf_ids_seen) == 4)  # established, idle
        assert len(l1.ues) == 2 and len(l2.ues) == 2  # spread by capacity, not all to amf1

        # paging from amf1 for TAC 2 reaches only gNB 2
        a1 = next(iter(amfs[0].associations))
        a1.send(c.paging((1, 1, 99), [(PLMN, 2)]), 0, 60)
        await wait_for(lambda: g2.logic.pagings == 1)
        assert g1.logic.pagings == 0

        # gNB 1 resets two UEs by list: each AMF gets its part with its own ids
        table = {u["gnb_ran_id"]: u for u in service.router.ue_table()}
        items = [(table[1]["gw_amf_id"], 1), (None, 2)]
        g1._send(c.ng_reset_part(items), 0)
        await wait_for(lambda: g1.logic.reset_acks)
        assert g1.logic.reset_acks == [items]
        got = {p for r in l1.resets + l2.resets for p in r}
        assert got == {(table[r]["amf_ue_id"], table[r]["gw_ran_id"]) for r in (1, 2)}
        assert sorted(u["gnb_ran_id"] for u in service.router.ue_table()) == [3, 4]

        # amf holding UE 3 resets its whole interface: gNB 1 hears of UE 3 with its ids
        holder = table[3]["amf"]
        logic, server = (l1, amfs[0]) if holder == "pool/0" else (l2, amfs[1])
        next(iter(server.associations)).send(c.ng_reset_all(), 0, 60)
        await wait_for(lambda: logic.reset_acks)
        assert logic.reset_acks == [None]
        assert g1.logic.resets[-1] == [(table[3]["gw_amf_id"], 3)]
        assert [u["gnb_ran_id"] for u in service.router.ue_table()] == [4]
        st = service.router.stats
        assert st["out_of_sequence"] == 0 and st["decode_errors"] == 0
        assert g1.logic.violations == [] and g2.logic.violations == []
    finally:
        for cl in clients:
            cl.close()
        await service.close()
        for a in amfs:
            a.stop()
