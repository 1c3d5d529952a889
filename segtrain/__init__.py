"""segtrain: train semantic segmentation models on your own folder of images and masks.

The Python API (segtrain/api.py, docs/api.md) loads on first use, so `import segtrain` stays light:
no torch, and no look at the machine (how PyTorch's threads wait is chosen when a command or
segtrain.train starts: runtime/cpu_threads.py).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from segtrain.errors import SegtrainError
from segtrain.version import __version__

if TYPE_CHECKING:
    from segtrain.api import LogRow, Run, audit, check, demo, download, evaluate, export, fetch_weights, init, load, \
        plot, plugin, predict, test, train
    from segtrain.use.predictor import Predictor

API = ("train", "test", "load", "evaluate", "predict", "export", "audit", "check", "init", "download",
       "fetch_weights", "plugin", "plot", "demo", "Run", "LogRow", "Predictor")
__all__ = ["SegtrainError", "__version__", *API]


def __getattr__(name: str):
    """PEP 562: segtrain.train and the rest of the API import their module when first asked for."""
    if name == "Predictor":  # NumPy and Pillow load with it
        from segtrain.use.predictor import Predictor

        return Predictor
    if name in API:
        from segtrain import api

        return getattr(api, name)
    raise AttributeError(f"module 'segtrain' has no attribute {name!r}")
