"""Test-time augmentation (evaluate and predict --tta): the model also sees each input flipped
left-right, and the flipped logits, flipped back, are averaged with the plain ones.

Left-right only: it is valid for any picture whose left and right are arbitrary (street scenes,
photos, skies, cells) and doubles the cost; an upside-down street is no picture a model should
judge, and more flips would multiply the cost again.
Logits, not probabilities, are averaged: averaging is linear, so it commutes with the bilinear
resize back to native size and with the averaging of overlapping tiles, and checkpoints and
exported files (which output logits) give the same result whichever step comes first.

Free of torch, like tiling.py, so ONNX files on a node without PyTorch get it too: it works on
torch tensors and NumPy arrays alike.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

FLIP_AXES = (-1,)  # the width axis of NCHW inputs and logits


def _flip(batch, axis: int):
    return np.flip(batch, axis) if isinstance(batch, np.ndarray) else batch.flip(axis)


def with_flips(forward: Callable) -> Callable:
    """forward(NCHW batch) -> NCHW logits, made to average the logits of the batch and of its
    flips along FLIP_AXES, each flipped back."""
    def averaged(batch):
        total = forward(batch)
        for axis in FLIP_AXES:
            total = total + _flip(forward(_flip(batch, axis)), axis)
        return total / (len(FLIP_AXES) + 1)

    return averaged
