"""How long a stage took to get going: one log line at its first model call, with the seconds since its process began.

A stage process pays its imports and model builds before any real work; on a
small run that fixed cost is most of its time. `first_model_call` is called
where models are first run (TerraMind token sampling, the stage-2 refiner, the
grounding objective, the baseline U-Net); only the first call in a process
logs, so the cost elsewhere is one flag check. `bench/bench_startup.py` reads
the line.
"""

from __future__ import annotations

import logging
import os
import time

log = logging.getLogger(__name__)

LINE = "first model call (%s) %.2f s after process start"
_noted = False


def seconds_since_process_start() -> float | None:
    """Wall seconds since this process was started (Linux: its start time in /proc; elsewhere None)."""
    try:
        with open(f"/proc/{os.getpid()}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
        started = int(fields[19]) / os.sysconf("SC_CLK_TCK")  # field 22, clock ticks after boot
        return time.clock_gettime(time.CLOCK_BOOTTIME) - started
    except (OSError, ValueError, IndexError, AttributeError):
        return None


def first_model_call(what: str) -> None:
    """Log, once per process, how long it took to reach the first model call (`what`: which model)."""
    global _noted
    if _noted:
        return
    _noted = True
    seconds = seconds_since_process_start()
    if seconds is not None:
        log.info(LINE, what, seconds)
