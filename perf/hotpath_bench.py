"""The Python share of one proxied request, without sockets: µs per request through
``Proxy.on_request`` -> ``ScpRouter`` (model C or a static route) -> pool -> splice ->
``on_complete`` -> ``RequestStats`` + ``AccessLog``.

The engine is replaced by a stand-in connection whose ``splice`` only remembers the observer
(the C relay is what ``nfmesh perf compare`` measures beside HAProxy); everything the proxy,
router, metrics and access log do per request is the real code.  Use it to see where the
gateway's own Python time goes and to compare two trees in the same run, e.g.::

    PYTHONPATH=/path/to/other/tree .venv/bin/python -m perf.hotpath_bench --json
    .venv/bin/python -m perf.hotpath_bench --profile 20   # top 20 functions by own time

Not a test: no assertion on speed.  Bounded: ``--requests`` (default 100 000) in batches.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import json
import pstats
import sys
import time
from types import SimpleNamespace

from dataplane.engine import H2Settings
from dataplane.proxy import load_proxy
from dataplane.routing import Endpoint, RouterSlot
from dataplane.upstream_pool import UpstreamPools, _EndpointPool
from gateway.access_log import load_access_log
from gateway.metrics import load_request_stats
from nf_adapters.scp_router import ScpRouter

BACKEND_PORT = 8081
BATCH = 1000


class _Upstream:
    """Stands for an upstream ClientConnection with room for streams."""

    available = True
    closed = False
    open_streams = 0

    def close(self) -> None:
        pass


class _Downstream:
    """Stands for a downstream ServerConnection: ``splice`` keeps the observer."""

    def __init__(self) -> None:
        self.peer_info = {"peername": ("127.0.0.1", 40000)}
        self.observer = None
        self.open_streams = 0

    def splice(self, sid, upstream, headers, observer, extra=(), retain_body=False) -> None:
        self.observer = observer

    def can_replay(self, sid: int) -> bool:
        return True

    def respond(self, sid, status, headers, body=b"", trailers=None) -> None:
        raise AssertionError(f"unexpected local answer {status}")


def _config() -> SimpleNamespace:
    ep = SimpleNamespace(host="127.0.0.1", port=BACKEND_PORT, tls=False, server_name=None,
                         weight=1)
    cluster = SimpleNamespace(name="backend", endpoints=[ep], lb="round_robin",
                              request_timeout_s=None)
    route = SimpleNamespace(name="all", match=SimpleNamespace(path_prefix="/", authority=None),
                            cluster="backend", timeout_s=None)
    scp = SimpleNamespace(via_name="perf", max_forward_hops=8, model_c=True,
                          request_timeout_s=30.0, allowed_targets=[])
    return SimpleNamespace(clusters=[cluster], routes=[route], scp=scp,
                           gateway=SimpleNamespace(name="perf"))


def _headers(model_c: bool) -> list[tuple[bytes, bytes]]:
    h = [(b":method", b"POST"), (b":scheme", b"http"), (b":authority", b"127.0.0.1:3000"),
         (b":path", b"/nudm-sdm/v2/imsi-001010000000001/am-data")]
    if model_c:
        h.append((b"3gpp-sbi-target-apiroot", f"http://127.0.0.1:{BACKEND_PORT}".encode()))
    h += [(b"content-type", b"application/json"), (b"user-agent", b"AMF-nfmesh-perf"),
          (b"content-length", b"64")]
    return h


async def _run(requests: int, model_c: bool, log_format: str | None, profile: bool,
               overload: bool = True) -> dict:
    pools = UpstreamPools("h2", H2Settings())
    pool = pools._pools[Endpoint("127.0.0.1", BACKEND_PORT)] = _EndpointPool()
    pool.conns.append(_Upstream())
    sink = io.StringIO()
    access_log = load_access_log()(log_format, out=sink) if log_format else None
    stats = load_request_stats()()
    kwargs: dict = {}
    if overload:  # the default config's overload protection (gateway.overload)
        from gateway.config import Config
        from gateway.overload import OverloadProtection

        kwargs = OverloadProtection.from_config(Config()).proxy_kwargs()
    proxy = load_proxy()(RouterSlot(ScpRouter.from_config(_config())), pools, stats=stats,
                         access_log=access_log, **kwargs)
    conn = _Downstream()
    headers = _headers(model_c)
    prof = cProfile.Profile() if profile else None
    sid = 1
    done = 0
    wall = cpu = 0.0
    while done < requests:
        n = min(BATCH, requests - done)
        if prof is not None:
            prof.enable()
        w0, c0 = time.perf_counter(), time.process_time()
        for _ in range(n):
            proxy.on_request(conn, sid, headers, True)
            conn.observer.on_complete(sid, 200, 0)
            sid += 2
        wall += time.perf_counter() - w0
        cpu += time.process_time() - c0
        if prof is not None:
            prof.disable()
        done += n
        if sink.tell() > 1 << 20:
            sink.seek(0)
            sink.truncate()
        await asyncio.sleep(0)  # timers (log flush, deadline sweep) run between batches
    if access_log is not None:
        access_log.flush()
    pools.close()
    result = {"requests": requests, "model_c": model_c, "access_log": log_format or "off",
              "overload": overload,
              "us_per_request": round(wall / requests * 1e6, 3),
              "cpu_us_per_request": round(cpu / requests * 1e6, 3),
              "counted": stats.total if hasattr(stats, "total") else None}
    if prof is not None:
        result["profile"] = prof
    return result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--requests", type=int, default=100_000)
    ap.add_argument("--static", action="store_true", help="static route instead of model C")
    ap.add_argument("--no-overload", action="store_true",
                    help="without overload protection (the default config has it on)")
    ap.add_argument("--log", choices=("text", "json", "off"), default="text")
    ap.add_argument("--repeats", type=int, default=3, help="best of N runs")
    ap.add_argument("--profile", type=int, metavar="N", default=0,
                    help="print the top N functions by own time (one profiled run)")
    ap.add_argument("--json", action="store_true", help="one JSON object on stdout")
    args = ap.parse_args(argv)
    if not 1 <= args.requests <= 10_000_000:
        ap.error("--requests must be 1..10000000")
    import uvloop

    log_format = None if args.log == "off" else args.log
    if args.profile:
        res = uvloop.run(_run(args.requests, not args.static, log_format, True,
                              not args.no_overload))
        stats = pstats.Stats(res.pop("profile"), stream=sys.stdout)
        stats.sort_stats("tottime").print_stats(args.profile)
        return 0
    runs = [uvloop.run(_run(args.requests, not args.static, log_format, False,
                            not args.no_overload))
            for _ in range(max(1, args.repeats))]
    best = min(runs, key=lambda r: r["cpu_us_per_request"])
    best["all_cpu_us_per_request"] = [r["cpu_us_per_request"] for r in runs]
    if args.json:
        print(json.dumps(best))
    else:
        print(f"{best['cpu_us_per_request']:.2f} µs CPU per request (best of {len(runs)}: "
              f"{best['all_cpu_us_per_request']}), model C={best['model_c']}, "
              f"access log={best['access_log']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
