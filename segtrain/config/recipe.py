"""segtrain's default recipe, in one place: what a config without these keys trains with.

Chosen to reach a high valid mean IoU fast on two CPU cores (BENCHMARKS.md, "The default recipe").
A config that sets `lr` keeps the original tool's SGD; an lr below SUM_LOSS_LR_THRESHOLD marks the
original FCN recipe (loss summed over pixels, lr ~1e-10, constant schedule, native input size).
"""

from __future__ import annotations

SUM_LOSS_LR_THRESHOLD = 1e-6
DEFAULT_MODEL = "lraspp_mobilenet_v3_large"
DEFAULT_OPTIMIZER = "adamw"
DEFAULT_LR = {"sgd": 0.02, "adamw": 0.001}
DEFAULT_IMAGE_SIZE = 160
DEFAULT_MAX_ITERATION = 2000
DEFAULT_INTERVAL_VALIDATE = 200
DEFAULT_BATCH_SIZE = 8


def written_out(n_train: int, image_size: int | None, n_workers: int) -> dict:
    """The default recipe key by key, as `segtrain init` writes it so the user sees what to change;
    batch and input size fitted to the folder (a tiny folder, its images' own size)."""
    return {
        "model": DEFAULT_MODEL,
        "max_iteration": DEFAULT_MAX_ITERATION,
        "interval_validate": DEFAULT_INTERVAL_VALIDATE,
        "batch_size": max(1, min(DEFAULT_BATCH_SIZE, n_train)),
        "optimizer": DEFAULT_OPTIMIZER,
        "lr": DEFAULT_LR[DEFAULT_OPTIMIZER],
        "image_size": image_size,
        "augment": True,
        "n_workers": n_workers,
        "output_dir": DEFAULT_MODEL,
    }
