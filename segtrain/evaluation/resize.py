"""Logits back to an image's native size, and class masks from them in strips of rows.

One bilinear resize (align_corners=False, no antialias: the source rows and columns and weights
torch's `interpolate` uses) written as separate multiplies and adds, so every output pixel is the
same float computation whichever rows are asked for and whether the logits are torch tensors or
NumPy arrays: a checkpoint and its exported file resize alike, and a mask made strip by strip
equals one made whole. Strips are what bound predict's memory on a large image: the full C x H x W
float logits of a 9400 x 9400 image are 0.7 GB for two classes, a strip of them 16 MB
(BENCHMARKS.md section 10).

Free of torch at import, like tiling.py, so the ONNX path runs without PyTorch.
"""

from __future__ import annotations

import numpy as np

# Floats of one strip of resized logits (C x rows x W): 16 MB; a strip is at least one row.
STRIP_FLOATS = 4 << 20


def _axis(n_in: int, n_out: int):
    """Source indices and weights of torch's bilinear resize with align_corners=False, no antialias."""
    src = np.maximum((np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5, 0.0)
    low = np.minimum(np.floor(src).astype(np.int64), n_in - 1)
    high = np.minimum(low + 1, n_in - 1)
    frac = (src - low).astype(np.float32)
    return low, high, 1 - frac, frac


def resize_logits(logits, size: tuple[int, int], rows: tuple[int, int] | None = None):
    """(C, h, w) -> (C, H, W) bilinearly, or only output rows [start, stop) of it; torch or NumPy."""
    height, width = size
    if tuple(logits.shape[-2:]) == (height, width):
        return logits if rows is None else logits[:, rows[0]:rows[1]]
    start, stop = rows or (0, height)
    y0, y1, wy0, wy1 = (a[start:stop] for a in _axis(logits.shape[1], height))
    x0, x1, wx0, wx1 = _axis(logits.shape[2], width)
    if not isinstance(logits, np.ndarray):  # a torch tensor: the same arrays on its device
        import torch

        y0, y1, wy0, wy1, x0, x1, wx0, wx1 = (torch.from_numpy(a).to(logits.device)
                                              for a in (y0, y1, wy0, wy1, x0, x1, wx0, wx1))
    top = logits[:, y0, :] * wy0[:, None] + logits[:, y1, :] * wy1[:, None]
    return top[:, :, x0] * wx0 + top[:, :, x1] * wx1


def strip_rows(n_classes: int, width: int) -> int:
    return max(1, STRIP_FLOATS // max(1, n_classes * width))


def class_mask(logits, size: tuple[int, int]) -> np.ndarray:
    """H x W uint8 class indices (the first on ties) of `logits` (C, h, w) resized to `size`,
    strip by strip: the full resized logits never exist at once."""
    height, width = size
    if isinstance(logits, np.ndarray):
        def indices(strip):
            return strip.argmax(0)
    else:
        from segtrain.evaluation.argmax import class_map

        def indices(strip):
            return class_map(strip, 0).cpu().numpy()
    mask = np.empty((height, width), dtype=np.uint8)
    step = strip_rows(logits.shape[0], width)
    for start in range(0, height, step):
        mask[start:start + step] = indices(resize_logits(logits, size, (start, min(start + step, height))))
    return mask
