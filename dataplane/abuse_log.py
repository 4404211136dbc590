"""Rate-limited log lines for the connections the HTTP/2 engines cut for abuse.

An attacker that reconnects after every cut (an HPACK bomb, a rapid reset) makes the gateway cut
thousands of connections a second; one WARNING line per cut would cost more than the cut
itself and fill the log.  ``CutLog`` lets at most ``per_second`` lines through in each
one-second window and counts the rest, which the next line let through reports.  Both engines
use one per process (``cut_log``); it is touched on the event loop only.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable


class CutLog:
    """``warn(fmt, *args)``: ``logger.warning`` at most ``per_second`` times a second; the
    lines held back are counted in ``suppressed`` and reported with the next one let through."""

    def __init__(self, logger: logging.Logger, per_second: int = 10,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.logger = logger
        self.clock = clock
        self.per_second = per_second
        self.window = 0.0
        self.count = 0
        self.suppressed = 0

    def warn(self, fmt: str, *args: object) -> None:
        now = self.clock()
        if now - self.window >= 1.0:
            self.window = now
            self.count = 0
        self.count += 1
        if self.count > self.per_second:
            self.suppressed += 1
            return
        if self.suppressed:
            held, self.suppressed = self.suppressed, 0
            self.logger.warning(fmt + " (and %d more cuts not logged)", *args, held)
        else:
            self.logger.warning(fmt, *args)


cut_log = CutLog(logging.getLogger("nfmesh.abuse"))
