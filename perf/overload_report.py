"""The report of one ``nfmesh perf overload`` run: Markdown, PNG plots and the raw JSON.

``write_report(result, folder)`` writes into ``folder``:

* ``report.md``: settings and machine, goodput per target and offered load, one table per
  target (offered, goodput, per-class success and p99, statuses, timeouts, wasted producer
  work, CPU per request, RSS), recovery times, the OCI scenario, skipped targets and why;
* ``goodput.png``: goodput against offered load (with the producer's capacity);
* ``success_by_class.png``: per-class success ratio against offered load, one panel a class;
* ``p99_by_class.png``: per-class p99 of answered requests against offered load;
* ``oci_share.png``: share of the offered traffic reaching the producer per 250 ms window;
* ``results.json``: the whole result object.

Plots need matplotlib (the ``perf`` extra); without it the Markdown says so.
"""

from __future__ import annotations

import json
from pathlib import Path

LOAD_X = ("0.5", "1", "2", "3", "5")
CLASSES = ("high", "normal", "low")


def _fmt(x: object, digits: int = 1) -> str:
    if x is None:
        return "-"
    if isinstance(x, float):
        return f"{x:.{digits}f}"
    return str(x)


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.0f}%"


def _measured(result: dict) -> dict[str, dict]:
    return {n: t for n, t in result.get("targets", {}).items() if "skipped" not in t}


def _per_class(d: dict, fmt) -> str:
    return " / ".join(fmt(d.get(c)) for c in CLASSES)


def target_table(t: dict) -> list[str]:
    """One row per load step (and the recovery step) of one target."""
    lines = [
        "| load | offered/s | goodput/s | success h / n / l | p99 ms h / n / l | statuses | "
        "timeouts | late 2xx | wasted work (items, time) | CPU µs/req | RSS MB (growth) |",
        "|---|---:|---:|---|---|---|---:|---:|---|---:|---|",
    ]
    rows = [(f"{x}x", t["load_x"][x]) for x in LOAD_X if x in t.get("load_x", {})]
    if "recovery" in t:
        rows.append(("0.5x (recovery)", t["recovery"]))
    for label, e in rows:
        statuses = ", ".join(f"{k}: {v}" for k, v in e.get("statuses", {}).items()) or "-"
        errors = sum(e.get("errors", {}).values())
        if errors:
            statuses += f"; errors {errors}"
        lines.append(
            f"| {label} | {_fmt(e['offered_rps'], 0)} | {_fmt(e['goodput_rps'], 0)} | "
            f"{_per_class(e['success'], _pct)} | {_per_class(e['p99_ms'], _fmt)} | "
            f"{statuses} | {e.get('timeouts', 0)} | {e.get('late_2xx', 0)} | "
            f"{_pct(e.get('wasted_backend_work'))}, {_pct(e.get('wasted_backend_time'))} | "
            f"{_fmt(e.get('cpu_us_per_request'))} | {_fmt(e.get('rss_mb'))} "
            f"({_fmt(e.get('rss_growth_mb'))}) |")
    return lines


