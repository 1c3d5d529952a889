"""Pictures of a result: the mask as a palette PNG, and the classes over the image.

`segtrain predict` writes its masks and overlays with these too, so an upload from a node and
predict's output of the same frame are the same pictures.
"""

from __future__ import annotations

from typing import List

import numpy as np
from PIL import Image


def mask_image(mask: np.ndarray, colors: List[List[int]]) -> Image.Image:
    """Mode P: pixel values are class indices, the palette shows them in the class colours."""
    image = Image.fromarray(mask)
    image.putpalette([v for color in colors for v in color])
    return image


def overlay(image: np.ndarray, color: np.ndarray) -> np.ndarray:
    """Half class colour, half grey image: the colour reads clearly whatever the image's hue."""
    grey = np.asarray(Image.fromarray(image).convert("L").convert("RGB"), dtype=np.float32)
    return (0.5 * grey + 0.5 * color.astype(np.float32)).round().astype(np.uint8)
