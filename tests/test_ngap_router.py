"""The N2 proxy logic (sans-IO ngap_router) between emulated gNBs and AMFs, on the host.

Links are in-memory queues (the router does no I/O; the kernel-SCTP path is covered in
tests/sctp/ inside the VM).  All messages are pycrate-encoded; answers are decoded by pycrate.
"""

from __future__ import annotations

from collections import Counter

from nf_adapters.ngap import codec as c
from nf_adapters.ngap.ngap_router import GatewayIdentity, Limits, NgapRouter
from perf.amf_emulator import AmfLogic
from perf.gnb_emulator import GnbLogic

PLMN = c.plmn_bytes("001", "01")
PPID = 60


class Wire:
    """One direction of an in-memory association."""

    def __init__(self, out_streams: int = 16) -> None:
        self.out_streams = out_streams
        self.queue: list[tuple[bytes, int, int]] = []
        self.up = True

    def send(self, data: bytes, stream: int, ppid: int) -> bool:
        if not self.up:
            return False
        self.queue.append((data, stream, ppid))
        return True


class Net:
    """A router with emulated AMFs and gNBs, pumped until quiet."""

    def __init__(self, amfs: list[AmfLogic], limits: Limits = Limits()) -> None:
        self.router = NgapRouter(GatewayIdentity(PLMN, pool_name="pool-a"), limits)
        self.amfs = {}
        for logic in amfs:
            wire = Wire()
            peer = self.router.add_amf(wire, logic.name)
            self.amfs[logic.name] = (logic, wire, peer)
        self.gnbs: list[tuple[GnbLogic, Wire, object]] = []
        self.seen_by_gnb: list[list[tuple[bytes, int, int]]] = []
        self.pump()

    def add_gnb(self, logic: GnbLogic, setup: bool = True):
        wire = Wire()
        peer = self.router.add_gnb(wire)
        self.gnbs.append((logic, wire, peer))
        self.seen_by_gnb.append([])
        if setup:
            self.router.gnb_message(peer, *logic.ng_setup(), PPID)
            self.pump()
        return peer

    def pump(self, limit: int = 100_000) -> None:
        for _ in range(limit):
            moved = False
            for logic, wire, peer in self.amfs.values():
                while wire.queue and wire.up:
                    data, stream, ppid = wire.queue.pop(0)
                    moved = True
                    for out, sid in logic.handle(data, stream, ppid):
                        self.router.amf_message(peer, out, sid, PPID)
            for i, (logic, wire, peer) in enumerate(self.gnbs):
                while wire.queue:
                    data, stream, ppid = wire.queue.pop(0)
                    self.seen_by_gnb[i].append((data, stream, ppid))
                    moved = True
                    for out, sid in logic.handle(data, stream, ppid):
                        self.router.gnb_message(peer, out, sid, PPID)
            if not moved:
                return
        raise AssertionError("the network never went quiet")

    def start_ues(self, gnb_index: int, ids: range) -> None:
        logic, _wire, peer = self.gnbs[gnb_index]
        for i in ids:
            self.router.gnb_message(peer, *logic.start_ue(i), PPID)

    def kill_amf(self, name: str) -> None:
        _logic, wire, peer = self.amfs[name]
        wire.up = False
        wire.queue.clear()
        self.router.amf_lost(peer)


def decoded(msgs: list[tuple[bytes, int, int]], proc: int) -> list[c.Message]:
    return [m for m in (c.decode(d) for d, _s, _p in msgs) if m.procedure_code == proc]


def test_ng_setup_is_answered_for_the_pool() -> None:
    net = Net([AmfLogic("amf1", set_id=1, capacity=40), AmfLogic("amf2", set_id=2, capacity=60)])
    assert [a.state for a in net.router.amfs] == ["up", "up"]
    gnb = GnbLogic(1)
    net.add_gnb(gnb)
    assert gnb.setup_ok is True
    (resp,) = decoded(net.seen_by_gnb[0], c.PROC_NG_SETUP)
    assert resp.pdu_type == c.SUCCESSFUL
    assert resp.ies[c.IE_AMF_NAME] == "pool-a"
    sets = sorted(g["gUAMI"]["aMFSetID"][0] for g in resp.ies[c.IE_SERVED_GUAMI_LIST])
    assert sets == [1, 2]
    assert resp.ies[c.IE_RELATIVE_AMF_CAPACITY] == 100
    assert resp.ies[c.IE_PLMN_SUPPORT_LIST][0]["pLMNIdentity"] == PLMN


def test_ng_setup_fails_without_any_amf() -> None:
    net = Net([])
    gnb = GnbLogic(1)
    net.add_gnb(gnb)
    assert gnb.setup_ok is False
    (fail,) = decoded(net.seen_by_gnb[0], c.PROC_NG_SETUP)
    assert fail.pdu_type == c.UNSUCCESSFUL and c.IE_TIME_TO_WAIT in fail.ies


