"""The report of one ``nfmesh perf compare`` run: Markdown, PNG plots and the raw JSON.

``write_report(result, folder)`` writes into ``folder``:

* ``report.md``: settings, machine, the headline table (req/s, p50, p99, CPU µs per request,
  RSS, ratios to HAProxy), one table per load phase, skipped targets with their reason;
* ``latency_cdf.png``: latency CDF per target for each phase (log-scale latency);
* ``cpu_per_request.png``: CPU µs per request per target for each phase;
* ``results.json``: the whole result object.

Plots need matplotlib (the ``perf`` extra); without it the Markdown says so and the rest is
written anyway.
"""

from __future__ import annotations

import json
from pathlib import Path

REFERENCE = "haproxy"


def _fmt(x: object, digits: int = 3) -> str:
    if x is None:
        return "-"
    if isinstance(x, float):
        return f"{x:.{digits}f}"
    return str(x)


def _measured(result: dict) -> dict[str, dict]:
    return {n: t for n, t in result.get("targets", {}).items() if "skipped" not in t}


def phase_names(result: dict) -> list[str]:
    """Phases in run order (closed, rate_*, single), as measured by any target."""
    seen: list[str] = []
    for t in _measured(result).values():
        for name in t.get("phases", {}):
            if name not in seen:
                seen.append(name)
    def key(n: str) -> tuple[int, int]:
        if n == "closed":
            return (0, 0)
        if n.startswith("rate_"):
            return (1, int(n[5:]))
        if n == "single":
            return (2, 0)
        if n.startswith("loadgen_"):
            return (3, int(n[8:]))
        return (4, 0)
    return sorted(seen, key=key)


def phase_title(name: str) -> str:
    if name == "closed":
        return "closed loop (h2load -c 10 -m 10)"
    if name == "single":
        return "one connection, one stream"
    if name.startswith("rate_"):
        return f"fixed rate {int(name[5:]):,} req/s"
    if name.startswith("loadgen_"):
        return f"nfmesh loadgen, open loop {int(name[8:]):,} req/s"
    return name


