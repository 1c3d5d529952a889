"""log.csv: the original tool's columns, one row per iteration and one per validation."""

from __future__ import annotations

import math
from pathlib import Path

COLUMNS = [
    "epoch", "iteration",
    "train/loss", "train/acc", "train/acc_cls", "train/mean_iu", "train/fwavacc",
    "valid/loss", "valid/acc", "valid/acc_cls", "valid/mean_iu", "valid/fwavacc",
    "elapsed_time",
]
HEADER = ",".join(COLUMNS)
METRICS = ("loss", "acc", "acc_cls", "mean_iu", "fwavacc")


def _cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return "nan" if math.isnan(value) else repr(value)
    return str(value)


class LogWriter:
    """Appends and flushes every row, so a crash loses at most the row being written."""

    def __init__(self, path: Path):
        self.path = Path(path)
        new = not self.path.exists() or self.path.stat().st_size == 0
        self.file = open(self.path, "a", encoding="utf-8", newline="")
        if new:
            self.file.write(HEADER + "\n")
            self.file.flush()

    def row(self, split: str, epoch: int, iteration: int, values: dict, elapsed: float) -> None:
        cells = {c: None for c in COLUMNS}
        cells.update({"epoch": epoch, "iteration": iteration, "elapsed_time": float(elapsed)})
        for metric in METRICS:
            cells[f"{split}/{metric}"] = float(values[metric])
        self.file.write(",".join(_cell(cells[c]) for c in COLUMNS) + "\n")
        self.file.flush()

    def close(self) -> None:
        self.file.close()
