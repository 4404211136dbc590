"""Issue 17, item 1 with the real etcd: two N2 router replicas share established UEs' records
through gateway/n2_replica.py; one is gone, its gNBs reconnect to the other, no UE is lost.
(The SCTP transport of the same scenario runs in the VM: tests/sctp/test_n2_replicas.py.)
"""

from __future__ import annotations

from gateway.n2_replica import EtcdUeReplica
from perf.amf_emulator import AmfLogic
from perf.gnb_emulator import GnbLogic
from tests.test_ngap_replicas import PPID, Replica, pump
from tests.waiting import wait_until


async def test_records_through_etcd_survive_a_replica(etcd) -> None:
    a1, a2 = AmfLogic("amf1", id_base=1000), AmfLogic("amf2", id_base=5000)
    ra, rb = Replica(1, [a1, a2]), Replica(2, [a1, a2])
    pump([ra, rb])
    ea = await EtcdUeReplica(ra.router, [etcd.endpoint], "/t-n2").start()
    eb = await EtcdUeReplica(rb.router, [etcd.endpoint], "/t-n2").start()
    try:
        g1, g2 = GnbLogic(1, hold=True), GnbLogic(2, hold=True)
        for g in (g1, g2):
            ra.connect(g)
            for i in range(1, 101):
                ra.router.gnb_message(ra.peer_of(g), *g.start_ue(i), PPID)
        pump([ra, rb])
        await ea.flushed()
        await wait_until(lambda: sum(len(v) for v in rb.router.standby.values()) == 200)
        # 200 records in a few batched transactions, not one round trip per UE
        assert ea.stats["records_written"] == 200 and ea.stats["transactions"] <= 20
        assert eb.stats["records_received"] == 200
        await ea.close()  # replica A dies (its lease would expire; its records stay till then)
        ra.alive = False
        for g in (g1, g2):
            rb.connect(g)
        pump([rb])
        assert rb.router.stats["ues_adopted"] == 200
        for g in (g1, g2):
            g.hold = False
            for i in range(1, 101):
                rb.router.gnb_message(rb.peer_of(g), *g.resume_ue(i), PPID)
        pump([rb])
        assert g1.completed == 100 and g2.completed == 100
        assert g1.violations == [] and g2.violations == []
        assert a1.completed + a2.completed == 200
        await eb.flushed()
        resp = await eb._client.kv.get(b"/t-n2/ue/", b"/t-n2/ue0")
        assert list(resp.kvs) == []  # released UEs' records deleted
    finally:
        await eb.close()
