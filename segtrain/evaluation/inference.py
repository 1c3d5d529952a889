"""The one inference routine behind validation, evaluate and predict: the model sees the resized
input, and its logits are resized back to each image's native size before argmax, so metrics are
counted on the same pixels as any mask that predict writes."""

from __future__ import annotations

import contextlib

import torch

from segtrain.evaluation.resize import resize_logits
from segtrain.evaluation.tiling import sliding_window
from segtrain.evaluation.tta import with_flips


def autocast(device: torch.device, enabled: bool):
    """bf16 autocast on CUDA when asked (fp16 where bf16 is missing); the CPU runs fp32."""
    if not enabled or device.type != "cuda":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.autocast("cuda", dtype=dtype)


# On the CPU, channels_last made a training step 1.2-1.4x faster from 160 px up (LR-ASPP, U-Net;
# fcn_resnet18/50, DeepLabV3+ and SegFormer gained 0-6%), 1.29x at camvid's fitted 144x192 (LR-ASPP,
# batch 8, BENCHMARKS.md section 3) and 1-4% slower at 128 px and below (LR-ASPP),
# bench/cpu_formats.py; on CUDA it is what AMP's convolutions want.
CPU_CHANNELS_LAST_MIN_SIDE = 144


def use_channels_last(setting: bool | None, image_size: list[int] | None, device: torch.device) -> bool:
    """The config's `channels_last`, or for null: on CUDA, and on the CPU from 144 px (native size counts as large)."""
    if setting is not None:
        return setting
    return device.type == "cuda" or image_size is None or min(image_size) >= CPU_CHANNELS_LAST_MIN_SIDE


def model_logits(model, images: torch.Tensor, amp: bool = False, channels_last: bool = False) -> torch.Tensor:
    """float32 logits (N, C, h, w) at the input's size; `images` already on the model's device."""
    if channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    with torch.inference_mode(), autocast(images.device, amp):
        return model(images)["out"].float()


def model_size_logits(model, images: torch.Tensor, amp: bool = False, channels_last: bool = False,
                      tile: int | None = None, overlap: int = 0, tta: bool = False):
    """Per image, float32 logits (C, h, w) at the model input's size. The caller sets eval mode.

    With `tile`, each image is run as overlapping tile x tile windows (see segtrain.tiling),
    batched as many at a time as there are images in `images`. With `tta`, every batch the model
    sees is also run flipped (see segtrain.evaluation.tta).
    """
    device = next(model.parameters()).device
    images = images.to(device, non_blocking=True)

    def forward(batch):
        return model_logits(model, batch, amp, channels_last)

    forward = with_flips(forward) if tta else forward
    if tile is None:
        return forward(images)

    def zeros(shape):
        return torch.zeros(shape, device=device)

    return [sliding_window(lambda crops: forward(torch.stack(crops)), image, tile, overlap, len(images), zeros)
            for image in images]


def native_logits(model, images: torch.Tensor, sizes: list[tuple[int, int]], amp: bool = False,
                  channels_last: bool = False, tile: int | None = None, overlap: int = 0,
                  tta: bool = False) -> list[torch.Tensor]:
    """Per image, float32 logits (C, H, W) at its native size (evaluation/resize.py): model_size_logits
    resized back."""
    logits = model_size_logits(model, images, amp, channels_last, tile, overlap, tta)
    return [resize_logits(one, size) for one, size in zip(logits, sizes)]
