"""The one clock a training run reads: monotonic seconds, started when the command starts.

A time_budget is the wall time of the whole command, start-up (reading the data, building the
model) and end-of-run work included, so the clock starts before anything else is done. The
budget's plan and log.csv's elapsed_time read this one object and no other timer, so a test can
hand the run a clock it advances itself: the plan's decisions then do not depend on how busy
the machine is.
"""

from __future__ import annotations

import time


class Clock:
    """Seconds from time.monotonic (never steps back when the system time is set)."""

    def __init__(self) -> None:
        self.started = self.now()

    def now(self) -> float:
        return time.monotonic()

    def since_start(self) -> float:
        return self.now() - self.started
