"""Optional TensorBoard logging (`"tensorboard": true`): scalars and validation tiles.

The tensorboard package is not a dependency: when it is missing, training goes on without it and
says so once (curves.png and report.html show the same numbers).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

INSTALL_HINT = "pip install tensorboard"


class TensorBoardLog:
    def __init__(self, folder: Path, class_names: list[str], log=print):
        self.class_names = class_names
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            log(f"note: \"tensorboard\": true, but the tensorboard package is not installed ({INSTALL_HINT}); "
                "training goes on without it. curves.png and report.html hold the same numbers.")
            self.writer = None
            return
        self.writer = SummaryWriter(log_dir=str(folder))
        log(f"tensorboard: logging to {folder} (view with: tensorboard --logdir {folder})")

    def train_step(self, iteration: int, row: dict, lr: float) -> None:
        if self.writer is None:
            return
        for metric in ("loss", "acc", "mean_iu"):
            self.writer.add_scalar(f"train/{metric}", row[metric], iteration)
        self.writer.add_scalar("train/lr", lr, iteration)

    def unlabeled_step(self, iteration: int, loss: float, confident: float) -> None:
        if self.writer is None:
            return
        self.writer.add_scalar("train/unlabeled_loss", loss, iteration)
        self.writer.add_scalar("train/confident_pixels", confident, iteration)

    def validation(self, iteration: int, result: dict, tile: np.ndarray | None) -> None:
        if self.writer is None:
            return
        for metric in ("loss", "acc", "acc_cls", "mean_iu", "fwavacc"):
            self.writer.add_scalar(f"valid/{metric}", result[metric], iteration)
        for name, iou in zip(self.class_names, result["iu"]):
            self.writer.add_scalar(f"valid_iou/{name}", iou, iteration)
        if tile is not None:
            self.writer.add_image("validation samples", tile, iteration, dataformats="HWC")
        self.writer.flush()  # so a TensorBoard watching the folder sees each validation at once

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
