"""What a person watching the run sees: a live bar on a terminal, plain lines in a log.

On a terminal (stdout is a TTY) a tqdm bar shows iteration, loss, lr, images/s and ETA in place.
Elsewhere (`docker logs -f`, a redirected file, a batch job) a bar would fill the log with carriage
returns, so one plain line is printed every `log_interval` iterations instead. Validation results
are one line in both cases, marked when they are a new best.
"""

from __future__ import annotations

import io
import os
import sys
import time

from tqdm import tqdm


FALLBACK_WIDTH = 100


def _terminal_width(stream) -> int:
    try:
        return os.get_terminal_size(stream.fileno()).columns
    except (OSError, ValueError, AttributeError, io.UnsupportedOperation):
        return 0


def format_duration(seconds: float) -> str:
    seconds = int(max(0, seconds))
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def validation_line(iteration: int, result: dict, class_names: list[str], is_best: bool) -> str:
    per_class = " ".join(f"{n} {v:.3f}" for n, v in zip(class_names, result["iu"]))
    return (f"valid @ {iteration}: mean_iu {result['mean_iu']:.4f} acc {result['acc']:.4f} "
            f"loss {result['loss']:.4g} | IoU {per_class}{'  (new best)' if is_best else ''}")


class ProgressReporter:
    """Counts images/s over the iterations since the last report, so the ETA follows the current
    speed rather than the slow first iterations (model warm-up, validation pauses)."""

    def __init__(self, max_iteration: int, batch_size: int, log_interval: int, log=print, stream=None,
                 interactive: bool | None = None, start_iteration: int = 0):
        self.max_iteration = max_iteration
        self.batch_size = batch_size
        self.log_interval = log_interval
        self.log = log
        self.stream = stream if stream is not None else sys.stdout
        self.interactive = self.stream.isatty() if interactive is None else interactive
        self.last_time, self.last_iteration = time.perf_counter(), start_iteration
        self.bar = None
        if self.interactive:
            # A terminal that reports no size (a fresh `docker run -t`, a bare pty) gets a fixed size;
            # tqdm would otherwise draw nothing at all.
            width = _terminal_width(self.stream)
            self.bar = tqdm(total=max_iteration, initial=start_iteration, file=self.stream, dynamic_ncols=width > 0,
                            ncols=None if width > 0 else FALLBACK_WIDTH, nrows=None if width > 0 else 24, unit="it",
                            bar_format="{l_bar}{bar}| {n_fmt}/{total_fmt} [{elapsed}<{remaining}{postfix}]")

    def iteration(self, iteration: int, epoch: int, loss: float, lr: float) -> None:
        """Call after each training iteration; `iteration` counts the iterations done."""
        if self.bar is not None:
            rate = self.bar.format_dict.get("rate") or 0.0  # tqdm's smoothed iterations/s
            self.bar.set_postfix_str(f"loss {loss:.4g} lr {lr:.3g} {rate * self.batch_size:.1f} img/s",
                                     refresh=False)
            self.bar.update(iteration - self.bar.n)
            return
        if iteration % self.log_interval == 0 or iteration == 1 or iteration == self.max_iteration:
            now = time.perf_counter()
            speed = (iteration - self.last_iteration) * self.batch_size / max(now - self.last_time, 1e-9)
            # max_iteration None: a time_budget run before its plan (training/budget.py), length unknown
            eta = (f" | ETA {format_duration((self.max_iteration - iteration) * self.batch_size / max(speed, 1e-9))}"
                   if self.max_iteration is not None else "")
            total = "" if self.max_iteration is None else f"/{self.max_iteration}"
            self.log(f"iter {iteration}{total} epoch {epoch} loss {loss:.4g} lr {lr:.3g} | "
                     f"{speed:.1f} img/s{eta}")
            self.last_time, self.last_iteration = now, iteration

    def validation(self, iteration: int, result: dict, class_names: list[str], is_best: bool) -> None:
        self.message(validation_line(iteration, result, class_names, is_best))

    def message(self, text: str) -> None:
        """A line that must not be torn by the bar (tqdm.write prints above it)."""
        if self.bar is not None:
            self.bar.write(text, file=self.stream)
        else:
            self.log(text)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
