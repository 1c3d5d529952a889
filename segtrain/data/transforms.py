"""Which transforms each split gets. Image and mask travel together through torchvision's v2
transforms, which resize masks with nearest-neighbour and leave them out of colour changes."""

from __future__ import annotations

import torch
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

# ImageNet statistics: the backbones' pretrained weights expect them, and they are stored in
# checkpoints and exported models so every consumer normalises the same way.
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)


def _to_float():
    return [v2.ToDtype({tv_tensors.Image: torch.float32, "others": None}, scale=True), v2.Normalize(MEAN, STD)]


def to_model_input(images: torch.Tensor) -> torch.Tensor:
    """uint8 RGB (..., 3, H, W) -> the normalised float input, by the same kernels as _to_float."""
    return F.normalize(F.to_dtype(images, torch.float32, scale=True), MEAN, STD)


def collate_train(samples: list[tuple[torch.Tensor, torch.Tensor]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Training samples (uint8 image, uint8 mask) -> (normalised float batch, int64 masks).

    The conversion runs once on the stacked batch instead of per sample: in the loader's workers
    when there are some, and a few small ops fewer between steps when the main process loads
    (bench/overhead.py). The values are the same: both kernels work pixel by pixel."""
    images, masks = zip(*samples)
    return to_model_input(torch.stack(images)), torch.stack(masks).long()


def collate_unlabeled(images: list[torch.Tensor]) -> torch.Tensor:
    return to_model_input(torch.stack(images))


def train_transform(image_size: list[int] | None, augment: bool, jitter: bool = True) -> v2.Compose:
    """The per-sample part of training (uint8 in, uint8 out; collate_train converts the batch).
    jitter=False: the geometric part only (FixMatch's weak view of an unlabeled image)."""
    steps: list = []
    if image_size is not None:
        if augment:
            # Scale-crop keeps the horizon-to-zenith structure of sky images while varying cloud size.
            steps.append(v2.RandomResizedCrop(image_size, scale=(0.5, 1.0), ratio=(0.75, 1.333), antialias=True))
        else:
            steps.append(v2.Resize(image_size, antialias=True))
    if augment:
        steps += [
            v2.RandomHorizontalFlip(),
            v2.RandomVerticalFlip(),  # whole-sky and microscope images have no preferred up
        ]
        if jitter:
            steps.append(v2.ColorJitter(brightness=0.25, contrast=0.25, saturation=0.25, hue=0.02))
    return v2.Compose(steps) if steps else v2.Identity()  # native size, no augmentation


def eval_transform(image_size: list[int] | None) -> v2.Compose:
    """Only the image is resized for inference; labels stay at native size for counting."""
    steps: list = [v2.Resize(image_size, antialias=True)] if image_size is not None else []
    return v2.Compose(steps + _to_float())
