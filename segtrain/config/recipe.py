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


# The default recipe fits the keys a config leaves open to the folder (the data's fingerprint,
# data/fingerprint.py) and the device, as nnU-Net plans from its dataset fingerprint. A config that
# sets lr (the original tool's, or one tuned by hand) is left as it is.
FIT_KEY = "fitted_to_data"  # in the run's config: the keys the recipe chose
FITTED_KEYS = ("image_size", "batch_size", "loss", "class_weights", "amp", "n_workers")
# Input of about SIDE x SIDE pixels (the measured CPU default; a GPU affords 4x the pixels and
# twice the batch), rounded to multiples of SIZE_MULTIPLE: the strides of the models' encoders.
INPUT_SIDE = {"cpu": 160, "cuda": 320}
BATCH = {"cpu": DEFAULT_BATCH_SIZE, "cuda": 16}
SIZE_MULTIPLE = 16
# Below this share of the labelled pixels a class gets too little of a plain cross-entropy's
# attention: Dice weighs each present class alike, median-frequency weights do so for cross-entropy.
RARE_CLASS_SHARE = 0.02
RARE_CLASS_LOSS = "ce+dice"
# On a GPU, bf16 autocast made a training step 1.5x faster (bench/gpu.py, H100), and the CPU's
# data loading is what holds the model back: camvid's default recipe trained at 6.2 it/s with 2
# workers and 21 it/s with 12 workers and AMP (BENCHMARKS.md, section 5). On the CPU, 2 workers
# (the original's default) beside the model's threads measured best (section 2).
CPU_WORKERS = 2
GPU_WORKERS_MAX = 12


def open_keys(raw: dict) -> list[str]:
    """In `resolve`: the keys the recipe may fit (none for a config that sets lr)."""
    return [] if "lr" in raw else [key for key in FITTED_KEYS if key not in raw]


def fitted_size(median_size: tuple[int, int], aspect: float, side: int) -> list[int]:
    """[H, W] of about side x side pixels with the folder's median aspect ratio, never above the
    median image's own size (upsampling adds compute, not information)."""
    height, width = side / aspect**0.5, side * aspect**0.5
    scale = min(1.0, median_size[0] / height, median_size[1] / width)
    return [max(SIZE_MULTIPLE, round(length * scale / SIZE_MULTIPLE) * SIZE_MULTIPLE) for length in (height, width)]


def gpu_workers() -> int:
    """Workers to feed a GPU: every core but the main process's, up to GPU_WORKERS_MAX."""
    from segtrain.runtime.cpu_threads import available_cores

    return max(CPU_WORKERS, min(GPU_WORKERS_MAX, available_cores() - 1))


def fit_recipe(cfg: dict, spec, device_type: str, saved: dict | None = None, log=print) -> None:
    """Fill cfg's open keys (cfg[FIT_KEY]) from the folder's fingerprint and say why. A resumed run
    (`saved`: its checkpoint's config) keeps the values it trained with, also those of a run
    started before the recipe was fitted."""
    keys = cfg.get(FIT_KEY)
    if not keys:
        return
    if saved is not None:
        cfg.update({key: saved[key] for key in keys if key in saved})
        return
    from segtrain.data.fingerprint import fingerprint

    fp = fingerprint(spec)
    device = "cuda" if device_type == "cuda" else "cpu"
    rarest = fp.rarest_present()
    rare = rarest is not None and fp.class_share[rarest] < RARE_CLASS_SHARE
    chosen = {"image_size": fitted_size(fp.median_size, fp.aspect, INPUT_SIDE[device]),
              "batch_size": min(BATCH[device], fp.n_train),
              "loss": RARE_CLASS_LOSS if rare else "ce",
              "class_weights": "auto" if rare else None,
              "amp": device == "cuda",
              "n_workers": gpu_workers() if device == "cuda" else CPU_WORKERS}
    cfg.update({key: chosen[key] for key in keys})

    side = INPUT_SIDE[device]
    why = {
        "image_size": f"input {'x'.join(map(str, chosen['image_size']))} (median image "
                      f"{fp.median_size[0]}x{fp.median_size[1]}, aspect {fp.aspect:.2f} kept, about {side}x{side} "
                      f"pixels on the {'GPU' if device == 'cuda' else 'CPU'}, no larger than the images)",
        "batch_size": f"batch {chosen['batch_size']}" + (f" ({fp.n_train} training images)"
                                                         if chosen["batch_size"] < BATCH[device] else ""),
    }
    if device == "cuda":
        why["amp"] = "AMP (bf16 autocast)" if chosen["amp"] else ""
        why["n_workers"] = f"{chosen['n_workers']} data-loading workers (the GPU waits on the CPU's augmentation)"
    balance = [f"loss {cfg['loss']}"] * ("loss" in keys) + ["class_weights auto"] * ("class_weights" in keys and rare)
    if balance and rarest is not None:
        why["loss"] = (f"{', '.join(balance)} (rarest class {spec.class_names[rarest]!r}: "
                       f"{fp.class_share[rarest]:.1%} of the labelled pixels of {fp.sampled_masks} masks, "
                       f"{'under' if rare else 'not under'} {RARE_CLASS_SHARE:.0%})")
    log(f"recipe fitted to {fp.n_train} training images: "
        + "; ".join(text for key, text in why.items() if text and (key in keys or key == "loss")))
    log(f"recipe: set {'/'.join(keys)} in config.list to choose otherwise")
