"""A small synthetic whole-sky dataset, made on the spot, for the demo and the tests.

Sky is a blue gradient with a bright sun glare (sky, not cloud); clouds come from a smooth random
field, white to grey, with soft edges, so a model must learn more than "bright = cloud".
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image


def _smooth_field(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    coarse = (rng.random((cells, cells)) * 255).astype(np.uint8)
    return np.asarray(Image.fromarray(coarse).resize((size, size), Image.Resampling.BICUBIC), dtype=np.float32) / 255


def sky_sample(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
    """(HxWx3 uint8 image, HxW uint8 mask with 0 = sky, 1 = cloud)."""
    field = _smooth_field(rng, size, int(rng.integers(3, 7)))
    cloud = field > rng.uniform(0.35, 0.7)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    top, bottom = np.array([30, 80, 170]), np.array([110, 165, 225])
    sky = top * (1 - yy[..., None]) + bottom * yy[..., None]
    sun_y, sun_x = rng.random(2)
    glare = np.exp(-((yy - sun_y) ** 2 + (xx - sun_x) ** 2) / 0.02)[..., None]
    sky = sky * (1 - 0.6 * glare) + 250 * 0.6 * glare
    shade = rng.uniform(150, 245)
    clouds = (shade + 40 * (field[..., None] - 0.5)) * np.ones(3)
    image = np.where(cloud[..., None], clouds, sky) + rng.normal(0, 6, (size, size, 3))
    return np.clip(image, 0, 255).astype(np.uint8), cloud.astype(np.uint8)


def write_sky_folder(dest: Path, n_train: int = 32, n_valid: int = 8, size: int = 64, seed: int = 0,
                     config: dict | None = None) -> Path:
    """ROOT/train, ROOT/valid (images PNG, masks 0/255 PNG), class_names.list and config.list."""
    dest = Path(dest)
    rng = np.random.default_rng(seed)
    for split, count in (("train", n_train), ("valid", n_valid)):
        (dest / split / "images").mkdir(parents=True, exist_ok=True)
        (dest / split / "labels").mkdir(parents=True, exist_ok=True)
        for k in range(count):
            image, mask = sky_sample(rng, size)
            Image.fromarray(image).save(dest / split / "images" / f"sky{k:04d}.png")
            Image.fromarray(mask * 255).save(dest / split / "labels" / f"sky{k:04d}.png")
    (dest / "class_names.list").write_text("sky\ncloud\n")
    if config is not None:
        (dest / "config.list").write_text(json.dumps(config, indent=4) + "\n")
    return dest
