"""Everything a training run writes, behind one object, so the loop has no rank checks.

Rank 0 (or the only process) gets `RunOutputs`: log.csv rows, the progress bar or lines, the
visualization tiles, checkpoint.pth.tar and model_best.pth.tar, curves.png, report.html,
TensorBoard and MLflow. Other torchrun ranks get `NoOutputs`, which does nothing. Drawing problems (a full
disk, say) are reported once and do not stop a run; its log and checkpoints are what matter most.
"""

from __future__ import annotations

from collections import deque
from pathlib import Path
from typing import Callable

import numpy as np

from segtrain.data.folder import DataSpec, SegmentationDataset
from segtrain.data.unlabeled import Unlabeled
from segtrain.errors import OutputError, SegtrainError
from segtrain.outputs.checkpoints import save_atomic
from segtrain.run_folder import BEST_NAME, CHECKPOINT_NAME
from segtrain.outputs.curves import draw_curves, read_log
from segtrain.outputs.logcsv import LogWriter
from segtrain.outputs.mlflow_log import MlflowLog, tracking_uri
from segtrain.outputs.progress import ProgressReporter
from segtrain.outputs.report import ReportData, Validation, write_report
from segtrain.outputs.tensorboard_log import TensorBoardLog
from segtrain.outputs.visualize import write_visualization

UNLABELED_WINDOW = 100  # iterations whose unlabeled loss and confident share the report averages
RECHECK_TOP = 10  # pairs in the report's "Labels to re-check"
# curves.png is drawn at a validation once this many seconds of the run's clock have passed since
# this command's first validation or the last drawing, and always when the run ends or stops:
# drawing it costs a third of a second or more (about half of a tiny run, BENCHMARKS.md section
# 16), and the validations of a real run are further apart.
CURVES_EVERY_S = 30.0
RECHECK_MAX_PAIRS = 5000  # above this, ranking every pair at the end of training costs too long: run segtrain audit


