"""Sliding-window inference: the model sees overlapping tiles of one image, and the logits of the
tiles are averaged where they overlap (as MMSegmentation's "slide" mode does).

Free of torch so the ONNX path can use it on a node without PyTorch: it works on torch tensors and
NumPy arrays alike, through slicing and `+=` only.

Border effects: a tile's logits near its edges are computed from zero padding rather than the
neighbouring pixels, so near tile seams they differ a little from whole-image inference. Overlap
averages the seams with a neighbour's interior; a tile at least as large as the input is one
window and gives exactly the untiled result.
"""

from __future__ import annotations

from typing import Callable, Sequence


def starts(length: int, tile: int, stride: int) -> list[int]:
    """Window starts along one axis: every stride, plus one flush with the end."""
    if length <= tile:
        return [0]
    out = list(range(0, length - tile, stride))
    return out + [length - tile]


def windows(height: int, width: int, tile: int, overlap: int) -> list[tuple[int, int, int, int]]:
    """(top, left, bottom, right) of every window; all share one shape, so they batch."""
    stride = max(1, tile - overlap)
    return [
        (y, x, min(y + tile, height), min(x + tile, width))
        for y in starts(height, tile, stride)
        for x in starts(width, tile, stride)
    ]


def sliding_window(forward: Callable[[list], Sequence], image, tile: int, overlap: int, batch_size: int, zeros):
    """Averaged logits (C, H, W) of `image` (3, H, W).

    forward(list of (3, h, w) crops) returns their (C, h, w) logits; zeros(shape) makes an
    accumulator of the backend's kind (torch.zeros or numpy.zeros).
    """
    height, width = image.shape[-2:]
    boxes = windows(height, width, tile, overlap)
    total = count = None
    for first in range(0, len(boxes), batch_size):
        batch = boxes[first : first + batch_size]
        logits = forward([image[:, y0:y1, x0:x1] for y0, x0, y1, x1 in batch])
        for (y0, x0, y1, x1), one in zip(batch, logits):
            if total is None:
                total, count = zeros((one.shape[0], height, width)), zeros((1, height, width))
            total[:, y0:y1, x0:x1] += one
            count[:, y0:y1, x0:x1] += 1
    return total / count
