"""Decoded images and masks held in memory, so each file is decoded once per run, not once per
epoch (PNG/JPEG decoding and label decoding cost more than the rest of the input pipeline).

The cache holds the decoded uint8 arrays at native size (image H*W*3 bytes + mask H*W bytes), so
augmentation sees exactly what it would see without it. It is filled in the main process before
the DataLoader starts its workers: forked workers then share those pages copy-on-write instead of
each decoding and holding its own copy. Pairs that do not fit the budget are decoded from disk as
before, so memory stays at most the budget whatever the number of images.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

from PIL import Image

from segtrain.data.folder import SegmentationDataset

BYTES_PER_PIXEL = 4  # RGB image + one-byte label


def decoded_bytes(dataset: SegmentationDataset, index: int) -> int:
    with Image.open(dataset.image_path(index)) as img:  # header only
        width, height = img.size
    return width * height * BYTES_PER_PIXEL


def fill_cache(datasets: list[SegmentationDataset], budget_mb: float) -> tuple[int, int, int]:
    """Decode pairs of the datasets, in order, into their caches while they fit in budget_mb.

    Returns (pairs cached, pairs in all, bytes used).
    """
    budget = int(budget_mb * 2**20)
    used, chosen = 0, []
    for dataset in datasets:
        for index in range(len(dataset)):
            size = decoded_bytes(dataset, index)
            if used + size <= budget:
                used += size
                chosen.append((dataset, index))
    # Pillow releases the GIL while decoding, so threads decode in parallel.
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        decoded = pool.map(lambda item: item[0].load(item[1]), chosen)
        for (dataset, index), arrays in zip(chosen, decoded):
            dataset.cache[index] = arrays
    return len(chosen), sum(len(d) for d in datasets), used
