"""curves.png: loss, mean IoU and pixel accuracy over iterations, drawn from a log.csv.

Reads only the log's columns, so logs written by the original tool draw the same way. Uses
matplotlib's object API with the Agg canvas (no pyplot, no display, no global state), so it works
headless, in a container and from a training loop.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from segtrain.errors import SegtrainError
from segtrain.outputs.atomic import atomic_path
from segtrain.paths import cannot_write, output_file

PANELS = (("loss", "loss"), ("mean_iu", "mean IoU"), ("acc", "pixel accuracy"))
TRAIN_COLOR, VALID_COLOR = "#1f77b4", "#d62728"


class LogFileError(SegtrainError):
    pass


def read_log(path: Path) -> dict[str, dict[str, np.ndarray]]:
    """{"train": {"iteration": ..., "loss": ...}, "valid": {...}}; a row belongs to the split whose
    loss cell is filled, as both tools write them."""
    path = Path(path)
    if not path.is_file():
        raise LogFileError(f"{path}: log file not found. Point at a MODEL-<output_dir>/log.csv.")
    try:
        return _read_rows(path)
    except (UnicodeDecodeError, csv.Error) as e:  # a picture, a binary file, a text in another encoding
        raise LogFileError(f"{path}: not a CSV training log ({type(e).__name__}: {str(e).splitlines()[0]}). "
                           "Point at a MODEL-<output_dir>/log.csv.") from None


def _read_rows(path: Path) -> dict[str, dict[str, np.ndarray]]:
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        needed = {"iteration", "train/loss", "valid/loss"}
        if reader.fieldnames is None or not needed <= set(reader.fieldnames):
            raise LogFileError(
                f"{path}: not a training log (needs the columns iteration, train/loss, valid/loss, ...; "
                f"found {', '.join(reader.fieldnames or []) or 'nothing'})."
            )
        series: dict[str, dict[str, list[float]]] = {s: {"iteration": []} for s in ("train", "valid")}
        for number, row in enumerate(reader, start=2):
            split = "valid" if (row.get("valid/loss") or "").strip() else "train"
            if not (row.get(f"{split}/loss") or "").strip():
                continue  # a row without numbers (e.g. cut short by a crash)
            try:
                series[split]["iteration"].append(float(row["iteration"]))
                for metric, _ in PANELS:
                    cell = (row.get(f"{split}/{metric}") or "").strip()
                    series[split].setdefault(metric, []).append(float(cell) if cell else math.nan)
            except ValueError:
                raise LogFileError(f"{path}, line {number}: a cell is not a number. Fix or remove that row.") from None
    return {split: {k: np.asarray(v, dtype=float) for k, v in cols.items()} for split, cols in series.items()}


def smooth(values: np.ndarray, window: int) -> np.ndarray:
    """Trailing mean over `window` points (fewer at the start), NaNs skipped: per-batch values are noisy."""
    if window <= 1 or len(values) == 0:
        return values
    finite = np.isfinite(values)
    sums = np.convolve(np.where(finite, values, 0.0), np.ones(window))[: len(values)]
    counts = np.convolve(finite.astype(float), np.ones(window))[: len(values)]
    with np.errstate(invalid="ignore", divide="ignore"):
        return sums / counts


def draw_curves(log: dict[str, dict[str, np.ndarray]], out: Path, title: str = "") -> Path:
    train, valid = log["train"], log["valid"]
    window = max(1, len(train["iteration"]) // 50)
    fig = Figure(figsize=(12, 3.6), dpi=100, layout="constrained")
    for ax, (metric, label) in zip(fig.subplots(1, len(PANELS)), PANELS):
        if len(train["iteration"]):
            values = train.get(metric, np.array([]))
            ax.plot(train["iteration"], values, color=TRAIN_COLOR, alpha=0.25, linewidth=0.8)
            ax.plot(train["iteration"], smooth(values, window), color=TRAIN_COLOR, linewidth=1.6,
                    label="train" + (f" (mean of {window})" if window > 1 else ""))
        if len(valid["iteration"]):
            ax.plot(valid["iteration"], valid.get(metric, np.array([])), color=VALID_COLOR, marker="o",
                    markersize=4, linewidth=1.6, label="valid")
        ax.set_title(label)
        ax.set_xlabel("iteration")
        ax.grid(alpha=0.3)
        if metric != "loss":
            ax.set_ylim(-0.02, 1.02)
        elif _spans_decades(train.get("loss"), valid.get("loss")):
            ax.set_yscale("log")
        if ax.get_legend_handles_labels()[0]:
            ax.legend(loc="best", fontsize=8)
    if title:
        fig.suptitle(title)
    out = Path(out)
    # A viewer or the report never reads a half-written picture. A failure is an OutputError: the
    # caller decides what it means (training goes on, `segtrain plot` stops with one line).
    with atomic_path(out, durable=False) as tmp:
        fig.savefig(tmp, format="png")
    return out


def _spans_decades(*arrays) -> bool:
    values = np.concatenate([a[np.isfinite(a)] for a in arrays if a is not None and len(a)] or [np.array([])])
    values = values[values > 0]
    return len(values) > 1 and values.max() / values.min() > 100


def plot_log(log_path: Path, out: Path | None = None) -> Path:
    """curves.png next to the log (or at `out`) from log.csv."""
    log_path = Path(log_path)
    out = output_file(out if out is not None else log_path.with_name("curves.png"), "--out" if out is not None else "plot",
                      {log_path: "the log"})
    if not out.parent.is_dir():
        raise LogFileError(f"{out.parent}: folder not found for --out. Create it or choose another path.")
    log = read_log(log_path)
    try:
        return draw_curves(log, out, title=log_path.parent.name)
    except OSError as e:
        raise cannot_write(out, e) from None
