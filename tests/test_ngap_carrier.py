"""Issue 17 on the host (sans-IO router, in-memory links, pycrate-built messages): NG Setup
checks, AMF Status Indication, AMF/RAN Configuration Update, capacity-weighted selection,
NG Reset both ways with per-UE lists, paging by TAI, several AMF sets, the stuck-context timer.
"""

from __future__ import annotations

from collections import Counter

from nf_adapters.ngap import codec as c
from nf_adapters.ngap.ngap_router import Limits
from perf.amf_emulator import AmfLogic
from perf.gnb_emulator import GnbLogic
from tests.test_ngap_router import PLMN, PPID, Net, decoded

OTHER_PLMN = c.plmn_bytes("999", "70")


def answer_initial_ues(net: Net) -> None:
    """AMFs answer the InitialUEMessages; the downlinks are dropped at the gNBs, so each UE
    stays established (both ids known) and idle."""
    for logic, wire, peer in net.amfs.values():
        for data, stream, ppid in wire.queue:
            for out, sid in logic.handle(data, stream, ppid):
                net.router.amf_message(peer, out, sid, PPID)
        wire.queue.clear()
    for _logic, wire, _peer in net.gnbs:
        wire.queue.clear()


def setup_answer(net: Net, i: int) -> c.Message:
    return decoded(net.seen_by_gnb[i], c.PROC_NG_SETUP)[-1]


# ---- NG Setup checks -------------------------------------------------------------------------


def test_ng_setup_failure_unknown_plmn() -> None:
    net = Net([AmfLogic("amf1")])
    g = GnbLogic(1, plmn=OTHER_PLMN)
    net.add_gnb(g)
    fail = setup_answer(net, 0)
    assert g.setup_ok is False and fail.pdu_type == c.UNSUCCESSFUL
    assert fail.ies[c.IE_CAUSE] == ("misc", "unknown-PLMN-or-SNPN")
    assert net.router.stats["ng_setup_failures"] == 1
    # the association stays usable: a served gNB behind it is accepted afterwards
    g2 = GnbLogic(2)
    net.add_gnb(g2)
    assert g2.setup_ok is True


def test_ng_setup_failure_unserved_tac_and_slice() -> None:
    net = Net([AmfLogic("amf1", ssts=(1, 2))])
    net.router.amfs[0].tacs = frozenset({1, 2})
    g = GnbLogic(1, tacs=(7,))
    net.add_gnb(g)
    assert g.setup_ok is False
    assert setup_answer(net, 0).ies[c.IE_CAUSE] == ("misc", "unknown-PLMN-or-SNPN")
    g = GnbLogic(2, tacs=(7, 2))  # one served TA is enough
    net.add_gnb(g)
    assert g.setup_ok is True
    g = GnbLogic(3, ssts=(3,))
    net.add_gnb(g)
    assert g.setup_ok is False
    assert setup_answer(net, 2).ies[c.IE_CAUSE] == ("radioNetwork", "slice-not-supported")
    assert net.router.stats["ng_setup_failures"] == 2


def test_ran_configuration_update_checked_and_used_for_paging() -> None:
    net = Net([AmfLogic("amf1")])
    net.router.amfs[0].tacs = frozenset({1, 2})
    g = GnbLogic(1, tacs=(1,))
    peer = net.add_gnb(g)
    net.router.gnb_message(peer, c.ran_configuration_update(PLMN, (9,)), 0, PPID)
    net.pump()
    ans = decoded(net.seen_by_gnb[0], c.PROC_RAN_CONFIGURATION_UPDATE)[-1]
    assert ans.pdu_type == c.UNSUCCESSFUL and ans.ies[c.IE_CAUSE] == ("misc",
                                                                    "unknown-PLMN-or-SNPN")
    assert peer.tais == {(PLMN, 1)}
    net.router.gnb_message(peer, c.ran_configuration_update(PLMN, (2,)), 0, PPID)
    net.pump()
    assert decoded(net.seen_by_gnb[0], c.PROC_RAN_CONFIGURATION_UPDATE)[-1].pdu_type == \
        c.SUCCESSFUL
    _l, _w, amf = net.amfs["amf1"]
    net.router.amf_message(amf, c.paging((1, 1, 5), [(PLMN, 2)]), 0, PPID)
    net.pump()
    assert g.pagings == 1 and g.violations == []


