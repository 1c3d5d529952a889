"""What a model file says about itself (a checkpoint's keys, an exported file's segtrain.json),
checked before anything is built from it: with config.list's own rules for the config, the class
files' rules for names and colours, and bounds on what the file can make segtrain allocate
(config/load.py MAX_IMAGE_SIDE, data/classes.py MAX_CLASSES and MAX_CLASS_NAME_LENGTH,
config/user_json.py for the metadata's size and nesting).

A file that breaks a rule was edited or damaged: the one-line error names the file, the key and
the rule, and says to use the file as segtrain wrote it.
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from segtrain.config import user_json
from segtrain.config.load import _image_size, _number, check_saved
from segtrain.data.classes import check_class_colors, check_class_names, default_colors
from segtrain.errors import CheckpointError, SegtrainError

FIX = "The file was edited or damaged; use the model file as segtrain train or export wrote it."
INPUT_KINDS = ("normalized", "raw")


@dataclass(frozen=True)
class ModelFacts:
    class_names: list[str]
    class_colors: list[list[int]]
    mean: list[float]
    std: list[float]
    config: dict  # with_defaults(saved config), every value checked


@contextmanager
def _refusing(source: str):
    """Any rule broken inside becomes one CheckpointError about the model file."""
    try:
        yield
    except CheckpointError:
        raise
    except SegtrainError as e:
        raise CheckpointError(f"{e} {FIX}") from None


def _channel_values(values, key: str, source: str, positive: bool) -> list[float]:
    if (not isinstance(values, list) or len(values) != 3
            or any(isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v)
                   or (positive and v <= 0) for v in values)):
        bound = "positive " if positive else ""
        raise CheckpointError(f"{source}: {key!r} must be three finite {bound}numbers (R, G, B), got {str(values)[:80]}.")
    return [float(v) for v in values]


def checked_facts(source: str, names, colors, mean, std, config) -> ModelFacts:
    """Names (required), colours (None: the VOC colours), mean and std (None: ImageNet's) and the
    saved config (None: the defaults), each checked; source names the file (and its part)."""
    with _refusing(source):
        names = check_class_names(names, source)
        colors = default_colors(names) if colors is None else check_class_colors(colors, len(names), source)
        if mean is None or std is None:  # a checkpoint of the original tool: ImageNet's, as it trained with
            from segtrain.data.transforms import MEAN, STD

            mean, std = mean or list(MEAN), std or list(STD)
        mean = _channel_values(mean, "mean", source, positive=False)
        std = _channel_values(std, "std", source, positive=True)
        config = check_saved({} if config is None else config, source)
    return ModelFacts(names, colors, mean, std, config)


def checkpoint_facts(path: Path, ckpt: dict) -> ModelFacts:
    normalization = ckpt.get("normalization") or {}
    if not isinstance(normalization, dict):
        raise CheckpointError(f"{path}: 'normalization' must be a dict with 'mean' and 'std'. {FIX}")
    return checked_facts(str(path), ckpt.get("class_names"), ckpt.get("class_colors") or None,
                         normalization.get("mean"), normalization.get("std"), ckpt.get("config"))


@dataclass(frozen=True)
class ExportedFacts:
    metadata: dict  # as parsed, for what is only shown (the architecture's name)
    facts: ModelFacts
    image_size: list[int] | None
    batch_size: int
    raw_input: bool


def exported_facts(path: Path, text: str | bytes) -> ExportedFacts:
    """The segtrain.json text embedded in an exported file (TorchScript and .pt2 give bytes),
    parsed within user_json's bounds and checked."""
    import json

    source = f"{path} (its segtrain metadata)"
    try:
        meta = user_json.loads(text.decode("utf-8") if isinstance(text, bytes) else text, source, CheckpointError)
    except UnicodeDecodeError:
        raise CheckpointError(f"{source}: not UTF-8 text. {FIX}") from None
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{source}: not valid JSON ({e.msg}). {FIX}") from None
    if not isinstance(meta, dict):
        raise CheckpointError(f"{source}: must be a JSON object, got {type(meta).__name__}. {FIX}")
    facts = checked_facts(source, meta.get("class_names"), meta.get("class_colors"), meta.get("mean"),
                          meta.get("std"), meta.get("config"))
    fields = {"image_size": meta.get("image_size"), "batch_size": meta.get("batch_size", 1)}
    with _refusing(source):
        fields["image_size"] = _image_size(fields["image_size"], source)
        _number(fields, "batch_size", source, integer=True, minimum=1)
    kind = meta.get("input_kind", "normalized")
    if kind not in INPUT_KINDS:
        raise CheckpointError(f"{source}: 'input_kind' is {str(kind)[:40]!r}; segtrain writes "
                              f"{' or '.join(map(repr, INPUT_KINDS))}. {FIX}")
    return ExportedFacts(meta, facts, fields["image_size"], fields["batch_size"], kind == "raw")