def markdown(result: dict, plots: dict[str, str], plot_error: str | None = None) -> str:
    """The report text; ``plots`` maps a caption to a PNG file name in the same folder."""
    s = result.get("settings", {})
    m = result.get("machine", {})
    p = result.get("producer", {})
    lines = [
        "# nfmesh perf overload",
        "",
        f"Started {result.get('started', '?')}, took {result.get('duration_s', '?')} s. "
        f"Machine: {m.get('cpu', '?')}, {m.get('cpus', '?')} CPUs, load average "
        f"{m.get('loadavg_1m', '?')}; dataplane/ at {m.get('dataplane_commit', '?')}.",
        "",
        f"Producer: concurrency {p.get('concurrency')}, service {p.get('service_ms')} ms, "
        f"capacity **{result.get('capacity_rps', 0):.0f} req/s**, unbounded FIFO queue, "
        "RST_STREAM honoured. Client: open loop from the intended send time, class mix 10% "
        "high (priority 2) / 60% normal (16) / 30% low (28), deadline "
        f"{result.get('deadline_ms')} ms (RST_STREAM at the deadline), "
        f"{s.get('connections')} h2c connections. Steps of {s.get('step_s')} s at 0.5x, 1x, "
        "2x, 3x, 5x capacity, then 0.5x again (recovery). Each target pinned to CPU "
        f"{s.get('target_cpu')}; producer and client on CPU {s.get('load_cpu')}. "
        "Method: docs/overload.md.",
        "",
        "## Goodput (2xx within the deadline, req/s)",
        "",
        "| target | " + " | ".join(f"{x}x" for x in LOAD_X) + " | recovery s (stable) |",
        "|---|" + "---:|" * len(LOAD_X) + "---|",
    ]
    for name, t in result.get("targets", {}).items():
        if "skipped" in t:
            lines.append(f"| {name} | skipped: {t['skipped']} |" + " |" * len(LOAD_X))
            continue
        cells = [_fmt(t["load_x"].get(x, {}).get("goodput_rps"), 0) for x in LOAD_X]
        lines.append(f"| {name} | " + " | ".join(cells)
                     + f" | {_fmt(t.get('recovery_s'), 2)} ({_fmt(t.get('recovery_stable_s'), 2)}) |")
    for name, t in _measured(result).items():
        lines += ["", f"## {name}", ""]
        lines += target_table(t)
        extra = [f"baseline p99 {_fmt(t.get('baseline_p99_ms'), 2)} ms",
                 f"producer's longest queue {t.get('producer_max_queue')}",
                 f"{t.get('generator_processes')} client process(es)"]
        if t.get("run_info"):
            extra.append(f"run info {t['run_info']}")
        lines += ["", "; ".join(extra) + "."]
        for e in t.get("errors", []):
            lines.append(f"- error: {e}")
    oci = result.get("oci", {})
    if oci.get("targets"):
        lines += ["", "## OCI scenario", "",
                  f"Constant load at {oci.get('load_x')}x; {oci.get('after_s')} s in, the "
                  f"producer puts `3gpp-Sbi-Oci` ({oci.get('reduction_pct')}%, NF-Instance "
                  f"scope, validity {oci.get('validity_s')} s) on its responses for "
                  f"{oci.get('emitted_for_s')} s. Shares are of the offered traffic that "
                  "reached the producer (250 ms windows); times from the OCI's start.", "",
                  "| target | share before (all) | share during h / n / l (all) | dropped at s | "
                  "back at s | expected back s (from timestamp, from last OCI) | "
                  "responses with OCI |",
                  "|---|---:|---|---:|---:|---|---:|"]
        for name, o in oci["targets"].items():
            if "skipped" in o:
                lines.append(f"| {name} | skipped: {o['skipped']} | | | | | |")
                continue
            d = o["share_during"]
            exp = o.get("expected_back_s", {})
            lines.append(
                f"| {name} | {_pct(o['share_before'].get('all'))} | "
                f"{_per_class(d, _pct)} ({_pct(d.get('all'))}) | {_fmt(o.get('drop_s'), 2)} | "
                f"{_fmt(o.get('back_s'), 2)} | {_fmt(exp.get('validity_from_timestamp'), 1)}, "
                f"{_fmt(exp.get('validity_from_last_oci'), 1)} | {o.get('responses_with_oci')} |")
    lines += ["", "## Plots", ""]
    if plot_error:
        lines.append(f"No plots: {plot_error}")
    for caption, fname in plots.items():
        lines += [f"![{caption}]({fname})", ""]
    lines += ["", "Raw numbers: `results.json`.", ""]
    return "\n".join(lines)


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_goodput(result: dict, path: Path) -> None:
    """Goodput against offered load, one line per target, the capacity as a dashed line."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 4))
    cap = result.get("capacity_rps", 0)
    top = cap
    for name, t in _measured(result).items():
        xs = [t["load_x"][x]["offered_rps"] for x in LOAD_X if x in t["load_x"]]
        ys = [t["load_x"][x]["goodput_rps"] for x in LOAD_X if x in t["load_x"]]
        ax.plot(xs, ys, marker="o", label=name)
        top = max([top, *xs])
    ax.plot([0, top], [0, top], color="grey", linewidth=0.8, linestyle=":", label="offered")
    ax.axhline(cap, color="black", linestyle="--", linewidth=1, label="producer capacity")
    ax.set_ylim(0, cap * 1.3)
    ax.set_xlabel("offered load (req/s)")
    ax.set_ylabel("goodput: 2xx within deadline (req/s)")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def plot_by_class(result: dict, path: Path, key: str, ylabel: str, log: bool = False) -> None:
    """One panel per class: ``key`` (``success`` or ``p99_ms``) against offered load."""
    plt = _plt()
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8), sharey=True)
    for ax, cls in zip(axes, CLASSES, strict=True):
        for name, t in _measured(result).items():
            pts = [(float(x), t["load_x"][x][key].get(cls)) for x in LOAD_X if x in t["load_x"]]
            pts = [(x, y) for x, y in pts if y is not None]
            if pts:
                ax.plot([x for x, _ in pts], [y for _, y in pts], marker="o", label=name)
        ax.set_title(cls)
        ax.set_xlabel("offered load (x capacity)")
        if log:
            ax.set_yscale("log")
        ax.grid(True, which="both", alpha=0.3)
    axes[0].set_ylabel(ylabel)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def plot_oci(result: dict, path: Path) -> bool:
    """Share reaching the producer per window and class, one panel per OCI target."""
    targets = {n: o for n, o in result.get("oci", {}).get("targets", {}).items()
               if "skipped" not in o and o.get("windows")}
    if not targets:
        return False
    plt = _plt()
    fig, axes = plt.subplots(1, len(targets), figsize=(6 * len(targets), 3.8), squeeze=False)
    validity = result["oci"].get("validity_s", 0)
    emitted = result["oci"].get("emitted_for_s", 0)
    for ax, (name, o) in zip(axes[0], targets.items(), strict=True):
        rows = o["windows"][1:-1]
        for i, cls in enumerate(CLASSES):
            pts = [(r["t"], r["reached"][i] / r["offered"][i]) for r in rows if r["offered"][i]]
            ax.plot([x for x, _ in pts], [y for _, y in pts], drawstyle="steps-post", label=cls)
        ax.axvspan(0, emitted, color="orange", alpha=0.15, label="OCI in responses")
        end = o.get("expected_back_s", {}).get("validity_from_timestamp") or validity
        ax.axvline(end, color="grey", linestyle="--", linewidth=1,
                   label="validity end (from timestamp)")
        ax.set_title(name)
        ax.set_xlabel("s from the OCI's start")
        ax.set_ylabel("share reaching the producer")
        ax.set_ylim(-0.05, 1.3)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return True


def write_report(result: dict, folder: Path) -> Path:
    """Write report.md, the PNG plots and results.json into ``folder``; return the folder."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "results.json").write_text(json.dumps(result, indent=1))
    plots: dict[str, str] = {}
    plot_error = None
    if _measured(result):
        try:
            plot_goodput(result, folder / "goodput.png")
            plots["Goodput against offered load"] = "goodput.png"
            plot_by_class(result, folder / "success_by_class.png", "success",
                          "2xx within the deadline (share)")
            plots["Success per class against offered load"] = "success_by_class.png"
            plot_by_class(result, folder / "p99_by_class.png", "p99_ms",
                          "p99 of answered requests (ms)", log=True)
            plots["p99 per class against offered load"] = "p99_by_class.png"
            if plot_oci(result, folder / "oci_share.png"):
                plots["OCI: share of the traffic reaching the producer"] = "oci_share.png"
        except ImportError as exc:
            plot_error = f"matplotlib is not installed ({exc}); pip install 'nfmesh[perf]'"
    else:
        plot_error = "no target was measured"
    (folder / "report.md").write_text(markdown(result, plots, plot_error))
    return folder