# ---- AMF Status Indication and AMF Configuration Update ----------------------------------------


def test_amf_status_indication_moves_new_ues_away() -> None:
    a1 = AmfLogic("amf1", set_id=1, pointer=1)
    a2 = AmfLogic("amf2", set_id=1, pointer=2)
    net = Net([a1, a2])
    g = GnbLogic(1, s_tmsi_set_id=1)  # S-TMSIs name set 1, pointer 1 (amf1)
    net.add_gnb(g)
    net.start_ues(0, range(1, 5))
    net.pump()
    assert a1.completed == 4 and a2.completed == 0
    _l, _w, p1 = net.amfs["amf1"]
    net.router.amf_message(p1, c.amf_status_indication([a1.guami]), 0, PPID)
    net.pump()
    assert net.router.stats["amf_status_indications"] == 1
    update = decoded(net.seen_by_gnb[0], c.PROC_AMF_CONFIGURATION_UPDATE)[-1]
    assert [i["gUAMI"]["aMFPointer"][0] for i in update.ies[c.IE_SERVED_GUAMI_LIST]] == [2]
    net.start_ues(0, range(10, 16))
    net.pump()
    assert a1.completed == 4 and a2.completed == 6  # same set, the other AMF
    # the AMF lists its GUAMI again (AMF Configuration Update): it takes UEs again
    net.router.amf_message(p1, c.amf_configuration_update([a1.guami], 100, [PLMN]), 0, PPID)
    net.pump()
    assert net.router.stats["amf_configuration_updates_received"] == 1
    net.start_ues(0, range(20, 22))
    net.pump()
    assert a1.completed == 6


# ---- capacity-weighted selection --------------------------------------------------------------


def test_ues_one_at_a_time_spread_by_capacity() -> None:
    a1, a2 = AmfLogic("amf1", capacity=30), AmfLogic("amf2", capacity=10)
    net = Net([a1, a2])
    g = GnbLogic(1)
    net.add_gnb(g)
    for i in range(1, 41):  # each UE finishes before the next arrives
        net.start_ues(0, range(i, i + 1))
        net.pump()
    assert g.completed == 40 and (a1.completed, a2.completed) == (30, 10)
    # equal capacity: alternate, never all to the first
    b1, b2 = AmfLogic("b1"), AmfLogic("b2")
    net = Net([b1, b2])
    net.add_gnb(GnbLogic(1))
    for i in range(1, 11):
        net.start_ues(0, range(i, i + 1))
        net.pump()
    assert (b1.completed, b2.completed) == (5, 5)


def test_reported_load_reduction_lowers_the_share() -> None:
    a1, a2 = AmfLogic("amf1"), AmfLogic("amf2")
    net = Net([a1, a2])
    net.add_gnb(GnbLogic(1))
    _l, _w, p1 = net.amfs["amf1"]
    net.router.amf_message(p1, c.overload_start("reject-non-emergency-mo-dt", 75), 0, PPID)
    net.start_ues(0, range(1, 51))
    net.pump()
    assert (a1.completed, a2.completed) == (10, 40)  # weights 25 : 100


# ---- several AMF sets -------------------------------------------------------------------------


def test_several_sets_by_s_tmsi_else_slice_and_plmn() -> None:
    a1 = AmfLogic("amf1", set_id=1, ssts=(1,))
    a2 = AmfLogic("amf2", set_id=2, ssts=(2,))
    a3 = AmfLogic("amf3", set_id=3, plmn=OTHER_PLMN, ssts=(1,))
    net = Net([a1, a2, a3])
    g = GnbLogic(1, ssts=(1, 2))
    peer = net.add_gnb(g)
    assert g.setup_ok is True
    sent = []
    for i, ssts in ((1, (2,)), (2, (2,)), (3, (1,)), (4, (1,))):
        msg = c.initial_ue_message(i, b"\x7e\x00" + bytes([i]), PLMN, allowed_ssts=ssts)
        net.router.gnb_message(peer, msg, 1, PPID)
        sent.append(i)
    table = {ue["gnb_ran_id"]: ue["amf"] for ue in net.router.ue_table()}
    assert table == {1: "amf2", 2: "amf2", 3: "amf1", 4: "amf1"}  # never amf3: other PLMN
    # a 5G-S-TMSI picks its set whatever the slices
    msg = c.initial_ue_message(5, b"\x7e\x00\x05", PLMN, s_tmsi=(3, 1, 77), allowed_ssts=(2,))
    net.router.gnb_message(peer, msg, 1, PPID)
    assert {ue["gnb_ran_id"]: ue["amf"] for ue in net.router.ue_table()}[5] == "amf3"


