"""Masks from images with an exported ONNX file, through onnxruntime: no PyTorch needed.

It follows the checkpoint path step for step: resize to the embedded image size (Pillow's
antialiased bilinear, which torchvision's antialiased resize reproduces to within one grey level
on rare pixels), normalise, run, resize the logits back bilinearly (as torch's
`interpolate(align_corners=False)`), argmax.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from segtrain.errors import CheckpointError
from segtrain.evaluation.tiling import sliding_window

METADATA_KEY = "segtrain"  # the ONNX metadata_props entry (and TorchScript extra file stem) holding JSON


def _axis(n_in: int, n_out: int):
    """Source indices and weights of torch's bilinear resize with align_corners=False, no antialias."""
    src = np.maximum((np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5, 0.0)
    low = np.minimum(np.floor(src).astype(np.int64), n_in - 1)
    high = np.minimum(low + 1, n_in - 1)
    frac = (src - low).astype(np.float32)
    return low, high, 1 - frac, frac


def resize_logits(logits: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(C, h, w) -> (C, H, W), bilinear."""
    if logits.shape[-2:] == tuple(size):
        return logits
    y0, y1, wy0, wy1 = _axis(logits.shape[1], size[0])
    x0, x1, wx0, wx1 = _axis(logits.shape[2], size[1])
    rows = logits[:, y0, :] * wy0[:, None] + logits[:, y1, :] * wy1[:, None]
    return rows[:, :, x0] * wx0 + rows[:, :, x1] * wx1


class OnnxPredictor:
    def __init__(self, path: Path, tile: int | None = None, overlap: int = 0):
        import onnxruntime as ort

        try:
            # CUDA when this onnxruntime build has it; other providers need per-model setup
            providers = [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in ort.get_available_providers()]
            self.session = ort.InferenceSession(str(path), providers=providers)
        except Exception as e:  # onnxruntime raises its own exception types for unreadable files
            raise CheckpointError(f"{path}: onnxruntime cannot load this file ({str(e).splitlines()[0]}). "
                                  "Export it again with segtrain export --format onnx.") from None
        raw = self.session.get_modelmeta().custom_metadata_map.get(METADATA_KEY)
        if raw is None:
            raise CheckpointError(f"{path}: an ONNX model without segtrain's metadata (class names, "
                                  "normalisation, input size). Export it with segtrain export --format onnx.")
        meta = json.loads(raw)
        self.class_names = meta["class_names"]
        self.class_colors = meta["class_colors"]
        self.image_size = meta["image_size"]
        self.mean = np.asarray(meta["mean"], dtype=np.float32)[:, None, None]
        self.std = np.asarray(meta["std"], dtype=np.float32)[:, None, None]
        self.batch_size = meta.get("batch_size", 1)
        self.tile, self.overlap = tile, overlap
        self.input_name = self.session.get_inputs()[0].name

    def model_input(self, image: np.ndarray) -> np.ndarray:
        if self.image_size is not None:
            height, width = self.image_size
            image = np.asarray(Image.fromarray(image).resize((width, height), Image.Resampling.BILINEAR))
        chw = image.transpose(2, 0, 1).astype(np.float32) / 255
        return (chw - self.mean) / self.std

    def run(self, batch: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input_name: np.ascontiguousarray(batch, dtype=np.float32)})[0]

    def masks(self, images: list[np.ndarray]) -> list[np.ndarray]:
        batch = np.stack([self.model_input(image) for image in images])
        if self.tile is None:
            logits = self.run(batch)
        else:
            def zeros(shape):
                return np.zeros(shape, dtype=np.float32)

            logits = [sliding_window(lambda crops: self.run(np.stack(crops)), one, self.tile, self.overlap,
                                     len(images), zeros) for one in batch]
        return [resize_logits(one, image.shape[:2]).argmax(0).astype(np.uint8) for one, image in zip(logits, images)]
