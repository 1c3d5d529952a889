"""The user's folder: find image/label pairs, split off validation, and load samples.

Layouts: ROOT/train/{images,labels} with optional ROOT/valid/{images,labels}, or the flat
ROOT/{images,labels} that the original code read. Labels match images by exact file stem.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torchvision import tv_tensors

from segtrain.data.classes import read_class_colors, read_class_names, void_class
from segtrain.errors import DatasetError
from segtrain.data.images import IMAGE_SUFFIXES, list_images, open_image, read_image, upright_size
from segtrain.data.labels import LabelDecoder, detect_decoder, read_mask
from segtrain.data.sampling import sample_seed

LABEL_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"}


@dataclass(frozen=True)
class Pair:
    image: Path
    label: Path


@dataclass
class DataSpec:
    """Everything known about a data root before any pixel is trained on."""

    root: Path
    layout: str
    class_names: list[str]
    class_colors: list[list[int]] | None
    decoder: LabelDecoder
    train: list[Pair]
    valid: list[Pair]
    valid_source: str
    sizes: dict[str, set[tuple[int, int]]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    void: int | None = None  # the void class's index (data/classes.py void_class)


def find_pairs(images_dir: Path, labels_dir: Path, notes: list[str]) -> list[Pair]:
    for folder in (images_dir, labels_dir):
        if not folder.is_dir():
            raise DatasetError(
                f"{folder}: folder not found. Put images in {images_dir} and their masks, "
                f"with the same file names, in {labels_dir}."
            )
    images = list_images(images_dir, IMAGE_SUFFIXES, notes)
    labels = list_images(labels_dir, LABEL_SUFFIXES, notes)
    lonely_images = sorted(set(images) - set(labels))
    lonely_labels = sorted(set(labels) - set(images))
    if lonely_images or lonely_labels:
        parts = []
        if lonely_images:
            parts.append(f"{len(lonely_images)} image(s) without a label in {labels_dir} (e.g. {', '.join(lonely_images[:3])})")
        if lonely_labels:
            parts.append(f"{len(lonely_labels)} label(s) without an image in {images_dir} (e.g. {', '.join(lonely_labels[:3])})")
        raise DatasetError(
            "; ".join(parts) + ". Every image needs a mask with the same file name (extension may differ)."
        )
    if not images:
        raise DatasetError(f"{images_dir}: no images found (supported: {', '.join(sorted(IMAGE_SUFFIXES))}).")
    return [Pair(images[stem], labels[stem]) for stem in sorted(images)]


# The last bytes of a complete file; a copy or download cut short lacks them.
PNG_END = b"IEND\xaeB`\x82"
JPEG_END = b"\xff\xd9"
JPEG_TAIL = 1024  # some cameras append a few bytes after the end marker


def looks_truncated(path: Path, format: str | None) -> bool:
    """A cheap test for files cut short (one seek), so training does not fail on them hours in;
    `segtrain check` decodes every file in full."""
    if format not in ("PNG", "JPEG"):
        return False
    with open(path, "rb") as f:
        f.seek(0, 2)
        f.seek(max(0, f.tell() - JPEG_TAIL))
        tail = f.read()
    return not tail.endswith(PNG_END) if format == "PNG" else JPEG_END not in tail


def header_size(path: Path) -> tuple[int, int]:
    """(width, height), upright, from the file's header; unreadable, truncated or too large files are errors."""
    with open_image(path) as img:
        size, cut = upright_size(img), looks_truncated(path, img.format)
    if cut:
        raise DatasetError(f"{path}: the file is truncated (cut short). Replace or remove the file.")
    return size


def check_sizes(pairs: list[Pair]) -> set[tuple[int, int]]:
    """Image and mask sizes must agree; returns the (H, W) sizes seen. Reads file headers (and
    tails, for truncation) only."""
    sizes = set()
    for pair in pairs:
        image_size, label_size = header_size(pair.image), header_size(pair.label)
        if image_size != label_size:
            raise DatasetError(
                f"{pair.image.name}: image is {image_size[0]}x{image_size[1]} but its label {pair.label} is "
                f"{label_size[0]}x{label_size[1]}. Masks must have the size of their images."
            )
        sizes.add((image_size[1], image_size[0]))
    return sizes