# ---- NG Reset ---------------------------------------------------------------------------------


def _two_amfs_ten_ues() -> tuple[Net, AmfLogic, AmfLogic, GnbLogic]:
    a1, a2 = AmfLogic("amf1", id_base=1000), AmfLogic("amf2", id_base=5000)
    net = Net([a1, a2])
    g = GnbLogic(1)
    net.add_gnb(g)
    net.start_ues(0, range(1, 11))
    answer_initial_ues(net)
    assert len(a1.ues) == 5 and len(a2.ues) == 5
    return net, a1, a2, g


def test_ng_reset_from_gnb_whole_interface() -> None:
    net, a1, a2, g = _two_amfs_ten_ues()
    table = net.router.ue_table()
    _l, g_wire, peer = net.gnbs[0]
    net.router.gnb_message(peer, c.ng_reset_all(), 0, PPID)
    assert net.router.ue_count == 0
    assert decoded(g_wire.queue, c.PROC_NG_RESET) == []  # waits for the AMFs
    for name in ("amf1", "amf2"):
        q = net.amfs[name][1].queue
        (reset,) = decoded(q, c.PROC_NG_RESET)
        kind, items = reset.ies[c.IE_RESET_TYPE]
        assert kind == "partOfNG-Interface"  # the AMF's association carries other gNBs too
        want = {(u["amf_ue_id"], u["gw_ran_id"]) for u in table if u["amf"] == name}
        assert set(c.reset_items(items)) == want
    net.pump()
    assert a1.ues == {} and a2.ues == {}
    (ack,) = decoded(net.seen_by_gnb[0], c.PROC_NG_RESET)
    assert ack.pdu_type == c.SUCCESSFUL and c.IE_UE_ASSOCIATED_LIST not in ack.ies
    assert net.router.stats["ng_resets_from_gnb"] == 1
    assert net.router.stats["out_of_sequence"] == 0 and a1.errors_received == 0


def test_ng_reset_from_gnb_per_ue_list() -> None:
    net, a1, a2, g = _two_amfs_ten_ues()
    table = {u["gnb_ran_id"]: u for u in net.router.ue_table()}
    on1 = [r for r, u in table.items() if u["amf"] == "amf1"][:2]
    items = [(table[on1[0]]["gw_amf_id"], on1[0]), (None, on1[1])]
    _l, _w, peer = net.gnbs[0]
    net.router.gnb_message(peer, c.ng_reset_part(items), 0, PPID)
    assert decoded(net.amfs["amf2"][1].queue, c.PROC_NG_RESET) == []  # not concerned
    (reset,) = decoded(net.amfs["amf1"][1].queue, c.PROC_NG_RESET)
    got = c.reset_items(reset.ies[c.IE_RESET_TYPE][1])
    assert got == [(table[r]["amf_ue_id"], table[r]["gw_ran_id"]) for r in on1]  # rewritten
    net.pump()
    (ack,) = decoded(net.seen_by_gnb[0], c.PROC_NG_RESET)
    assert c.reset_items(ack.ies[c.IE_UE_ASSOCIATED_LIST]) == items  # the gNB's own ids
    assert net.router.ue_count == 8 and len(a1.ues) == 3 and len(a2.ues) == 5
    assert sorted(u["gnb_ran_id"] for u in net.router.ue_table()) == sorted(
        set(range(1, 11)) - set(on1))


