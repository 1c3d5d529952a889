"""A training folder's fingerprint, as nnU-Net takes one before it plans: what the default recipe
needs to fit itself to the data (config/recipe.py `fit_recipe`).

Cheap by design (well under 2 s for 500 images): sizes come from the image files' headers, class
frequencies and widths from at most MASK_SAMPLE masks spread evenly over the training set.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass

import numpy as np

from segtrain.data.folder import DataSpec
from segtrain.data.images import load_upright, open_image, upright_size
from segtrain.data.labels import IGNORE, read_mask, spread_sample

MASK_SAMPLE = 50


@dataclass(frozen=True)
class Fingerprint:
    n_train: int
    median_size: tuple[int, int]  # (height, width) of the median-area training image
    aspect: float  # median width / height over the training images
    class_share: list[float]  # each class's share of the labelled pixels of the sampled masks
    # Each class's typical width in the masks' pixels: 2 x its pixels / its boundary's length, so a
    # strip w pixels wide measures w (a 3 px membrane 3, a 100 px cloud about 100); inf for a class
    # that never meets another, 0 for one the sample lacks.
    class_width: list[float]
    sampled_masks: int

    def rarest_present(self) -> int | None:
        """The class with the fewest labelled pixels among those the sample holds at all."""
        present = [c for c, share in enumerate(self.class_share) if share > 0]
        return min(present, key=lambda c: self.class_share[c]) if present else None


def fingerprint(spec: DataSpec) -> Fingerprint:
    sizes = []
    for pair in spec.train:
        with open_image(pair.image) as img:
            width, height = upright_size(img)
        sizes.append((height, width))
    by_area = sorted(sizes, key=lambda hw: (hw[0] * hw[1], hw))
    aspect = statistics.median(w / h for h, w in sizes)

    n_classes = len(spec.class_names)
    pixels = np.zeros(n_classes, dtype=np.int64)
    boundary = np.zeros(n_classes, dtype=np.int64)
    sampled = spread_sample([pair.label for pair in spec.train], MASK_SAMPLE)
    for path in sampled:
        mask = spec.decoder.decode(read_mask(path), path)
        pixels += np.bincount(mask[mask != IGNORE].ravel(), minlength=n_classes)[:n_classes]
        boundary += boundary_lengths(mask, n_classes)
    share = (pixels / max(int(pixels.sum()), 1)).tolist()
    width = [2 * int(p) / int(b) if b else (float("inf") if p else 0.0) for p, b in zip(pixels, boundary)]
    return Fingerprint(len(sizes), by_area[len(by_area) // 2], float(aspect), share, width, len(sampled))


def boundary_lengths(mask: np.ndarray, n_classes: int) -> np.ndarray:
    """Per class, the pixel edges where it meets another label (ignored pixels count as another:
    an object's outline is its outline whatever lies beside it)."""
    lengths = np.zeros(n_classes, dtype=np.int64)
    for a, b in ((mask[1:, :], mask[:-1, :]), (mask[:, 1:], mask[:, :-1])):
        differ = a != b
        for side in (a[differ], b[differ]):
            lengths += np.bincount(side[side != IGNORE], minlength=n_classes)[:n_classes]
    return lengths


COLOUR_SAMPLE = 20  # image/mask pairs read for colour_separability
COLOUR_SIDE = 64  # their longer side when read: colour needs no detail


def colour_separability(spec: DataSpec) -> float:
    """How far the pixels' chromaticity alone tells the classes apart, from 0 (no better than
    chance, as for grey images) to 1 (every class at its own colour): the mean recall over classes
    of a nearest-class-mean rule on the chromaticity (r, g, b) / (r + g + b), rescaled so chance is 0. Brightness is
    left out on purpose: this asks whether hue and saturation carry the classes (blue sky, white
    cloud), which is what a strong view that desaturates or greys would take away."""
    from PIL import Image

    n_classes = len(spec.class_names)
    chroma, labels = [], []
    for pair in spread_sample(spec.train, COLOUR_SAMPLE):
        with open_image(pair.image) as img:
            img = load_upright(img).convert("RGB")  # as training sees it: masks are drawn on the upright picture
            img.thumbnail((COLOUR_SIDE, COLOUR_SIDE), Image.Resampling.BILINEAR)
            rgb = np.asarray(img, dtype=np.float64).reshape(-1, 3)
        mask = Image.fromarray(spec.decoder.decode(read_mask(pair.label), pair.label))
        mask = np.asarray(mask.resize(img.size, Image.Resampling.NEAREST)).ravel()
        keep = mask != IGNORE
        # +1: black is grey too; rounded: grey pixels of any brightness share one exact value, so
        # float rounding cannot turn brightness into a spurious colour difference
        chroma.append(np.round((rgb[keep] + 1) / (rgb[keep].sum(1, keepdims=True) + 3), 4))
        labels.append(mask[keep])
    chroma, labels = np.concatenate(chroma), np.concatenate(labels).astype(np.int64)
    present = [c for c in range(n_classes) if (labels == c).any()]
    if len(present) < 2:
        return 0.0
    means = np.stack([chroma[labels == c].mean(0) for c in present])
    nearest = np.asarray(present)[((chroma[:, None, :] - means[None]) ** 2).sum(2).argmin(1)]
    recall = np.mean([(nearest[labels == c] == c).mean() for c in present])
    chance = 1 / len(present)
    return float(max(0.0, (recall - chance) / (1 - chance)))
