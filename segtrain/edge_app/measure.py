"""What a mask measures: each class's share of the pixels that count.

The void class (the black border of a fisheye lens, an "undefined" class: the training config's
"void_class") is outside what is measured: its pixels are in no denominator, and
its own entry is its share of the whole image, reported apart. `segtrain predict`'s summary.csv
and the edge app both take their numbers from `coverage`.
"""

from __future__ import annotations

from typing import List, Optional

import numpy as np

COUNT_CHUNK = 1 << 20  # pixels counted at a time: bincount makes an int64 copy of what it counts


def coverage(mask: np.ndarray, n_classes: int, void_class: Optional[int] = None) -> List[float]:
    """Per class, the share of the non-void pixels whose class it is (NaN when every pixel is
    void); the void class's entry is its share of the whole image."""
    flat = mask.ravel()
    counts = sum(np.bincount(flat[start:start + COUNT_CHUNK], minlength=n_classes)[:n_classes]
                 for start in range(0, flat.size, COUNT_CHUNK)).astype(np.float64)
    if void_class is None:
        return [float(v) for v in counts / mask.size]
    measured = mask.size - counts[void_class]
    shares = [float(v / measured) if measured else float("nan") for v in counts]
    shares[void_class] = float(counts[void_class] / mask.size)
    return shares
