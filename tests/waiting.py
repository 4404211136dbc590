"""Waiting for an event in a test: poll a condition until it holds.

Tests wait for what they need (a server listening, a snapshot published, a counter moved, a
line logged), never for a fixed time, and never measure speed: the deadline here only keeps a
broken test from hanging, so it is generous: the machine running the suite may be busy.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Callable

HANG_GUARD_S = 30.0  # a bound on waiting, never on speed

Condition = Callable[[], object]
What = str | Callable[[], str] | None  # a description, or a function making one at the timeout


def _describe(cond: Condition, what: What) -> str:
    if callable(what):
        return what()
    if what:
        return what
    try:
        return inspect.getsource(cond).strip()
    except (OSError, TypeError):
        return repr(cond)


async def wait_until(cond: Condition, timeout: float = HANG_GUARD_S, *, what: What = None,
                     interval: float = 0.01) -> object:
    """Poll ``cond()`` (a function, or one returning an awaitable) on the running loop until its
    result is truthy, and return that result; AssertionError naming ``what`` (else the
    condition's source) when ``timeout`` seconds pass first.  An exception from ``cond`` (a
    process that died, say) ends the wait at once."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        result = cond()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return result
        if loop.time() >= deadline:
            raise AssertionError(f"not reached within {timeout:g} s: {_describe(cond, what)}")
        await asyncio.sleep(interval)


def wait_until_blocking(cond: Condition, timeout: float = HANG_GUARD_S, *, what: What = None,
                        interval: float = 0.05) -> object:
    """``wait_until`` for code without an event loop (subprocesses, blocking sockets)."""
    deadline = time.monotonic() + timeout
    while True:
        result = cond()
        if result:
            return result
        if time.monotonic() >= deadline:
            raise AssertionError(f"not reached within {timeout:g} s: {_describe(cond, what)}")
        time.sleep(interval)