def test_ng_reset_from_amf_whole_and_per_ue() -> None:
    a1 = AmfLogic("amf1", id_base=1000)
    net = Net([a1, AmfLogic("amf2", id_base=5000)])
    g1, g2 = GnbLogic(1), GnbLogic(2)
    net.add_gnb(g1)
    net.add_gnb(g2)
    net.start_ues(0, range(1, 7))
    net.start_ues(1, range(1, 7))
    answer_initial_ues(net)
    table = net.router.ue_table()
    mine = [u for u in table if u["amf"] == "amf1"]
    _l, a_wire, p1 = net.amfs["amf1"]
    # per-UE: the AMF's ids (its AMF UE id / the gateway's RAN UE id)
    u0, u1 = mine[0], mine[1]
    items = [(u0["amf_ue_id"], u0["gw_ran_id"]), (u1["amf_ue_id"], None)]
    net.router.amf_message(p1, c.ng_reset_part(items), 0, PPID)
    assert decoded(a_wire.queue, c.PROC_NG_RESET) == []  # waits for the gNBs
    net.pump()
    assert a1.reset_acks[-1] == items  # the AMF's own list back
    gnb_resets = g1.resets + g2.resets
    got = {pair for r in gnb_resets for pair in r}
    assert got == {(u["gw_amf_id"], u["gnb_ran_id"]) for u in (u0, u1)}  # the gNBs' ids
    assert net.router.ue_count == len(table) - 2
    # whole interface: all of amf1's UEs, each gNB gets its own part
    before = len(a1.reset_acks)
    net.router.amf_message(p1, c.ng_reset_all(), 0, PPID)
    net.pump()
    assert len(a1.reset_acks) == before + 1 and a1.reset_acks[-1] is None
    assert all(u["amf"] == "amf2" for u in net.router.ue_table())
    assert net.router.stats["ng_resets_from_amf"] == 2 and g1.violations == []
    assert net.router.stats["out_of_sequence"] == 0 and net.router.stats["unknown_ue"] == 0


def test_ng_reset_acknowledged_at_the_timeout_when_an_amf_never_answers() -> None:
    net, a1, a2, g = _two_amfs_ten_ues()
    t = [100.0]
    net.router.clock = lambda: t[0]
    net.amfs["amf2"][1].up = False  # amf2 hears nothing (and says nothing)
    _l, _w, peer = net.gnbs[0]
    net.router.gnb_message(peer, c.ng_reset_all(), 0, PPID)
    net.pump()
    assert decoded(net.seen_by_gnb[0], c.PROC_NG_RESET) == []
    t[0] += 6
    net.router.sweep()
    net.pump()
    assert len(decoded(net.seen_by_gnb[0], c.PROC_NG_RESET)) == 1
    assert net.router.stats["ng_reset_timeouts"] == 1


# ---- paging -----------------------------------------------------------------------------------


def test_paging_goes_to_gnbs_serving_a_listed_tai() -> None:
    net = Net([AmfLogic("amf1")])
    gnbs = [GnbLogic(1, tacs=(1,)), GnbLogic(2, tacs=(2,)), GnbLogic(3, tacs=(2, 3))]
    for g in gnbs:
        net.add_gnb(g)
    _l, _w, amf = net.amfs["amf1"]
    net.router.amf_message(amf, c.paging((1, 1, 42), [(PLMN, 2), (OTHER_PLMN, 1)]), 0, PPID)
    net.pump()
    assert [g.pagings for g in gnbs] == [0, 1, 1]
    net.router.amf_message(amf, c.paging((1, 1, 42), [(PLMN, 9)]), 0, PPID)
    net.pump()
    assert [g.pagings for g in gnbs] == [0, 1, 1]
    assert net.router.stats["paging_delivered"] == 2 and net.router.stats["paging_unrouted"] == 1


# ---- stuck UE contexts ------------------------------------------------------------------------


def test_stuck_contexts_after_amf_failure_expire() -> None:
    a1, a2 = AmfLogic("amf1"), AmfLogic("amf2")
    t = [0.0]
    net = Net([a1, a2], Limits(ue_release_timeout_s=10))
    net.router.clock = lambda: t[0]
    net.add_gnb(GnbLogic(1))
    net.start_ues(0, range(1, 11))
    answer_initial_ues(net)
    g_wire = net.gnbs[0][1]
    net.kill_amf("amf1")
    assert len(decoded(g_wire.queue, c.PROC_UE_CONTEXT_RELEASE)) == 5
    g_wire.queue.clear()  # the gNB never answers the UE Context Release Commands
    assert net.router.releasing_count() == 5
    t[0] = 9.0
    assert net.router.sweep() == 0
    t[0] = 10.5
    assert net.router.sweep() == 5
    assert net.router.releasing_count() == 0 and net.router.ue_count == 5
    assert net.router.stats["ue_contexts_expired"] == 5
    assert Counter(u["amf"] for u in net.router.ue_table()) == {"amf2": 5}


