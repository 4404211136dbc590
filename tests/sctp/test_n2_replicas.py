"""Issue 17, item 1 in the VM: 2 N2 proxy replicas (separate processes sharing established UEs'
records on a real etcd), 2 gNBs x 100 UEs established through replica A, A killed with
SIGKILL, the gNBs reconnect to replica B: 0 UEs lost (every UE's next uplink reaches its AMF
and its registration completes).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import pytest

from perf.amf_emulator import AmfLogic, AmfServer
from perf.gnb_emulator import GnbClient, GnbLogic
from perf.ngap_perf import Etcd

pytestmark = pytest.mark.sctp

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


async def wait_for(pred, timeout: float = 60.0) -> None:
    end = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > end:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.05)


def _replica(n: int, amfs: list[AmfServer], etcd: Etcd, tmp: str) -> tuple:
    port_file = f"{tmp}/replica{n}.port"
    cmd = [sys.executable, "-m", "gateway.n2_replica", "--replica", str(n),
           "--etcd", f"127.0.0.1:{etcd.port}", "--prefix", "/t", "--port-file", port_file]
    for a in amfs:
        cmd += ["--amf", f"127.0.0.1:{a.port}"]
    proc = subprocess.Popen(cmd, cwd=ROOT)
    return proc, port_file


@pytest.mark.skipif(shutil.which("etcd") is None, reason="etcd not installed")
async def test_two_replicas_sigkill_one_no_ue_lost() -> None:
    tmp = tempfile.mkdtemp(prefix="n2rep-")
    etcd = Etcd(tmp)
    l1, l2 = AmfLogic("amf1", id_base=1000), AmfLogic("amf2", id_base=5000)
    amfs = [AmfServer(l1), AmfServer(l2)]
    procs = []
    clients: list[GnbClient] = []
    try:
        for a in amfs:
            await a.start(["127.0.0.1"], 0)
        await wait_for(etcd.healthy, 60)
        reps = [_replica(n, amfs, etcd, tmp) for n in (1, 2)]
        procs = [p for p, _f in reps]
        await wait_for(lambda: all(os.path.exists(f) for _p, f in reps), 120)
        port_a, port_b = (int(open(f).read()) for _p, f in reps)

        g1, g2 = GnbLogic(1, hold=True), GnbLogic(2, hold=True)
        clients = [GnbClient(g1), GnbClient(g2)]
        for cl in clients:
            await cl.connect(["127.0.0.1"], port_a)
        for cl in clients:
            for i in range(1, 101):
                cl.start_ue(i)
        await wait_for(lambda: len(g1.amf_ids_seen) == 100 and len(g2.amf_ids_seen) == 100, 120)
        await wait_for(lambda: etcd.count("/t/ue/") == 200, 30)  # replicated

        procs[0].send_signal(signal.SIGKILL)
        procs[0].wait(10)
        await wait_for(lambda: all(cl.closed is not None and cl.closed.done()
                                   for cl in clients), 30)
        for cl in clients:  # reconnect to the survivor
            await cl.connect(["127.0.0.1"], port_b, timeout=30)
        for g, cl in ((g1, clients[0]), (g2, clients[1])):
            g.hold = False
            for i in range(1, 101):
                cl._send(*g.resume_ue(i))
        for cl in clients:
            assert await cl.wait_finished(100, 120)
        lost = 200 - g1.completed - g2.completed
        assert lost == 0, f"{lost} UEs lost"
        assert g1.violations == [] and g2.violations == []
        await wait_for(lambda: l1.completed + l2.completed == 200, 30)
        await wait_for(lambda: etcd.count("/t/ue/") == 0, 30)  # released: records gone
    finally:
        for cl in clients:
            cl.close()
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGKILL)
                p.wait(10)
        for a in amfs:
            a.stop()
        etcd.stop()
        shutil.rmtree(tmp, ignore_errors=True)
