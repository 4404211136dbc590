"""The ``nfmesh`` command line: run the gateway, the demo, config checks, version, perf tools.

This package is the composition root: it sits above ``gateway`` and ``perf`` and may import
both (``nfmesh demo`` starts ``perf.demo``; ``nfmesh perf TOOL`` loads a ``perf`` module), so
neither of them imports the other's way up.  ``python -m nfmesh_cli`` is the same program as the
``nfmesh`` script.

Exit codes: 0 success, 1 runtime failure, 2 bad usage or bad config (the errors are printed
with the config path of each field and the reason).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable

EXIT_OK, EXIT_FAIL, EXIT_USAGE = 0, 1, 2


def _host_port(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {text!r}")
    return host.strip("[]") or "127.0.0.1", int(port)


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError("must be > 0")
    return value


def _workers(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a number of workers >= 1, got {text!r}")
    return int(text)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="nfmesh",
        description="Mesh gateway for 5G core network functions: an SBI (HTTP/2) SCP with an "
        "NRF-compatible registry, N2 (NGAP/SCTP) proxying, metrics and a perf harness.",
        epilog="Exit codes: 0 ok, 1 runtime failure, 2 bad usage or bad config.",
    )
    sub = p.add_subparsers(dest="cmd", metavar="COMMAND")

    run = sub.add_parser(
        "run", help="run the gateway",
        description="Run the gateway. Without -c it listens on h2c 127.0.0.1:8080, routes "
        "by SCP model C (3gpp-Sbi-Target-apiRoot) and serves the NRF API of an in-memory "
        "registry (model D on what registers), so a first try needs no file.",
    )
    run.add_argument("-c", "--config", metavar="FILE", help="YAML config file (see config/example.yaml)")
    run.add_argument("--listen", type=_host_port, metavar="HOST:PORT",
                     help="replace the listeners with one h2c listener here")
    run.add_argument("--workers", type=_workers, metavar="N",
                     help="data-plane worker processes sharing the port (default: from the config, "
                     "else the number of cores)")
    run.add_argument("--backend", choices=["auto", "nghttp2", "h2"],
                     help="HTTP/2 engine (default: from the config, else auto = nghttp2 when built)")
    run.add_argument("--metrics", type=_host_port, metavar="HOST:PORT",
                     help="serve Prometheus metrics here (overrides the config)")
    run.add_argument("--log-level", default=None, choices=["debug", "info", "warning", "error"])

    demo = sub.add_parser(
        "demo", help="start a demo mesh and drive traffic through it",
        description="Start a gateway with its registry and emulated NFs (AMF, AUSF, UDM, SMF, "
        "and gNBs/AMFs on N2 where kernel SCTP exists), drive real SBI traffic through the "
        "gateway, show a live view, and stop cleanly.",
    )
    demo.add_argument("--duration", type=_positive_float, metavar="S",
                      help="seconds of traffic (default: until Ctrl-C)")
    demo.add_argument("--json", action="store_true", help="print one final JSON summary object")
    demo.add_argument("--rate", type=_positive_float, default=200.0, metavar="RPS",
                      help="requests per second the emulated consumers send (default 200)")
    demo.add_argument("--backend", choices=["auto", "nghttp2", "h2"], default="auto")
    demo.add_argument("--secure", action="store_true",
                      help="mTLS on every hop (mesh CA) and an OAuth2 access token on every request")
    demo.add_argument("--rotate-every", type=_positive_float, metavar="S", default=None,
                      help="with --secure: renew every certificate (and the token key) every S s")

    cfg = sub.add_parser("config", help="configuration tools")
    cfg_sub = cfg.add_subparsers(dest="config_cmd", metavar="ACTION")
    check = cfg_sub.add_parser("check", help="validate a config file and explain every error")
    check.add_argument("file", metavar="FILE")

    ver = sub.add_parser("version", help="version, Python, uvloop, compiled hot paths")
    ver.add_argument("--json", action="store_true")

    ca = sub.add_parser("ca", help="the mesh certificate authority: init, issue, gateway, show, example",
                        add_help=False)
    ca.add_argument("args", nargs=argparse.REMAINDER)

    for name, helptext in (("ctl", "ask a running gateway: status, routes, clusters, nf, drain, reload"),
                           ("top", "live view of a running gateway")):
        sub.add_parser(name, help=helptext, add_help=False).add_argument("args", nargs=argparse.REMAINDER)

    perf = sub.add_parser("perf", help="benchmarks and traffic generators")
    perf_sub = perf.add_subparsers(dest="perf_cmd", metavar="TOOL")
    for name, helptext in PERF_TOOLS.items():
        tool = perf_sub.add_parser(name, help=helptext[1], add_help=False)
        tool.add_argument("args", nargs=argparse.REMAINDER)
    return p


# name -> (module with main(argv) -> int, help)
PERF_TOOLS: dict[str, tuple[str, str]] = {
    "compare": ("perf.compare", "nfmesh beside HAProxy, nghttpx and Envoy (--quick, --json)"),
    "load": ("perf.loadgen", "the SBI load generator (open or closed loop, scenarios)"),
    "secure": ("perf.secure_compare", "mTLS + access token checks: nfmesh beside HAProxy (--json)"),
    "ngap": ("perf.ngap_perf", "N2 proxy vs direct, and a replica killed mid-run (VM, --json)"),
    "ngap-decode": ("perf.ngap_decode_bench", "NGAP routing-key extraction: fast path vs pycrate"),
    "snapshot": ("perf.snapshot_bench", "route snapshot: control plane -> worker cost for N profiles"),
    "registry": ("perf.registry_bench", "NRF registry: registrations, heartbeats, discoveries per second"),
    "overload": ("perf.overload", "overload protection beside HAProxy and Envoy (--quick, --json)"),
    "abuse": ("perf.abuse", "HTTP/2 abuse beside a legit client: nfmesh, HAProxy, nghttpx (--quick, --json)"),
}


def cmd_version(args: argparse.Namespace) -> int:
    from gateway import build_info

    if args.json:
        print(json.dumps(build_info.info(), indent=2))
    else:
        i = build_info.info()
        print(f"nfmesh {i['nfmesh']}")
        print(f"python {i['python']}, uvloop {i['uvloop']}")
        print(f"http/2 backend: {i['http2_backend']}")
        for name, state in i["hot_paths"].items():
            print(f"hot path {name}: {state}")
    return EXIT_OK


def cmd_config_check(args: argparse.Namespace) -> int:
    from gateway.config import check_config_file

    ok, report = check_config_file(args.file)
    print(report, file=sys.stdout if ok else sys.stderr)
    return EXIT_OK if ok else EXIT_USAGE


def cmd_run(args: argparse.Namespace) -> int:
    from gateway.config import ConfigError, load_config, no_file_config
    from gateway.runner import run_gateway

    try:
        config = load_config(args.config) if args.config else no_file_config()
    except ConfigError as exc:
        print(f"nfmesh: refusing to start, {args.config} is not valid:\n{exc}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as exc:
        print(f"nfmesh: cannot read {args.config}: {exc.strerror}", file=sys.stderr)
        return EXIT_USAGE
    return run_gateway(
        config, config_path=os.path.abspath(args.config) if args.config else None, listen=args.listen, workers=args.workers, backend=args.backend,
        metrics=args.metrics, log_level=args.log_level,
    )


def cmd_demo(args: argparse.Namespace) -> int:
    from perf.demo import run_demo

    if args.rotate_every is not None and not args.secure:
        print("nfmesh demo: --rotate-every needs --secure", file=sys.stderr)
        return 2
    return run_demo(duration=args.duration, as_json=args.json, rate=args.rate, backend=args.backend,
                    secure=args.secure, rotate_every=args.rotate_every)


def cmd_perf(args: argparse.Namespace) -> int:
    import importlib

    module, _ = PERF_TOOLS[args.perf_cmd]
    main: Callable[[list[str]], int] = importlib.import_module(module).main
    return int(main(list(args.args)) or 0)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] == "ca":
        from nfmesh_cli.ca import main as ca_main

        return int(ca_main(argv[1:]) or 0)
    if argv and argv[0] in ("ctl", "top"):  # the admin API's clients (gateway/ctl.py)
        from gateway import ctl

        try:
            return (ctl.ctl_main if argv[0] == "ctl" else ctl.top_main)(argv[1:])
        except BrokenPipeError:
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return EXIT_FAIL
    if len(argv) >= 2 and argv[0] == "perf" and argv[1] in PERF_TOOLS:
        # the tool parses its own options (argparse.REMAINDER would choke on a leading --flag)
        return cmd_perf(argparse.Namespace(perf_cmd=argv[1], args=argv[2:]))
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.cmd is None:
        parser.print_help()
        return EXIT_USAGE
    if (args.cmd == "config" and args.config_cmd is None) or (
            args.cmd == "perf" and args.perf_cmd is None):
        try:  # the command's help, then bad usage: an action is needed
            parser.parse_args([args.cmd, "--help"])
        except SystemExit:
            pass
        return EXIT_USAGE
    handlers = {
        "version": cmd_version, "config": cmd_config_check, "run": cmd_run,
        "demo": cmd_demo, "perf": cmd_perf,
    }
    try:
        return handlers[args.cmd](args)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_FAIL


if __name__ == "__main__":
    sys.exit(main())
