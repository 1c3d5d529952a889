"""visualization_viz tiles: per sample, image | truth colour | overlay over image | prediction
colour | overlay, samples laid out in a near-square grid."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from PIL import Image

from segtrain.outputs.atomic import atomic_open
from segtrain.data.labels import IGNORE
from segtrain.plugin.app.pictures import overlay  # the edge app's, so its uploads look like predict's

IGNORE_COLOR = (224, 224, 192)  # VOC's void colour
CELL_MAX_SIDE = 256
GAP = 4


def colorize(mask: np.ndarray, colors: list[list[int]]) -> np.ndarray:
    lut = np.zeros((256, 3), dtype=np.uint8)
    lut[: len(colors)] = np.asarray(colors, dtype=np.uint8)
    lut[IGNORE] = IGNORE_COLOR
    return lut[mask]


def _resize(array: np.ndarray, size: tuple[int, int], nearest: bool) -> np.ndarray:
    h, w = size
    if array.shape[:2] == (h, w):
        return array
    method = Image.Resampling.NEAREST if nearest else Image.Resampling.BILINEAR
    return np.asarray(Image.fromarray(array).resize((w, h), method))


def sample_tile(image: np.ndarray, truth: np.ndarray, pred: np.ndarray, colors, cell: tuple[int, int]) -> np.ndarray:
    image = _resize(image, cell, nearest=False)
    rows = []
    for mask in (truth, pred):
        colored = colorize(_resize(mask, cell, nearest=True), colors)
        rows.append(np.concatenate([image, colored, overlay(image, colored)], axis=1))
    return np.concatenate(rows, axis=0)


def side_by_side(image: np.ndarray, masks: list[np.ndarray], colors, background: int = 255) -> np.ndarray:
    """One row: the image, then each mask in the class colours (ignored pixels in IGNORE_COLOR),
    each at most CELL_MAX_SIDE pixels a side, GAP apart."""
    cell = cell_size(image.shape[:2])
    parts = [_resize(image, cell, nearest=False)] + [colorize(_resize(m, cell, nearest=True), colors) for m in masks]
    gap = np.full((cell[0], GAP, 3), background, dtype=np.uint8)
    return np.concatenate([piece for part in parts for piece in (gap, part)][1:], axis=1)


def grid(tiles: list[np.ndarray], background: int = 255) -> np.ndarray:
    cols = math.ceil(math.sqrt(len(tiles)))
    rows = math.ceil(len(tiles) / cols)
    th, tw = tiles[0].shape[:2]
    canvas = np.full((rows * th + (rows - 1) * GAP, cols * tw + (cols - 1) * GAP, 3), background, dtype=np.uint8)
    for k, tile in enumerate(tiles):
        r, c = divmod(k, cols)
        canvas[r * (th + GAP) : r * (th + GAP) + th, c * (tw + GAP) : c * (tw + GAP) + tw] = tile
    return canvas


def cell_size(shape: tuple[int, int]) -> tuple[int, int]:
    h, w = shape
    scale = min(1.0, CELL_MAX_SIDE / max(h, w))
    return max(1, round(h * scale)), max(1, round(w * scale))


def write_visualization(path: Path, samples: list[tuple[np.ndarray, np.ndarray, np.ndarray]],
                        colors) -> np.ndarray | None:
    """samples: (image HxWx3, truth HxW, prediction HxW) at native size. Returns the tile written
    (None when there are no samples), so other outputs need not read it back."""
    if not samples:
        return None
    cell = cell_size(samples[0][0].shape[:2])
    tile = grid([sample_tile(img, truth, pred, colors, cell) for img, truth, pred in samples])
    with atomic_open(path) as f:
        Image.fromarray(tile).save(f, format="JPEG", quality=90)
    return tile
