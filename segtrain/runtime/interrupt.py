"""SIGTERM / SIGINT during training: the first asks for a clean stop, the second stops at once.

The first signal only sets a flag; the training loop looks at it between steps, saves a
checkpoint and stops. A second signal raises `StopNow` wherever the program is: every file
segtrain writes is atomic (checkpoints) or append-only (log.csv), so nothing is left corrupt.
No torch import here: the handlers go in before any heavy set-up.
"""

from __future__ import annotations

import contextlib
import os
import signal

SIGNALS = (signal.SIGTERM, signal.SIGINT)
_requested: list[int] = []


class Stopped(BaseException):
    """Training stopped on request. BaseException, so no `except Exception` on the way swallows it."""

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.exit_code = 128 + signum  # the shell's convention: 143 for SIGTERM, 130 for SIGINT


class StopNow(Stopped):
    """The second signal: stop wherever the program is."""


def signal_name(signum: int) -> str:
    return signal.Signals(signum).name


def requested() -> int | None:
    """The signal that asked for a stop, if any."""
    return _requested[0] if _requested else None


def _handle(signum, frame):
    if _requested:
        # A third signal, e.g. during the clean-up on the way out, then ends the process outright
        # rather than interrupting that clean-up half-way.
        for s in SIGNALS:
            signal.signal(s, signal.SIG_DFL)
        raise StopNow(f"second {signal_name(signum)}: stopped at once.", signum)
    _requested.append(signum)
    # os.write, not print: a handler may run in the middle of another print.
    os.write(2, f"\n{signal_name(signum)} received: finishing this step, then saving a checkpoint "
                f"(send it again to stop at once).\n".encode())


@contextlib.contextmanager
def graceful_stop():
    """Install the handlers for the duration of a command; restores the previous ones after."""
    previous = {s: signal.getsignal(s) for s in SIGNALS}
    _requested.clear()
    for s in SIGNALS:
        signal.signal(s, _handle)
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        _requested.clear()


def ignore_in_worker(_worker_id: int) -> None:
    """DataLoader workers leave stopping to the main process, which shuts them down after its
    checkpoint (Ctrl-C reaches the whole process group; a dead worker would break the last step)."""
    for s in SIGNALS:
        signal.signal(s, signal.SIG_IGN)
