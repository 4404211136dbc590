"""/proc CPU and RSS accounting of a process tree, checked against busy-loop children."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from perf.proc_stats import (
    CLOCK_TICKS,
    ProcessGone,
    TreeMeter,
    TreeSnapshot,
    cpu_us_between,
    parse_stat,
    snapshot,
    ticks_us_between,
)

BUSY = "import time\nt=time.process_time()\nwhile time.process_time()-t<{s}: pass\n"


def test_parse_stat_with_odd_command_name() -> None:
    line = "4242 (my (odd) proc) S 17 4242 4242 0 -1 4194560 100 0 0 0 123 45 6 7 20 0 1 0 99 0 0"
    st = parse_stat(line)
    assert (st.pid, st.ppid, st.utime, st.stime, st.cutime, st.cstime) == (4242, 17, 123, 45, 6, 7)
    assert st.own_ticks == 168 and st.reaped_children_ticks == 13


def test_parse_stat_rejects_garbage() -> None:
    with pytest.raises(ValueError):
        parse_stat("not a stat line")


def test_snapshot_of_missing_process() -> None:
    with pytest.raises(ProcessGone):
        snapshot(2**22 + 12345)


def test_busy_child_cpu_is_counted() -> None:
    """A child burning 0.4 s of CPU: the meter sees about that much, from both clocks."""
    code = "import sys, time\nprint('ready', flush=True)\nsys.stdin.readline()\n" + BUSY.format(
        s=0.4) + "print('done', flush=True)\ntime.sleep(30)\n"
    child = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True)
    try:
        # interpreter start-up happens before the meter starts
        assert child.stdout.readline().strip() == "ready"
        meter = TreeMeter(child.pid)
        meter.start()
        before = snapshot(child.pid)
        child.stdin.write("go\n")
        child.stdin.flush()
        assert child.stdout.readline().strip() == "done"
        sample = meter.stop()
        after = snapshot(child.pid)
    finally:
        child.kill()
        child.wait()
    assert 0.35e6 <= sample.cpu_us <= 1.0e6
    assert 0.3e6 <= ticks_us_between(before, after) <= 1.0e6
    assert sample.rss_bytes > 1 << 20  # a Python interpreter is more than 1 MiB


def test_grandchildren_are_counted() -> None:
    """A parent that forks two busy children and waits: their CPU is the tree's."""
    code = (
        "import os, sys, time\n"
        "print('ready', flush=True)\n"
        "sys.stdin.read()\n"
        "pids = []\n"
        "for _ in range(2):\n"
        "    pid = os.fork()\n"
        "    if pid == 0:\n"
        f"        exec({BUSY.format(s=0.3)!r})\n"
        "        os._exit(0)\n"
        "    pids.append(pid)\n"
        "time.sleep(0.1)\n"
        "print('forked', flush=True)\n"
        "for p in pids: os.waitpid(p, 0)\n"
        "print('reaped', flush=True)\n"
        "time.sleep(30)\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert parent.stdout.readline().strip() == "ready"
        meter = TreeMeter(parent.pid)
        meter.start()
        parent.stdin.close()
        assert parent.stdout.readline().strip() == "forked"
        mid = snapshot(parent.pid)
        assert len(mid.ticks) >= 3  # the parent and its two live children
        assert parent.stdout.readline().strip() == "reaped"
        sample = meter.stop()
    finally:
        parent.kill()
        parent.wait()
    # 2 x 0.3 s in the children, now in the parent's cutime/cstime
    assert 0.45e6 <= sample.cpu_us <= 2.0e6


def test_exited_thread_falls_back_to_ticks() -> None:
    before = TreeSnapshot(root=1, ticks={1: 100}, rss=0, thread_ns={1: 10**9, 2: 5 * 10**8})
    after = TreeSnapshot(root=1, ticks={1: 150}, rss=0, thread_ns={1: 2 * 10**9})
    assert cpu_us_between(before, after) == pytest.approx(50 * 1e6 / CLOCK_TICKS)
    after2 = TreeSnapshot(root=1, ticks={1: 150}, rss=0, thread_ns={1: 2 * 10**9, 2: 6 * 10**8, 3: 10**6})
    assert cpu_us_between(before, after2) == pytest.approx(1e6 + 1e5 + 1e3)


def test_reaped_child_not_double_counted() -> None:
    # child 2 had 30 ticks before; it exited and its 40 total ticks moved into root's cutime
    before = TreeSnapshot(root=1, ticks={1: 100, 2: 30})
    after = TreeSnapshot(root=1, ticks={1: 100 + 40})
    assert ticks_us_between(before, after) == pytest.approx(10 * 1e6 / CLOCK_TICKS)


def test_self_rss_positive() -> None:
    assert snapshot(os.getpid()).rss > 0
