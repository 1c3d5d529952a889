"""visualization_viz tiles: per sample, image | truth colour | overlay over image | prediction
colour | overlay, samples laid out in a near-square grid; and the audit's image | mask | model rows.
Every picture carries what its columns are and a legend of the class colours."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from segtrain.outputs.atomic import atomic_open
from segtrain.data.labels import IGNORE
from segtrain.edge_app.pictures import overlay  # the edge app's, so its uploads look like predict's

IGNORE_COLOR = (224, 224, 192)  # VOC's void colour
CELL_MAX_SIDE = 256
GAP = 4
TEXT_SIZE = 11  # pixels: readable beside a 32 px cell and a 256 px one
TEXT_COLOR = (30, 30, 30)
LINE = TEXT_SIZE + 5
SWATCH = TEXT_SIZE - 1
VIZ_TITLE = "each sample: truth (top), prediction (bottom); columns: image | classes | classes over image"


def _font() -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=TEXT_SIZE)  # Pillow's own scalable font, with FreeType
    except (TypeError, ImportError, OSError):
        return ImageFont.load_default()


def _wrapped(draw: ImageDraw.ImageDraw, words: list[str], width: int, font) -> list[str]:
    """Words joined into lines that fit `width` pixels (a word wider than that gets a line of its own)."""
    lines: list[str] = []
    for word in words:
        joined = f"{lines[-1]} {word}" if lines else word
        if lines and draw.textlength(joined, font=font) <= width:
            lines[-1] = joined
        else:
            lines.append(word)
    return lines


def _legend_places(draw: ImageDraw.ImageDraw, names: list[str], width: int, font) -> list[tuple[int, int]]:
    """(x, line) of each class's swatch: left to right, wrapped to `width` pixels."""
    places, x, line = [], 1, 0
    for name in names:
        needed = SWATCH + 4 + round(draw.textlength(name, font=font)) + 10
        if x > 1 and x + needed > width:
            x, line = 1, line + 1
        places.append((x, line))
        x += needed
    return places


def annotate(picture: np.ndarray, title: str | list[str], names: list[str], colors, background: int = 255) -> np.ndarray:
    """The picture with a title band above (a list: one title centred over each of that many equal
    columns, GAP apart) and a legend below: a swatch and the name of each class."""
    font = _font()
    height, width = picture.shape[:2]
    draw = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    title_lines = title if isinstance(title, list) else _wrapped(draw, title.split(" "), width - 2, font)
    places = _legend_places(draw, names, width, font)
    top = LINE * (1 if isinstance(title, list) else len(title_lines))
    legend_height = LINE * (1 + max((line for _, line in places), default=-1)) + 2
    canvas = Image.new("RGB", (width, top + height + legend_height), (background,) * 3)
    canvas.paste(Image.fromarray(picture), (0, top))
    draw = ImageDraw.Draw(canvas)
    if isinstance(title, list):
        column = (width + GAP) / len(title)
        for k, text in enumerate(title):
            x = k * column + (column - GAP - draw.textlength(text, font=font)) / 2
            draw.text((max(0, x), 2), text, fill=TEXT_COLOR, font=font)
    else:
        for k, line in enumerate(title_lines):
            draw.text((1, 2 + k * LINE), line, fill=TEXT_COLOR, font=font)
    for name, color, (x, line) in zip(names, colors, places):
        y = top + height + 3 + line * LINE
        draw.rectangle([x, y + 1, x + SWATCH, y + 1 + SWATCH], fill=tuple(color), outline=TEXT_COLOR)
        draw.text((x + SWATCH + 4, y), name, fill=TEXT_COLOR, font=font)
    return np.asarray(canvas)


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


def side_by_side(image: np.ndarray, masks: list[np.ndarray], names: list[str], colors, titles: list[str],
                 background: int = 255) -> np.ndarray:
    """One row under its column titles: the image, then each mask in the class colours (ignored
    pixels in IGNORE_COLOR), each at most CELL_MAX_SIDE pixels a side, GAP apart; the legend below."""
    cell = cell_size(image.shape[:2])
    parts = [_resize(image, cell, nearest=False)] + [colorize(_resize(m, cell, nearest=True), colors) for m in masks]
    gap = np.full((cell[0], GAP, 3), background, dtype=np.uint8)
    row = np.concatenate([piece for part in parts for piece in (gap, part)][1:], axis=1)
    return annotate(row, titles, names, colors, background)


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
                        names: list[str], colors) -> np.ndarray | None:
    """samples: (image HxWx3, truth HxW, prediction HxW) at native size. Returns the tile written
    (None when there are no samples), so other outputs need not read it back."""
    if not samples:
        return None
    cell = cell_size(samples[0][0].shape[:2])
    tile = annotate(grid([sample_tile(img, truth, pred, colors, cell) for img, truth, pred in samples]),
                    VIZ_TITLE, names, colors)
    with atomic_open(path) as f:
        Image.fromarray(tile).save(f, format="JPEG", quality=90)
    return tile
