"""What changes the weights besides the loss (models/losses.py): optimizer, learning-rate schedule,
the AMP grad scaler."""

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


# In the run's config when a time_budget plan changed max_iteration (training/budget.py): the
# [iteration, factor] the poly decay continues from, so the lr never rises when the run's end moves.
DECAY_KEY = "poly_decay_from"


def poly_factor(it: int, max_iteration: int, start: tuple[int, float] = (0, 1.0)) -> float:
    """Poly (power 0.9) from `start` = (iteration, factor) down to 0 at max_iteration; from (0, 1.0)
    it is the plain poly schedule (the same floats as without a start)."""
    first, factor = start
    return factor * (1 - (min(it, max_iteration - 1) - first) / (max_iteration - first)) ** 0.9


def lr_factor(cfg: dict, it: int) -> float:
    """The schedule's factor at iteration `it` under the config as it is now."""
    if cfg["lr_schedule"] != "poly":
        return 1.0
    return poly_factor(it, cfg["max_iteration"], tuple(cfg.get(DECAY_KEY) or (0, 1.0)))


def move_end(cfg: dict, it: int, max_iteration: int) -> None:
    """Set a new max_iteration at iteration `it`: the decay goes on from the factor it has reached
    and ends at the new end, so a longer run decays more slowly and a shorter one faster, but the
    lr never jumps back up (which recomputing poly over the new length would do)."""
    cfg[DECAY_KEY] = [it, lr_factor(cfg, it)]
    cfg["max_iteration"] = max_iteration


def make_schedule(cfg: dict):
    """The lr factor per iteration: poly (power 0.9, torchvision's references) or constant. It reads
    the config at every step: a time_budget plan (budget.py) moves the end during the run."""
    return lambda it: lr_factor(cfg, it)


def make_scaler(amp: bool, device: torch.device) -> torch.amp.GradScaler:
    """Loss scaling for fp16 autocast only; bf16 (and fp32) need none."""
    fp16 = amp and device.type == "cuda" and not torch.cuda.is_bf16_supported()
    return torch.amp.GradScaler(device.type, enabled=fp16)
