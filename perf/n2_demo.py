"""The demo's N2 part: emulated gNBs and a pool of two emulated AMFs through the N2 service.

Kept in perf/ (which may import everything) so that gateway/ never imports the emulators.
"""

from __future__ import annotations

import asyncio
import time

from dataplane.sctp import sctp_available
from gateway.n2 import AmfEndpointSettings, AmfPoolSettings, N2Service, N2Settings
from perf.amf_emulator import AmfLogic, AmfServer
from perf.gnb_emulator import GnbClient, GnbLogic


async def run_n2_demo(duration_s: float, gnbs: int = 2, ues: int = 20) -> dict:
    """Carry registration-like N2 traffic for ``duration_s`` seconds through the gateway:
    two emulated AMFs (one pool), ``gnbs`` emulated gNBs with ``ues`` UEs each, in waves.

    Returns {"ngap_messages", "ngap_errors", "available", "reason", ...}.  Where the kernel has
    no SCTP it returns at once with available False and the reason.  Cancelling the task ends
    the traffic and still returns the summary."""
    ok, reason = sctp_available()
    if not ok:
        return {"ngap_messages": 0, "ngap_errors": 0, "available": False, "reason": reason}
    amfs = [AmfServer(AmfLogic(f"amf{i}", set_id=1, pointer=i, record=False)) for i in (1, 2)]
    service = None
    clients: list[GnbClient] = []
    waves = 0
    started = time.perf_counter()
    result: dict = {"available": True, "reason": ""}
    try:
        for a in amfs:
            await a.start(["127.0.0.1"], 0)
        settings = N2Settings(listen=("127.0.0.1",), port=0, heartbeat_interval_ms=5000,
                              amf_pools=(AmfPoolSettings("demo-pool", tuple(
                                  AmfEndpointSettings(("127.0.0.1",), a.port) for a in amfs)),))
        service = await N2Service(settings).start()
        for _ in range(100):
            if sum(a.state == "up" for a in service.router.amfs) == len(amfs):
                break
            await asyncio.sleep(0.05)
        clients = [GnbClient(GnbLogic(g + 1)) for g in range(gnbs)]
        for cl in clients:
            await cl.connect(["127.0.0.1"], service.port)
        deadline = started + duration_s
        next_id = 1
        while time.perf_counter() < deadline:
            for cl in clients:
                for i in range(next_id, next_id + ues):
                    cl.start_ue(i)
            next_id += ues
            for cl in clients:
                await cl.wait_finished(next_id - 1, max(1.0, min(30.0, deadline - time.perf_counter())))
            waves += 1
    except asyncio.CancelledError:
        pass
    except OSError as exc:
        result["reason"] = f"N2 demo failed: {exc}"
    finally:
        violations = sum(len(cl.logic.violations) for cl in clients)
        completed = sum(cl.logic.completed for cl in clients)
        for cl in clients:
            cl.close()
        stats = dict(service.router.stats) if service else {}
        if service is not None:
            await service.close()
        for a in amfs:
            a.stop()
    elapsed = time.perf_counter() - started
    messages = stats.get("messages_from_gnb", 0) + stats.get("messages_from_amf", 0)
    errors = (violations + stats.get("decode_errors", 0) + stats.get("unknown_ue", 0)
              + stats.get("send_failures", 0) + stats.get("ppid_mismatch", 0))
    result.update({"ngap_messages": messages, "ngap_errors": errors,
                   "ngap_registrations": completed, "ngap_waves": waves,
                   "ngap_messages_per_s": round(messages / elapsed, 1) if elapsed else 0.0})
    return result
