"""Void: the parts of the masks outside what the user measures, found by looking at the masks.

Three signs, each with its setting:
- a class whose name says so ("undefined", "void", "unlabeled", ...): "void_class", learned and
  scored apart;
- one grey value above the classes' range (CamVid's 11 beside its 11 classes): "ignore_index", as
  it is no class, neither learned nor scored;
- a region that is the same in every mask (a fisheye lens's border, a blacked-out sun) holding a
  value found nowhere else: its class is "void_class", since a model must find that region again
  when it predicts.
init writes a setting where the sign is clear and says why; where it is not (a border whose class
the user named as something else), init and check ask.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from segtrain.data.classes import void_name
from segtrain.data.labels import DETECTION_SAMPLE, IGNORE, LabelDecoder, read_mask, spread_sample

BORDER_MIN_SHARE = 0.02  # of the image: a lens border or a blacked-out sun, not a stray pixel
BORDER_MIN_MASKS = 3  # agreement of fewer masks says nothing
BORDER_ELSEWHERE_MAX = 0.001  # share of the value's pixels outside the region: the border's value is found only there


@dataclass
class VoidFinding:
    settings: dict = field(default_factory=dict)  # config keys whose values are clear
    rename: dict[int, str] = field(default_factory=dict)  # guessed class index -> "void"
    notes: list[str] = field(default_factory=list)  # what was seen, and questions where it is not clear


def sampled_greys(label_paths: list[Path]) -> tuple[set[int], list[np.ndarray]]:
    """The grey values of a sample of the masks, and those masks (colour masks are left out)."""
    greys: set[int] = set()
    masks = []
    for path in spread_sample(label_paths, DETECTION_SAMPLE):
        raw = read_mask(path)
        if raw.ndim == 2:
            greys.update(int(v) for v in np.unique(raw))
            masks.append(raw)
    return greys, masks


def outside_value(greys: set[int], n_classes: int) -> int | None:
    """The one value above 0..n-1 in masks that otherwise hold class indices (CamVid's 11, VOC's 255)."""
    extra = sorted(v for v in greys if v >= n_classes)
    return extra[0] if len(extra) == 1 else None


def border_value(masks: list[np.ndarray]) -> tuple[int, float] | None:
    """(value, share of the image) of the one value that every mask of the commonest size holds on
    the same pixels (at least BORDER_MIN_SHARE of them) and holds almost nowhere else, or None."""
    shape = Counter(m.shape for m in masks).most_common(1)[0][0] if masks else None
    same = [m for m in masks if m.shape == shape]
    if len(same) < BORDER_MIN_MASKS:
        return None
    stack = np.stack(same)
    constant = (stack == stack[0]).all(axis=0)
    found = []
    for value in np.unique(stack[0][constant]):
        region = constant & (stack[0] == value)
        elsewhere = int((stack[:, ~region] == value).sum())
        if region.mean() >= BORDER_MIN_SHARE and elsewhere <= BORDER_ELSEWHERE_MAX * region.sum() * len(same):
            found.append((int(value), float(region.mean())))
    return found[0] if len(found) == 1 else None


def find_void(label_paths: list[Path], class_names: list[str], decoder: LabelDecoder | None,
              guessed: bool, cfg: dict) -> VoidFinding:
    """What the masks and names say is void (see the module's docstring). guessed: the class names
    are init's neutral ones, so a border class may be renamed "void"."""
    found = VoidFinding()
    if cfg.get("void_class") is not None:
        return found
    named = [name for name in class_names if void_name(name)]
    if len(named) == 1:
        found.settings["void_class"] = named[0]
        found.notes.append(f"class {named[0]!r} reads as void: \"void_class\": {named[0]!r} (learned, so predictions "
                           "find it, but outside the mean IoU and every class fraction)")
        return found
    greys, masks = sampled_greys(label_paths)
    if decoder is None and cfg.get("ignore_index") is None:
        value = outside_value(greys, len(class_names))
        if value is not None:
            found.settings["ignore_index"] = value
            found.notes.append(f"mask value {value} is outside the {len(class_names)} classes "
                               f"(0..{len(class_names) - 1}): \"ignore_index\": {value} (no class: neither learned "
                               "nor scored)")
        return found
    border = border_value(masks) if decoder is not None else None
    if border is None:
        return found
    value, share = border
    k = int(decoder.decode(np.full((1, 1), value, np.uint8), Path("(border)"))[0, 0])
    if k == IGNORE:
        return found
    where = f"mask value {value} fills the same {share:.0%} of every mask and appears nowhere else (a lens border?)"
    if guessed:
        found.rename[k] = "void"
        found.settings["void_class"] = "void"
        found.notes.append(f"{where}: its class is named \"void\" and \"void_class\": \"void\" (learned, so "
                           "predictions find it, but outside the mean IoU and every class fraction)")
    else:
        found.notes.append(f"{where}: if class {class_names[k]!r} is outside what you measure, set \"void_class\": "
                           f"{class_names[k]!r} in config.list")
    return found
