"""What each validation adds for people to look at: curves.png, report.html, TensorBoard.

The trainer calls `train_step` after each iteration and `validation` after each validation's
log row, visualization and checkpoints are written. Drawing problems (a full disk, say) are
reported and do not stop a training run; its log and checkpoints are what matter most.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from segtrain.outputs.curves import draw_curves, read_log
from segtrain.data.folder import DataSpec
from segtrain.outputs.report import ReportData, Validation, write_report
from segtrain.outputs.tensorboard_log import TensorBoardLog


def dataset_summary(spec: DataSpec) -> dict[str, object]:
    sizes = sorted(spec.sizes.get("train", set()) | spec.sizes.get("valid", set()))
    shown = ", ".join(f"{w}x{h}" for h, w in sizes[:4]) + (" ..." if len(sizes) > 4 else "")
    return {
        "folder": spec.root,
        "layout": spec.layout,
        "training images": len(spec.train),
        "validation images": len(spec.valid),
        "validation from": spec.valid_source,
        "image sizes (w x h)": shown,
        "label encoding": spec.decoder.describe(),
        "classes": ", ".join(spec.class_names),
    }


class RunOutputs:
    def __init__(self, out_dir: Path, cfg: dict, spec: DataSpec, colors: list[list[int]], log=print):
        self.out_dir = Path(out_dir)
        self.cfg = cfg
        self.spec = spec
        self.colors = colors
        self.log = log
        self.best: Validation | None = None
        self.failed_once = False
        self.tensorboard = None
        if cfg["tensorboard"]:
            self.tensorboard = TensorBoardLog(self.out_dir / "tensorboard", spec.class_names, log)

    def train_step(self, iteration: int, row: dict, lr: float) -> None:
        if self.tensorboard is not None:
            self.tensorboard.train_step(iteration, row, lr)

    def validation(self, iteration: int, result: dict, is_best: bool) -> None:
        latest = Validation(iteration, result)
        if is_best:
            self.best = latest
        viz = self.out_dir / "visualization_viz" / f"iter{iteration:012d}.jpg"
        viz = viz if viz.is_file() else None
        try:
            curves = draw_curves(read_log(self.out_dir / "log.csv"), self.out_dir / "curves.png", self.out_dir.name)
            write_report(self.out_dir / "report.html", ReportData(
                run_name=self.out_dir.name, config=self.cfg, class_names=self.spec.class_names,
                class_colors=self.colors, dataset=dataset_summary(self.spec), iteration=iteration,
                max_iteration=self.cfg["max_iteration"], best=self.best, latest=latest, curves_png=curves,
                visualization=viz))
        except OSError as e:
            if not self.failed_once:  # say it once, not at every validation of a long run
                self.log(f"note: could not write curves.png/report.html in {self.out_dir} ({e.strerror}); "
                         "training goes on.")
                self.failed_once = True
        if self.tensorboard is not None:
            self.tensorboard.validation(iteration, result, np.asarray(Image.open(viz)) if viz else None)

    def close(self) -> None:
        if self.tensorboard is not None:
            self.tensorboard.close()
