"""Images without masks, for semi-supervised training (training/consistency.py): config
"unlabeled_dir", else ROOT/unlabeled; images at any depth below it, in sorted order.

Each is checked up front like a training image (header and truncation), so a broken file is
reported before the first step rather than hours in.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torchvision import tv_tensors

from segtrain.data.folder import augment, header_size
from segtrain.data.images import IMAGE_SUFFIXES, list_images, read_image
from segtrain.errors import DatasetError
from segtrain.paths import from_root


@dataclass
class Unlabeled:
    folder: Path
    paths: list[Path]
    batch_size: int


def list_unlabeled(folder: Path, notes: list[str]) -> list[Path]:
    """Every image below `folder` (hidden files and folders skipped); symlinked folders are not
    followed, so a link loop cannot make the listing endless."""
    folders = [folder] + sorted(p for p in folder.rglob("*") if p.is_dir() and not p.is_symlink()
                                and not any(part.startswith(".") for part in p.relative_to(folder).parts))
    return sorted(path for d in folders for path in list_images(d, IMAGE_SUFFIXES, notes).values())


def find_unlabeled(root: Path, cfg: dict, train_sizes: set[tuple[int, int]], log=print) -> Unlabeled | None:
    """The run's unlabeled images, or None when there are none (semi-supervised training off)."""
    if cfg["unlabeled_dir"] is not None:
        folder = from_root(cfg["unlabeled_dir"], root)
        if not folder.is_dir():
            raise DatasetError(f"{folder}: unlabeled_dir (config key 'unlabeled_dir') is not a folder. Give a "
                               f"folder of images (a relative path is under {root}), or remove the key.")
    else:
        folder = root / "unlabeled"
        if not folder.is_dir():
            return None
    notes: list[str] = []
    paths = list_unlabeled(folder, notes)
    for note in notes:
        log(note)
    if not paths:
        log(f"note: {folder} holds no images; training on the labeled images only.")
        return None
    batch_size = cfg["unlabeled_batch_size"] or cfg["batch_size"]
    if batch_size > len(paths):
        raise DatasetError(f"{folder}: {len(paths)} unlabeled image(s), fewer than the {batch_size} each step takes "
                           "(unlabeled_batch_size, else batch_size). Add images or lower \"unlabeled_batch_size\".")
    sizes = {(h, w) for w, h in map(header_size, paths)}
    if cfg["image_size"] is None and (len(train_sizes) > 1 or sizes != train_sizes):
        # Labeled and unlabeled images go through the model as one batch.
        raise DatasetError(f"{folder}: unlabeled images must have the training images' size when image_size is null "
                           "(native size); set \"image_size\" in config.list (e.g. 256).")
    return Unlabeled(folder, paths, batch_size)


class UnlabeledDataset(torch.utils.data.Dataset):
    """The weak view of each image: the training images' geometric augmentation (transforms.py,
    jitter off), seeded from its (epoch, index) key like theirs."""

    def __init__(self, paths: list[Path], transform, seed: int | None):
        self.paths = paths
        self.transform = transform
        self.seed = seed
        self.cache: dict[int, np.ndarray] = {}  # filled by segtrain.cache

    def __len__(self) -> int:
        return len(self.paths)

    def image_path(self, index: int) -> Path:
        return self.paths[index]

    def load(self, index: int) -> np.ndarray:
        return self.cache[index] if index in self.cache else read_image(self.paths[index])

    def __getitem__(self, key) -> torch.Tensor:
        epoch, index = key
        image = tv_tensors.Image(torch.from_numpy(self.load(index)).permute(2, 0, 1))
        return augment(self.transform, self.seed, epoch, index, image).as_subclass(torch.Tensor)