def too_large_to_train(error: BaseException, spec: "DataSpec", cfg: dict) -> str | None:
    """The message for a training run that ran out of memory (None for any other error): the
    largest image and the input size and batch size tried, and the keys that make it fit."""
    text = str(error)
    if not (isinstance(error, (torch.OutOfMemoryError, MemoryError))
            or "DefaultCPUAllocator" in text or "out of memory" in text):
        return None
    sizes = {pair.image: header_size(pair.image) for pair in spec.train + spec.valid}
    largest = max(sizes, key=lambda path: sizes[path][0] * sizes[path][1])
    shown = "native size" if cfg["image_size"] is None else "x".join(map(str, cfg["image_size"]))
    return (f"out of memory training {cfg['model']} on input of {shown} with batch_size {cfg['batch_size']}; "
            f"the largest image is {largest} ({sizes[largest][0]}x{sizes[largest][1]}). "
            'Set "image_size" in config.list to train at a smaller size (e.g. 512), or lower "batch_size".')


def holdout(pairs: list[Pair], fraction: float, seed: int) -> tuple[list[Pair], list[Pair]]:
    """A seeded split, so the same folder and seed always validate on the same images."""
    order = list(range(len(pairs)))
    random.Random(seed).shuffle(order)
    n_valid = max(1, round(len(pairs) * fraction))
    if n_valid >= len(pairs):
        raise DatasetError(
            f"only {len(pairs)} image(s): too few to hold out {fraction:.0%} for validation. "
            "Add images or a valid/ folder (valid/images, valid/labels)."
        )
    valid_idx = set(order[:n_valid])
    return [p for i, p in enumerate(pairs) if i not in valid_idx], [p for i, p in enumerate(pairs) if i in valid_idx]


def find_splits(root: Path, notes: list[str]) -> tuple[str, list[Pair], list[Pair]]:
    """(layout, training pairs, validation pairs or [] when there is no valid/ folder)."""
    if not root.is_dir():
        raise DatasetError(f"{root}: data folder not found. Pass the folder that holds train/ and class_names.list.")
    if (root / "train").is_dir():
        layout = "train/ (+ valid/)"
        train = find_pairs(root / "train" / "images", root / "train" / "labels", notes)
    elif (root / "images").is_dir():
        layout = "flat images/ + labels/"
        train = find_pairs(root / "images", root / "labels", notes)
    else:
        raise DatasetError(
            f"{root}: no train/images folder (nor the flat images/ + labels/ layout). "
            "Put training images in ROOT/train/images and their masks in ROOT/train/labels."
        )
    valid = []
    if (root / "valid" / "images").is_dir() and layout.startswith("train"):
        valid = find_pairs(root / "valid" / "images", root / "valid" / "labels", notes)
    return layout, train, valid


def inspect_root(root: Path, cfg: dict, class_names: list[str] | None = None) -> DataSpec:
    """Find and check the data under ROOT (sizes from headers; mask encoding from a sample). Reads
    the config's data keys: valid_fraction, seed, ignore_index, label_threshold."""
    root = Path(root)
    notes: list[str] = []
    layout, train, valid = find_splits(root, notes)
    if valid:
        valid_source = f"{root / 'valid'}"
    else:
        train, valid = holdout(train, cfg["valid_fraction"], cfg["seed"])
        valid_source = f"{cfg['valid_fraction']:.0%} of the training images held out (seed {cfg['seed']})"

    names = class_names if class_names is not None else read_class_names(root / "class_names.list")
    colors = read_class_colors(root / "class_colors.list", len(names))
    decoder = detect_decoder(
        [p.label for p in train + valid], names, colors, cfg["ignore_index"], cfg["label_threshold"]
    )
    sizes = {"train": check_sizes(train), "valid": check_sizes(valid)}
    return DataSpec(root, layout, names, colors, decoder, train, valid, valid_source, sizes, notes,
                    void_class(names, cfg))


