"""The verdicts and the human table of ``nfmesh perf abuse``.

The issue's targets (issue 13, item 6), per case and target: the legit client keeps a success
ratio of at least 99% and a p99 of at most 10x its baseline, the target's RSS peak grows by at
most 16 MB; an idle connection costs at most 8 KiB.  ``verdicts`` names what a case row misses
(an empty list: it meets them all).  The table has one block per case, one row per target, so
the targets are side by side.
"""

from __future__ import annotations

MIN_SUCCESS = 0.99
MAX_P99_RATIO = 10.0
MAX_RSS_GROWTH_KIB = 16 * 1024
MAX_IDLE_KIB = 8.0


def verdicts(row: dict) -> list[str]:
    """The issue's targets that case row ``row`` misses, as short phrases."""
    missed = []
    legit = row["legit"]
    if legit["success"] < MIN_SUCCESS:
        missed.append(f"legit {legit['success'] * 100:.2f}% < 99%")
    ratio = legit.get("p99_vs_baseline")
    if ratio is not None and ratio > MAX_P99_RATIO:
        missed.append(f"p99 {ratio:g}x > 10x")
    if legit["ok"] == 0:
        missed.append("no legit answer")
    if row["rss_peak_growth_kib"] > MAX_RSS_GROWTH_KIB:
        missed.append(f"RSS +{row['rss_peak_growth_kib'] / 1024:.1f} MB > 16 MB")
    per_idle = row.get("kib_per_idle_connection")
    if per_idle is not None and per_idle > MAX_IDLE_KIB:
        missed.append(f"{per_idle:g} KiB/idle conn > 8")
    return missed


def _attacker(at: dict) -> str:
    goaway = ",".join(f"{k}x{v}" for k, v in sorted(at["goaway"].items())) or "-"
    text = (f"conns={at['connections']} cut={at['cut']} goaway={goaway} "
            f"rst={at.get('rst_stream', 0)} resp={at.get('responses', 0)} "
            f"sent={at['bytes_sent'] / 1048576:.1f}MB")
    if at.get("streams_opened") and "outcomes" not in at:
        text += (f" streams={at['streams_opened']} recv={at.get('bytes_received', 0) / 1024:.1f}KiB"
                 f" data={at.get('data_bytes', 0) / 1024:.1f}KiB")
    if "outcomes" in at:  # big_header: what the big request / the next one got
        text += " got=" + (", ".join(f"{k} x{v}" for k, v in sorted(at["outcomes"].items()))
                           or "nothing")
    if "error" in at:
        text += f" ({at['error']})"
    return text


def format_table(result: dict) -> str:
    """The human report: skipped targets, then one block per case with a row per target."""
    lines = [f"perf abuse: {result['duration_s']:g} s per case"]
    cases: list[str] = []
    for t in result["targets"]:
        if t.get("skipped"):
            lines.append(f"  {t['target']}: skipped: {t['skipped']}")
        elif t.get("error"):
            lines.append(f"  {t['target']}: error: {t['error']}")
        if t.get("engine"):
            lines.append(f"  {t['target']}: engine {t['engine']}")
        for c in t.get("cases", []):
            if c["case"] not in cases:
                cases.append(c["case"])
    width = max([len(t["target"]) for t in result["targets"]] + [6])
    for case in cases:
        lines.append("")
        lines.append(f"{case}")
        lines.append(f"  {'target':{width}} {'legit ok':>9} {'p50 ms':>8} {'p99 ms':>8} "
                     f"{'x base':>7} {'RSS+ KiB':>9}  attacker")
        for t in result["targets"]:
            row = next((c for c in t.get("cases", []) if c["case"] == case), None)
            if row is None:
                continue
            lg = row["legit"]
            extra = ""
            if "kib_per_idle_connection" in row:
                extra = f" {row['kib_per_idle_connection']:g} KiB/idle"
            missed = row.get("missed") or []
            lines.append(
                f"  {t['target']:{width}} {lg['success'] * 100:8.2f}% {lg['p50_ms'] or 0:8.2f} "
                f"{lg['p99_ms'] or 0:8.2f} {lg.get('p99_vs_baseline', 1.0):7.2f} "
                f"{row['rss_peak_growth_kib']:9.1f}  {_attacker(row['attacker'])}{extra}"
                + (f"  MISSES: {'; '.join(missed)}" if missed else ""))
    return "\n".join(lines)
