"""The torch device a command runs on, shared by training and by using a model (which must not
need the training code)."""

from __future__ import annotations

import torch

from segtrain.errors import ConfigError


def select_device(wanted: str, log=print) -> torch.device:
    if wanted == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if wanted.startswith("cuda") and not torch.cuda.is_available():
        log(f"note: device {wanted!r} asked for, but no CUDA GPU is visible; running on the CPU.")
        return torch.device("cpu")
    if wanted.startswith("cuda:") and int(wanted[5:]) >= torch.cuda.device_count():
        raise ConfigError(
            f"device {wanted!r}: only {torch.cuda.device_count()} GPU(s) visible. Set \"device\" to 'cuda:0'."
        )
    return torch.device(wanted)
