"""What changes the weights besides the loss (models/losses.py): optimizer, learning-rate schedule,
the AMP grad scaler."""

from __future__ import annotations

import torch
from torch import nn



def make_optimizer(model: nn.Module, cfg: dict) -> torch.optim.Optimizer:
    if cfg["optimizer"] == "adamw":
        return torch.optim.AdamW(model.parameters(), lr=cfg["lr"], weight_decay=cfg["weight_decay"])
    return torch.optim.SGD(model.parameters(), lr=cfg["lr"], momentum=cfg["momentum"],
                           weight_decay=cfg["weight_decay"])


def poly_factor(it: int, max_iteration: int) -> float:
    return (1 - min(it, max_iteration - 1) / max_iteration) ** 0.9


def make_schedule(cfg: dict):
    """The lr factor per iteration: poly (power 0.9, torchvision's references) or constant. Poly
    reads cfg["max_iteration"] at every step: a time_budget plan (budget.py) sets it during the run."""
    return (lambda it: poly_factor(it, cfg["max_iteration"])) if cfg["lr_schedule"] == "poly" else (lambda it: 1.0)


def make_scaler(amp: bool, device: torch.device) -> torch.amp.GradScaler:
    """Loss scaling for fp16 autocast only; bf16 (and fp32) need none."""
    fp16 = amp and device.type == "cuda" and not torch.cuda.is_bf16_supported()
    return torch.amp.GradScaler(device.type, enabled=fp16)
