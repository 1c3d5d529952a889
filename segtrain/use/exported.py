"""Masks from any file `segtrain export` writes: ONNX (fp32 or INT8), TorchScript (.pt) or
torch.export (.pt2), with raw or normalised input, so predict and evaluate score the exact file
that ships.

The metadata embedded in the file says which preprocessing it expects ("input_kind"):
- "normalized": the checkpoint's input. This module follows the checkpoint path step for step:
  resize to the embedded image size (Pillow's antialiased bilinear, which torchvision's
  antialiased resize reproduces to within one grey level on rare pixels), normalise, run, resize
  the logits back bilinearly (as torch's `interpolate(align_corners=False)`), argmax.
- "raw": RGB 0..255 at the image's own size; resizing, normalisation and resizing the logits back
  happen inside the file, so the image goes in as it is.

ONNX files run on onnxruntime alone: PyTorch is imported only for TorchScript and .pt2 files.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image

from segtrain.errors import CheckpointError, ConfigError
from segtrain.evaluation.resize import class_mask, resize_logits
from segtrain.evaluation.tiling import sliding_window
from segtrain.evaluation.tta import with_flips
from segtrain.use.model_facts import exported_facts
from segtrain.use.model_file_check import UnsafeModelFile, check_pt2, check_script_module, check_torchscript

METADATA_KEY = "segtrain"  # the ONNX metadata_props entry (and TorchScript/.pt2 extra file stem) holding JSON
EXTRA_FILE = f"{METADATA_KEY}.json"
KINDS = ("onnx", "torchscript", "pt2")


def exported_kind(path: Path) -> str | None:
    """"onnx", "torchscript" or "pt2" for a file segtrain export writes; None for anything else
    (a checkpoint). TorchScript is recognised by its embedded metadata, not its suffix, because
    checkpoints are zip archives too."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix in (".onnx", ".pt2"):
        return suffix[1:]
    if path.is_file() and zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            if any(name.endswith(f"/extra/{EXTRA_FILE}") for name in archive.namelist()):
                return "torchscript"
    return None


def _unloadable(path: Path, kind: str, error: Exception) -> CheckpointError:
    first = (str(error).strip().splitlines() or [type(error).__name__])[0]
    return CheckpointError(f"{path}: cannot load this {kind} file ({first}). "
                           f"Export it again with segtrain export --format {kind}.")


def onnx_session_options(spinning: bool = True):
    """ONNX Runtime's defaults, or with spinning=False its threads sleeping as soon as a run ends."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    if not spinning:
        # After each run ONNX Runtime's threads spin for work, holding the cores. Alone that saves a
        # wake-up; with two sessions run in turn (timing one file against another) it takes the cores
        # from the other session's next run: on 2 cores fp32 LR-ASPP at 256 px took 10.1 ms a run that
        # way, 6.6 ms with spinning off, 3.5 ms alone, and fcn_resnet18's INT8 speed-up read 2.6x, 3.2x, 3.3x.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return options


def _onnx_runner(path: Path, spinning: bool = True):
    import onnxruntime as ort

    options = onnx_session_options(spinning)
    try:
        # CUDA when this onnxruntime build has it; other providers need per-model setup
        providers = [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in ort.get_available_providers()]
        session = ort.InferenceSession(str(path), options, providers=providers)
    except Exception as e:  # onnxruntime raises its own exception types for unreadable files
        raise _unloadable(path, "onnx", e) from None
    name = session.get_inputs()[0].name
    return session.get_modelmeta().custom_metadata_map.get(METADATA_KEY), \
        lambda batch: session.run(None, {name: np.ascontiguousarray(batch, dtype=np.float32)})[0]


def _refused(path: Path, kind: str, error: UnsafeModelFile) -> CheckpointError:
    return CheckpointError(f"{path}: refused, it holds more than segtrain export writes and could run code when "
                           f"loaded: {error}. Export it again with segtrain export --format {kind}.")


@contextlib.contextmanager
def _quiet_torch():
    """No warnings and no log lines from torch while it loads a file: torch.export.load logs dozens of
    lines for a file it cannot read, and the user's answer is the one line segtrain prints."""
    before = logging.root.manager.disable
    logging.disable(logging.CRITICAL)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logging.disable(before)


