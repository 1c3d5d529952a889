"""evaluate: a trained model's numbers on labelled images, counted exactly as validation counts
them (same batches, same inference routine, native label resolution), so they equal a count over
the masks that predict writes. The model is a checkpoint or any file segtrain export writes, so a
user can score the exact file that ships."""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch

from segtrain.data.classes import read_class_colors, read_class_names, void_class
from segtrain.data.folder import SegmentationDataset, check_sizes, find_pairs, inspect_root
from segtrain.errors import DatasetError
from segtrain.data.labels import detect_decoder
from segtrain.evaluation.validation import count as count_batches, summarize
from segtrain.models.losses import build_loss
from segtrain.paths import from_command_line
from segtrain.use.predict import open_predictor, write_atomic
from segtrain.use.predictor import Engine


def split_pairs(root: Path, predictor: Engine, source: Path, split: str, log=print):
    """(pairs, label decoder, description) of `split`: 'valid' and 'train' as training split ROOT
    (the model's seed and valid_fraction hold out the same images), else a folder holding
    images/ and labels/ (as given, or under ROOT). The predictor's config is its training config, checked,
    with defaults for what older files lack (use/model_facts.py)."""
    cfg = predictor.config
    names_file = root / "class_names.list"
    if names_file.is_file() and read_class_names(names_file) != predictor.class_names:
        raise DatasetError(
            f"{names_file}: lists classes {read_class_names(names_file)}, but {source} was trained on "
            f"{predictor.class_names}. Evaluate on data labelled with the model's classes."
        )
    if split in ("valid", "train"):
        spec = inspect_root(root, cfg, predictor.class_names)
        pairs = spec.valid if split == "valid" else spec.train
        where = spec.valid_source if split == "valid" else f"{root} training images"
        return pairs, spec.decoder, where
    folder = from_command_line(split, root)
    if not folder.is_dir():
        raise DatasetError(f"--split {split}: not 'valid', 'train' or a folder (looked at {Path(split)} and {root / split}). "
                           "Give a folder holding images/ and labels/.")
    notes: list[str] = []
    pairs = find_pairs(folder / "images", folder / "labels", notes)
    for note in notes:
        log(note)
    colors = read_class_colors(root / "class_colors.list", len(predictor.class_names))
    decoder = detect_decoder([p.label for p in pairs], predictor.class_names, colors, cfg["ignore_index"],
                             cfg["label_threshold"])
    return pairs, decoder, str(folder)


def predictor_batches(predictor: Engine, dataset: SegmentationDataset):
    """(images, masks, dataset indices) in validation's batches: the training batch size (one
    image at a time at native size when sizes differ), images that share the predictor's batch_key."""
    cfg = predictor.config
    batch_size = cfg["batch_size"] if cfg["image_size"] is not None or len(check_sizes(dataset.pairs)) == 1 else 1
    pending: list[tuple] = []  # (index, image, mask)
    for index in range(len(dataset)):
        image, mask = dataset.load(index)
        if pending and (len(pending) >= batch_size or predictor.batch_key(pending[0][1]) != predictor.batch_key(image)):
            yield batch_of(pending)
            pending = []
        pending.append((index, image, mask))
    if pending:
        yield batch_of(pending)


def batch_of(pending: list[tuple]) -> tuple[list, list, list]:
    indices, images, masks = zip(*pending)
    return list(images), list(masks), list(indices)


def count(predictor: Engine, pairs, decoder) -> dict:
    """Validation's count (evaluation/validation.py) of the predictor's logits in validation's
    batches (predictor_batches), logits at each label's native size, the run's own loss."""
    cfg = predictor.config
    dataset = SegmentationDataset(pairs, decoder, None, train=False)
    criterion = build_loss(cfg, predictor.class_names)
    with torch.inference_mode():
        hist, loss_total, loss_count, _ = count_batches(predictor_batches(predictor, dataset),
                                                        lambda images, sizes: predictor.logits(images),
                                                        criterion, len(predictor.class_names), torch.device("cpu"))
    return summarize(hist, float(loss_total), int(loss_count), void_class(predictor.class_names, cfg))


def score(predictor: Engine, root: Path, split: str, source: Path, log=print) -> dict:
    """Scores of an open predictor (checkpoint or exported file) on a split: see `report`."""
    root = Path(root)
    pairs, decoder, where = split_pairs(root, predictor, source, split, log)
    log(f"evaluate: {source} on {len(pairs)} image(s): {where}" + (" (flip TTA)" if predictor.tta else ""))
    log(f"labels: {decoder.describe()}")
    return report(count(predictor, pairs, decoder), predictor.class_names,
                  {"checkpoint": str(source), "split": where, "images": len(pairs), "tta": predictor.tta,
                   "void_class": predictor.config["void_class"]})


def evaluate(root: Path, checkpoint: Path, split: str = "valid", device: str = "auto", log=print,
             tta: bool = False) -> dict:
    """Scores of a checkpoint or exported model file on a split (tta: with flip test-time
    augmentation): see `report` for the keys."""
    return score(open_predictor(Path(checkpoint), device, log=log, tta=tta), root, split, Path(checkpoint), log)


def _number(value: float):
    return None if math.isnan(value) else value  # JSON has no NaN: an undefined score is null


def report(result: dict, class_names: list[str], about: dict) -> dict:
    """The numbers as JSON-ready built-ins: acc, acc_cls, mean_iu, fwavacc, loss (over the measured
    classes: a void class is in none of them), per_class [{name, iou, recall, precision, f1, pixels}],
    confusion_matrix (rows truth, columns prediction)."""
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
        void = "  (void: not in the mean)" if c["name"] == numbers.get("void_class") else ""
        lines.append(f"{c['name']:<{width}} {cell(c['iou'])} {cell(c['recall'])} {cell(c['precision'])} "
                     f"{cell(c['f1'])} {c['pixels']:>12d} {c['pixels'] / total:>7.1%}{void}")
    lines.append(" ".join(f"{key} {cell(numbers[key], 0).strip()}" for key in ("acc", "acc_cls", "mean_iu", "fwavacc")))
    lines.append("confusion matrix (rows: truth, columns: prediction):")
    names = [c["name"] for c in numbers["per_class"]]
    col = max(12, *(len(n) + 1 for n in names))
    lines.append(" " * width + "".join(f"{n:>{col}}" for n in names))
    for name, row in zip(names, numbers["confusion_matrix"]):
        lines.append(f"{name:<{width}}" + "".join(f"{v:>{col}d}" for v in row))
    return "\n".join(lines)


def write_json(numbers: dict, path: Path) -> None:
    write_atomic(Path(path), lambda f: f.write((json.dumps(numbers, indent=2) + "\n").encode("utf-8")))