def recheck_pairs(spec: DataSpec) -> int:
    """The pairs the end-of-run audit ranks for the report's "Labels to re-check" (0: none)."""
    pairs = len(spec.train) + len(spec.valid)
    return pairs if pairs <= RECHECK_MAX_PAIRS else 0


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
    """Opened once the run's folder exists; `close` ends what it opened, also after an error."""

    def __init__(self, out_dir: Path, cfg, schedule, spec: DataSpec, colors: list[list[int]],
                 valid_set: SegmentationDataset, start_iteration: int, log=print, unlabeled: Unlabeled | None = None,
                 weights_source: str = ""):
        self.out_dir = Path(out_dir)
        self.weights_source = weights_source
        # cfg: the run's plan (config/plan.py); schedule: its length, which a time budget plans (training/schedule.py)
        self.cfg, self.schedule, self.spec, self.colors, self.valid_set, self.log = cfg, schedule, spec, colors, valid_set, log
        self.unlabeled = unlabeled
        self.unlabeled_recent: deque[tuple[float, float]] = deque(maxlen=UNLABELED_WINDOW)
        self.best: Validation | None = None
        self.drawn: tuple | None = None  # the latest report's (iteration, latest validation, tile)
        self.curves: tuple[int, Path] | None = None  # (log rows it shows, curves.png) as last drawn
        self.curves_elapsed: float | None = None  # the run's clock at the last drawing (or first validation)
        self.validated_rows = 0  # log rows as of the latest validation
        self.recheck: list[dict] | None = None
        self.drawing_failed = False
        self.tensorboard = None
        self.writer = LogWriter(self.out_dir / "log.csv")
        self.reporter = ProgressReporter(schedule.max_iteration, cfg["batch_size"], cfg["log_interval"], log,
                                         start_iteration=start_iteration)
        if cfg["tensorboard"]:
            self.tensorboard = TensorBoardLog(self.out_dir / "tensorboard", spec.class_names, log)
        uri = tracking_uri(cfg)
        self.mlflow = None if uri is None else MlflowLog(uri, self.out_dir, cfg, spec.class_names,
                                                          resumed=start_iteration > 0, log=log)

    @property
    def checkpoint_path(self) -> Path:
        return self.out_dir / CHECKPOINT_NAME

    def train_row(self, iteration: int, epoch: int, row: dict, lr: float, elapsed: float) -> None:
        """After the step of `iteration`: its log.csv row, then progress counts it as done."""
        self.writer.row("train", epoch, iteration, row, elapsed)
        if self.tensorboard is not None:
            self.tensorboard.train_step(iteration, row, lr)
        self.reporter.iteration(iteration + 1, epoch, row["loss"], lr)

    def unlabeled_step(self, iteration: int, loss: float, confident: float) -> None:
        """The consistency loss and share of confident pixels of a step (rank 0's share of the batch)."""
        self.unlabeled_recent.append((loss, confident))
        if self.tensorboard is not None:
            self.tensorboard.unlabeled_step(iteration, loss, confident)

    def schedule_note(self) -> list[str]:
        """The run's length when a time budget planned it: the configuration below shows the plan,
        in which the budget left max_iteration and interval_validate to it."""
        if not self.schedule.planned:
            return []
        return [f"schedule: {self.schedule.max_iteration} iterations, validation every "
                f"{self.schedule.interval_validate}, planned by time_budget {self.cfg['time_budget']!r} from the "
                f"measured speed ({1 / self.schedule.time_plan['seconds_per_step']:.3g} it/s)"]

    def unlabeled_note(self) -> list[str]:
        if self.unlabeled is None:
            return []
        note = f"unlabeled images: {len(self.unlabeled.paths)} from {self.unlabeled.folder} (FixMatch consistency)"
        if self.unlabeled_recent:
            losses, shares = zip(*self.unlabeled_recent)
            note += (f"; last {len(losses)} iterations: unlabeled loss {sum(losses) / len(losses):.4g}, "
                     f"confident pixels {100 * sum(shares) / len(shares):.1f}%")
        return [note]

    def validation(self, iteration: int, epoch: int, result: dict, shown: list[tuple[int, np.ndarray]],
                   is_best: bool, checkpoint: Callable[[], dict], elapsed: float) -> None:
        """The log row, the tile, the checkpoints (best first: a crash between the two leaves the
        best no older than the latest), then the pictures for people."""
        self.writer.row("valid", epoch, iteration, result, elapsed)
        self.reporter.validation(iteration, result, self.spec.class_names, is_best)
        viz = self.out_dir / "visualization_viz" / f"iter{iteration:012d}.jpg"
        tile = write_visualization(viz, [(*self.valid_set.load(i), pred) for i, pred in shown], self.spec.class_names,
                                   self.colors)
        payload = checkpoint()
        if is_best:
            save_atomic(payload, self.out_dir / BEST_NAME)
        save_atomic(payload, self.checkpoint_path)
        latest = Validation(iteration, result)
        if is_best:
            self.best = latest
        self.validated_rows = self.writer.rows
        if self.curves_elapsed is None:
            self.curves_elapsed = elapsed
        due = elapsed - self.curves_elapsed >= CURVES_EVERY_S
        if due:
            self.curves_elapsed = elapsed
        self._draw(iteration, latest, viz if tile is not None else None, redraw_curves=due)
        if self.tensorboard is not None:
            self.tensorboard.validation(iteration, result, tile)
        if self.mlflow is not None:
            self.mlflow.validation(iteration, result)

    def save_checkpoint(self, checkpoint: Callable[[], dict]) -> None:
        save_atomic(checkpoint(), self.checkpoint_path)

    def planned(self, max_iteration: int | None) -> None:
        """A time_budget plan set the run's length (None: not yet): progress lines and the bar count to it."""
        self.reporter.max_iteration = max_iteration
        if self.reporter.bar is not None:
            self.reporter.bar.total = max_iteration

    def pictures_current(self) -> None:
        """curves.png and report.html as of the latest validation, where it kept an older curves.png
        (CURVES_EVERY_S): when the run ends or stops."""
        if self.drawn is not None and (self.curves is None or self.curves[0] != self.validated_rows):
            self._draw(*self.drawn)

    def done(self, best_mean_iu: float, audit: Callable[[Path, int], list] | None = None) -> None:
        """audit(folder, top): the rows of `segtrain audit` of the best weights written into folder
        (use/audit.py), for the report's "Labels to re-check"."""
        self.pictures_current()
        if audit is not None and (self.out_dir / BEST_NAME).is_file() and recheck_pairs(self.spec):
            try:
                rows = audit(self.out_dir / "audit", RECHECK_TOP)[:RECHECK_TOP]
            except (OSError, SegtrainError) as e:  # the run is trained and saved: a note, not a failure
                self.reporter.message(f"note: could not rank the labels to re-check ({e}); run segtrain audit later.")
            else:
                self.recheck = [{"rank": r.rank, "split": r.split, "image": str(r.image.relative_to(self.spec.root)),
                                 "loss": r.doubt.loss, "mean_iu": r.doubt.mean_iu,
                                 "disagree_share": r.doubt.disagree_share, "picture": self.out_dir / "audit" / r.picture}
                                for r in rows]
                if self.drawn is not None:
                    self._draw(*self.drawn)
                self.reporter.message(f"labels to re-check: {self.out_dir / 'audit' / 'audit.csv'} (and report.html)")
        self.reporter.message(f"done: best valid mean_iu {best_mean_iu:.4f}; model in {self.out_dir / BEST_NAME}")
        if self.mlflow is not None:
            self.mlflow.done()

    def _draw(self, iteration: int, latest: Validation, viz: Path | None, redraw_curves: bool = True) -> None:
        self.drawn = (iteration, latest, viz)
        try:
            if redraw_curves and (self.curves is None or self.curves[0] != self.writer.rows):
                # Only when the log grew: the report at the end of the run (its labels to re-check)
                # follows the last validation's, whose curves are current; drawing is most of a report's cost.
                self.curves = (self.writer.rows, draw_curves(read_log(self.out_dir / "log.csv"),
                                                             self.out_dir / "curves.png", self.out_dir.name))
            curves = self.curves[1] if self.curves is not None else None  # "not written yet"
            write_report(self.out_dir / "report.html", ReportData(
                run_name=self.out_dir.name, config=self.cfg, class_names=self.spec.class_names,
                class_colors=self.colors, dataset=dataset_summary(self.spec), iteration=iteration,
                max_iteration=self.schedule.max_iteration, best=self.best, latest=latest, curves_png=curves,
                visualization=viz,
                notes=[f"starting weights: {self.weights_source}"] + self.schedule_note() + self.unlabeled_note(),
                recheck=self.recheck))
        except (OSError, OutputError) as e:
            if not self.drawing_failed:  # say it once, not at every validation of a long run
                self.log(f"note: could not write curves.png/report.html ({e}); training goes on.")
                self.drawing_failed = True

    def close(self) -> None:
        self.reporter.close()
        if self.tensorboard is not None:
            self.tensorboard.close()
        self.writer.close()
        if self.mlflow is not None:  # after log.csv's last row is written
            self.mlflow.close()


class NoOutputs:
    """What a torchrun rank other than 0 writes: nothing."""

    checkpoint_path = None

    def train_row(self, *args) -> None:
        pass

    def unlabeled_step(self, *args) -> None:
        pass

    def validation(self, *args) -> None:
        pass

    def save_checkpoint(self, *args) -> None:
        pass

    def planned(self, *args) -> None:
        pass

    def pictures_current(self) -> None:
        pass

    def done(self, *args) -> None:
        pass

    def close(self) -> None:
        pass
