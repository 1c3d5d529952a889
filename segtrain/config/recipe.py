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


def written_out() -> dict:
    """The default recipe's keys the folder does not decide, as `segtrain init` writes them so the
    user sees what to change; model, input size, batch and loss are left open for `fit_recipe` to
    choose when training starts (init prints what it would choose). interval_validate is left out
    too: a config cannot say who wrote a value, so a written one would count as the user's choice
    and fix a time_budget run's validations, which its plan spaces itself (training/budget.py)."""
    return {
        "max_iteration": DEFAULT_MAX_ITERATION,
        "optimizer": DEFAULT_OPTIMIZER,
        "augment": True,
    }


# The default recipe fits the keys a config leaves open to the folder (the data's fingerprint,
# data/fingerprint.py) and the device, as nnU-Net plans from its dataset fingerprint. A config that
# sets lr (the original tool's, or one tuned by hand) is left as it is.
FIT_KEY = "fitted_to_data"  # in the run's config: the keys the recipe chose
FITTED_KEYS = ("model", "encoder", "output_dir", "image_size", "batch_size", "loss", "class_weights", "amp", "n_workers")
# A config that names its model (model, or the original's fcn) or an smp encoder chose the model:
# the recipe leaves model, encoder and the output folder named after the model alone.
MODEL_KEYS = ("model", "encoder", "output_dir")
MODEL_CHOSEN_BY = ("model", "fcn", "encoder")
# Input of about SIDE x SIDE pixels (the measured CPU default; a GPU affords 4x the pixels and
# twice the batch), rounded to multiples of SIZE_MULTIPLE: the strides of the models' encoders.
INPUT_SIDE = {"cpu": 160, "cuda": 320}
BATCH = {"cpu": DEFAULT_BATCH_SIZE, "cuda": 16}
SIZE_MULTIPLE = 16
# A class that is a large part of the task (at least THIN_CLASS_SHARE of the labelled pixels) but
# under THIN_WIDTH pixels wide at that input (data/fingerprint.py class_width) is lost by a model
# that sees the image at that scale and draws its output at 1/8 of it, as LR-ASPP does: membranes
# 5.5 px wide in ISBI's 512 px EM slices are 1.7 px at 160 px. The recipe then trains THIN_MODEL, a
# U-Net (its decoder draws at the input's full resolution), on an input grown until the class is
# THIN_WIDTH wide, up to THIN_MAX_GROWTH x the side. Measured on membrane, valid mean IoU after 5
# minutes each from scratch (BENCHMARKS.md section 3): LR-ASPP 0.465 at 160 px, 0.615 at 320 px;
# U-Net (resnet18) 0.770 at 256 px and at 320 px.
# A rare thin class (CamVid's poles, 1%) changes nothing: a larger input and a heavier model would
# cost every other class most of its iterations.
THIN_CLASS_SHARE = 0.05
THIN_WIDTH = 4.0
THIN_MAX_GROWTH = 2.0
THIN_MODEL = ("unet", "resnet18")
# DEFAULT_MODEL and THIN_MODEL[0] are marked recipe_choice in models/registry.py, where resume learns
# which run folders to look for (tests/test_registry.py keeps the two in step).
# A class of small objects (at least SMALL_CLASS_SHARE of the pixels: CamVid's poles, signs and
# pedestrians hold 0.7-1.1%) under SMALL_WIDTH pixels wide at the CPU's input keeps LR-ASPP, but a
# run with a time budget of at least LONG_BUDGET_S seconds gets a larger input, the side grown until
# the class is SMALL_WIDTH wide, up to SMALL_MAX_GROWTH x. The larger input costs iterations, which
# a short run cannot spare and a long one can: on CamVid (2 CPU cores, from scratch) 240x320 against
# the fitted 144x192 scored 0.446 against 0.453 after 3 minutes, 0.501 against 0.493 after 6, and
# 0.601 (0.574 and 0.584 in two more runs) against 0.551 after 30, with the valid loss no longer climbing
# (BENCHMARKS.md section 3).
# A run without a time budget keeps its input: there the larger input would triple its duration.
# Only small objects gain: swimseg's sky and cloud, 140-170 px wide, scored 0.843 at 256x256 after
# 30 minutes against 0.849 at 160x160.
SMALL_CLASS_SHARE = 0.005
SMALL_WIDTH = 3.0
SMALL_MAX_GROWTH = 1.75
LONG_BUDGET_S = 10 * 60
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
    if "lr" in raw:
        return []
    model_chosen = any(key in raw for key in MODEL_CHOSEN_BY)
    return [key for key in FITTED_KEYS if key not in raw and not (model_chosen and key in MODEL_KEYS)]


def fitted_size(median_size: tuple[int, int], aspect: float, side: int) -> list[int]:
    """[H, W] of about side x side pixels with the folder's median aspect ratio, never above the
    median image's own size (upsampling adds compute, not information)."""
    height, width = side / aspect**0.5, side * aspect**0.5
    scale = min(1.0, median_size[0] / height, median_size[1] / width)
    return [max(SIZE_MULTIPLE, round(length * scale / SIZE_MULTIPLE) * SIZE_MULTIPLE) for length in (height, width)]


