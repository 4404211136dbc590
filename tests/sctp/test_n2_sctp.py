"""N2 on the real Linux SCTP stack (inside the VM): transport facts and the whole proxy.

Emulated gNBs and AMFs speak pycrate-encoded NGAP over kernel-SCTP associations through the
gateway's N2Service.  Kept small: Python runs ~18x slower in the emulated CPU.
"""

from __future__ import annotations

import asyncio

import pytest

from dataplane.sctp import IPPROTO_SCTP, SctpParams, connect, listen
from gateway.n2 import AmfEndpointSettings, AmfPoolSettings, N2Service, N2Settings
from nf_adapters.ngap import codec as c
from perf.amf_emulator import AmfLogic, AmfServer
from perf.gnb_emulator import GnbClient, GnbLogic

pytestmark = pytest.mark.sctp


class Recorder:
    def __init__(self) -> None:
        self.messages: list[tuple[bytes, int, int]] = []
        self.events: list[tuple[str, dict]] = []
        self.closed = asyncio.Event()
        self.got = asyncio.Event()

    def on_message(self, assoc, data: bytes, stream: int, ppid: int) -> None:
        self.messages.append((data, stream, ppid))
        self.got.set()

    def on_event(self, assoc, kind: str, detail: dict) -> None:
        self.events.append((kind, detail))

    def on_closed(self, assoc, exc) -> None:
        self.closed.set()


async def wait_for(pred, timeout: float = 20.0) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not pred():
        if loop.time() > end:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)


async def test_transport_streams_ppid_boundaries_multihoming() -> None:
    server_side = Recorder()
    accepted = []

    def on_accept(assoc):
        accepted.append(assoc)
        return server_side

    params = SctpParams(out_streams=8, in_streams=8, heartbeat_interval_ms=1000,
                        rto_min_ms=100, rto_max_ms=1000, max_message=4096)
    lst = await listen(["127.0.0.1", "127.0.0.2"], 0, on_accept, params)
    client_side = Recorder()
    assoc = await connect(["127.0.0.1", "127.0.0.2"], lst.port, client_side, params)
    try:
        assert (assoc.in_streams, assoc.out_streams) == (8, 8)
        assert sorted(assoc.peer_addresses) == ["127.0.0.1", "127.0.0.2"]  # multi-homed peer
        assert assoc.sock.getsockopt(IPPROTO_SCTP, 3) == 1  # SCTP_NODELAY
        for i in range(20):
            assert assoc.send(b"m%d" % i + b"x" * i * 100, i % 8, 60 if i % 2 else 46)
        assert assoc.send(b"y" * 6000, 1, 60)  # over max_message: discarded whole
        assert assoc.send(b"after", 2, 60)
        await wait_for(lambda: len(server_side.messages) == 21)
        for i, (data, stream, ppid) in enumerate(server_side.messages[:20]):
            assert data == b"m%d" % i + b"x" * i * 100  # one message each, boundaries kept
            assert stream == i % 8 and ppid == (60 if i % 2 else 46)
        assert server_side.messages[20] == (b"after", 2, 60)
        assert accepted[0].discarded_oversize == 1
        accepted[0].send(b"reply", 5, 60)
        await wait_for(lambda: client_side.messages)
        assert client_side.messages[0] == (b"reply", 5, 60)
    finally:
        assoc.close()
        await asyncio.wait_for(server_side.closed.wait(), 10)  # peer SHUTDOWN seen
        lst.close()


async def _start_gateway(amfs: list[AmfServer], **kw) -> N2Service:
    for a in amfs:
        await a.start(["127.0.0.1"], 0)
    settings = N2Settings(listen=("127.0.0.1",), port=0, heartbeat_interval_ms=1000,
                          rto_min_ms=100, rto_max_ms=1000, amf_pools=(AmfPoolSettings(
                              "pool", tuple(AmfEndpointSettings(("127.0.0.1",), a.port)
                                            for a in amfs)),), **kw)
    service = await N2Service(settings).start()
    await wait_for(lambda: sum(a.state == "up" for a in service.router.amfs) == len(amfs))
    return service


async def test_two_gnbs_fifty_ues_two_amfs_then_failover() -> None:
    l1, l2 = AmfLogic("amf1", set_id=1, pointer=1), AmfLogic("amf2", set_id=1, pointer=2)
    amfs = [AmfServer(l1), AmfServer(l2)]
    service = await _start_gateway(amfs)
    clients = [GnbClient(GnbLogic(g)) for g in (1, 2)]
    try:
        for cl in clients:
            await cl.connect(["127.0.0.1"], service.port)
        for cl in clients:
            for i in range(1, 51):
                cl.start_ue(i)
        for cl in clients:
            assert await cl.wait_finished(50, 120)
        for cl in clients:
            assert cl.logic.violations == []  # right UE, stream, ids, PPID 60 at the gNB
            assert cl.logic.completed == 50
        # the last UE Context Release Completes may still be on their way to the AMFs
        await wait_for(lambda: l1.completed + l2.completed == 100)
        assert l1.completed + l2.completed == 100 and l1.completed > 0 and l2.completed > 0
        for logic in (l1, l2):  # at the AMF: PPID 60, each UE on one stream, not stream 0
            streams: dict[int, set[int]] = {}
            for _pdu, proc, ran, _amf, stream, ppid in logic.received:
                assert ppid == 60
                if proc not in (c.PROC_NG_SETUP, c.PROC_RAN_CONFIGURATION_UPDATE):
                    streams.setdefault(ran, set()).add(stream)
            assert all(len(s) == 1 and 0 not in s for s in streams.values())
        assert service.router.ue_count == 0

        # stop AMF 1: new UEs go to AMF 2
        before1, before2 = l1.completed, l2.completed
        amfs[0].stop()
        await wait_for(lambda: [a.name for a in service.router.amfs] == ["pool/1"])
        # the gNBs hear that the pool now serves AMF 2's GUAMI only
        await wait_for(lambda: all(cl.logic.config_updates == 1 for cl in clients))
        for cl in clients:
            for i in range(100, 105):
                cl.start_ue(i)
        for cl in clients:
            assert await cl.wait_finished(55, 120)
            assert cl.logic.violations == []
        await wait_for(lambda: l2.completed == before2 + 10)
        assert l1.completed == before1
        snap = service.snapshot()
        assert snap["stats"]["decode_errors"] == 0 and snap["stats"]["unknown_ue"] == 0
    finally:
        for cl in clients:
            cl.close()
        await service.close()
        for a in amfs:
            a.stop()


async def test_garbage_gets_error_indication_and_association_survives() -> None:
    logic = AmfLogic("amf1")
    amfs = [AmfServer(logic)]
    service = await _start_gateway(amfs)
    cl = GnbClient(GnbLogic(1))
    try:
        await cl.connect(["127.0.0.1"], service.port)
        cl.assoc.send(b"\x00\x0f\x40\x30garbage", 1, 60)
        await wait_for(lambda: cl.logic.error_indications == 1)
        assert service.router.stats["decode_errors"] == 1
        cl.start_ue(1)
        assert await cl.wait_finished(1, 60)
        assert cl.logic.completed == 1 and cl.logic.violations == []
    finally:
        cl.close()
        await service.close()
        for a in amfs:
            a.stop()