def test_two_gnbs_fifty_ues_each_through_two_amfs() -> None:
    a1, a2 = AmfLogic("amf1", set_id=1, id_base=1000), AmfLogic("amf2", set_id=2, id_base=1000)
    net = Net([a1, a2])
    g1, g2 = GnbLogic(1), GnbLogic(2)
    net.add_gnb(g1)
    net.add_gnb(g2)
    net.start_ues(0, range(1, 51))
    net.start_ues(1, range(1, 51))  # the same RAN UE ids on both gNBs
    net.pump()
    for g in (g1, g2):
        assert g.violations == []
        assert g.completed == 50
    assert a1.completed + a2.completed == 100
    assert abs(a1.completed - a2.completed) <= 2  # equal capacity, least-loaded
    # each AMF saw unique RAN ids (rewritten by the gateway), each UE on one non-zero stream
    for amf in (a1, a2):
        streams: dict[int, set[int]] = {}
        for _pdu, _proc, ran, _amf, stream, ppid in amf.received:
            assert ppid == PPID
            if ran >= 0:
                streams.setdefault(ran, set()).add(stream)
        assert all(len(s) == 1 and 0 not in s for s in streams.values())
    # both AMFs allocated ids 1001.. ; the gNBs must still see distinct AMF UE ids per UE
    assert len(g1.amf_ids_seen | g2.amf_ids_seen) == 100
    assert net.router.ue_count == 0
    assert net.router.stats["forwarded_uplink"] > 0 and net.router.stats["unknown_ue"] == 0


def test_new_ues_follow_relative_capacity() -> None:
    a1, a2 = AmfLogic("amf1", set_id=1, capacity=30), AmfLogic("amf2", set_id=2, capacity=10)
    net = Net([a1, a2])
    g = GnbLogic(1)
    net.add_gnb(g)
    net.start_ues(0, range(1, 41))  # all 40 in flight at once: load counts
    chosen = Counter(ue["amf"] for ue in net.router.ue_table())
    assert chosen == {"amf1": 30, "amf2": 10}
    net.pump()
    assert g.completed == 40


def test_s_tmsi_routes_to_the_amf_set() -> None:
    a1, a2 = AmfLogic("amf1", set_id=1, capacity=255), AmfLogic("amf2", set_id=7, capacity=1)
    net = Net([a1, a2])
    g = GnbLogic(1, s_tmsi_set_id=7)
    net.add_gnb(g)
    net.start_ues(0, range(1, 11))
    net.pump()
    assert g.completed == 10 and a2.completed == 10 and a1.completed == 0


def test_amf_failure_releases_its_ues_and_moves_new_ones() -> None:
    a1, a2 = AmfLogic("amf1", set_id=1), AmfLogic("amf2", set_id=1)
    net = Net([a1, a2])
    g = GnbLogic(1)
    net.add_gnb(g)
    net.start_ues(0, range(1, 11))
    # deliver the InitialUEMessages and the first downlink only: UEs are mid-registration
    for logic, wire, peer in net.amfs.values():
        for data, stream, ppid in wire.queue:
            for out, sid in logic.handle(data, stream, ppid):
                net.router.amf_message(peer, out, sid, PPID)
        wire.queue.clear()
    on_amf1 = {ue["gnb_ran_id"] for ue in net.router.ue_table() if ue["amf"] == "amf1"}
    assert len(on_amf1) == 5
    net.seen_by_gnb[0].clear()
    g_wire = net.gnbs[0][1]
    downlinks_before = list(g_wire.queue)
    g_wire.queue.clear()
    net.kill_amf("amf1")
    releases = decoded(g_wire.queue, c.PROC_UE_CONTEXT_RELEASE)
    assert len(releases) == 5
    for r in releases:
        assert r.ies[c.IE_CAUSE] == ("misc", "hardware-failure")
        assert r.ies[c.IE_UE_NGAP_IDS][1]["rAN-UE-NGAP-ID"] in on_amf1
    g_wire.queue[0:0] = downlinks_before
    net.pump()
    assert g.released_by_network == 5 and g.completed == 5 and g.violations == []
    assert net.router.stats["ues_released_amf_failure"] == 5
    assert a2.errors_received == 0  # the gateway absorbed the Release Completes
    # new UEs all go to amf2
    net.start_ues(0, range(100, 110))
    net.pump()
    assert g.completed == 15 and a2.completed == 15
    assert net.router.ue_count == 0


