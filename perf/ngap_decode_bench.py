"""NGAP decode cost: the routing-key fast path against pycrate's full APER decode.

Both run over the same message mix (the UE-associated messages of a registration plus NG
Setup, Overload and ErrorIndication, ids of every encoded size), best of several rounds.
``fast_us`` is the fast path in use (Cython when built, else the pure twin), ``pure_us`` the
pure-Python twin, ``pycrate_us`` the full decode; all in µs per message.  ``router_us`` is
the whole per-message work of the N2 proxy's router (key, UE table, id rewrite, send to an
in-memory link), without the kernel's SCTP cost.

    nfmesh perf ngap-decode --json   ->   {"fast_us": x, "pycrate_us": y, ...}
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable


def message_mix() -> list[bytes]:
    from nf_adapters.ngap import codec as c

    plmn = c.plmn_bytes("001", "01")
    guami = c.Guami(plmn, 0x80, 5, 3)
    nas = bytes(range(32))
    msgs: list[bytes] = []
    for ran, amf in ((7, 9), (300, 70000), (2**32 - 1, 2**40 - 1)):
        msgs += [
            c.initial_ue_message(ran, nas, plmn, s_tmsi=(5, 3, 0xC0FFEE)),
            c.downlink_nas(amf, ran, nas),
            c.uplink_nas(amf, ran, nas, plmn),
            c.downlink_nas(amf, ran, nas),
            c.uplink_nas(amf, ran, nas, plmn),
            c.initial_context_setup_request(amf, ran, guami, nas),
            c.initial_context_setup_response(amf, ran),
            c.ue_context_release_command(amf, ran),
            c.ue_context_release_complete(amf, ran),
        ]
    msgs += [c.ng_setup_request(1, plmn, name="gnb1"), c.ng_setup_response("amf", [guami], 9, [plmn]),
             c.overload_start(), c.error_indication(("protocol", "transfer-syntax-error"), 1, 2)]
    return msgs


def per_message_us(fn: Callable[[bytes], object], msgs: list[bytes], min_time: float,
                   rounds: int) -> float:
    """Best-of-``rounds`` µs per message, each round at least ``min_time`` seconds."""
    reps = 1
    while True:  # calibrate
        t0 = time.perf_counter()
        for _ in range(reps):
            for m in msgs:
                fn(m)
        dt = time.perf_counter() - t0
        if dt >= min_time or reps > 1 << 20:
            break
        reps *= 2
    best = dt / (reps * len(msgs))
    for _ in range(rounds - 1):
        t0 = time.perf_counter()
        for _ in range(reps):
            for m in msgs:
                fn(m)
        best = min(best, (time.perf_counter() - t0) / (reps * len(msgs)))
    return best * 1e6


class _Sink:
    """An in-memory link: the router's per-message cost without the kernel's."""

    out_streams = 16

    def send(self, data: bytes, stream: int, ppid: int) -> bool:
        return True


def router_us(min_time: float, rounds: int, ues: int = 1000) -> float:
    """µs per UE-associated message through ``NgapRouter`` (fast-path key, table lookup, id
    rewrite, send), uplink and downlink alternating, on in-memory links."""
    from nf_adapters.ngap import codec as c
    from nf_adapters.ngap.ngap_router import GatewayIdentity, NgapRouter
    from nf_adapters.ngap.templates import UeTemplates, nas_tag

    plmn = c.plmn_bytes("001", "01")
    guami = c.Guami(plmn, 1, 1, 1)
    router = NgapRouter(GatewayIdentity(plmn))
    amf = router.add_amf(_Sink(), "amf")
    router.amf_message(amf, c.ng_setup_response("amf", [guami], 10, [plmn]), 0, 60)
    gnb = router.add_gnb(_Sink())
    router.gnb_message(gnb, c.ng_setup_request(1, plmn), 0, 60)
    t = UeTemplates(plmn, guami)
    tag = nas_tag("bench")
    pairs = []
    for ran in range(1, ues + 1):
        router.gnb_message(gnb, t.initial_ue.stamp(ran, -1, tag), 1, 60)
        gw_ran = router.ue_table()[-1]["gw_ran_id"]
        router.amf_message(amf, t.downlink_nas.stamp(gw_ran, 5000 + ran, tag), 1, 60)
        gw_amf = router.ue_table()[-1]["gw_amf_id"]
        pairs.append((t.uplink_nas.stamp(ran, gw_amf, tag), t.downlink_nas.stamp(
            gw_ran, 5000 + ran, tag)))
    up, down = router.gnb_message, router.amf_message

    def one(pair: tuple[bytes, bytes]) -> None:
        up(gnb, pair[0], 1, 60)
        down(amf, pair[1], 1, 60)

    us = per_message_us(one, pairs, min_time, rounds) / 2  # type: ignore[arg-type]
    assert router.stats["unknown_ue"] == 0 and router.stats["decode_errors"] == 0
    return us


def measure(min_time: float = 0.05, rounds: int = 3) -> dict:
    from nf_adapters.ngap import FAST, codec, extract
    from nf_adapters.ngap import routing_key as pure

    msgs = message_mix()
    fast_us = per_message_us(extract, msgs, min_time, rounds)
    pure_us = per_message_us(pure.extract, msgs, min_time, rounds)
    pycrate_us = per_message_us(codec.decode, msgs, min_time, max(1, rounds - 1))
    return {"fast_us": round(fast_us, 4), "pycrate_us": round(pycrate_us, 2),
            "pure_us": round(pure_us, 3), "fast_impl": "cython" if FAST else "pure",
            "speedup": round(pycrate_us / fast_us, 1), "messages": len(msgs),
            "router_us": round(router_us(min_time, rounds), 3)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="nfmesh perf ngap-decode", description=__doc__.split("\n")[0])
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    ap.add_argument("--min-time", type=float, default=0.05, help="seconds per round")
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args(argv)
    r = measure(args.min_time, args.rounds)
    if args.json:
        print(json.dumps(r))
    else:
        print(f"fast path ({r['fast_impl']}): {r['fast_us']:.3f} µs/msg   pure twin: "
              f"{r['pure_us']:.2f} µs/msg   pycrate full decode: {r['pycrate_us']:.1f} µs/msg   "
              f"-> {r['speedup']:.0f}x  ({r['messages']} messages)\n"
              f"ngap_router, one UE message (key, lookup, id rewrite, send): {r['router_us']:.2f} µs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
