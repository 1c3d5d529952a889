"""Image files: which suffixes count as images, listing a folder of them, and reading one as RGB.

Free of torch, so predicting with an ONNX file works on a node without PyTorch.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from segtrain.errors import DatasetError
from segtrain.edge_app.frames import IMAGE_SUFFIXES  # the edge app lists a folder as predict does


@contextmanager
def open_image(path: Path, what: str = "image") -> Iterator[Image.Image]:
    """Image.open whose failures, inside the block too, are one-line DatasetErrors naming the file.

    Pillow only warns between MAX_IMAGE_PIXELS and twice that, then decodes anyway: at that size
    (about 90 million pixels and up) a file is refused as well, before it takes the memory.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                yield img
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise DatasetError(f"{path}: this {what} is too large to decode safely ({e}). "
                           "Downscale it, or remove the file.") from None
    except (OSError, ValueError, SyntaxError) as e:  # PIL: SyntaxError = broken file
        raise DatasetError(f"{path}: cannot read this {what} ({e}). Replace or remove the file.") from None


EXIF_ORIENTATION = 0x0112


def _orientation(img: Image.Image) -> int:
    """The EXIF orientation from the file's header (1: as stored). A PNG's EXIF chunk after the
    pixels is not looked for: reading it decodes the whole file, and sizes come from headers."""
    if img.format == "PNG" and "exif" not in img.info:
        return 1
    return img.getexif().get(EXIF_ORIENTATION, 1)


def upright_size(img: Image.Image) -> tuple[int, int]:
    """(width, height) as viewers show the image: orientations 5-8 turn it a quarter."""
    width, height = img.size
    return (height, width) if _orientation(img) in (5, 6, 7, 8) else (width, height)


def load_upright(img: Image.Image) -> Image.Image:
    """The decoded picture as viewers show it, EXIF rotation applied (a phone's portrait JPEG
    is stored sideways), so that a mask drawn on what the user sees lines up with it."""
    turned = _orientation(img) != 1
    img.load()
    return ImageOps.exif_transpose(img) if turned else img


# Rows of a decoded image copied out of Pillow at a time (RGB: 4 MB).
COPY_PIXELS = 1 << 20


def read_image(path: Path) -> np.ndarray:
    """HxWx3 uint8, upright; grey, palette and alpha images become RGB.

    Copied out of Pillow in strips: `np.array(img.convert("RGB"))` holds the picture four times at
    its peak (Pillow's pixels, the converted copy, tobytes' chunks and their join; BENCHMARKS.md
    section 10), strips hold it twice. Conversion to RGB is per pixel, so a strip converts alike."""
    with open_image(path) as img:
        upright = load_upright(img)
        width, height = upright.size
        out = np.empty((height, width, 3), dtype=np.uint8)
        step = max(1, COPY_PIXELS // max(1, width))
        for top in range(0, height, step):
            strip = upright.crop((0, top, width, min(top + step, height)))
            out[top:top + step] = np.asarray(strip if strip.mode == "RGB" else strip.convert("RGB"))
        return out


def list_images(folder: Path, suffixes: set[str], notes: list[str]) -> dict[str, Path]:
    found: dict[str, Path] = {}
    skipped = []
    for path in sorted(folder.iterdir()):
        if path.name.startswith(".") or path.is_dir():
            continue
        if path.suffix.lower() not in suffixes:
            skipped.append(path.name)
            continue
        if path.stem in found:
            raise DatasetError(
                f"{folder}: two files share the name {path.stem!r} ({found[path.stem].name}, {path.name}). "
                "Rename one: images and labels are matched by file name without extension."
            )
        found[path.stem] = path
    if skipped:
        shown = ", ".join(skipped[:5]) + (" ..." if len(skipped) > 5 else "")
        notes.append(f"note: ignored {len(skipped)} unsupported file(s) in {folder}: {shown}")
    return found
