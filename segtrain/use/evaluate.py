"""evaluate: a trained model's numbers on labelled images, counted exactly as validation counts
them (same loader, same inference routine, native label resolution), so they equal a count over
the masks that predict writes."""

from __future__ import annotations

import json
import math
from pathlib import Path

from segtrain.data.classes import read_class_colors, read_class_names
from segtrain.data.folder import check_sizes, find_pairs, inspect_root
from segtrain.errors import DatasetError
from segtrain.data.labels import detect_decoder
from segtrain.outputs.atomic import atomic_open
from segtrain.use.trained import TrainedModel, load_trained
from segtrain.evaluation.validation import make_eval_loader, validate
from segtrain.models.losses import build_loss


def split_pairs(root: Path, trained: TrainedModel, split: str, log=print):
    """(pairs, label decoder, description) of `split`: 'valid' and 'train' as training split ROOT
    (the checkpoint's seed and valid_fraction hold out the same images), else a folder holding
    images/ and labels/ (as given, or under ROOT)."""
    cfg = trained.config
    names_file = root / "class_names.list"
    if names_file.is_file() and read_class_names(names_file) != trained.class_names:
        raise DatasetError(
            f"{names_file}: lists classes {read_class_names(names_file)}, but {trained.source} was trained on "
            f"{trained.class_names}. Evaluate on data labelled with the model's classes."
        )
    if split in ("valid", "train"):
        spec = inspect_root(root, cfg, trained.class_names)
        pairs = spec.valid if split == "valid" else spec.train
        where = spec.valid_source if split == "valid" else f"{root} training images"
        return pairs, spec.decoder, where
    folder = Path(split) if Path(split).is_dir() else root / split
    if not folder.is_dir():
        raise DatasetError(f"--split {split}: not 'valid', 'train' or a folder (looked at {Path(split)} and {folder}). "
                           "Give a folder holding images/ and labels/.")
    notes: list[str] = []
    pairs = find_pairs(folder / "images", folder / "labels", notes)
    for note in notes:
        log(note)
    colors = read_class_colors(root / "class_colors.list", len(trained.class_names))
    decoder = detect_decoder([p.label for p in pairs], trained.class_names, colors, cfg["ignore_index"],
                             cfg["label_threshold"])
    return pairs, decoder, str(folder)


def evaluate(root: Path, checkpoint: Path, split: str = "valid", device: str = "auto", log=print) -> dict:
    """Scores of the checkpoint on a split: see `report` for the keys."""
    root = Path(root)
    trained = load_trained(checkpoint, device, log)
    pairs, decoder, where = split_pairs(root, trained, split, log)
    log(f"evaluate: {checkpoint} ({trained.arch}) on {len(pairs)} image(s): {where}")
    log(f"labels: {decoder.describe()}")
    cfg = trained.config
    loader = make_eval_loader(pairs, decoder, check_sizes(pairs), cfg["image_size"], cfg["batch_size"], cfg["n_workers"],
                              trained.device)
    criterion = build_loss(cfg, trained.class_names)
    result, _ = validate(trained.model, loader, criterion, len(trained.class_names), trained.device,
                         amp=cfg["amp"], channels_last=cfg["channels_last"])
    return report(result, trained.class_names, {"checkpoint": str(checkpoint), "split": where, "images": len(pairs)})


def _number(value: float):
    return None if math.isnan(value) else value  # JSON has no NaN: an undefined score is null


def report(result: dict, class_names: list[str], about: dict) -> dict:
    """The numbers as JSON-ready built-ins: acc, acc_cls, mean_iu, fwavacc, loss, per_class
    [{name, iou, recall, precision, f1, pixels}], confusion_matrix (rows truth, columns prediction)."""
    per_class = [
        {"name": name, "iou": _number(result["iu"][k]), "recall": _number(result["recall"][k]),
         "precision": _number(result["precision"][k]), "f1": _number(result["f1"][k]), "pixels": result["pixels"][k]}
        for k, name in enumerate(class_names)
    ]
    out = {key: _number(result[key]) for key in ("acc", "acc_cls", "mean_iu", "fwavacc", "loss")}
    return {**out, "per_class": per_class, "confusion_matrix": result["confusion_matrix"], **about}


def format_table(numbers: dict) -> str:
    def cell(value, width=9):
        return f"{'-':>{width}}" if value is None else f"{value:>{width}.4f}"

    total = sum(c["pixels"] for c in numbers["per_class"]) or 1
    width = max(8, *(len(c["name"]) for c in numbers["per_class"]))
    lines = [f"{'class':<{width}} {'IoU':>9} {'recall':>9} {'precision':>9} {'F1':>9} {'pixels':>12} {'share':>7}"]
    for c in numbers["per_class"]:
        lines.append(f"{c['name']:<{width}} {cell(c['iou'])} {cell(c['recall'])} {cell(c['precision'])} "
                     f"{cell(c['f1'])} {c['pixels']:>12d} {c['pixels'] / total:>7.1%}")
    lines.append(" ".join(f"{key} {cell(numbers[key], 0).strip()}" for key in ("acc", "acc_cls", "mean_iu", "fwavacc")))
    lines.append("confusion matrix (rows: truth, columns: prediction):")
    names = [c["name"] for c in numbers["per_class"]]
    col = max(12, *(len(n) + 1 for n in names))
    lines.append(" " * width + "".join(f"{n:>{col}}" for n in names))
    for name, row in zip(names, numbers["confusion_matrix"]):
        lines.append(f"{name:<{width}}" + "".join(f"{v:>{col}d}" for v in row))
    return "\n".join(lines)


def write_json(numbers: dict, path: Path) -> None:
    with atomic_open(Path(path), "w") as f:
        f.write(json.dumps(numbers, indent=2) + "\n")
