"""Shared between the gateway and its pipeline processes: is mail pouring in right now?

During a burst the pipeline steps back so the CPU and the database's write lock go to
accepting mail (measured on 2 cores: 0.35x Postfix with the pipeline at full speed during the
load, 0.85x with it paused). It only steps back for a while: when mail keeps coming for longer
than ``max_burst`` seconds, the pipeline runs at full speed again, so a steady stream never
starves it.
"""

from __future__ import annotations

import multiprocessing
import time
from typing import Any


class IntakeActivity:
    def __init__(self, quiet_after: float = 0.5, max_burst: float = 30.0):
        # [time of the last accepted message, start of the current burst] (CLOCK_MONOTONIC,
        # which is the same clock in every process of the machine).
        self._times: Any = multiprocessing.get_context("spawn").Array("d", [0.0, 0.0])
        self.quiet_after = quiet_after
        self.max_burst = max_burst

    def accepted(self, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        last, start = self._times[0], self._times[1]
        if now - last > self.quiet_after:
            start = now
        self._times[0], self._times[1] = now, start

    def bursting(self, now: float | None = None) -> bool:
        now = time.monotonic() if now is None else now
        last, start = self._times[0], self._times[1]
        return now - last <= self.quiet_after and now - start <= self.max_burst
