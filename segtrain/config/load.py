"""config.list: read it, apply command-line overrides, check every value, and resolve defaults.

The original tool's keys keep their meaning. Keys it did not have default to a recipe that
trains well on its own; `resolve` records every decision so a checkpoint can rebuild the run.
"""

from __future__ import annotations

import difflib
import json
import math
import os
from pathlib import Path
from typing import Any

from segtrain.config import user_json
from segtrain.config.plan import Plan
from segtrain.config.time_budget import budget_seconds
from segtrain.config.user_json import MAX_JSON_BYTES
from segtrain.errors import ConfigError
from segtrain.run_folder import RUN_FOLDER_PREFIX, longest_output_dir
from segtrain.textfiles import read_user_text

from segtrain.config.recipe import (DEFAULT_BATCH_SIZE, DEFAULT_IMAGE_SIZE, DEFAULT_INTERVAL_VALIDATE, DEFAULT_LR,
                                    DEFAULT_MAX_ITERATION, DEFAULT_MODEL, DEFAULT_OPTIMIZER, FIT_KEY,
                                    SUM_LOSS_LR_THRESHOLD, open_keys)

# key -> (default, one-line meaning). Defaults of None are resolved in `resolve`.
KEYS: dict[str, tuple[Any, str]] = {
    # The original tool's keys.
    "max_iteration": (DEFAULT_MAX_ITERATION, "training iterations (one batch each)"),
    "lr": (None, "learning rate; absent = the optimizer's default (sgd 0.02, adamw 0.001), a mean loss and poly schedule"),
    "momentum": (0.9, "SGD momentum (adamw uses betas 0.9, 0.999)"),
    "weight_decay": (1e-4, "weight decay (decoupled for adamw)"),
    "interval_validate": (DEFAULT_INTERVAL_VALIDATE, "validate (and checkpoint) every this many iterations"),
    "batch_size": (DEFAULT_BATCH_SIZE, "images per training batch"),
    "backbone": ("resnet", "original key: backbone family (only 'resnet')"),
    "fcn": (None, "original key: '50' or '101' (picks fcn_resnet50/101 when `model` is absent)"),
    "output_dir": (None, "outputs go to ROOT/MODEL-<output_dir>; absent = the model name"),
    "pretrained_net": ("", "checkpoint to start from, relative to ROOT ('' = none)"),
    "n_workers": (2, "data-loading worker processes"),
    "mode": ("train", "'train', or 'test': predict (and score) ROOT/test with pretrained_net"),
    # segtrain's keys.
    "optimizer": (None, "'sgd' or 'adamw'; absent = sgd when the config sets lr (the original's keys), else adamw"),
    "model": (None, "registered model name; absent = from backbone+fcn, else fitted to the folder (lraspp_mobilenet_v3_large; "
                     "unet with resnet18 for a thin class of at least 5% of the pixels)"),
    "image_size": (None, "training input size: int (square) or [H, W]; null = native size; "
                   "absent = fitted to the folder (no lr in the config: about 160x160 with the images' aspect, larger "
                   "for a thin class, or on the CPU for small objects with a time_budget of 10 minutes or more), "
                   "native for the original recipe"),
    "aux_loss": (False, "train with the auxiliary head (weight 0.5)"),
    "loss_reduction": (None, "'sum' over pixels (original) or 'mean'; absent = by lr"),
    "lr_schedule": (None, "'poly' or 'constant'; absent = constant for the original recipe, else poly"),
    "time_budget": (None, "train for this long (e.g. \"30m\", \"90s\", \"1h30m\" or seconds): max_iteration and "
                    "interval_validate are planned from measured speed so the schedule ends on time; null = off"),
    "seed": (0, "random seed; two runs of one config match on the CPU"),
    "device": ("auto", "'auto', 'cpu', 'cuda' or 'cuda:N'"),
    "valid_fraction": (0.2, "share of train/ held out for validation when there is no valid/"),
    "ignore_index": (None, "mask value that is no class: neither learned nor scored (e.g. CamVid's 11, VOC's 255)"),
    "void_class": (None, "name of a class outside what you measure (a fisheye lens's border, \"undefined\"): the model "
                   "learns to find it, but it is left out of the mean IoU (reported apart) and of every class fraction's "
                   "denominator (predict, the edge app); null = none"),
    "label_threshold": (None, "grey value above which a pixel is class 1 (two-class masks)"),
    "pretrained_backbone": (None, "ImageNet backbone weights: true, false, or null = if available"),
    "weights_dir": (None, "folder of ImageNet weights brought along for a machine without internet (written by "
                    "`segtrain weights`; relative to ROOT); null = the SEGTRAIN_WEIGHTS environment variable, else "
                    "torch's and Hugging Face's caches, else a download"),
    "augment": (True, "random flips, scale-crop and colour jitter during training"),
    "sync_bn": (False, "SyncBatchNorm across GPUs under torchrun (CUDA only)"),
    "amp": (False, "mixed precision on CUDA (bf16 where supported)"),
    "channels_last": (None, "channels_last memory format; null = on CUDA, and on the CPU for inputs of 144 px and up "
                      "(1.0-1.4x faster there, 1-4% slower below: bench/cpu_formats.py)"),
    "compile": (False, "torch.compile the model for training: +3-4% a step on the CPU after 30-60 s of compiling "
                "(pays back after thousands of iterations, bench/cpu_formats.py); on a GPU see BENCHMARKS.md"),
    "log_interval": (20, "print a progress line every this many iterations"),
    "max_visualizations": (9, "validation samples drawn in each visualization_viz tile"),
    "tensorboard": (False, "also log to MODEL-<output_dir>/tensorboard (needs: pip install tensorboard)"),
    "mlflow_tracking_uri": (None, "log the run to MLflow (config, validation scores, report, log.csv, best model) at this "
                            "tracking URI; null = MLFLOW_TRACKING_URI when set, else off (needs: pip install 'segtrain[mlflow]')"),
    "cache_mb": (1024, "memory for decoded images and masks (decoded once, not every epoch); 0 = off"),
    "threads": (None, "CPU threads for the model; null = PyTorch's default (one per core); 1 on a busy shared machine"),
    "encoder": (None, "encoder of an smp model (e.g. 'resnet34', 'mobilenet_v2', 'mit_b0'); absent = resnet34 (segformer: mit_b0)"),
    "loss": ("ce", "'ce', 'dice', 'focal', 'lovasz' or a sum such as 'ce+dice'"),
    "class_weights": (None, "loss weight per class: a list (one per class), 'auto' (median frequency of the training pixels) or null"),
    "ema_decay": (None, "average the weights over training (EMA) with this decay, e.g. 0.999 (about the last 1000 "
                  "iterations; a decay, not a switch, because the window must fit the run's length); validation, "
                  "checkpoints and export use the average; null = off"),
    "unlabeled_dir": (None, "folder of images without masks used for FixMatch consistency (relative to ROOT); "
                      "null = ROOT/unlabeled when it exists, else off"),
    "unlabeled_weight": (1.0, "weight of the unlabeled images' consistency loss"),
    "unlabeled_threshold": (None, "confidence (max softmax) from which a pixel of an unlabeled image gets a pseudo-label; "
                            "null = 0.8 with two classes, 0.95 (FixMatch's) with more"),
    "unlabeled_batch_size": (None, "unlabeled images per training step; null = batch_size"),
    "unlabeled_colour": (None, "the strong view of an unlabeled image also jitters saturation and sometimes greys it "
                         "(UniMatch's view); false keeps its colours; null = false where colour alone tells the "
                         "classes apart (sky and cloud), else true (BENCHMARKS.md section 8)"),
}

