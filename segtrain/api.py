"""segtrain's Python API: what every command does, as functions that return results.

This is the one place for the commands: the CLI (cli.py) parses each command's flags and calls
its function here; a notebook or script calls them directly. Errors are segtrain.SegtrainError
subclasses whose message is the one line the CLI prints. Messages and progress go to `log` (print
by default: a notebook shows them under the cell; pass `log=lambda *args: None` for silence).
Reference and examples: docs/api.md.

Heavy modules (torch, onnxruntime) load inside each function, so `import segtrain` stays light.
"""

from __future__ import annotations

import contextlib
import json
import math
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping, Union

from segtrain.config.load import MISSING_CONFIG_HINT, run_config
from segtrain.errors import ConfigError
from segtrain.outputs.logcsv import LogRow, read_rows
from segtrain.runtime import cpu_threads, interrupt
from segtrain.runtime.clock import Clock

if TYPE_CHECKING:  # the module loads NumPy and Pillow: only where a model is used
    from segtrain.use.predictor import Predictor

PathLike = Union[str, Path]
Log = Callable[..., Any]

# The demo trains a small FCN at 64 px on synthetic skies: it learns them in about 2 minutes on
# two cores, where the default recipe (made for real photos, see config/recipe.py) needs longer.
DEMO_CONFIG = {
    "model": "fcn_resnet18",
    "image_size": 64,
    "batch_size": 8,
    "max_iteration": 150,
    "interval_validate": 50,
    "lr": 0.02,
    "pretrained_backbone": False,
    "n_workers": 0,
    "log_interval": 10,
    "output_dir": "demo",
}


@dataclass(frozen=True)
class Run:
    """A training run's folder and what its log.csv says (segtrain.Run.read(folder) for any run)."""

    folder: Path
    history: tuple[LogRow, ...]  # every row of log.csv: training steps and validations, in order
    best: LogRow | None  # the validation with the highest mean IoU (the first, on ties): model_best.pth.tar's
    final: LogRow | None  # the last validation
    best_checkpoint: Path  # model_best.pth.tar: give it to segtrain.load, evaluate or export
    checkpoint: Path  # checkpoint.pth.tar, the latest state (segtrain.train(..., resume=True) continues it)

    @classmethod
    def read(cls, folder: PathLike) -> Run:
        from segtrain.run_folder import BEST_NAME, CHECKPOINT_NAME

        folder = Path(folder).absolute()  # still right after a notebook changes its directory
        history = tuple(read_rows(folder / "log.csv"))
        validations = [row for row in history if row.split == "valid"]
        scored = [row for row in validations if not math.isnan(row.mean_iu)]
        best = max(scored, key=lambda row: row.mean_iu) if scored else None  # max keeps the first of equals
        return cls(folder, history, best, validations[-1] if validations else None, folder / BEST_NAME,
                   folder / CHECKPOINT_NAME)

    @property
    def validations(self) -> tuple[LogRow, ...]:
        return tuple(row for row in self.history if row.split == "valid")


def train(root: PathLike, overrides: Mapping[str, Any] | None = None, *, config: PathLike | None = None,
          resume: bool | PathLike | None = None, stop_after: int | None = None, image_type: str = "auto",
          log: Log = print, missing_hint: str = MISSING_CONFIG_HINT, clock: Clock | None = None) -> Run | None:
    """Train on the folder ROOT; returns the Run once training ends (or stops after `stop_after`).

    overrides: config keys over ROOT/config.list (or `config`), as `--set` gives them, e.g.
    {"max_iteration": 500, "lr": 0.01}. resume: True continues ROOT/MODEL-<output_dir>/checkpoint.pth.tar,
    a path continues that checkpoint. A config with "mode": "test" runs the original tool's test mode
    (segtrain.test) and returns None, as do torchrun ranks other than 0, which write nothing.
    missing_hint: the advice added when `config` does not exist. clock: when the command began
    (runtime/clock.py; default: now), from which a time_budget counts.
    """
    clock = clock if clock is not None else Clock()
    root = Path(root)
    with _stoppable():
        cpu_threads.choose_at_start()  # before torch loads, as a command's start does
        cfg, class_names = run_config(root, _path(config), _set_arguments(overrides), image_type, missing_hint)
        if cfg["mode"] == "test":
            from segtrain.use.testmode import run_test

            run_test(root, cfg, log)
            return None
        from segtrain.training.loop import train as train_loop

        folder = train_loop(root, cfg, class_names=class_names, log=log, resume=_resume(resume),
                            stop_after=stop_after, clock=clock)
    return None if folder is None else Run.read(folder)


def test(root: PathLike, overrides: Mapping[str, Any] | None = None, *, config: PathLike | None = None,
         image_type: str = "auto", log: Log = print) -> dict | None:
    """The original tool's test mode: the config's pretrained_net predicts ROOT/test/images into
    ROOT/test/<output_dir>/ and, when ROOT/test/labels exists, is scored: returns evaluate's numbers
    (else None)."""
    from segtrain.use.testmode import run_test

    root = Path(root)
    cfg, _ = run_config(root, _path(config), _set_arguments(overrides), image_type)
    return run_test(root, cfg, log)