def grown_side(fp, side: int, min_share: float, width: float, max_growth: float) -> tuple[int, int | None]:
    """(input side, the class that set it, or None): side, grown for the thinnest class that holds
    at least min_share of the pixels and is under `width` pixels wide at that side until it is that
    wide, to at most max_growth x side."""
    scale = min(1.0, side / min(fp.median_size))  # how the masks shrink to the input, about
    candidates = [c for c, share in enumerate(fp.class_share) if share >= min_share and fp.class_width[c] > 0]
    thinnest = min(candidates, key=lambda c: fp.class_width[c], default=None)
    if thinnest is None or fp.class_width[thinnest] * scale >= width:
        return side, None
    wanted = side * width / (fp.class_width[thinnest] * scale)
    return round(min(wanted, side * max_growth)), thinnest


def gpu_workers() -> int:
    """Workers to feed a GPU: every core but the main process's, up to GPU_WORKERS_MAX."""
    from segtrain.runtime.cpu_threads import available_cores

    return max(CPU_WORKERS, min(GPU_WORKERS_MAX, available_cores() - 1))


def fit_recipe(plan, spec, device_type: str, saved: dict | None = None, log=print) -> dict:
    """The values of the plan's open keys (plan[FIT_KEY]) fitted to the folder's fingerprint, with
    a line saying why. A resumed run (`saved`: its checkpoint's config) keeps the values it trained
    with, also those of a run started before the recipe was fitted."""
    keys = plan.get(FIT_KEY)
    if not keys:
        return {}
    if saved is not None:
        return {key: saved[key] for key in keys if key in saved}
    from segtrain.config.time_budget import describe_budget
    from segtrain.data.fingerprint import fingerprint

    fp = fingerprint(spec)
    device = "cuda" if device_type == "cuda" else "cpu"
    rarest = fp.rarest_present()
    rare = rarest is not None and fp.class_share[rarest] < RARE_CLASS_SHARE
    # A thin class is judged at the input the run will have: the config's own image_size when it sets one.
    given = None if "image_size" in keys else (min(plan["image_size"]) if plan["image_size"] else min(fp.median_size))
    side, thin = grown_side(fp, given or INPUT_SIDE[device], THIN_CLASS_SHARE, THIN_WIDTH, THIN_MAX_GROWTH)
    model, encoder = THIN_MODEL if thin is not None else (DEFAULT_MODEL, None)
    budget_s, small = plan.budget_seconds, None
    if thin is None and given is None and device == "cpu" and budget_s is not None and budget_s >= LONG_BUDGET_S:
        side, small = grown_side(fp, side, SMALL_CLASS_SHARE, SMALL_WIDTH, SMALL_MAX_GROWTH)
    chosen = {"model": model, "encoder": encoder, "output_dir": model,
              "image_size": fitted_size(fp.median_size, fp.aspect, side),
              "batch_size": min(BATCH[device], fp.n_train),
              "loss": RARE_CLASS_LOSS if rare else "ce",
              "class_weights": "auto" if rare else None,
              "amp": device == "cuda",
              "n_workers": gpu_workers() if device == "cuda" else CPU_WORKERS}
    fitted = {key: chosen[key] for key in keys}
    loss = fitted.get("loss", plan["loss"])

    grower = thin if thin is not None else small
    grown = (f", grown from {INPUT_SIDE[device]} for class {spec.class_names[grower]!r}: "
             f"{fp.class_share[grower]:.1%} of the pixels, {fp.class_width[grower]:.1f} px wide in the masks"
             + (f", with time_budget {describe_budget(budget_s)}" if small is not None else "")
             if grower is not None else "")
    why = {
        "model": f"model {model} with encoder {encoder} (its decoder draws at the input's resolution)"
                 if thin is not None else "",
        "image_size": f"input {'x'.join(map(str, chosen['image_size']))} (median image "
                      f"{fp.median_size[0]}x{fp.median_size[1]}, aspect {fp.aspect:.2f} kept, about {side}x{side} "
                      f"pixels on the {'GPU' if device == 'cuda' else 'CPU'}{grown}, no larger than the images)",
        "batch_size": f"batch {chosen['batch_size']}" + (f" ({fp.n_train} training images)"
                                                         if chosen["batch_size"] < BATCH[device] else ""),
    }
    if device == "cuda":
        why["amp"] = "AMP (bf16 autocast)" if chosen["amp"] else ""
        why["n_workers"] = f"{chosen['n_workers']} data-loading workers (the GPU waits on the CPU's augmentation)"
    balance = [f"loss {loss}"] * ("loss" in keys) + ["class_weights auto"] * ("class_weights" in keys and rare)
    if balance and rarest is not None:
        why["loss"] = (f"{', '.join(balance)} (rarest class {spec.class_names[rarest]!r}: "
                       f"{fp.class_share[rarest]:.1%} of the labelled pixels of {fp.sampled_masks} masks, "
                       f"{'under' if rare else 'not under'} {RARE_CLASS_SHARE:.0%})")
    log(f"recipe fitted to {fp.n_train} training images: "
        + "; ".join(text for key, text in why.items() if text and (key in keys or key == "loss")))
    log(f"recipe: set {'/'.join(key for key in keys if key != 'output_dir')} in config.list to choose otherwise")
    return fitted