MODES = ("train", "test")
LOSS_REDUCTIONS = ("sum", "mean")
LR_SCHEDULES = ("poly", "constant")
OPTIMIZERS = ("sgd", "adamw")
# NumPy's legacy seeding (np.random.seed, used by data-loading workers) takes 0 .. 2**32 - 1 only.
MAX_SEED = 2**32 - 1
# A fixed bound, not a multiple of os.cpu_count(): a config (and the one stored in a checkpoint for
# --resume) moves between machines and must mean the same on each. No single machine segtrain runs
# on has more cores; far above it, OpenMP fails allocating per-thread state (threads=10**9 made
# libgomp ask for 216 GB and abort the process).
MAX_THREADS = 1024
# File names are at most 255 bytes on the usual file systems (ext4, XFS, APFS, NTFS); the run
# folder's name (run_folder.py) must fit.
NAME_MAX = 255
# The model's input side: a batch of 8 at 8192 x 8192 is 6 GB of input alone, and the activations
# of any registry model are tens of times more; at 60000 a file could make predict ask for 43 GB.
MIN_IMAGE_SIDE = 8
MAX_IMAGE_SIDE = 8192


def _location(text: str, pos: int) -> str:
    line = text.count("\n", 0, pos) + 1
    column = pos - (text.rfind("\n", 0, pos) + 1) + 1
    return f"line {line}, column {column}"


