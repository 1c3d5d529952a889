"""Image files: which suffixes count as images, listing a folder of them, and reading one as RGB.

Free of torch, so predicting with an ONNX file works on a node without PyTorch.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from segtrain.errors import DatasetError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff"}


def read_image(path: Path) -> np.ndarray:
    """HxWx3 uint8; grey, palette and alpha images become RGB."""
    try:
        with Image.open(path) as img:
            img.load()
            return np.array(img.convert("RGB"))
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:  # PIL: SyntaxError = broken file
        raise DatasetError(f"{path}: cannot read this image ({e}). Replace or remove the file.") from None


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