def test_settings_carry_pool_tacs_and_the_release_timer() -> None:
    from gateway.n2 import from_config

    s = from_config({"ue_release_timeout_s": 3, "amf_pools": [
        {"name": "set-a", "tacs": [1, 2], "endpoints": [{"addresses": ["10.0.0.1"]}]}]})
    assert s.ue_release_timeout_s == 3.0 and s.amf_pools[0].tacs == (1, 2)
    assert from_config({}).ue_release_timeout_s == 10.0


def test_perf_ngap_says_plainly_when_kernel_sctp_is_missing(capsys) -> None:
    import json

    import pytest

    from dataplane.sctp import sctp_available
    from nfmesh_cli.main import main

    if sctp_available()[0]:
        pytest.skip("the kernel has SCTP (the VM runs the benchmark itself)")
    assert main(["perf", "ngap", "--json"]) == 2
    assert json.loads(capsys.readouterr().out)["available"] is False


def test_config_replication_needs_a_replica_number() -> None:
    import pytest

    from gateway.config import ConfigError, parse_config
    from gateway.n2 import from_config

    pools = [{"name": "a", "tacs": [1], "endpoints": [{"addresses": ["10.0.0.1"]}]}]
    with pytest.raises(ConfigError) as info:
        parse_config({"ngap": {"enabled": True, "amf_pools": pools,
                               "replication": {"etcd": ["127.0.0.1:2379"]}}})
    assert "ngap.replica" in str(info.value)
    cfg = parse_config({"ngap": {"enabled": True, "amf_pools": pools, "replica": 3,
                                 "replication": {"etcd": ["127.0.0.1:2379"], "ttl_s": 20}}})
    s = from_config(cfg.ngap)
    assert (s.replica, s.replication_etcd, s.replication_ttl_s) == (3, ("127.0.0.1:2379",), 20)
    assert s.amf_pools[0].tacs == (1,)


def test_gnbs_tas_are_propagated_to_the_amfs() -> None:
    a1 = AmfLogic("amf1")
    net = Net([a1])
    assert a1.tas == {(PLMN, 1)}  # the gateway's own NG Setup
    net.add_gnb(GnbLogic(1, tacs=(1, 2)))
    net.pump()
    assert a1.tas == {(PLMN, 1), (PLMN, 2)}  # RAN Configuration Update to the AMF
    sent = net.router.stats["ran_configuration_updates_sent"]
    net.add_gnb(GnbLogic(2, tacs=(2,)))  # nothing new: no update
    net.pump()
    assert net.router.stats["ran_configuration_updates_sent"] == sent
    _l, _w, peer = net.gnbs[1]
    net.router.gnb_message(peer, c.ran_configuration_update(PLMN, (3,)), 0, PPID)
    net.pump()
    assert (PLMN, 3) in a1.tas
    # an AMF that comes later hears every TA in the gateway's NG Setup
    a2 = AmfLogic("amf2")
    wire = type(net.amfs["amf1"][1])()
    net.amfs["amf2"] = (a2, wire, net.router.add_amf(wire, "amf2"))
    net.pump()
    assert a2.tas == {(PLMN, 1), (PLMN, 2), (PLMN, 3)}
    assert net.router.stats["out_of_sequence"] == 0 and a1.errors_received == 0


def test_amf_status_indication_backup_amf_takes_the_guamis_ues() -> None:
    a1 = AmfLogic("amf1", set_id=1, pointer=1)
    a2 = AmfLogic("amf2", set_id=1, pointer=2)
    a3 = AmfLogic("amf3", set_id=1, pointer=3)
    net = Net([a1, a2, a3])
    net.add_gnb(GnbLogic(1, s_tmsi_set_id=1))  # S-TMSIs name set 1, pointer 1
    _l, _w, p1 = net.amfs["amf1"]
    net.router.amf_message(p1, c.amf_status_indication([a1.guami], backup="amf3"), 0, PPID)
    net.start_ues(0, range(1, 7))
    net.pump()
    assert (a1.completed, a2.completed, a3.completed) == (0, 0, 6)  # the backup, not SWRR
    g2 = GnbLogic(2)  # UEs without a 5G-S-TMSI still spread over the available AMFs
    net.add_gnb(g2)
    net.start_ues(1, range(1, 5))
    net.pump()
    assert a2.completed == 2 and a3.completed == 8
