"""The one inference routine behind validation, evaluate and predict: the model sees the resized
input, and its logits are resized back to each image's native size before argmax, so metrics are
counted on the same pixels as any mask that predict writes."""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F


def autocast(device: torch.device, enabled: bool):
    """bf16 autocast on CUDA when asked (fp16 where bf16 is missing); the CPU runs fp32."""
    if not enabled or device.type != "cuda":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.autocast("cuda", dtype=dtype)


def native_logits(model, images: torch.Tensor, sizes: list[tuple[int, int]], amp: bool = False,
                  channels_last: bool = False) -> list[torch.Tensor]:
    """Per image, float32 logits (C, H, W) at its native size. The caller sets eval mode."""
    device = next(model.parameters()).device
    images = images.to(device, non_blocking=True)
    if channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    with torch.inference_mode(), autocast(device, amp):
        logits = model(images)["out"]
    out = []
    for i, size in enumerate(sizes):
        one = logits[i : i + 1].float()
        if tuple(one.shape[-2:]) != tuple(size):
            one = F.interpolate(one, size=tuple(size), mode="bilinear", align_corners=False)
        out.append(one[0])
    return out