def test_amf_overload_and_gateway_overload_toward_gnbs() -> None:
    a1, a2 = AmfLogic("amf1"), AmfLogic("amf2")
    net = Net([a1, a2])
    g = GnbLogic(1)
    net.add_gnb(g)
    _l1, _w1, p1 = net.amfs["amf1"]
    _l2, _w2, p2 = net.amfs["amf2"]
    net.router.amf_message(p1, c.overload_start(), 0, PPID)
    net.start_ues(0, range(1, 5))
    net.pump()
    assert a2.completed == 4 and a1.completed == 0 and not g.overload
    net.router.amf_message(p2, c.overload_start(), 0, PPID)
    net.pump()
    assert g.overload is True  # the gateway told the gNB
    net.start_ues(0, range(10, 12))
    net.pump()
    assert g.error_indications == 2 and net.router.stats["rejected_overload"] == 2
    err = decoded(net.seen_by_gnb[0], c.PROC_ERROR_INDICATION)[-1]
    assert err.ies[c.IE_CAUSE] == ("misc", "control-processing-overload")
    net.router.amf_message(p1, c.overload_stop(), 0, PPID)
    net.pump()
    assert g.overload is False


def test_admission_limit_sends_overload_start_and_stop() -> None:
    a1 = AmfLogic("amf1")
    net = Net([a1], Limits(max_ues=3, resume_ratio=0.5))
    g = GnbLogic(1)
    net.add_gnb(g)
    net.start_ues(0, range(1, 4))
    assert net.router.overloaded and net.router.stats["overload_starts_sent"] == 1
    net.start_ues(0, range(4, 5))  # over the limit: refused
    assert net.router.stats["rejected_overload"] == 1
    net.pump()
    assert g.completed == 3 and not net.router.overloaded and g.overload is False


def test_undecodable_and_out_of_sequence_get_error_indication() -> None:
    net = Net([AmfLogic("amf1")])
    g = GnbLogic(1)
    peer = net.add_gnb(g, setup=False)
    net.router.gnb_message(peer, *g.start_ue(1), PPID)  # before NG Setup
    net.pump()
    err = decoded(net.seen_by_gnb[0], c.PROC_ERROR_INDICATION)[-1]
    assert err.ies[c.IE_CAUSE] == ("protocol", "message-not-compatible-with-receiver-state")
    net.router.gnb_message(peer, *g.ng_setup(), PPID)
    net.router.gnb_message(peer, b"\x00\x0f\x40\x7f\x00", 1, PPID)  # truncated
    net.pump()
    err = decoded(net.seen_by_gnb[0], c.PROC_ERROR_INDICATION)[-1]
    assert err.ies[c.IE_CAUSE] == ("protocol", "transfer-syntax-error")
    assert net.router.stats["decode_errors"] == 1 and net.router.stats["out_of_sequence"] == 1
    # unknown UE
    net.router.gnb_message(peer, c.uplink_nas(999, 5, b"x", PLMN), 3, PPID)
    net.pump()
    err = decoded(net.seen_by_gnb[0], c.PROC_ERROR_INDICATION)[-1]
    assert err.ies[c.IE_CAUSE] == ("radioNetwork", "unknown-local-UE-NGAP-ID")
    assert err.ies[c.IE_AMF_UE_NGAP_ID] == 999 and err.ies[c.IE_RAN_UE_NGAP_ID] == 5
    # wrong PPID: counted, dropped
    net.router.gnb_message(peer, c.uplink_nas(999, 5, b"x", PLMN), 3, 46)
    assert net.router.stats["ppid_mismatch"] == 1
    # the association still works
    net.router.gnb_message(peer, *g.start_ue(7), PPID)
    net.pump()
    assert g.completed == 1


def test_gnb_loss_releases_its_ues_at_the_amf() -> None:
    a1 = AmfLogic("amf1")
    net = Net([a1])
    g = GnbLogic(1)
    peer = net.add_gnb(g)
    net.start_ues(0, range(1, 4))
    for logic, wire, p in net.amfs.values():  # the AMF answers the InitialUEMessages only
        for data, stream, ppid in wire.queue:
            for out, sid in logic.handle(data, stream, ppid):
                net.router.amf_message(p, out, sid, PPID)
        wire.queue.clear()
    net.gnbs[0][1].queue.clear()
    net.gnbs.clear()
    net.router.gnb_lost(peer)
    net.pump()
    assert a1.completed == 3 and a1.ues == {}
    assert net.router.ue_count == 0


def test_gnbs_learn_the_served_guamis_when_an_amf_goes() -> None:
    net = Net([AmfLogic("amf1", set_id=1), AmfLogic("amf2", set_id=2)])
    g = GnbLogic(1)
    net.add_gnb(g)
    net.kill_amf("amf1")
    net.pump()
    (update,) = decoded(net.seen_by_gnb[0], c.PROC_AMF_CONFIGURATION_UPDATE)
    assert [item["gUAMI"]["aMFSetID"][0] for item in update.ies[c.IE_SERVED_GUAMI_LIST]] == [2]
    assert g.config_updates == 1  # the gNB acknowledged; the gateway took the answer quietly
    assert net.router.stats["out_of_sequence"] == 0
    assert net.router.stats["error_indications_sent"] == 0
