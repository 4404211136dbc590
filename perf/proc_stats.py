"""CPU time and memory of a process tree, read from /proc (Linux).

The perf harness measures a proxy's cost as the CPU it burned between two snapshots divided by
the requests it served.  CPU of a process is ``utime + stime`` from ``/proc/<pid>/stat`` (all
its threads), plus ``cutime + cstime`` (children it has already reaped), plus the same for every
live descendant (nghttpx and HAProxy may fork workers).  RSS is ``VmRSS`` of the tree.

Those counters tick at ``SC_CLK_TCK`` (100 Hz: 10 ms), too coarse for a short, light phase
(2 000 requests at 30 µs is 6 ticks).  So each snapshot also sums the nanosecond run time of
every thread (``/proc/<pid>/task/<tid>/schedstat``, first field); ``cpu_us_between`` uses it
when every thread of ``before`` is still there at ``after`` (no time can have been lost with an
exited thread), and falls back to the ticks otherwise.

Only a process that exists at both snapshots is counted: a descendant that appears and dies
between them is caught by its parent's ``cutime``/``cstime`` once reaped.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
_US_PER_TICK = 1_000_000 / CLOCK_TICKS


class ProcessGone(Exception):
    """The root process of a measurement no longer exists."""


@dataclass(frozen=True, slots=True)
class ProcStat:
    """The fields of ``/proc/<pid>/stat`` the harness uses (times in clock ticks)."""

    pid: int
    ppid: int
    utime: int
    stime: int
    cutime: int
    cstime: int

    @property
    def own_ticks(self) -> int:
        return self.utime + self.stime

    @property
    def reaped_children_ticks(self) -> int:
        return self.cutime + self.cstime


def parse_stat(text: str) -> ProcStat:
    """Parse one ``/proc/<pid>/stat`` line.  The command name (field 2) is in parentheses and
    may itself hold spaces or parentheses, so the fields are counted from the last ``)``."""
    close = text.rfind(")")
    if close < 0 or "(" not in text[:close]:
        raise ValueError(f"not a /proc/<pid>/stat line: {text[:80]!r}")
    pid = int(text[: text.index("(")].strip())
    rest = text[close + 1 :].split()
    # rest[0] is field 3 (state); fields 4 (ppid) and 14..17 (utime, stime, cutime, cstime)
    if len(rest) < 15:
        raise ValueError(f"short /proc/<pid>/stat line: {text[:80]!r}")
    return ProcStat(
        pid=pid,
        ppid=int(rest[1]),
        utime=int(rest[11]),
        stime=int(rest[12]),
        cutime=int(rest[13]),
        cstime=int(rest[14]),
    )


def read_stat(pid: int) -> ProcStat:
    """``/proc/<pid>/stat`` of one process; ``ProcessGone`` when it does not exist."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return parse_stat(f.read())
    except (FileNotFoundError, ProcessLookupError) as exc:
        raise ProcessGone(pid) from exc


def descendants(pid: int) -> list[int]:
    """Live descendants of ``pid`` (children, grandchildren, ...), from one /proc walk."""
    children: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                st = parse_stat(f.read())
        except (OSError, ValueError):
            continue  # exited during the walk
        children.setdefault(st.ppid, []).append(st.pid)
    out: list[int] = []
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), ()):
            out.append(child)
            todo.append(child)
    return out


def rss_bytes(pid: int) -> int:
    """Resident set size of one process (``VmRSS``), 0 for a zombie or kernel thread."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except (FileNotFoundError, ProcessLookupError) as exc:
        raise ProcessGone(pid) from exc
    return 0


@dataclass(frozen=True, slots=True)
class TreeSnapshot:
    """CPU ticks per process of a tree at one instant (own + reaped children's)."""

    root: int
    ticks: dict[int, int] = field(default_factory=dict)
    rss: int = 0
    thread_ns: dict[int, int] | None = None  # tid -> run time; None where schedstat is absent
    reaped: dict[int, int] = field(default_factory=dict)  # pid -> cutime + cstime ticks

    @property
    def total_ticks(self) -> int:
        return sum(self.ticks.values())


def thread_run_ns(pid: int) -> dict[int, int] | None:
    """Nanoseconds on CPU of each live thread of ``pid``; None without schedstat."""
    out: dict[int, int] = {}
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except (FileNotFoundError, ProcessLookupError):
        return {}
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                out[int(tid)] = int(f.read().split()[0])
        except (FileNotFoundError, ProcessLookupError):
            continue  # thread exited during the walk
        except (OSError, ValueError, IndexError):
            return None
    return out


def snapshot(root: int) -> TreeSnapshot:
    """CPU ticks, per-thread run time and RSS of ``root`` and its live descendants."""
    ticks: dict[int, int] = {}
    reaped: dict[int, int] = {}
    threads: dict[int, int] | None = {}
    rss = 0
    for i, pid in enumerate([root, *descendants(root)]):
        try:
            st = read_stat(pid)
            rss += rss_bytes(pid)
        except ProcessGone:
            if i == 0:
                raise
            continue
        ticks[pid] = st.own_ticks + st.reaped_children_ticks
        reaped[pid] = st.reaped_children_ticks
        if threads is not None:
            ns = thread_run_ns(pid)
            threads = None if ns is None else {**threads, **ns}
    return TreeSnapshot(root=root, ticks=ticks, rss=rss, thread_ns=threads, reaped=reaped)


def ticks_us_between(before: TreeSnapshot, after: TreeSnapshot) -> float:
    """CPU microseconds between two snapshots from the 10 ms ``utime``/``stime`` ticks.

    Processes present in both count their growth; a process new in ``after`` counts whole
    (it was born in the interval); a process gone from ``after`` was reaped by a parent that
    is still there and whose ``cutime``/``cstime`` now hold all of its time, so its share
    from before the interval is taken off again."""
    ticks = 0
    for pid, t in after.ticks.items():
        ticks += t - before.ticks.get(pid, 0)
    for pid, t in before.ticks.items():
        if pid not in after.ticks and pid != before.root:
            ticks -= t
    return ticks * _US_PER_TICK


def cpu_us_between(before: TreeSnapshot, after: TreeSnapshot) -> float:
    """CPU microseconds the tree spent between two snapshots: per-thread nanoseconds when no
    thread of ``before`` has gone (new threads count whole), plus the growth of the reaped
    children's ticks (a child born and reaped within the interval); else the coarse ticks."""
    b, a = before.thread_ns, after.thread_ns
    if b is not None and a is not None and b.keys() <= a.keys():
        live_ns = sum(ns - b.get(tid, 0) for tid, ns in a.items())
        reaped = sum(t - before.reaped.get(pid, 0) for pid, t in after.reaped.items())
        return live_ns / 1000.0 + reaped * _US_PER_TICK
    return ticks_us_between(before, after)


@dataclass(frozen=True, slots=True)
class CpuSample:
    """What one measured interval cost a process tree."""

    cpu_us: float
    rss_bytes: int

    @property
    def rss_mb(self) -> float:
        return self.rss_bytes / (1 << 20)


class TreeMeter:
    """Measures a process tree over an interval: ``start()`` then ``stop()``."""

    def __init__(self, root: int) -> None:
        self.root = root
        self._before: TreeSnapshot | None = None

    def start(self) -> None:
        self._before = snapshot(self.root)

    def stop(self) -> CpuSample:
        if self._before is None:
            raise RuntimeError("TreeMeter.stop() before start()")
        after = snapshot(self.root)
        return CpuSample(cpu_us=cpu_us_between(self._before, after), rss_bytes=after.rss)