def check_batchable(spec: DataSpec, image_size: list[int] | None, batch_size: int) -> None:
    """Training's own demands on the data: full batches of images that share a size."""
    if image_size is None and len(spec.sizes["train"]) > 1 and batch_size > 1:
        shown = ", ".join(f"{w}x{h}" for h, w in sorted(spec.sizes["train"])[:4])
        raise DatasetError(
            f"training images have different sizes ({shown}) and image_size is null (native size), so they "
            'cannot be batched. Set "image_size" in config.list (e.g. 256) or "batch_size": 1.'
        )
    if batch_size > len(spec.train):
        raise DatasetError(
            f"batch_size is {batch_size} but there are only {len(spec.train)} training images. "
            f'Set "batch_size" to at most {len(spec.train)} in config.list.'
        )


def eval_input(image: np.ndarray, transform) -> torch.Tensor:
    """An HxWx3 uint8 image as the model's (3, h, w) input; validation, evaluate and predict share it."""
    # A read-only array (np.asarray of a PIL image, a memory map) is copied: torch warns on sharing one.
    image = np.require(image, requirements="W")
    return transform(tv_tensors.Image(torch.from_numpy(image).permute(2, 0, 1))).as_subclass(torch.Tensor)


class SegmentationDataset(torch.utils.data.Dataset):
    """Decoded samples. Training samples are transformed together; evaluation samples keep the
    label at native size (metrics are counted there) and carry their index."""

    def __init__(self, pairs: list[Pair], decoder: LabelDecoder, transform, train: bool, seed: int | None = 0):
        """`seed` draws each training sample's augmentation; None for a transform without randomness."""
        self.pairs = pairs
        self.decoder = decoder
        self.transform = transform
        self.train = train
        self.seed = seed
        self.cache: dict[int, tuple[np.ndarray, np.ndarray]] = {}  # filled by segtrain.cache

    def __len__(self) -> int:
        return len(self.pairs)

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """(HxWx3 uint8 image, HxW uint8 class mask) at native size; from the cache when there."""
        if index in self.cache:
            return self.cache[index]
        pair = self.pairs[index]
        image = read_image(pair.image)
        mask = self.decoder.decode(read_mask(pair.label), pair.label)
        return image, mask

    def __getitem__(self, key):
        """Training keys are (epoch, index) from EpochBatchSampler; evaluation keys are indices."""
        if not self.train:
            image, mask = self.load(key)
            return eval_input(image, self.transform), torch.from_numpy(mask).long(), key
        epoch, index = key
        image, mask = self.load(index)
        image_t = tv_tensors.Image(torch.from_numpy(image).permute(2, 0, 1))
        mask_t = tv_tensors.Mask(torch.from_numpy(mask))
        image_t, mask_t = augment(self.transform, self.seed, epoch, index, image_t, mask_t)
        return image_t.as_subclass(torch.Tensor), mask_t.as_subclass(torch.Tensor)  # uint8: see collate_train

    def image_path(self, index: int) -> Path:
        return self.pairs[index].image


def augment(transform, seed: int | None, epoch: int, index: int, *inputs):
    """transform(*inputs) with its randomness drawn from the sample's own seed: the same in any
    worker, and after a resume. seed None: a transform without randomness (fork_rng costs ~0.2 ms)."""
    if seed is None:
        return transform(*inputs)
    with torch.random.fork_rng(devices=[]):
        # The CPU generator alone: torch.manual_seed also queues a lazy seeding of CUDA, MTIA and
        # XPU, formatting a stack trace for each (0.3 ms a sample, more than the flips cost).
        torch.default_generator.manual_seed(sample_seed(seed, epoch, index))
        return transform(*inputs)


def collate_eval(batch):
    images, masks, indices = zip(*batch)
    return torch.stack(images), list(masks), list(indices)
