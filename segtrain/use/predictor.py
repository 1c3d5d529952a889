"""One interface for every model file segtrain writes (checkpoint, ONNX, TorchScript, .pt2).

Two engines run them: `TorchPredictor` (use/trained.py, a checkpoint through validation's own
inference routine) and `ExportedPredictor` (use/exported.py, the exported file itself). Both follow
`Engine`: a batch of HxWx3 uint8 images that share a `batch_key` in; NumPy logits (C, H, W) at each
image's native size, or uint8 masks, out. `Predictor` is what segtrain.load returns: any images in
(NumPy arrays, PIL images, paths), batched as `segtrain predict` batches them, so its masks are
predict's; masks, probabilities and class fractions out.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable, Iterator, Protocol, Union

import numpy as np
from PIL import Image

from segtrain.data.images import load_upright, read_image
from segtrain.errors import DatasetError
from segtrain.data.classes import void_class
from segtrain.edge_app.measure import coverage

ImageInput = Union[np.ndarray, Image.Image, str, os.PathLike]


class Engine(Protocol):
    """The one predictor protocol, of every model file's engine; evaluate, audit, predict and
    Predictor use a model only through it. Images are HxWx3 uint8 RGB arrays."""

    class_names: list[str]
    class_colors: list[list[int]]
    image_size: list[int] | None
    batch_size: int
    tta: bool

    @property
    def config(self) -> dict:
        """The model's training config, checked, with defaults for what older files lack (use/model_facts.py)."""

    def batch_key(self, image: np.ndarray) -> tuple:
        """Images with one key may share a batch (the model input's shape)."""

    def logits(self, images: list[np.ndarray]) -> list[np.ndarray]:
        """Per image of a batch (one batch_key), float32 NumPy logits (C, H, W) at the image's own size."""

    def masks(self, images: list[np.ndarray]) -> list[np.ndarray]:
        """Per image of a batch, its HxW uint8 class indices (the argmax of its logits, without making them whole)."""


def as_rgb(image: ImageInput) -> np.ndarray:
    """HxWx3 uint8 RGB, as predict reads a file: paths are read, PIL images turned upright."""
    if isinstance(image, (str, os.PathLike)):
        return read_image(Path(image))
    if isinstance(image, Image.Image):
        return np.array(load_upright(image).convert("RGB"))
    array = np.asarray(image)
    if array.dtype != np.uint8 or not (array.ndim == 2 or (array.ndim == 3 and array.shape[2] in (3, 4))):
        raise DatasetError(f"an image of dtype {array.dtype} and shape {array.shape}: give HxWx3 (or HxW, HxWx4) uint8 "
                           "RGB arrays in 0..255, PIL images or file paths.")
    return np.array(Image.fromarray(array).convert("RGB")) if array.ndim == 2 or array.shape[2] == 4 else array


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=0, keepdims=True))
    return shifted / shifted.sum(axis=0, keepdims=True)


class Predictor:
    """A trained model, from any file segtrain writes. Images go in as a list of NumPy arrays
    (HxWx3 uint8 RGB), PIL images or paths; every result is per image, at the image's own size."""

    def __init__(self, engine: Engine, source: Path):
        self.engine = engine
        self.source = Path(source)

    def __repr__(self) -> str:
        return f"Predictor({str(self.source)!r}, classes={self.class_names})"

    @property
    def class_names(self) -> list[str]:
        return list(self.engine.class_names)

    @property
    def class_colors(self) -> list[list[int]]:
        return [list(c) for c in self.engine.class_colors]

    @property
    def image_size(self) -> list[int] | None:
        """[H, W] every image is resized to for the model (None: native size)."""
        return self.engine.image_size

    def masks(self, images: Iterable[ImageInput]) -> list[np.ndarray]:
        """HxW uint8 class indices per image (what `segtrain predict` writes as NAME.png)."""
        return [mask for batch in self._batches(images) for mask in self.engine.masks(batch)]

    def logits(self, images: Iterable[ImageInput]) -> list[np.ndarray]:
        """(C, H, W) float32 logits per image."""
        return [one for batch in self._batches(images) for one in self.engine.logits(batch)]

    def probabilities(self, images: Iterable[ImageInput]) -> list[np.ndarray]:
        """(C, H, W) float32 class probabilities (softmax of the logits) per image."""
        return [softmax(one) for one in self.logits(images)]

    def class_fractions(self, images: Iterable[ImageInput]) -> list[dict[str, float]]:
        """{class name: share} per image, as predict's summary.csv row: each class's share of the
        non-void pixels, a void class's ("void_class") its share of the whole image."""
        names = self.class_names
        void = void_class(names, self.engine.config)
        return [dict(zip(names, coverage(mask, len(names), void))) for mask in self.masks(images)]

    def _batches(self, images: Iterable[ImageInput]) -> Iterator[list[np.ndarray]]:
        """predict's batches: consecutive images with one batch_key, at most batch_size of them."""
        if isinstance(images, (np.ndarray, Image.Image, str, os.PathLike)):
            raise TypeError("give a list of images (e.g. predictor.masks([image])[0] for one)")
        pending: list[np.ndarray] = []
        for image in map(as_rgb, images):
            key = self.engine.batch_key(image)
            if pending and (len(pending) >= self.engine.batch_size or self.engine.batch_key(pending[0]) != key):
                yield pending
                pending = []
            pending.append(image)
        if pending:
            yield pending