def load(model: PathLike, *, device: str = "auto", tile: int | None = None, overlap: int | None = None,
         tta: bool = False, log: Log = print) -> Predictor:
    """Any model file segtrain writes (model_best.pth.tar, checkpoint.pth.tar, .onnx, TorchScript .pt,
    .pt2) as a Predictor: masks, probabilities and class fractions of NumPy or PIL images.
    device: checkpoints only ('auto', 'cpu', 'cuda', 'cuda:N'); tile/overlap: sliding-window
    inference in tiles of that many pixels; tta: average with left-right flips."""
    from segtrain.use.predict import open_predictor
    from segtrain.use.predictor import Predictor

    return Predictor(open_predictor(Path(model), device, tile, overlap, log, tta), Path(model))


def evaluate(model: PathLike | Predictor, root: PathLike, *, split: str = "valid", device: str = "auto",
             tta: bool = False, json_path: PathLike | None = None, log: Log = print) -> dict:
    """Scores of a model on labelled images, counted as validation counts them: acc, acc_cls, mean_iu,
    fwavacc, loss, per_class [{name, iou, recall, precision, f1, pixels}], confusion_matrix (rows
    truth), and what was scored. split: 'valid', 'train' or a folder holding images/ and labels/.
    A Predictor is scored with its own device, tiles and tta. json_path: also write the numbers
    there (`--json`; the path is checked before the model runs)."""
    from segtrain.paths import output_file
    from segtrain.use.evaluate import evaluate as evaluate_file, score, write_json
    from segtrain.use.predictor import Predictor

    source = model.source if isinstance(model, Predictor) else Path(model)
    if json_path is not None:  # before the evaluation, which may take long
        output_file(Path(json_path), "--json", {source: "the model file"})
    if isinstance(model, Predictor):
        numbers = score(model.engine, Path(root), split, model.source, log)
    else:
        numbers = evaluate_file(Path(root), source, split, device, log, tta)
    if json_path is not None:
        write_json(numbers, Path(json_path))
    return numbers


def predict(source: PathLike, model: PathLike, out: PathLike, *, overlay: bool = False, tile: int | None = None,
            overlap: int | None = None, recursive: bool = False, batch_size: int | None = None,
            device: str = "auto", tta: bool = False, log: Log = print) -> Path:
    """`segtrain predict`: a mask PNG per image of `source` (a file or folder) into `out`, overlays
    when asked, and summary.csv of class fractions; returns summary.csv's path."""
    from segtrain.use.predict import predict as predict_files

    return predict_files(Path(source), Path(model), Path(out), overlay_jpeg=overlay, tile=tile, overlap=overlap,
                         recursive=recursive, batch_size=batch_size, device=device, log=log, tta=tta)


def export(checkpoint: PathLike, out: PathLike, *, format: str | None = None, size: tuple[int, int] | None = None,
           verify_on: PathLike | None = None, raw_input: bool = False, int8: bool = False,
           calibrate_on: PathLike | None = None, max_iou_drop: float = 0.01, log: Log = print) -> Path:
    """Export a checkpoint to ONNX, TorchScript or .pt2, verified against PyTorch before it is moved
    into place; returns the file's path. format: 'onnx', 'torchscript' or 'pt2' (default: from out's
    suffix, .onnx, .pt or .pt2). int8 (ONNX): static quantisation calibrated on the data folder
    `calibrate_on`, refused when mean IoU drops by more than max_iou_drop."""
    from segtrain.use.export import SUFFIXES, export as export_file

    out = Path(out)
    if format is None:
        format = {suffix: kind for kind, suffix in SUFFIXES.items()}.get(out.suffix.lower())
        if format is None:
            raise ConfigError(f"{out}: name the format (format='onnx', 'torchscript' or 'pt2'), or end the file name "
                              f"in {', '.join(SUFFIXES.values())}.")
    result = export_file(Path(checkpoint), format, out, list(size) if size else None, _path(verify_on),
                         raw_input=raw_input, int8=int8, calibrate_on=_path(calibrate_on), max_iou_drop=max_iou_drop,
                         log=log)
    return Path(result["path"])


def audit(root: PathLike, model: PathLike, *, out: PathLike | None = None, top: int = 20, device: str = "auto",
          log: Log = print) -> list:
    """`segtrain audit`: ROOT's training and validation pairs ranked by how strongly the model
    disagrees with their masks (most doubtful first); audit.csv and the top pictures go into `out`
    (default: audit/ beside the model). Returns the rows (rank, split, image, label, doubt)."""
    from segtrain.use.audit import audit as audit_labels

    return audit_labels(Path(root), Path(model), _path(out), top, device, log)


def check(root: PathLike, overrides: Mapping[str, Any] | None = None, *, config: PathLike | None = None,
          image_type: str = "auto", log: Log = print) -> None:
    """`segtrain check`: log the dataset report of ROOT, judged with the config train would use (fitted
    to the folder by train's own fit_to_folder); raises DatasetError when it finds problems."""
    from segtrain.training.check import check_folder
    from segtrain.runtime.device import select_device
    from segtrain.training.setup import fit_to_folder

    root = Path(root)
    cfg, class_names = run_config(root, _path(config), _set_arguments(overrides), image_type)
    fit = fit_to_folder(root, cfg, class_names, select_device(cfg["device"], log).type, None, log)
    check_folder(fit.spec, fit.plan, log)


