"""Peak resident memory during a block, sampled from a background thread (the benchmarks' one way to measure it).

`ru_maxrss` only ever grows over a process's life, so it cannot isolate the
training steps from model building; sampling RSS every few ms around the steps can.
"""

from __future__ import annotations

import threading
import time

import psutil


class PeakRSS:
    """`with PeakRSS() as peak: ...` then `peak.bytes` is the highest RSS seen inside the block.

    `pid`: watch another process (a stage run as a subprocess) instead of this one; `peak.child_bytes` is then
    the highest RSS any one of its child processes (e.g. worker processes) reached.
    """

    def __init__(self, interval_s: float = 0.005, pid: int | None = None):
        self.interval_s = interval_s
        self.bytes = 0
        self.child_bytes = 0
        self._process = psutil.Process(pid)
        self._running = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while self._running.is_set():
            try:
                self.bytes = max(self.bytes, self._process.memory_info().rss)
                for child in self._process.children(recursive=True):
                    self.child_bytes = max(self.child_bytes, child.memory_info().rss)
            except psutil.Error:  # the process or one of its children ended between listing and reading
                pass
            time.sleep(self.interval_s)

    def __enter__(self) -> "PeakRSS":
        self._running.set()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._running.clear()
        self._thread.join()
        try:
            self.bytes = max(self.bytes, self._process.memory_info().rss)
        except psutil.Error:  # a watched process that has ended
            pass


def cpu_model() -> str:
    """The CPU's model name (lscpu's), printed with every benchmark's figures."""
    with open("/proc/cpuinfo") as info:
        return next((line.split(":", 1)[1].strip() for line in info if line.startswith("model name")), "unknown CPU")