def _torch_runner(path: Path, kind: str):
    """A TorchScript or .pt2 file runs the graph stored in it, once model_file_check has read the
    archive as data, and for TorchScript every loaded method's operators, before anything runs."""
    import torch

    try:
        (check_pt2 if kind == "pt2" else check_torchscript)(path)
    except UnsafeModelFile as e:
        raise _refused(path, kind, e) from None
    extra = {EXTRA_FILE: ""}
    try:
        with _quiet_torch():
            if kind == "torchscript":
                module = torch.jit.load(str(path), map_location="cpu", _extra_files=extra)
            else:
                module = torch.export.load(str(path), extra_files=extra).module()
    except Exception as e:
        raise _unloadable(path, kind, e) from None
    if kind == "torchscript":
        try:
            check_script_module(module)
        except UnsafeModelFile as e:
            raise _refused(path, kind, e) from None

    def run(batch: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return module(torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32))).numpy()

    return extra[EXTRA_FILE] or None, run


def open_exported(path: Path, kind: str | None = None, spinning: bool = True):
    """(checked metadata, run: float32 NCHW batch -> logits) of an exported file. spinning=False: an ONNX
    file's threads sleep between runs (for timing it against another file in the same process)."""
    path = Path(path)
    kind = kind or exported_kind(path)
    if not path.is_file():
        raise ConfigError(f"{path}: exported model file not found. Check the --checkpoint path.")
    raw, run = _onnx_runner(path, spinning) if kind == "onnx" else _torch_runner(path, kind)
    if raw is None:
        raise CheckpointError(f"{path}: a {kind} model without segtrain's metadata (class names, "
                              f"normalisation, input size). Export it with segtrain export --format {kind}.")
    return exported_facts(path, raw), run


class ExportedPredictor:
    """Masks from images with an exported file, run as the file itself says (an Engine, use/predictor.py)."""

    def __init__(self, path: Path, tile: int | None = None, overlap: int = 0, kind: str | None = None,
                 tta: bool = False, spinning: bool = True):
        meta, run = open_exported(path, kind, spinning)
        self.run = with_flips(run) if tta else run
        self.metadata = meta.metadata
        self.class_names = meta.facts.class_names
        self.class_colors = meta.facts.class_colors
        self.image_size = meta.image_size
        self.raw_input = meta.raw_input
        self.config = meta.facts.config
        self.mean = np.asarray(meta.facts.mean, dtype=np.float32)[:, None, None]
        self.std = np.asarray(meta.facts.std, dtype=np.float32)[:, None, None]
        self.batch_size = meta.batch_size
        if tile is not None and self.raw_input:
            raise ConfigError(f"--tile {tile}: {path} is a raw-input export, which resizes whole images itself; "
                              "drop --tile, or export without --raw-input to predict in tiles.")
        self.tile, self.overlap, self.tta = tile, overlap, tta

    def batch_key(self, image: np.ndarray) -> tuple:
        """Images with the same key share a batch: the model input's shape."""
        return tuple(self.image_size) if self.image_size is not None and not self.raw_input else image.shape[:2]

    def model_input(self, image: np.ndarray) -> np.ndarray:
        """What the file expects for an HxWx3 uint8 image: see the module's docstring."""
        if self.raw_input:
            return image.transpose(2, 0, 1).astype(np.float32)
        if self.image_size is not None:
            height, width = self.image_size
            image = np.asarray(Image.fromarray(image).resize((width, height), Image.Resampling.BILINEAR))
        chw = image.transpose(2, 0, 1).astype(np.float32) / 255
        return (chw - self.mean) / self.std

    def model_size_logits(self, images: list[np.ndarray]):
        """Per image, float32 logits (C, h, w) at the size the file was given."""
        batch = np.stack([self.model_input(image) for image in images])
        if self.tile is None:
            return self.run(batch)

        def zeros(shape):
            return np.zeros(shape, dtype=np.float32)

        return [sliding_window(lambda crops: self.run(np.stack(crops)), one, self.tile, self.overlap,
                               len(images), zeros) for one in batch]

    def logits(self, images: list[np.ndarray]) -> list[np.ndarray]:
        """Per image, float32 logits (C, H, W) at its native size."""
        return [resize_logits(one, image.shape[:2]) for one, image in zip(self.model_size_logits(images), images)]

    def masks(self, images: list[np.ndarray]) -> list[np.ndarray]:
        """HxW uint8 class indices per image, resized and compared strip by strip (evaluation/resize.py)."""
        return [class_mask(one, image.shape[:2]) for one, image in zip(self.model_size_logits(images), images)]