MISSING_CONFIG_HINT = " or run without --config to use the defaults"


def read_config_file(path: Path, missing_hint: str = MISSING_CONFIG_HINT) -> dict[str, Any]:
    if not path.exists():
        raise ConfigError(
            f"{path}: config file not found. Create it (a JSON object such as "
            f'{{"max_iteration": 1000}}){missing_hint}.'
        )
    if not path.is_file():  # a folder, or a FIFO that would block reading
        raise ConfigError(f"{path}: is not a regular file (a folder?). config.list must be a JSON file; "
                          "remove or rename what is there.")
    text = read_user_text(path, max_bytes=MAX_JSON_BYTES)
    try:
        data = user_json.loads(text, str(path))
    except json.JSONDecodeError as e:
        raise ConfigError(
            f"{path}: not valid JSON at {_location(text, e.pos)}: {e.msg}. "
            "config.list must be one JSON object with double-quoted keys and no trailing commas."
        ) from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: must hold a JSON object ({{...}}), found {type(data).__name__}.")
    return data


def parse_overrides(pairs: list[str]) -> dict[str, Any]:
    """`--set key=value`: the value is JSON where it parses (numbers, true, null, [..]), else a string."""
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set {pair!r}: expected key=value, e.g. --set lr=0.01")
        try:
            value = user_json.loads(raw, f"--set {key.strip()}")
        except json.JSONDecodeError:
            value = raw
        out[key.strip()] = value
    return out


# Keys of other training tools (Ultralytics, mmsegmentation, Keras) that people type first: what to use here.
OTHER_TOOLS_KEYS = {
    "epochs": "segtrain counts iterations (one batch each), not epochs: set max_iteration (an epoch is "
              "training images / batch_size iterations) or a time_budget such as \"30m\"",
    "imgsz": "use image_size (an int or [H, W])",
    "batch": "use batch_size",
    "lr0": "use lr",
    "learning_rate": "use lr",
    "workers": "use n_workers",
    "num_classes": "the classes are the lines of class_names.list",
}


def _check_known(raw: dict[str, Any], source: str) -> None:
    for key in raw:
        if key in OTHER_TOOLS_KEYS:
            raise ConfigError(f"{source}: unknown key {key!r}; {OTHER_TOOLS_KEYS[key]}.")
        if key not in KEYS:
            near = difflib.get_close_matches(key, list(KEYS), n=1)
            hint = f" Did you mean {near[0]!r}?" if near else f" Known keys: {', '.join(KEYS)}."
            raise ConfigError(f"{source}: unknown key {key!r}.{hint}")


