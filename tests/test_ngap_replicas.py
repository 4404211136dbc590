"""Issue 17, item 1 on the host: two N2 proxy replicas (sans-IO routers) share established UEs'
records; one dies, its gNBs reconnect to the other, and every UE's next uplink reaches its AMF.
The shared store here is a dict relayed at once; gateway/n2_replica.py puts it on etcd.
"""

from __future__ import annotations

from nf_adapters.ngap import codec as c
from nf_adapters.ngap.ngap_router import GatewayIdentity, NgapRouter
from perf.amf_emulator import AmfLogic
from perf.gnb_emulator import GnbLogic
from tests.test_ngap_router import PLMN, PPID, Wire


class Replica:
    def __init__(self, number: int, amfs: list[AmfLogic]) -> None:
        self.router = NgapRouter(GatewayIdentity(PLMN, pool_name="pool-a"), replica=number)
        self.amfs = [(logic, Wire(), None) for logic in amfs]
        self.amfs = [(logic, w, self.router.add_amf(w, logic.name)) for logic, w, _ in self.amfs]
        self.gnbs: list[tuple[GnbLogic, Wire, object]] = []
        self.alive = True

    def connect(self, logic: GnbLogic):
        wire = Wire()
        peer = self.router.add_gnb(wire)
        self.gnbs.append((logic, wire, peer))
        self.router.gnb_message(peer, *logic.ng_setup(), PPID)
        return peer

    def peer_of(self, logic: GnbLogic):
        return next(p for g, _w, p in self.gnbs if g is logic)


def pump(replicas: list[Replica]) -> None:
    for _ in range(100_000):
        moved = False
        for r in replicas:
            if not r.alive:
                continue
            for logic, wire, peer in r.amfs:
                while wire.queue:
                    data, stream, _ppid = wire.queue.pop(0)
                    moved = True
                    for out, sid in logic.handle(data, stream, PPID):
                        r.router.amf_message(peer, out, sid, PPID)
            for logic, wire, peer in r.gnbs:
                while wire.queue:
                    data, stream, _ppid = wire.queue.pop(0)
                    moved = True
                    for out, sid in logic.handle(data, stream, PPID):
                        r.router.gnb_message(peer, out, sid, PPID)
        if not moved:
            return
    raise AssertionError("never quiet")


def share(replicas: list[Replica]) -> dict:
    """Each replica's records reach the others' standby tables (what the etcd watch does)."""
    store: dict[str, tuple] = {}
    for r in replicas:
        def replicate(key, record, me=r):
            if record is None:
                store.pop(key, None)
            else:
                store[key] = record
            for other in replicas:
                if other is not me and other.alive:
                    other.router.standby_update(key, record)
        r.router.replicate = replicate
    return store


def test_two_replicas_one_dies_no_ue_lost() -> None:
    a1, a2 = AmfLogic("amf1", id_base=1000), AmfLogic("amf2", id_base=5000)
    ra, rb = Replica(1, [a1, a2]), Replica(2, [a1, a2])
    store = share([ra, rb])
    pump([ra, rb])
    g1, g2 = GnbLogic(1, hold=True), GnbLogic(2, hold=True)
    for g in (g1, g2):
        ra.connect(g)
        for i in range(1, 101):
            ra.router.gnb_message(ra.peer_of(g), *g.start_ue(i), PPID)
    pump([ra, rb])
    assert len(g1.amf_ids_seen) == 100 and len(g2.amf_ids_seen) == 100  # established, idle
    assert len(store) == 200 and sum(len(v) for v in rb.router.standby.values()) == 200
    assert len(a1.ues) == 100 and len(a2.ues) == 100
    assert all(u["gw_ran_id"] >> 24 == 1 for u in ra.router.ue_table())  # replica 1's range

    ra.alive = False  # SIGKILL: nothing more from or to replica A
    for g in (g1, g2):
        rb.connect(g)  # the gNB reconnects to the other replica and runs NG Setup again
    pump([rb])
    assert g1.setup_ok and g2.setup_ok
    assert rb.router.stats["ues_adopted"] == 200 and rb.router.ue_count == 200
    for g in (g1, g2):
        g.hold = False
        peer = rb.peer_of(g)
        for i in range(1, 101):
            rb.router.gnb_message(peer, *g.resume_ue(i), PPID)
    pump([rb])
    for g in (g1, g2):
        assert g.violations == [] and g.completed == 100  # every UE's next uplink got through
    assert a1.completed + a2.completed == 200 and a1.errors_received + a2.errors_received == 0
    assert rb.router.stats["unknown_ue"] == 0 and rb.router.ue_count == 0
    assert store == {}  # released UEs' records are gone
    # new UEs on the survivor: its own id range, no clash with the adopted ones
    rb.router.gnb_message(rb.peer_of(g1), *g1.start_ue(500), PPID)
    pump([rb])
    assert g1.completed == 101


def test_ran_node_key_is_stable() -> None:
    v = ("globalGNB-ID", {"pLMNIdentity": PLMN, "gNB-ID": ("gNB-ID", (7, 32))})
    assert c.ran_node_key(v) == "gnb-00f110-7/32"
    assert c.ran_node_key(None) == ""


def test_records_arriving_after_the_gnb_reconnected_are_adopted() -> None:
    a1 = AmfLogic("amf1")
    ra, rb = Replica(1, [a1]), Replica(2, [a1])
    pending: list[tuple] = []  # the watch is late: records reach B only later
    ra.router.replicate = lambda key, rec: pending.append((key, rec))
    pump([ra, rb])
    g = GnbLogic(1, hold=True)
    ra.connect(g)
    for i in range(1, 6):
        ra.router.gnb_message(ra.peer_of(g), *g.start_ue(i), PPID)
    pump([ra, rb])
    ra.alive = False
    rb.connect(g)
    pump([rb])
    assert rb.router.ue_count == 0
    for key, rec in pending:
        rb.router.standby_update(key, rec)
    assert rb.router.ue_count == 5 and rb.router.stats["ues_adopted"] == 5
    g.hold = False
    for i in range(1, 6):
        rb.router.gnb_message(rb.peer_of(g), *g.resume_ue(i), PPID)
    pump([rb])
    assert g.completed == 5 and g.violations == []
