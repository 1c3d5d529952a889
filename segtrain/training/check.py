"""The dataset report of `segtrain check` (api.check): every check training makes, plus a full
decode of every file.

Training reads file headers and a sample of masks before it starts; the check decodes every
image and mask, so a truncated image or a stray label value anywhere is found now rather than
hours into a run. Problems in single files are collected, not stopped at, so one pass lists them all.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np

from segtrain.outputs.checkpoints import read_checkpoint
from segtrain.data.folder import DataSpec, SegmentationDataset
from segtrain.errors import DatasetError, SegtrainError
from segtrain.data.labels import IGNORE
from segtrain.data.void import find_void
from segtrain.paths import from_root
from segtrain.runtime.workers import plan_workers

PROGRESS_EVERY = 500
PROBLEMS_SHOWN = 20


def decode_split(spec: DataSpec, pairs, problems: list[str], log=print) -> tuple[np.ndarray, Counter]:
    """Pixels per label value (index IGNORE counts ignored pixels) over every mask of a split,
    and how many images have each (width, height)."""
    counts = np.zeros(256, dtype=np.int64)
    sizes: Counter = Counter()
    samples = SegmentationDataset(pairs, spec.decoder, transform=None, train=False)
    for index in range(len(samples)):
        try:
            image, mask = samples.load(index)
        except DatasetError as e:
            problems.append(str(e))
            continue
        if image.shape[:2] != mask.shape:
            problems.append(f"{pairs[index].image}: decoded image and mask sizes differ "
                            f"({image.shape[1]}x{image.shape[0]} vs {mask.shape[1]}x{mask.shape[0]}).")
        counts += np.bincount(mask.ravel(), minlength=256)
        sizes[(image.shape[1], image.shape[0])] += 1
        if (index + 1) % PROGRESS_EVERY == 0:
            log(f"  checked {index + 1}/{len(samples)} ...")
    return counts, sizes


def format_sizes(sizes: Counter) -> str:
    shown = ", ".join(f"{w}x{h} ({n})" for (w, h), n in sizes.most_common(6))
    return shown + (f" and {len(sizes) - 6} more" if len(sizes) > 6 else "")


def check_folder(spec: DataSpec, cfg: dict, log=print) -> None:
    """Print the report of a folder inspected and fitted as training does (training/setup.py
    fit_to_folder: cfg is the config train will use); raises DatasetError when problems were found."""
    root = Path(spec.root)
    splits = {"train": spec.train, "valid": spec.valid}
    log(f"data: {root} ({spec.layout}); validation: {spec.valid_source}")
    log(f"classes: {len(spec.class_names)} ({', '.join(spec.class_names)})")
    log(f"label encoding: {spec.decoder.describe()}")
    for note in spec.notes:
        log(note)
    void = find_void([p.label for p in spec.train + spec.valid], spec.class_names, spec.decoder, False, cfg)
    for note in void.notes:
        log(f"void: {note}" + ("; your config does not set it yet" if void.settings else ""))

    problems: list[str] = []
    log(f"decoding all {sum(map(len, splits.values()))} image/mask pairs ...")
    counts = {}
    for split, pairs in splits.items():
        counts[split], sizes = decode_split(spec, pairs, problems, log)
        log(f"{split}: {len(pairs)} image(s); sizes (W x H, count): {format_sizes(sizes)}")
    log("pixel share per class:" + "".join(f"  {split:>7s}" for split in splits))
    rows = [(name, k) for k, name in enumerate(spec.class_names)] + [("(ignored)", IGNORE)]
    for name, value in rows:
        shares = [c[value] / max(1, c.sum()) for c in counts.values()]
        if value == IGNORE and not any(shares):
            continue
        log(f"  {name:20s}" + "".join(f"  {100 * s:6.2f}%" for s in shares))
    for split, c in counts.items():
        absent = [n for k, n in enumerate(spec.class_names) if c[k] == 0]
        if absent and c.sum():
            log(f"note: no {split} pixel is labelled {', '.join(absent)}.")

    plan_workers(cfg, spec.sizes["train"], log)
    if cfg["pretrained_net"]:
        try:
            read_checkpoint(from_root(cfg["pretrained_net"], root))
        except SegtrainError as e:
            problems.append(str(e))

    if not problems:
        log("problems: none; this folder is ready for segtrain train.")
        return
    log(f"problems: {len(problems)}")
    for problem in problems[:PROBLEMS_SHOWN]:
        log(f"  - {problem}")
    if len(problems) > PROBLEMS_SHOWN:
        log(f"  ... and {len(problems) - PROBLEMS_SHOWN} more")
    raise DatasetError(f"{root}: {len(problems)} problem(s) found (listed above). Fix them, then run segtrain check again.")
