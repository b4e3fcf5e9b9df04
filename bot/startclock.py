"""Seconds since this process started, for the ``startup:`` lines of the log.

``bench/startup.py`` reads those lines to break a start down into its phases.
The clock counts from the process's own start (``/proc/self/stat``), so the
interpreter's start-up and the imports before ``main`` are in it; elsewhere it
counts from the first import of this module.
"""

from __future__ import annotations

import logging
import os
import time

log = logging.getLogger("deskmate.startup")


def _process_age() -> float | None:
    try:
        with open("/proc/self/stat") as fh:
            fields = fh.read().rpartition(")")[2].split()
        with open("/proc/uptime") as fh:
            uptime = float(fh.read().split()[0])
        # Field 22 of stat (19 after the name) is the start, in clock ticks since boot.
        return uptime - int(fields[19]) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


_ORIGIN = time.perf_counter() - (_process_age() or 0.0)


def since_start() -> float:
    """Seconds since the process started."""
    return time.perf_counter() - _ORIGIN


def mark(phase: str) -> None:
    """Log that ``phase`` is done: the time since the process started, and the
    CPU time the process has used (which other jobs on the machine barely move)."""
    log.info("startup: %s at %.2f s (%.2f CPU s)", phase, since_start(), time.process_time())
