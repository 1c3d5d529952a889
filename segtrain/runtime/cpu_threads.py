"""How PyTorch's OpenMP threads wait on the CPU, decided before torch loads.

PyTorch's OpenMP threads spin for a while at the end of every parallel op before they sleep. On
idle cores that is the fastest choice (bench/threads.py: sleeping at once, OMP_WAIT_POLICY=PASSIVE,
made a training step 1.25-1.4x slower on an idle 2-core machine). Beside another busy process the
same spinning takes the core from the very thread it waits for: 1.5-2x slower than PASSIVE there.
So a segtrain command (the CLI, or segtrain.train in a script or notebook) looks at the cores for
0.15 s (the quietest of three windows) and at the 1-minute load average when it starts, before torch
loads: idle cores keep PyTorch's own defaults; busy ones get threads that sleep while they wait.
`import segtrain` does none of this: a library user who loads torch before training (or never trains)
gets PyTorch's defaults, or what OMP_WAIT_POLICY/GOMP_SPINCOUNT say. The thread count stays PyTorch's
(one per core) either way, although one thread per free
core measured faster beside a busy process for LR-ASPP: the count changes the order of float
sums, so a run would then depend on the machine's load at its start, and two runs of one config
must match. A value the user set (OMP_WAIT_POLICY, GOMP_SPINCOUNT, or the config's `threads`)
always wins.

This module must not import torch: libgomp reads these variables when torch loads.
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass

WAIT_KEYS = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")
SAMPLE_SECONDS = 0.15
# The sample is cut into windows and the quietest one counts: a process that competes for the whole
# run is busy in every window, while a short one (a shell prompt's `git status`, another Python
# starting) is busy in one or two. With a single 0.1 s window, such a 40 ms start beside a machine
# whose load average had not yet fallen after an earlier run chose PASSIVE, 1.3-2.4x slower for
# the whole run (2026-11-26, 4 of 4 tries).
SAMPLE_WINDOWS = 3
# Another process using half a core or more on average counts as busy: below that, a spinning
# thread that loses its core now and then still costs less than sleeping at every op.
BUSY_THRESHOLD = 0.5


@dataclass(frozen=True)
class Choice:
    env: dict[str, str]  # what segtrain set (empty: PyTorch's defaults, or the user's values)
    why: str  # one line for the training log


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        return os.cpu_count() or 1


def _cpu_times() -> tuple[int, int] | None:
    """(busy, total) jiffies over all of the machine's CPUs, from /proc/stat; None off Linux."""
    try:
        with open("/proc/stat", encoding="ascii") as f:
            fields = [int(v) for v in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    total = sum(fields[:8])  # guest time is already counted in user
    return total - idle, total


def busy_cores(seconds: float = SAMPLE_SECONDS, windows: int = SAMPLE_WINDOWS) -> float | None:
    """Cores other processes keep busy, now and over the last minute: the smaller of the two.

    The choice lasts the whole run, so a burst (an editor saving, a git command that just ran)
    must not set it, and neither must a job that has just ended: both readings must say busy, and
    "now" is the quietest of `windows` consecutive windows. (A `segtrain` started beside
    `duplicates` ran 2.4x slower until this took the minimum.)"""
    load = _load_average()
    readings = []
    for i in range(windows + 1):
        if i:
            time.sleep(seconds / windows)  # this process sleeps while it looks
        reading = _cpu_times()
        if reading is None:
            return load
        readings.append(reading)
    busy = [(b[0] - a[0]) / (b[1] - a[1]) * (os.cpu_count() or 1)
            for a, b in zip(readings, readings[1:]) if b[1] > a[1]]
    if not busy:
        return load
    now = min(busy)
    return now if load is None else min(now, load)


def _load_average() -> float | None:
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return None


def decide(env: dict[str, str], cores: int, busy: float | None) -> Choice:
    """What to set, given the environment, the cores this process may use and the busy ones."""
    if busy is None or busy < BUSY_THRESHOLD:
        seen = "cores idle at start" if busy is not None else "load not measurable here"
        return Choice({}, f"{seen}: PyTorch's defaults (threads spin briefly while they wait)")
    return Choice({"OMP_WAIT_POLICY": "PASSIVE"}, f"{busy:.1f} of {cores} cores busy at start: threads sleep while "
                  "they wait (OMP_WAIT_POLICY=PASSIVE)")


def choose_before_torch_loads(environ=os.environ) -> Choice:
    """Set the choice in `environ` unless the user chose how threads wait."""
    if "torch" in sys.modules:  # a script imported torch first: libgomp has read its settings already
        return Choice({}, "torch was loaded before segtrain: its thread settings stay as they were")
    if any(k in environ for k in WAIT_KEYS):
        return unchosen(environ)
    choice = decide(dict(environ), available_cores(), busy_cores())
    environ.update(choice.env)
    return choice


_made: list[Choice] = []  # the choice of this process, once a command has made it


def choose_at_start(environ=os.environ) -> Choice:
    """The choice of this process: made (and applied) at the first call, by a command or segtrain.train
    starting, then kept (libgomp reads it once, when torch loads)."""
    if not _made:
        _made.append(choose_before_torch_loads(environ))
    return _made[0]


def current(environ=os.environ) -> Choice:
    """What this process runs with, for the training log; nothing is measured or set here."""
    return _made[0] if _made else unchosen(environ)


def unchosen(environ) -> Choice:
    """What a process gets when no command chose (a library user who loaded torch first)."""
    given = ", ".join(f"{k}={environ[k]}" for k in WAIT_KEYS if k in environ)
    return Choice({}, f"set by you: {given}" if given else
                  "PyTorch's defaults: segtrain chooses only when a command or segtrain.train starts before torch loads")
