"""Multi-homing with kernel path failover: the AMF sits in its own network namespace behind
two veth links; the gateway's association uses both addresses; one link goes down and the
kernel fails over while UEs keep registering, and the path state shows it."""

from __future__ import annotations

import ctypes
import os
import subprocess
import threading

import pytest

from dataplane.sctp import SctpParams, bind_all, new_socket
from gateway.n2 import AmfEndpointSettings, AmfPoolSettings, N2Service, N2Settings
from perf.amf_emulator import AmfLogic, AmfServer
from perf.gnb_emulator import GnbClient, GnbLogic
from tests.sctp.test_n2_sctp import wait_for

pytestmark = pytest.mark.sctp
CLONE_NEWNET = 0x40000000
NS = f"amf{os.getpid()}"
AMF_ADDRS = ["10.10.0.2", "10.10.1.2"]


def sh(cmd: str) -> None:
    subprocess.run(cmd, shell=True, check=True)


def in_netns(name: str, fn):
    """Run ``fn`` in a thread that has entered network namespace ``name`` (sockets it makes
    stay there; the loop in the main thread can still serve them)."""
    out: dict = {}

    def run() -> None:
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            fd = os.open(f"/run/netns/{name}", os.O_RDONLY)
            if libc.setns(fd, CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), "setns")
            os.close(fd)
            out["value"] = fn()
        except BaseException as exc:  # handed to the caller
            out["error"] = exc

    t = threading.Thread(target=run)
    t.start()
    t.join()
    if "error" in out:
        raise out["error"]
    return out["value"]


@pytest.fixture
def amf_namespace():
    sh(f"ip netns add {NS}")
    try:
        for i in (0, 1):
            sh(f"ip link add ga{i} type veth peer name na{i} && ip link set na{i} netns {NS}"
               f" && ip addr add 10.10.{i}.1/24 dev ga{i} && ip link set ga{i} up")
            sh(f"ip netns exec {NS} sh -c 'ip addr add 10.10.{i}.2/24 dev na{i}"
               f" && ip link set na{i} up && ip link set lo up'")
        yield NS
    finally:
        subprocess.run(f"ip netns del {NS}; ip link del ga0; ip link del ga1", shell=True,
                       stderr=subprocess.DEVNULL)


async def test_path_failover_between_two_links(amf_namespace: str) -> None:
    params = SctpParams(heartbeat_interval_ms=200, path_max_retrans=1, rto_min_ms=100,
                        rto_max_ms=200, rto_initial_ms=100)

    def amf_socket():
        s = new_socket(AMF_ADDRS, params)
        bind_all(s, AMF_ADDRS, 38412)
        s.listen(16)
        return s

    logic = AmfLogic("amf-ns")
    amf = AmfServer(logic).adopt(in_netns(amf_namespace, amf_socket), params)
    service = await N2Service(N2Settings(
        port=0, heartbeat_interval_ms=200, path_max_retrans=1, rto_min_ms=100, rto_max_ms=200,
        amf_pools=(AmfPoolSettings("p", (AmfEndpointSettings(tuple(AMF_ADDRS), 38412),)),),
    )).start()
    cl = GnbClient(GnbLogic(1))
    try:
        await wait_for(lambda: [a.state for a in service.router.amfs] == ["up"])
        await cl.connect(["127.0.0.1"], service.port)
        paths = service.snapshot()["paths"]["amf/p/0"]
        assert paths == {"10.10.0.2": "available", "10.10.1.2": "available"}
        for i in range(1, 6):
            cl.start_ue(i)
        assert await cl.wait_finished(5, 60)
        sh("ip link set ga0 down")  # the primary path's link
        await wait_for(lambda: service.snapshot()["paths"]["amf/p/0"].get("10.10.0.2")
                       == "unreachable", 30)
        assert service.snapshot()["paths"]["amf/p/0"]["10.10.1.2"] == "available"
        for i in range(6, 11):
            cl.start_ue(i)
        assert await cl.wait_finished(10, 60)  # carried over the second link
        assert cl.logic.violations == [] and cl.logic.completed == 10
        assert [a.state for a in service.router.amfs] == ["up"]  # the association survived
    finally:
        cl.close()
        await service.close()
        amf.stop()
