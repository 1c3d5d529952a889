"""A trained model rebuilt from its checkpoint alone, for evaluate, predict and export.

`segtrain train` stores the architecture, the resolved config (image size, batch size, amp,
channels_last, ...), class names and colours and the input normalisation next to the weights, so
no data folder or config.list is needed to use the model.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from segtrain.version import __version__
from segtrain.outputs.checkpoints import read_checkpoint
from segtrain.data.folder import eval_input
from segtrain.errors import CheckpointError
from segtrain.evaluation.inference import model_size_logits, native_logits, use_channels_last
from segtrain.evaluation.resize import class_mask
from segtrain.models.registry import MODELS, build_model
from segtrain.runtime.device import select_device
from segtrain.use.model_facts import checkpoint_facts
from segtrain.data.transforms import eval_transform


@dataclass
class TrainedModel:
    model: nn.Module  # in eval mode, on `device`
    arch: str
    class_names: list[str]
    class_colors: list[list[int]]
    normalization: dict
    config: dict
    device: torch.device
    source: Path

    @property
    def image_size(self) -> list[int] | None:
        return self.config["image_size"]

    @property
    def channels_last(self) -> bool:
        return use_channels_last(self.config["channels_last"], self.image_size, self.device)

    def metadata(self, raw_input: bool = False) -> dict:
        """What a consumer of an exported model needs: embedded in ONNX, TorchScript and .pt2 files.
        "input_kind" tells which preprocessing the file expects; "config" lets evaluate find the
        validation split the model was trained with."""
        if raw_input:
            expects = ("float32 (TorchScript: also uint8) NCHW RGB in 0..255 at any size; resizing to image_size "
                       "(bilinear, antialiased), /255, minus mean, divided by std happen inside")
        else:
            expects = ("float32 NCHW RGB: pixel/255, minus mean, divided by std; resized to image_size "
                       "(bilinear, antialiased) unless image_size is null")
        return {
            "format": "segtrain-segmentation-v1",
            "segtrain_version": __version__,
            "arch": self.arch,
            "class_names": list(self.class_names),
            "class_colors": [list(c) for c in self.class_colors],
            "mean": list(self.normalization["mean"]),
            "std": list(self.normalization["std"]),
            "image_size": self.image_size,
            "batch_size": self.config["batch_size"],
            "input_kind": "raw" if raw_input else "normalized",
            "input": expects,
            "output": "float32 logits NCHW at the input's size; resize bilinearly to the image's size, then argmax",
            "config": dict(self.config),  # a plan (config/plan.py) or a checkpoint's config
        }


def load_trained(path: Path, device: str = "auto", log=print) -> TrainedModel:
    """The model of a checkpoint written by `segtrain train`; every weight must fit."""
    path = Path(path)
    ckpt = read_checkpoint(path)
    arch, names, cfg = ckpt.get("arch"), ckpt.get("class_names"), ckpt.get("config")
    if arch not in MODELS or not names or not isinstance(cfg, dict):
        raise CheckpointError(
            f"{path}: does not say which model and classes it holds (not written by segtrain train). "
            "Use a MODEL-*/model_best.pth.tar or checkpoint.pth.tar of a segtrain run, or train from this "
            "file with \"pretrained_net\"."
        )
    facts = checkpoint_facts(path, ckpt)
    names, cfg = facts.class_names, facts.config
    model = build_model(arch, len(names), cfg["aux_loss"], encoder=cfg["encoder"])
    try:
        model.load_state_dict(ckpt["model_state_dict"], strict=True)
    except RuntimeError as e:
        first = str(e).strip().splitlines()[1].strip() if "\n" in str(e) else str(e)
        raise CheckpointError(f"{path}: its weights do not fit {arch} with {len(names)} classes ({first}). "
                              "The file is damaged or was edited; use the run's checkpoint as written.") from None
    target = select_device(device, log, doing="running")
    model.to(target).eval()
    normalization = {"mean": facts.mean, "std": facts.std}
    trained = TrainedModel(model, arch, names, facts.class_colors, normalization, cfg, target, path)
    if trained.channels_last:
        model.to(memory_format=torch.channels_last)
    return trained


class TorchPredictor:
    """Masks from images with a checkpoint, through validation's own inference routine (an Engine,
    use/predictor.py)."""

    def __init__(self, trained: TrainedModel, tile: int | None = None, overlap: int = 0, tta: bool = False):
        self.trained = trained
        self.class_names = trained.class_names
        self.class_colors = trained.class_colors
        self.image_size = trained.image_size
        self.batch_size = trained.config["batch_size"]
        self.tile, self.overlap, self.tta = tile, overlap, tta
        self.transform = eval_transform(trained.image_size)

    @property
    def config(self) -> dict:
        return self.trained.config

    def batch_key(self, image: np.ndarray) -> tuple:
        """Images with the same key share a batch: the model input's shape."""
        return tuple(self.image_size) if self.image_size is not None else image.shape[:2]

    def logits(self, images: list[np.ndarray]) -> list[np.ndarray]:
        """Per HxWx3 uint8 image, float32 logits (C, H, W) at its native size; the images share one batch_key."""
        cfg = self.trained.config
        batch = torch.stack([eval_input(image, self.transform) for image in images])
        logits = native_logits(self.trained.model, batch, [image.shape[:2] for image in images], cfg["amp"],
                               self.trained.channels_last, self.tile, self.overlap, self.tta)
        return [one.cpu().numpy() for one in logits]

    def masks(self, images: list[np.ndarray]) -> list[np.ndarray]:
        """HxW uint8 class indices per HxWx3 uint8 image, resized and compared strip by strip
        (evaluation/resize.py), so the logits at native size never exist whole."""
        cfg = self.trained.config
        batch = torch.stack([eval_input(image, self.transform) for image in images])
        logits = model_size_logits(self.trained.model, batch, cfg["amp"], self.trained.channels_last, self.tile,
                                   self.overlap, self.tta)
        return [class_mask(one, image.shape[:2]) for one, image in zip(logits, images)]