def init(root: PathLike, *, log: Log = print) -> None:
    """`segtrain init`: write a starter config.list (and class_names.list) for ROOT; existing files are kept."""
    from segtrain.config.starter import plan, write_starter

    write_starter(plan(Path(root)), log=log)


def download(name: str, dest: PathLike, *, url: str | None = None, archive: PathLike | None = None,
             log: Log = print) -> Path:
    """`segtrain download`: an example dataset, arranged for training, in `dest`, with a starter
    config.list naming its classes; returns its folder."""
    from segtrain.config.presets import PRESETS
    from segtrain.data.download import fetch_dataset
    from segtrain.config.starter import plan, write_starter

    dest = Path(dest)
    dataset = fetch_dataset(name, dest, url=url, archive=_path(archive), log=log)
    masks = {"label_threshold": PRESETS[dataset.preset][1]["label_threshold"]}  # its preset's rule, as a fallback
    write_starter(plan(dest, dataset.class_names, masks), dataset.class_names, log)
    return dest


def plugin(checkpoint: PathLike, out: PathLike, *, name: str | None = None, version: str = "0.1.0",
           runtime: str = "onnx", verify_on: PathLike | None = None, log: Log = print) -> Path:
    """`segtrain plugin`: a complete Waggle edge app folder for a checkpoint; returns the folder."""
    from segtrain.plugin.build import make_plugin

    return make_plugin(Path(checkpoint), Path(out), name, version, runtime, _path(verify_on), log=log)


def fetch_weights(out: PathLike, models: list[str] | None = None, *, encoder: str | None = None) -> dict[str, Path]:
    """`segtrain weights`: ImageNet weights for `models` (default: the ones the recipe may choose) into
    the folder `out`, for a machine without internet ("weights_dir" or SEGTRAIN_WEIGHTS there); returns
    each model's file."""
    from segtrain.config.recipe import DEFAULT_MODEL, THIN_MODEL
    from segtrain.models.registry import MODELS
    from segtrain.models.weights import fetch
    from segtrain.paths import output_folder

    wanted = [(name, encoder) for name in models] if models else [(DEFAULT_MODEL, None), THIN_MODEL]
    for name, _ in wanted:
        if name not in MODELS:
            raise ConfigError(f"--model {name}: unknown model; known models: {', '.join(MODELS)}.")
    folder = output_folder(Path(out), "weights")
    return {name + (f" (encoder {chosen})" if chosen else ""): fetch(folder, name, chosen) for name, chosen in wanted}


def plot(log_csv: PathLike, out: PathLike | None = None) -> Path:
    """curves.png (loss, mean IoU, accuracy) from a log.csv; returns the picture's path."""
    from segtrain.outputs.curves import plot_log

    return plot_log(Path(log_csv), _path(out))


def demo(out: PathLike = "demo", overrides: Mapping[str, Any] | None = None, *, log: Log = print) -> Run | None:
    """A synthetic sky/cloud folder in `out` (made once), trained: about 2 minutes on two CPU cores."""
    from segtrain.data.synthetic import write_sky_folder
    from segtrain.paths import output_folder

    out = output_folder(Path(out), "demo")
    if not (out / "class_names.list").is_file():
        if out.is_dir() and any(out.iterdir()):
            raise ConfigError(f"demo {out}: holds files but no demo (no class_names.list); the demo would write its "
                              "images and config.list among them. Give a new or empty folder (default: ./demo).")
        write_sky_folder(out, config=DEMO_CONFIG)
        log(f"made a synthetic sky/cloud dataset in {out}")
    return train(out, overrides, log=log)


def _set_arguments(overrides: Mapping[str, Any] | None) -> list[str]:
    """The overrides as `--set KEY=VALUE` arguments, each value JSON, so they resolve as the CLI's do."""
    if overrides is not None and not isinstance(overrides, Mapping):
        raise ConfigError(f"overrides {overrides!r}: give a dict of config keys, e.g. {{\"max_iteration\": 500}}.")
    return [f"{key}={json.dumps(value, default=str)}" for key, value in (overrides or {}).items()]


def _path(value: PathLike | None) -> Path | None:
    return None if value is None else Path(value)


def _resume(resume: bool | PathLike | None) -> str | None:
    """The training loop's form: None starts afresh, "" continues the run's own checkpoint, else a path."""
    if resume is None or resume is False:
        return None
    return "" if resume is True else str(resume)


def _stoppable():
    """The first SIGINT/SIGTERM (a notebook's interrupt button) stops training cleanly after a checkpoint.
    Signal handlers can only be set from the main thread: elsewhere, Python's defaults stay."""
    if threading.current_thread() is threading.main_thread():
        return interrupt.graceful_stop()
    return contextlib.nullcontext()
