"""An exponential moving average (EMA) of the weights, updated after every step (config
"ema_decay"); validation and the checkpoints' model_state_dict use it when it is on.

torch's AveragedModel does the bookkeeping. Its buffers (BatchNorm's running statistics) are
averaged with the weights (use_buffers=True, as torchvision's reference scripts and timm do), so
the statistics belong to the averaged weights rather than to the live ones.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

# The decay starts low and rises to ema_decay: min(decay, (1 + n) / (WARMUP + n)) after n updates
# (TensorFlow's ExponentialMovingAverage with num_updates). Without it a short run's average would
# be mostly its first, untrained weights: 0.999 keeps 13% of them after 2000 iterations.
WARMUP = 10


def warmed_up(decay: float):
    """get_ema_multi_avg_fn's update with the decay of update n warmed up as above."""
    def update(averaged: list[torch.Tensor], current: list[torch.Tensor], n_averaged: torch.Tensor) -> None:
        n = float(n_averaged)  # on a GPU a wait, which global_step's float(loss) makes right after anyway
        get_ema_multi_avg_fn(min(decay, (1 + n) / (WARMUP + n)))(averaged, current, n_averaged)

    return update


def make_ema(model: nn.Module, decay: float) -> AveragedModel:
    """An average that starts as a copy of `model` (the unwrapped network, not its DDP wrapper)."""
    return AveragedModel(model, multi_avg_fn=warmed_up(decay), use_buffers=True)
