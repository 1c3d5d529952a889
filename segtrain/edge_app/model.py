"""The model of a plugin folder: model/model.json says which file, its SHA-256 and what its
classes are; the file is the raw-input export (RGB 0..255 at any size in, logits at that size
out), so a frame goes in as it is, exactly as `segtrain predict` feeds the same file.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import List, Optional

import numpy as np

METADATA_NAME = "model.json"


class ModelRefused(Exception):
    """The model folder cannot be used as it is; the message is the one line to log."""


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _read_metadata(folder: Path) -> dict:
    path = folder / METADATA_NAME
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise ModelRefused(f"{path}: cannot read the model's metadata ({e}); write the plugin folder again "
                           "with segtrain plugin.") from None


def _onnx_runner(path: Path):
    import onnxruntime as ort

    # The GPU where this onnxruntime build and the node have one, else the CPU.
    providers = [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in ort.get_available_providers()]
    session = ort.InferenceSession(str(path), providers=providers)
    name = session.get_inputs()[0].name
    return lambda batch: session.run(None, {name: batch})[0]


def _torchscript_runner(path: Path):
    import torch

    module = torch.jit.load(str(path), map_location="cpu").eval()

    def run(batch: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return module(torch.from_numpy(batch)).numpy()

    return run


class Model:
    """A frame (HxWx3 uint8 RGB) in, its class mask (HxW uint8) out."""

    def __init__(self, folder: Path):
        meta = _read_metadata(folder)
        path = folder / meta["model_file"]
        if not path.is_file():
            raise ModelRefused(f"{path}: model file missing; copy the plugin folder whole, or write it again "
                               "with segtrain plugin.")
        found = sha256_of(path)
        if found != meta["sha256"]:
            raise ModelRefused(f"{path}: refused, its SHA-256 {found[:12]}... is not the {meta['sha256'][:12]}... "
                               f"that {folder / METADATA_NAME} names (the file was replaced or damaged); write the "
                               "plugin folder again with segtrain plugin.")
        self.name: str = meta["model_name"]
        self.sha256: str = found
        self.segtrain_version: str = meta["segtrain_version"]
        self.class_names: List[str] = meta["class_names"]
        self.class_colors: List[List[int]] = meta["class_colors"]
        self.void_class: Optional[int] = meta["void_class"]
        self.published: List[Optional[str]] = meta["published"]  # per class its name; None: not published
        try:
            self._run = (_onnx_runner if meta["runtime"] == "onnx" else _torchscript_runner)(path)
        except Exception as e:  # each runtime raises its own types for a file it cannot load
            raise ModelRefused(f"{path}: cannot load it ({str(e).strip().splitlines()[0]}); write the plugin "
                               "folder again with segtrain plugin.") from None

    def mask(self, image: np.ndarray) -> np.ndarray:
        batch = np.ascontiguousarray(image.transpose(2, 0, 1)[None], dtype=np.float32)
        return self._run(batch)[0].argmax(0).astype(np.uint8)
