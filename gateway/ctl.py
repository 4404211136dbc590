"""``nfmesh ctl`` and ``nfmesh top``: ask a running gateway through its admin API.

    nfmesh ctl status | routes | clusters | nf list | nf show ID | drain | reload
        [--admin URL] [--json]
    nfmesh top [--admin URL] [--interval S] [--once]

``--admin`` defaults to ``$NFMESH_ADMIN``, else ``http://127.0.0.1:9901`` (the config's default
``admin`` listener).  ``--json`` prints the admin API's answer as it is (stable field names, for
scripts); without it, tables for people.  Exit status: 0 ok, 1 the gateway answered with an
error (``drain``/``reload`` refused, not ready, no such NF), 2 bad usage, 3 no gateway answered.

``nfmesh top`` is a full-screen view that updates in place (``rich``): requests/s, p50/p99,
errors and shed per cluster and producer endpoint, endpoint health, NF registrations by type
and N2 associations, from ``/status``, ``/clusters``, ``/nf-instances`` and ``/metrics`` polled
every ``--interval`` seconds (rates are the difference between two polls).  ``LiveScreen`` is the
component the demo's live view uses too.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
import urllib.error
import urllib.request
from typing import Any

DEFAULT_ADMIN = "http://127.0.0.1:9901"
EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_UNREACHABLE = 0, 1, 2, 3


class AdminUnreachable(Exception):
    pass


def admin_call(base: str, path: str, method: str = "GET", timeout: float = 5.0) -> tuple[int, Any]:
    """(status, JSON answer or bytes) from the admin API; ``AdminUnreachable`` if none."""
    req = urllib.request.Request(base.rstrip("/") + path, method=method,
                                 data=b"" if method == "POST" else None)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            status, ctype, body = resp.status, resp.headers.get("content-type", ""), resp.read()
    except urllib.error.HTTPError as exc:
        status, ctype, body = exc.code, exc.headers.get("content-type", ""), exc.read()
    except (urllib.error.URLError, OSError) as exc:
        raise AdminUnreachable(f"no admin API at {base}: {getattr(exc, 'reason', exc)}") from None
    if ctype.startswith("application/json"):
        return status, json.loads(body)
    return status, body


# ---------------------------------------------------------------------------------------------
# tables

def _console(file: Any = None) -> Any:
    from rich.console import Console

    out = file or sys.stdout
    # a pipe or a file gets wide lines rather than cut-off columns
    width = None if out.isatty() or os.environ.get("COLUMNS") else 160
    return Console(file=out, highlight=False, soft_wrap=False, width=width)


def make_table(title: str | None, columns: list[str], rows: list[list[Any]],
               right: tuple[str, ...] = ()) -> Any:
    """A rich table (the one look of ctl, top and the demo)."""
    from rich import box
    from rich.table import Table

    t = Table(title=title, box=box.SIMPLE_HEAD, title_justify="left", pad_edge=False)
    for c in columns:
        t.add_column(c, justify="right" if c in right else "left", no_wrap=True)
    for r in rows:
        t.add_row(*(_cell(v) for v in r))
    return t


def _cell(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    return str(v)


def _fmt_ms(v: float | None) -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.2f}"


def status_tables(st: dict) -> list[Any]:
    ready = st.get("readiness", {})
    checks = ", ".join(f"{k}={v}" for k, v in ready.get("checks", {}).items())
    rows = [
        ["name", st.get("name")], ["version", st.get("version")], ["pid", st.get("pid")],
        ["uptime", f"{st.get('uptime_s', 0):.0f} s"], ["workers", st.get("workers")],
        ["backend", st.get("backend")],
        ["listeners", ", ".join(f"{k}=:{v}" for k, v in (st.get("listeners") or {}).items())],
        ["ready", f"{ready.get('ready')} ({checks})"], ["draining", st.get("draining")],
        ["requests", st.get("requests")], ["errors 5xx", st.get("errors_5xx")],
        ["registry", st.get("registry")], ["NF instances", st.get("nf_instances")],
        ["overload protection", (st.get("overload") or {}).get("enabled")],
        ["N2", st.get("n2_associations") if st.get("n2") else "off"],
    ]
    return [make_table(None, ["field", "value"], rows)]


def routes_tables(r: dict) -> list[Any]:
    rows = [[x["name"], x.get("authority") or "*", x["path_prefix"], x["cluster"],
             x.get("timeout_s")] for x in r.get("routes", [])]
    modes = (f"model C: {'on' if r.get('model_c') else 'off'}   model D: "
             f"{'on' if r.get('model_d') else 'off'}   NRF API: {'on' if r.get('nrf_api') else 'off'}"
             f"   authz: {'on' if r.get('authz') else 'off'}")
    return [make_table(f"static routes (match order)   {modes}",
                       ["route", "authority", "path prefix", "cluster", "timeout s"], rows)]


_EP_COLS = ["endpoint", "health", "limit", "in flight", "queued", "forwarded", "ejections",
            "OCI %", "shed"]
_EP_RIGHT = ("limit", "in flight", "queued", "forwarded", "ejections", "OCI %", "shed")


def _ep_row(name: str, e: dict) -> list[Any]:
    return [name, e.get("health"), e.get("limit"), e.get("in_flight"), e.get("queued"),
            e.get("forwarded"), e.get("ejections"),
            f"{100 * (e.get('oci_reduction') or 0):.0f}", sum((e.get("shed") or {}).values())]


def clusters_tables(c: dict) -> list[Any]:
    rows = []
    for cl in c.get("clusters", []):
        for e in cl["endpoints"]:
            rows.append([cl["name"]] + _ep_row(e["address"], e))
    out = [make_table("clusters", ["cluster"] + _EP_COLS, rows, _EP_RIGHT)]
    prows = [[p.get("cluster") or "-"] + _ep_row(p["address"], p) for p in c.get("producers", [])]
    if prows:
        out.append(make_table("producers outside configured clusters (model C / D)",
                              ["cluster"] + _EP_COLS, prows, _EP_RIGHT))
    ov = c.get("overload", {})
    if ov.get("enabled"):
        out.append(make_table("overload protection", ["gateway overloaded", "loop lag ms",
                                                      "gateway shed", "retries refused"],
                              [[ov.get("gateway_overloaded"), ov.get("loop_lag_ms"),
                                ov.get("gateway_shed"), ov.get("retries_refused")]]))
    return out


def nf_list_tables(n: dict) -> list[Any]:
    if not n.get("enabled"):
        return [make_table("NF instances (the registry is off)", ["nf instance id"], [])]
    rows = [[i["nf_instance_id"], i["nf_type"], i["status"], i.get("fqdn") or
             ",".join(i.get("addresses") or []) or None, i.get("priority"), i.get("capacity"),
             i.get("load"), ",".join(i.get("services") or [])] for i in n.get("instances", [])]
    return [make_table(f"NF instances: {n.get('count', 0)}",
                       ["nf instance id", "type", "status", "address", "priority", "capacity",
                        "load", "services"], rows, ("priority", "capacity", "load"))]


def nf_show_tables(one: dict) -> list[Any]:
    p = one.get("profile", {})
    rows = [[k, json.dumps(v) if isinstance(v, dict | list) else v] for k, v in p.items()
            if k != "nfServices"]
    out = [make_table(f"NF instance {one.get('nf_instance_id')}", ["field", "value"], rows)]
    svcs = p.get("nfServices") or []
    if isinstance(svcs, dict):
        svcs = list(svcs.values())
    srows = [[s.get("serviceInstanceId"), s.get("serviceName"), s.get("scheme"),
              s.get("nfServiceStatus"),
              ",".join(f"{e.get('ipv4Address') or e.get('ipv6Address')}:{e.get('port', '')}"
                       for e in s.get("ipEndPoints") or [])] for s in svcs]
    if srows:
        out.append(make_table("services", ["id", "name", "scheme", "status", "endpoints"], srows))
    return out


# ---------------------------------------------------------------------------------------------
# nfmesh ctl

def build_ctl_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    # SUPPRESS: an option given before the command is not reset by the command's own parser
    common.add_argument("--admin", metavar="URL", default=argparse.SUPPRESS,
                        help=f"admin API (default: $NFMESH_ADMIN, else {DEFAULT_ADMIN})")
    common.add_argument("--json", action="store_true", default=argparse.SUPPRESS,
                        help="the admin API's JSON as it is")
    p = argparse.ArgumentParser(prog="nfmesh ctl", parents=[common],
                                description="Ask a running gateway through its admin API.",
                                epilog="Exit codes: 0 ok, 1 the gateway refused or is not ready, "
                                "2 bad usage, 3 no gateway answered.")
    sub = p.add_subparsers(dest="what", metavar="COMMAND")
    sub.add_parser("status", parents=[common], help="name, uptime, readiness, totals")
    sub.add_parser("routes", parents=[common], help="static routes, model C/D")
    sub.add_parser("clusters", parents=[common],
                   help="endpoints: health, limits, ejections, overload state")
    nf = sub.add_parser("nf", parents=[common], help="registered NF instances")
    nf_sub = nf.add_subparsers(dest="nf_cmd", metavar="ACTION")
    nf_sub.add_parser("list", parents=[common], help="every NF instance")
    show = nf_sub.add_parser("show", parents=[common], help="one NF profile")
    show.add_argument("nf_id", metavar="ID")
    sub.add_parser("drain", parents=[common],
                   help="stop accepting, GOAWAY every connection, readiness 503")
    sub.add_parser("reload", parents=[common], help="read and apply the config file again")
    return p


def ctl_main(argv: list[str]) -> int:
    p = build_ctl_parser()
    args = p.parse_args(argv)
    if args.what is None or (args.what == "nf" and args.nf_cmd is None):
        p.print_help(sys.stderr)
        return EXIT_USAGE
    base = getattr(args, "admin", None) or os.environ.get("NFMESH_ADMIN") or DEFAULT_ADMIN
    as_json = getattr(args, "json", False)
    call: dict[str, tuple[str, str, Any]] = {
        "status": ("GET", "/status", status_tables),
        "routes": ("GET", "/routes", routes_tables),
        "clusters": ("GET", "/clusters", clusters_tables),
        "drain": ("POST", "/drain", None),
        "reload": ("POST", "/reload", None),
    }
    if args.what == "nf":
        if args.nf_cmd == "list":
            method, path, render = "GET", "/nf-instances", nf_list_tables
        else:
            method, path, render = "GET", f"/nf-instances/{args.nf_id}", nf_show_tables
    else:
        method, path, render = call[args.what]
    try:
        status, body = admin_call(base, path, method)
    except AdminUnreachable as exc:
        print(f"nfmesh ctl: {exc}", file=sys.stderr)
        return EXIT_UNREACHABLE
    if as_json:
        print(json.dumps(body, indent=2))
    elif status >= 400:
        msg = body.get("error") or "; ".join(body.get("errors", [])) if isinstance(body, dict) else body
        print(f"nfmesh ctl: {status}: {msg}", file=sys.stderr)
    elif render is None:
        if args.what == "drain":
            print("draining: listeners closed, GOAWAY sent; readiness now fails")
        else:
            pending = body.get("pending_restart") or []
            print(f"reloaded {body.get('source')}"
                  + (f"; needs a restart to apply: {', '.join(pending)}" if pending else ""))
    else:
        con = _console()
        for t in render(body):
            con.print(t)
    if args.what == "status" and status == 200 and not body.get("readiness", {}).get("ready"):
        return EXIT_ERROR
    return EXIT_OK if status < 400 else EXIT_ERROR


# ---------------------------------------------------------------------------------------------
# nfmesh top

def parse_metrics(text: str) -> dict[str, list[tuple[dict, float]]]:
    """Prometheus text -> {sample name: [(labels, value)]}."""
    from prometheus_client.parser import text_string_to_metric_families

    out: dict[str, list[tuple[dict, float]]] = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out.setdefault(s.name, []).append((dict(s.labels), float(s.value)))
    return out


def _sum_by(samples: list[tuple[dict, float]], key: str, where: Any = None) -> dict[str, float]:
    out: dict[str, float] = {}
    for labels, v in samples:
        if where is not None and not where(labels):
            continue
        k = labels.get(key, "")
        out[k] = out.get(k, 0.0) + v
    return out


def quantile_from_buckets(buckets: dict[float, float], q: float) -> float | None:
    """``histogram_quantile`` over cumulative bucket counts {upper bound: count}."""
    items = sorted(buckets.items())
    if not items or items[-1][1] <= 0:
        return None
    total = items[-1][1]
    rank = q * total
    prev_bound, prev_count = 0.0, 0.0
    for bound, count in items:
        if count >= rank:
            if math.isinf(bound):
                return prev_bound
            if count == prev_count:
                return bound
            return prev_bound + (bound - prev_bound) * (rank - prev_count) / (count - prev_count)
        prev_bound, prev_count = bound, count
    return prev_bound


class TopModel:
    """Rates and latencies between two polls of the admin API."""

    def __init__(self) -> None:
        self.prev: dict[str, list[tuple[dict, float]]] | None = None
        self.prev_t = 0.0

    def rows(self, metrics: dict[str, list[tuple[dict, float]]], now: float) -> dict[str, Any]:
        dt = max(now - self.prev_t, 1e-6) if self.prev is not None else None
        prev = self.prev or {}

        def delta(name: str, key: str, where: Any = None) -> dict[str, float]:
            cur = _sum_by(metrics.get(name, []), key, where)
            if dt is None:
                return dict.fromkeys(cur, 0.0)
            old = _sum_by(prev.get(name, []), key, where)
            return {k: max(0.0, v - old.get(k, 0.0)) for k, v in cur.items()}

        req = delta("nfmesh_requests_total", "cluster")
        err = delta("nfmesh_requests_total", "cluster", lambda lb: lb.get("status", "")[:1] == "5")
        shed_ep = delta("nfmesh_requests_shed_total", "endpoint")
        totals = _sum_by(metrics.get("nfmesh_requests_total", []), "cluster")
        clusters = []
        for cl in sorted(set(req) | set(totals)):
            buckets_now: dict[float, float] = {}
            buckets_old: dict[float, float] = {}
            for lb, v in metrics.get("nfmesh_request_duration_seconds_bucket", []):
                if lb.get("cluster") == cl:
                    b = float(lb["le"])
                    buckets_now[b] = buckets_now.get(b, 0.0) + v
            for lb, v in prev.get("nfmesh_request_duration_seconds_bucket", []):
                if lb.get("cluster") == cl:
                    b = float(lb["le"])
                    buckets_old[b] = buckets_old.get(b, 0.0) + v
            window = {b: v - buckets_old.get(b, 0.0) for b, v in buckets_now.items()}
            src = window if sum(window.values()) > 0 else buckets_now
            p50, p99 = quantile_from_buckets(src, 0.5), quantile_from_buckets(src, 0.99)
            clusters.append({
                "cluster": cl, "rps": (req.get(cl, 0.0) / dt) if dt else 0.0,
                "total": int(totals.get(cl, 0)), "errors_per_s": (err.get(cl, 0.0) / dt) if dt else 0.0,
                "p50_ms": None if p50 is None else p50 * 1000, "p99_ms": None if p99 is None else p99 * 1000,
            })
        self.prev, self.prev_t = metrics, now
        return {"clusters": clusters,
                "shed_per_s": {k: (v / dt if dt else 0.0) for k, v in shed_ep.items()}}


def top_screen(base: str, model: TopModel) -> Any:
    """One frame of ``nfmesh top`` (a rich renderable)."""
    from rich.console import Group
    from rich.text import Text

    try:
        _, st = admin_call(base, "/status", timeout=2)
        _, cl = admin_call(base, "/clusters", timeout=2)
        _, nfs = admin_call(base, "/nf-instances", timeout=2)
        mstatus, text = admin_call(base, "/metrics", timeout=2)
    except AdminUnreachable as exc:
        return Text(f"nfmesh top: {exc} (retrying)")
    metrics = parse_metrics(text.decode() if isinstance(text, bytes) and mstatus == 200 else "")
    view = model.rows(metrics, time.monotonic())
    ready = st.get("readiness", {}).get("ready")
    head = Text.assemble(
        ("nfmesh top  ", "bold"), f"{st.get('name')}  v{st.get('version')}  ",
        f"up {st.get('uptime_s', 0):.0f}s  workers {st.get('workers')}  ",
        ("READY" if ready else "NOT READY", "green" if ready else "red bold"),
        ("  DRAINING" if st.get("draining") else ""),
        f"  requests {st.get('requests')}  5xx {st.get('errors_5xx')}")
    ctab = make_table("per cluster", ["cluster", "req/s", "total", "errors/s", "p50 ms", "p99 ms"],
                      [[c["cluster"], f"{c['rps']:.1f}", c["total"], f"{c['errors_per_s']:.1f}",
                        _fmt_ms(c["p50_ms"]), _fmt_ms(c["p99_ms"])] for c in view["clusters"]],
                      ("req/s", "total", "errors/s", "p50 ms", "p99 ms"))
    eps = [(c["name"], e) for c in cl.get("clusters", []) for e in c["endpoints"]]
    eps += [(p.get("cluster") or "-", p) for p in cl.get("producers", [])]
    prow = [[name, e["address"], e["health"], e.get("limit"), e.get("in_flight"), e.get("queued"),
             f"{view['shed_per_s'].get(e['address'], 0.0):.1f}", e.get("ejections")]
            for name, e in eps]
    ptab = make_table("per producer", ["cluster", "endpoint", "health", "limit", "in flight",
                                       "queued", "shed/s", "ejections"], prow,
                      ("limit", "in flight", "queued", "shed/s", "ejections"))
    by_type = nfs.get("by_type", {}) if nfs.get("enabled") else {}
    ntab = make_table(f"NF registrations: {nfs.get('count', 0) if nfs.get('enabled') else 'registry off'}",
                      ["nf type", "instances"], [[k, v] for k, v in sorted(by_type.items())],
                      ("instances",))
    n2 = st.get("n2_associations")
    n2_line = Text("N2: " + (f"gNB associations {n2['gnb']}, AMF associations {n2['amf']}, "
                             f"UE contexts {n2['ue_contexts']}" if n2 else "off"))
    ov = cl.get("overload", {})
    ov_line = Text("overload protection: " + (
        f"on, gateway overloaded {ov.get('gateway_overloaded')}, loop lag {ov.get('loop_lag_ms')} ms"
        if ov.get("enabled") else "off"))
    return Group(head, ctab, ptab, ntab, n2_line, ov_line, Text("q or Ctrl-C quits", style="dim"))


class LiveScreen:
    """Frames shown in place on a terminal (rich ``Live``, full screen), or printed one after
    the other when the output is not a terminal.  Used by ``nfmesh top`` and the demo."""

    def __init__(self, file: Any = None, screen: bool = True, refresh_per_second: float = 4) -> None:
        from rich.live import Live

        self.console = _console(file)
        self.tty = self.console.is_terminal
        self.live = Live(console=self.console, screen=screen and self.tty, auto_refresh=False,
                         refresh_per_second=refresh_per_second, transient=False) if self.tty else None

    def __enter__(self) -> LiveScreen:
        if self.live is not None:
            self.live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.live is not None:
            self.live.__exit__(None, None, None)

    def show(self, renderable: Any) -> None:
        if self.live is not None:
            self.live.update(renderable, refresh=True)
        else:
            self.console.print(renderable)


def _key_pressed(timeout: float) -> str | None:
    """A key from the terminal within ``timeout`` seconds (None without a terminal)."""
    import select

    if not sys.stdin.isatty():
        time.sleep(timeout)
        return None
    r, _, _ = select.select([sys.stdin], [], [], timeout)
    return os.read(sys.stdin.fileno(), 16).decode(errors="replace") if r else None


def top_main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="nfmesh top",
                                description="Live view of a running gateway (admin API).")
    p.add_argument("--admin", metavar="URL", default=None,
                   help=f"admin API (default: $NFMESH_ADMIN, else {DEFAULT_ADMIN})")
    p.add_argument("--interval", type=float, default=1.0, metavar="S", help="seconds between polls")
    p.add_argument("--once", action="store_true", help="print one frame and exit")
    p.add_argument("--iterations", type=int, default=0, metavar="N", help="stop after N frames")
    args = p.parse_args(argv)
    base = args.admin or os.environ.get("NFMESH_ADMIN") or DEFAULT_ADMIN
    try:
        admin_call(base, "/healthz", timeout=2)
    except AdminUnreachable as exc:
        print(f"nfmesh top: {exc}", file=sys.stderr)
        return EXIT_UNREACHABLE
    model = TopModel()
    if args.once:
        top_screen(base, model)  # the first poll has no rates yet
        time.sleep(min(args.interval, 1.0))
        _console().print(top_screen(base, model))
        return EXIT_OK
    import termios
    import tty

    old = None
    if sys.stdin.isatty():
        old = termios.tcgetattr(sys.stdin.fileno())
        tty.setcbreak(sys.stdin.fileno())
    n = 0
    try:
        with LiveScreen() as screen:
            while True:
                screen.show(top_screen(base, model))
                n += 1
                if args.iterations and n >= args.iterations:
                    break
                key = _key_pressed(args.interval)
                if key and key[:1] in ("q", "Q", "\x03"):
                    break
    except KeyboardInterrupt:
        pass
    finally:
        if old is not None:
            termios.tcsetattr(sys.stdin.fileno(), termios.TCSADRAIN, old)
    return EXIT_OK