def _number(cfg, key, source, *, integer=False, minimum=None, exclusive=False, maximum=None):
    value = cfg[key]
    if integer and isinstance(value, str) and value.strip().lstrip("-").isdigit():
        value = int(value)  # the original accepted "fcn": "101" style strings; be as lenient for ints
    ok_type = (int,) if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, ok_type) or (not integer and not math.isfinite(value)):
        kind = "an integer" if integer else "a number"
        raise ConfigError(f"{source}: key {key!r} must be {kind}, got {value!r}.")
    if minimum is not None and (value <= minimum if exclusive else value < minimum):
        bound = f"greater than {minimum}" if exclusive else f"at least {minimum}"
        raise ConfigError(f"{source}: key {key!r} must be {bound}, got {value!r}.")
    if maximum is not None and value > maximum:
        raise ConfigError(f"{source}: key {key!r} must be at most {maximum}, got {value!r}.")
    cfg[key] = value


def _choice(cfg, key, source, choices):
    if cfg[key] not in choices:
        raise ConfigError(
            f"{source}: key {key!r} is {cfg[key]!r}; choose one of {', '.join(map(repr, choices))}."
        )


def _side(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and MIN_IMAGE_SIDE <= value <= MAX_IMAGE_SIDE


def _image_size(value, source):
    if value is None:
        return None
    if _side(value):
        return [value, value]
    if isinstance(value, list) and len(value) == 2 and all(_side(v) for v in value):
        return list(value)
    raise ConfigError(
        f"{source}: key 'image_size' must be null, an integer {MIN_IMAGE_SIDE}..{MAX_IMAGE_SIDE} or [height, width] "
        f"of such integers, got {value!r}."
    )


def with_defaults(saved: dict[str, Any]) -> dict[str, Any]:
    """A config saved by an earlier segtrain (checkpoint, exported file) with the keys added
    since then at their defaults."""
    return {**{key: default for key, (default, _) in KEYS.items()}, **saved}


def resolve(raw: dict[str, Any], source: str = "config.list", name_max: int = NAME_MAX) -> Plan:
    """Check every key and fill every default: the run's plan, before it is fitted to the folder
    (training/setup.py fit_to_folder fits the keys listed under FIT_KEY)."""
    from segtrain.models.losses import check_loss_keys
    from segtrain.models.registry import MODELS  # the registry owns the list of names

    _check_known(raw, source)
    cfg = {key: default for key, (default, _) in KEYS.items()}
    cfg.update(raw)

    _check_numbers(cfg, source)
    _check_flags(cfg, source)
    if budget_seconds(cfg["time_budget"], source) is not None:
        # The budget plans the run's length, and its validations unless the config sets them
        # (training/schedule.py): null says so, a number is the config's own choice.
        for key in ("max_iteration", "interval_validate"):
            cfg[key] = cfg[key] if key in raw else None
    _resolve_recipe(cfg, "image_size" in raw, source)
    if open_keys(raw):  # chosen from the folder when training starts (recipe.fit_recipe)
        cfg[FIT_KEY] = open_keys(raw)

    _check_device(cfg["device"], source)
    cfg["model"] = _model_name(cfg, source, list(MODELS))
    cfg["encoder"] = _encoder(cfg, source)
    check_loss_keys(cfg, source)
    if cfg["output_dir"] in (None, ""):
        cfg["output_dir"] = cfg["model"]
    _output_dir(cfg["output_dir"], source, name_max)
    if not isinstance(cfg["pretrained_net"], str):
        raise ConfigError(f"{source}: key 'pretrained_net' must be a path string or \"\".")
    if cfg["void_class"] is not None and not (isinstance(cfg["void_class"], str) and cfg["void_class"]):
        raise ConfigError(f"{source}: key 'void_class' must be the name of a class in class_names.list, or null.")
    if cfg["weights_dir"] is not None and not (isinstance(cfg["weights_dir"], str) and cfg["weights_dir"]):
        raise ConfigError(f"{source}: key 'weights_dir' must be a folder path string or null.")
    return Plan(cfg)



def check_saved(saved: Any, source: str) -> dict[str, Any]:
    """A config stored in a model file (checkpoint or exported file) by an earlier run: the keys
    added since at their defaults, and every value under the rules `resolve` applies to
    config.list. Values the run resolved are checked, not resolved again; those an older file
    lacks stay null, as `with_defaults` leaves them."""
    if not isinstance(saved, dict):
        raise ConfigError(f"{source}: 'config' must be a JSON object, got {type(saved).__name__}.")
    cfg = with_defaults(saved)
    _check_numbers(cfg, source)
    _check_flags(cfg, source)
    _check_device(cfg["device"], source)
    cfg["image_size"] = _image_size(cfg["image_size"], source)
    for key, choices in (("optimizer", OPTIMIZERS), ("loss_reduction", LOSS_REDUCTIONS), ("lr_schedule", LR_SCHEDULES)):
        if cfg[key] is not None:
            _choice(cfg, key, source, choices)
    if cfg["lr"] is not None:
        _number(cfg, "lr", source, minimum=0, exclusive=True)
    try:
        from segtrain.models.losses import check_loss_keys
        from segtrain.models.smp_models import check_encoder
    except ImportError:  # an ONNX file on a node without PyTorch: only training and evaluate read these keys
        return cfg
    check_loss_keys(cfg, source)
    if cfg["encoder"] is not None:
        check_encoder(cfg["encoder"], source)
    return cfg


def _check_device(device, source: str) -> None:
    if not isinstance(device, str) or not (
        device in ("auto", "cpu", "cuda") or (device.startswith("cuda:") and device[5:].isdigit())
    ):
        raise ConfigError(f"{source}: key 'device' must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {device!r}.")


def _check_numbers(cfg: dict, source: str) -> None:
    for key in ("max_iteration", "interval_validate"):
        if cfg[key] is not None or cfg["time_budget"] is None:  # null: planned by the time budget
            _number(cfg, key, source, integer=True, minimum=1)
    _number(cfg, "batch_size", source, integer=True, minimum=1)
    _number(cfg, "n_workers", source, integer=True, minimum=0)
    _number(cfg, "seed", source, integer=True, minimum=0, maximum=MAX_SEED)
    _number(cfg, "log_interval", source, integer=True, minimum=1)
    _number(cfg, "max_visualizations", source, integer=True, minimum=0)
    _number(cfg, "cache_mb", source, minimum=0)
    if cfg["threads"] is not None:
        _number(cfg, "threads", source, integer=True, minimum=1, maximum=MAX_THREADS)
    _number(cfg, "momentum", source, minimum=0)
    _number(cfg, "weight_decay", source, minimum=0)
    if cfg["ema_decay"] is not None:
        _number(cfg, "ema_decay", source, minimum=0, exclusive=True, maximum=1)
        if cfg["ema_decay"] == 1:
            raise ConfigError(f"{source}: key 'ema_decay' must be below 1 (1 never moves the average), got 1.")
    _number(cfg, "valid_fraction", source, minimum=0, exclusive=True)
    if cfg["valid_fraction"] >= 1:
        raise ConfigError(f"{source}: key 'valid_fraction' must be below 1, got {cfg['valid_fraction']!r}.")
    _check_unlabeled(cfg, source)


def _check_unlabeled(cfg: dict, source: str) -> None:
    _number(cfg, "unlabeled_weight", source, minimum=0)
    if cfg["unlabeled_threshold"] is not None:
        _number(cfg, "unlabeled_threshold", source, minimum=0, maximum=1)
    if cfg["unlabeled_batch_size"] is not None:
        _number(cfg, "unlabeled_batch_size", source, integer=True, minimum=1)
    if cfg["unlabeled_dir"] is not None and (not isinstance(cfg["unlabeled_dir"], str) or not cfg["unlabeled_dir"]):
        raise ConfigError(f"{source}: key 'unlabeled_dir' must be a folder path string or null, "
                          f"got {cfg['unlabeled_dir']!r}.")


def _check_flags(cfg: dict, source: str) -> None:
    for key in ("aux_loss", "augment", "amp", "compile", "sync_bn", "tensorboard"):
        if not isinstance(cfg[key], bool):
            raise ConfigError(f"{source}: key {key!r} must be true or false, got {cfg[key]!r}.")
    for key in ("channels_last", "unlabeled_colour"):
        if cfg[key] not in (None, True, False):
            raise ConfigError(f"{source}: key {key!r} must be true, false or null, got {cfg[key]!r}.")
    if cfg["pretrained_backbone"] not in (None, True, False):
        raise ConfigError(f"{source}: key 'pretrained_backbone' must be true, false or null.")
    for key in ("ignore_index", "label_threshold"):
        if cfg[key] is not None:
            _number(cfg, key, source, integer=True, minimum=0)
            if cfg[key] > 255:
                raise ConfigError(f"{source}: key {key!r} must be at most 255, got {cfg[key]!r}.")
    _choice(cfg, "mode", source, MODES)
    if cfg["mlflow_tracking_uri"] is not None and not (isinstance(cfg["mlflow_tracking_uri"], str)
                                                       and cfg["mlflow_tracking_uri"].strip()):
        raise ConfigError(f"{source}: key 'mlflow_tracking_uri' must be a tracking URI such as \"http://host:5000\" "
                          f"or \"sqlite:///mlflow.db\", or null; got {cfg['mlflow_tracking_uri']!r}.")


def _resolve_recipe(cfg: dict, image_size_given: bool, source: str) -> None:
    """The keys a config may leave to the recipe: the original's (lr < SUM_LOSS_LR_THRESHOLD) or segtrain's."""
    if cfg["optimizer"] is None:
        # A config that sets lr was tuned for SGD, the original's only optimizer.
        cfg["optimizer"] = "sgd" if cfg["lr"] is not None else DEFAULT_OPTIMIZER
    _choice(cfg, "optimizer", source, OPTIMIZERS)
    if cfg["lr"] is None:
        cfg["lr"] = DEFAULT_LR[cfg["optimizer"]]
    _number(cfg, "lr", source, minimum=0, exclusive=True)
    if not image_size_given and cfg["lr"] >= SUM_LOSS_LR_THRESHOLD:
        cfg["image_size"] = DEFAULT_IMAGE_SIZE
    cfg["image_size"] = _image_size(cfg["image_size"], source)

    if cfg["loss_reduction"] is None:
        cfg["loss_reduction"] = "sum" if cfg["lr"] < SUM_LOSS_LR_THRESHOLD else "mean"
    _choice(cfg, "loss_reduction", source, LOSS_REDUCTIONS)
    if cfg["lr_schedule"] is None:
        cfg["lr_schedule"] = "constant" if cfg["lr"] < SUM_LOSS_LR_THRESHOLD else "poly"
    _choice(cfg, "lr_schedule", source, LR_SCHEDULES)


def _output_dir(name, source, name_max) -> None:
    if not isinstance(name, str) or any(c in name for c in "/\\\0") or name in (".", ".."):
        raise ConfigError(
            f"{source}: key 'output_dir' must be a plain folder name (no slashes, no NUL), got {name!r}."
        )
    try:
        size = len(name.encode("utf-8"))
    except UnicodeEncodeError:  # a lone surrogate ("\\udcff" in JSON) names no file
        raise ConfigError(f"{source}: key 'output_dir' holds characters no file name can hold, got {name!r}.") from None
    room = longest_output_dir(name_max)
    if size > room:
        raise ConfigError(f"{source}: key 'output_dir' is {size} bytes long; at most {room} fit in a folder name "
                          f"here ({RUN_FOLDER_PREFIX}<output_dir>, {name_max} bytes at most). Choose a shorter name.")


def _name_max(root: Path) -> int:
    """The longest file name ROOT's file system takes (NAME_MAX where it can be asked)."""
    try:
        return os.pathconf(root, "PC_NAME_MAX")
    except (OSError, ValueError, AttributeError):  # ROOT missing (reported later), or no pathconf (Windows)
        return NAME_MAX


def _encoder(cfg, source) -> str | None:
    from segtrain.models import smp_models
    from segtrain.models.registry import MODELS, SMP, names

    entry = MODELS[cfg["model"]]
    if not entry.takes_encoder:
        if cfg["encoder"] is not None:
            raise ConfigError(f"{source}: key 'encoder' applies to smp models ({', '.join(names(SMP))}); "
                              f"{cfg['model']} has its backbone in its name. Remove 'encoder' or pick such a model.")
        return None
    if cfg["encoder"] is not None:
        smp_models.check_encoder(cfg["encoder"], source)
    return entry.encoder(cfg["encoder"])


def _model_name(cfg, source, names) -> str:
    if cfg["model"] is not None:
        if cfg["model"] not in names:
            near = difflib.get_close_matches(str(cfg["model"]), names, n=1)
            hint = f" Did you mean {near[0]!r}?" if near else ""
            raise ConfigError(
                f"{source}: key 'model' is {cfg['model']!r}, which is not a known model.{hint} "
                f"Known models: {', '.join(names)}."
            )
        return cfg["model"]
    if cfg["backbone"] != "resnet":
        raise ConfigError(
            f"{source}: key 'backbone' is {cfg['backbone']!r}; the only backbone family is 'resnet'. "
            "For other networks set 'model' instead (e.g. \"lraspp_mobilenet_v3_large\")."
        )
    if cfg["fcn"] is None:
        return DEFAULT_MODEL
    depth = str(cfg["fcn"]).strip()
    name = f"fcn_resnet{depth}"
    if name not in names:
        raise ConfigError(
            f"{source}: key 'fcn' is {cfg['fcn']!r}; choose \"50\" or \"101\" "
            "(or set 'model', e.g. \"fcn_resnet18\")."
        )
    return name


def load_config(root: Path, config_path: Path | None, overrides: list[str] | None = None,
                preset_defaults: dict[str, Any] | None = None,
                missing_hint: str = MISSING_CONFIG_HINT) -> Plan:
    """The config of a run: preset defaults, under config_path (or ROOT/config.list when present),
    under --set overrides. missing_hint replaces the advice given when config_path does not exist."""
    source = "defaults"
    raw: dict[str, Any] = dict(preset_defaults or {})
    path = config_path if config_path is not None else root / "config.list"
    # lexists: a folder, FIFO or broken link named config.list is an error, never silently skipped
    if config_path is not None or os.path.lexists(path):
        raw.update(read_config_file(path, missing_hint))
        source = str(path)
    _check_known(raw, source)
    extra = parse_overrides(overrides or [])
    _check_known(extra, "--set")
    raw.update(extra)
    return resolve(raw, source if not extra else f"{source} (with --set)", _name_max(root))


def describe_keys() -> str:
    return "\n".join(f"  {key:20s} default {default!r:10s} {meaning}" for key, (default, meaning) in KEYS.items())


def run_config(root: Path, config: Path | None, overrides: list[str], image_type: str = "auto",
               missing_hint: str = MISSING_CONFIG_HINT) -> tuple[Plan, list[str] | None]:
    """The plan of a command on ROOT, and the preset's class names (None when the
    folder has its own class_names.list, which wins). --config is looked up as typed, then in ROOT."""
    from segtrain.config.presets import preset
    from segtrain.paths import from_command_line

    class_names, preset_defaults = preset(image_type)
    cfg = load_config(root, None if config is None else from_command_line(config, root), overrides, preset_defaults,
                      missing_hint)
    if class_names is not None and (root / "class_names.list").is_file():
        class_names = None
    return cfg, class_names
