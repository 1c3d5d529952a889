"""log.csv: the original tool's columns, one row per iteration and one per validation."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from segtrain.outputs.atomic import atomic_open
from segtrain.errors import OutputError

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
        self.rows = 0  # written by this writer: a reader can tell whether the log changed since it looked
        new = not self.path.exists() or self.path.stat().st_size == 0
        try:
            self.file = open(self.path, "a", encoding="utf-8", newline="")
        except OSError as e:
            raise OutputError.from_os(self.path, e) from None
        if new:
            self._write(HEADER + "\n")

    def _write(self, line: str) -> None:
        try:
            self.file.write(line)
            self.file.flush()
        except OSError as e:
            raise OutputError.from_os(self.path, e) from None

    def row(self, split: str, epoch: int, iteration: int, values: dict, elapsed: float) -> None:
        cells = {c: None for c in COLUMNS}
        cells.update({"epoch": epoch, "iteration": iteration, "elapsed_time": float(elapsed)})
        for metric in METRICS:
            cells[f"{split}/{metric}"] = float(values[metric])
        self._write(",".join(_cell(cells[c]) for c in COLUMNS) + "\n")
        self.rows += 1

    def close(self) -> None:
        try:
            self.file.close()
        except OSError:
            pass  # the row that failed to flush was already reported


def keep_rows_through(path: Path, iteration: int, validated: bool) -> int:
    """Cut log.csv back to a checkpoint taken before training step `iteration` (and after its
    validation if `validated`): rows a crash left beyond it, or a half-written last row, would
    otherwise appear twice once the resumed run writes them again. Returns the rows dropped."""
    path = Path(path)
    if not path.is_file():
        return 0
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    kept = lines[:1]
    valid_loss = COLUMNS.index("valid/loss")
    for line in lines[1:]:
        cells = line.rstrip("\n").split(",")
        if not line.endswith("\n") or len(cells) != len(COLUMNS) or not cells[1].isdigit():
            continue
        row_iteration, is_valid = int(cells[1]), cells[valid_loss] != ""
        if row_iteration < iteration or (row_iteration == iteration and is_valid and validated):
            kept.append(line)
    dropped = len(lines) - len(kept)
    if dropped:
        with atomic_open(path, "w") as f:
            f.writelines(kept)
    return dropped


@dataclass(frozen=True)
class LogRow:
    """One row of log.csv: a training step's scores (split "train") or a validation's ("valid")."""

    split: str
    epoch: int
    iteration: int
    loss: float
    acc: float
    acc_cls: float
    mean_iu: float
    fwavacc: float
    elapsed_time: float


def read_rows(path: Path) -> list[LogRow]:
    """log.csv as written, row by row; a row a crash cut short is left out, as keep_rows_through does."""
    rows = []
    with open(path, encoding="utf-8", newline="") as f:
        for line in f.read().splitlines()[1:]:
            cells = dict(zip(COLUMNS, line.split(",")))
            if len(cells) != len(COLUMNS) or not cells["iteration"].isdigit():
                continue
            split = "valid" if cells["valid/loss"] else "train"
            rows.append(LogRow(split, int(cells["epoch"]), int(cells["iteration"]),
                               *(float(cells[f"{split}/{metric}"]) for metric in METRICS),
                               float(cells["elapsed_time"])))
    return rows