def markdown(result: dict, plots: dict[str, str], plot_error: str | None = None) -> str:
    """The report text; ``plots`` maps a caption to a PNG file name in the same folder."""
    s = result.get("settings", {})
    m = result.get("machine", {})
    lines = [
        "# nfmesh perf compare",
        "",
        f"Started {result.get('started', '?')}, took {result.get('duration_s', '?')} s. "
        f"Machine: {m.get('cpu', '?')}, {m.get('cpus', '?')} CPUs, Linux {m.get('kernel', '?')}; "
        f"load average {m.get('loadavg_1m_at_start', '?')} at the start, "
        f"{m.get('loadavg_1m', '?')} at the end (other work on the machine skews latency more "
        "than CPU per request).",
        "",
        f"Each target pinned to CPU {s.get('target_cpu')}; backend (nghttpd) and h2load on CPU "
        f"{s.get('load_cpu')}. Frontend {'TLS (ALPN h2)' if s.get('tls') else 'h2c'}, backend "
        f"h2c. POST of a {s.get('request_bytes', '?')}-byte JSON body, 227-byte JSON answer. "
        f"{s.get('repeats', '?')} interleaved repeat(s). CPU is the target's process tree's "
        "CPU time from /proc over the phase (per-thread run time from schedstat, utime+stime "
        "where a thread exited), divided by the requests answered 2xx. The loadgen phases "
        "measure latency from each request's intended send time (open loop); their "
        "service p50/p99 (from the actual send) is in results.json.",
        "",
        "## Headline (closed loop)",
        "",
        "| target | req/s | p50 ms | p99 ms | CPU µs/req | RSS MB | CPU × HAProxy | p99 × HAProxy |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, t in result.get("targets", {}).items():
        if "skipped" in t:
            lines.append(f"| {name} | skipped: {t['skipped']} | | | | | | |")
            continue
        lines.append(
            f"| {name} | {_fmt(t.get('rps'), 0)} | {_fmt(t.get('p50_ms'))} | "
            f"{_fmt(t.get('p99_ms'))} | {_fmt(t.get('cpu_us_per_req'), 1)} | "
            f"{_fmt(t.get('rss_mb'), 1)} | {_fmt(t.get(f'ratio_cpu_to_{REFERENCE}'), 2)} | "
            f"{_fmt(t.get(f'ratio_p99_to_{REFERENCE}'), 2)} |"
        )
    infos = {n: t["run_info"] for n, t in _measured(result).items() if t.get("run_info")}
    if infos:
        lines.append("")
        for name, runs in infos.items():
            told = "; ".join(sorted({", ".join(f"{k} {v}" for k, v in r.items()) for r in runs}))
            lines.append(f"{name} ran with: {told} ({len(runs)} start(s)).")
    if result.get("goals"):
        lines += ["", "## Goals of issue 5 (nfmesh against HAProxy, same run)", "",
                  "| goal | nfmesh / HAProxy | limit | met |", "|---|---:|---:|---|"]
        for g in result["goals"]:
            met = {True: "yes", False: "**no**", None: "not measured"}[g["met"]]
            lines.append(f"| {g['goal']} | {_fmt(g['ratio'], 2)} | {g['limit']} | {met} |")
    for phase in phase_names(result):
        lines += [
            "",
            f"## {phase_title(phase)}",
            "",
            "| target | req/s | requests | failed | p50 ms | p90 ms | p99 ms | p99.9 ms | "
            "CPU µs/req | CPU × HAProxy |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for name, t in _measured(result).items():
            ph = t.get("phases", {}).get(phase)
            if ph is None:
                continue
            lines.append(
                f"| {name} | {_fmt(ph.get('rps'), 0)} | {ph.get('requests')} | "
                f"{ph.get('failed')} | {_fmt(ph.get('p50_ms'))} | {_fmt(ph.get('p90_ms'))} | "
                f"{_fmt(ph.get('p99_ms'))} | {_fmt(ph.get('p999_ms'))} | "
                f"{_fmt(ph.get('cpu_us_per_req'), 1)} | "
                f"{_fmt(ph.get(f'ratio_cpu_us_per_req_to_{REFERENCE}'), 2)} |"
            )
    mem = {n: t["memory"] for n, t in _measured(result).items() if t.get("memory")}
    if mem:
        lines += [
            "",
            "## Memory per connection and per stream",
            "",
            f"RSS growth of the target with {s.get('memory_connections')} idle HTTP/2 "
            f"connections, then with {s.get('memory_streams')} streams held open (backend "
            "stopped). Page-granular estimates, comparable within one run.",
            "",
            "| target | KiB per idle connection | KiB per open stream |",
            "|---|---:|---:|",
        ]
        for name, m in mem.items():
            lines.append(f"| {name} | {m['bytes_per_idle_connection'] / 1024:.1f} | "
                         f"{m['bytes_per_open_stream'] / 1024:.1f} |")
    errors = [(n, e) for n, t in _measured(result).items() for e in t.get("errors", [])]
    if errors:
        lines += ["", "## Errors during the run", ""]
        lines += [f"- {n}: {e}" for n, e in errors]
    lines += ["", "## Plots", ""]
    if plot_error:
        lines.append(f"No plots: {plot_error}")
    for caption, fname in plots.items():
        lines += [f"![{caption}]({fname})", ""]
    lines += ["", "Raw numbers: `results.json`.", ""]
    return "\n".join(lines)


def plot_latency_cdf(result: dict, path: Path) -> None:
    """One panel per phase: latency (log x) against percentile, one line per target."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    phases = phase_names(result)
    ncols = min(3, max(1, len(phases)))
    nrows = -(-max(1, len(phases)) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(5 * ncols, 3.8 * nrows), squeeze=False)
    flat = [ax for row in axes for ax in row]
    for ax in flat[len(phases):]:
        ax.set_visible(False)
    for ax, phase in zip(flat, phases, strict=False):
        for name, t in _measured(result).items():
            cdf = t.get("phases", {}).get(phase, {}).get("cdf") or []
            pts = [(q, v) for q, v in cdf if v is not None and v > 0]
            if pts:
                ax.plot([v for _, v in pts], [q for q, _ in pts], marker=".", label=name)
        ax.set_xscale("log")
        ax.set_xlabel("latency (ms)")
        ax.set_ylabel("percentile")
        ax.set_title(phase_title(phase), fontsize=9)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def plot_cpu(result: dict, path: Path) -> None:
    """Grouped bars: CPU µs per request per target, one group per phase."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    phases = phase_names(result)
    targets = list(_measured(result))
    fig, ax = plt.subplots(figsize=(max(5, 1.6 * len(phases) * max(1, len(targets)) / 2), 4))
    width = 0.8 / max(1, len(targets))
    for i, name in enumerate(targets):
        vals = [result["targets"][name].get("phases", {}).get(p, {}).get("cpu_us_per_req") or 0
                for p in phases]
        xs = [j + i * width for j in range(len(phases))]
        bars = ax.bar(xs, vals, width, label=name)
        ax.bar_label(bars, fmt="%.1f", fontsize=7)
    ax.set_xticks([j + width * (len(targets) - 1) / 2 for j in range(len(phases))])
    ax.set_xticklabels([phase_title(p) for p in phases], fontsize=8)
    ax.set_ylabel("proxy CPU µs per request")
    ax.legend(fontsize=8)
    ax.grid(True, axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def write_report(result: dict, folder: Path) -> Path:
    """Write report.md, the PNG plots and results.json into ``folder``; return report.md."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "results.json").write_text(json.dumps(result, indent=1))
    plots: dict[str, str] = {}
    plot_error = None
    if _measured(result):
        try:
            plot_latency_cdf(result, folder / "latency_cdf.png")
            plots["Latency CDF per target"] = "latency_cdf.png"
            plot_cpu(result, folder / "cpu_per_request.png")
            plots["CPU µs per request"] = "cpu_per_request.png"
        except ImportError as exc:
            plot_error = f"matplotlib is not installed ({exc}); pip install 'nfmesh[perf]'"
    else:
        plot_error = "no target was measured"
    report = folder / "report.md"
    report.write_text(markdown(result, plots, plot_error))
    return report
