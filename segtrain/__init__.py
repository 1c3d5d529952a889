"""segtrain: train semantic segmentation models on your own folder of images and masks."""

import os

# PyTorch's OpenMP threads spin while they wait at the end of each parallel op. On cores shared
# with other busy processes (or with our own data-loading workers), a spinning thread takes the
# CPU from the very thread it waits for, and a training step ran up to 10x slower on two shared
# cores (BENCHMARKS.md). Sleeping instead is read when torch loads, so it is set here, before;
# a value the user set wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"
