"""What changes the weights besides the loss (models/losses.py): optimizer and the AMP grad scaler
(the learning rate's schedule is the run's, training/schedule.py)."""

from __future__ import annotations

import torch
from torch import nn


# Devices with fused SGD and AdamW kernels in PyTorch 2.x.
FUSED_DEVICES = ("cpu", "cuda")


def make_optimizer(model: nn.Module, cfg: dict) -> torch.optim.Optimizer:
    """SGD or AdamW, fused where PyTorch has the kernels: one call updates every weight, where its
    default loops over the parameters in Python. On 2 CPU cores, LR-ASPP's ~300 tensors took 3.2 ms
    an SGD step and 7.4 ms an AdamW step, fused 1.2 and 2.5 ms: 3-9% of a training step
    (BENCHMARKS.md section 7). A resumed run keeps the kernels its checkpoint was made with (the
    choice is saved in the optimizer's state), so it continues exactly."""
    params = list(model.parameters())
    fused = all(p.device.type in FUSED_DEVICES and p.is_floating_point() for p in params)
    if cfg["optimizer"] == "adamw":
        return torch.optim.AdamW(params, lr=cfg["lr"], weight_decay=cfg["weight_decay"], fused=fused)
    return torch.optim.SGD(params, lr=cfg["lr"], momentum=cfg["momentum"], weight_decay=cfg["weight_decay"],
                           fused=fused)


def make_scaler(amp: bool, device: torch.device) -> torch.amp.GradScaler:
    """Loss scaling for fp16 autocast only; bf16 (and fp32) need none."""
    fp16 = amp and device.type == "cuda" and not torch.cuda.is_bf16_supported()
    return torch.amp.GradScaler(device.type, enabled=fp16)
