"""Label masks: detect how a folder encodes classes, and decode every mask to class indices.

Decoded masks are uint8 arrays of class indices with IGNORE (255) for pixels that count nowhere.
Detection looks at a sample of masks once; decoding then applies one fixed rule to every file, so
a mask that breaks the rule is an error naming the file and the value.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from segtrain.errors import DatasetError
from segtrain.data.images import load_upright, open_image

IGNORE = 255
LOSSY_SUFFIXES = {".jpg", ".jpeg"}
DETECTION_SAMPLE = 32


def read_mask(path: Path) -> np.ndarray:
    """A mask as HxW (grey or palette indices) or HxWx3 (colour) array; grey RGB collapses to HxW."""
    with open_image(path, "label image") as img:
        img = load_upright(img)
        if img.mode == "P":
            return np.asarray(img)  # palette masks store class indices; the palette is only for viewing
        if img.mode in ("1", "L", "I", "I;16", "I;16B", "I;16L", "F"):
            array = np.asarray(img)
            return array.astype(np.int64) if array.dtype != np.uint8 else array
        array = np.asarray(img.convert("RGB"))
    if (array[..., 0] == array[..., 1]).all() and (array[..., 1] == array[..., 2]).all():
        return array[..., 0]
    return array


@dataclass(frozen=True)
class LabelDecoder:
    """One rule that maps every raw mask value (grey level or colour) to a class index or IGNORE."""

    kind: str  # "index", "binary", "levels", "threshold", "color"
    class_names: tuple[str, ...]
    lossy: bool = False
    colors: tuple[tuple[int, int, int], ...] | None = None
    ignore_index: int | None = None
    threshold: int | None = None
    levels: tuple[int, ...] | None = None  # "levels": the grey value of each class, ascending

    @property
    def n_classes(self) -> int:
        return len(self.class_names)

    def grey_values(self) -> list[int]:
        """The grey level that stands for each class (for grey encodings)."""
        if self.kind == "binary":
            return [0, 255]
        if self.kind == "levels":
            return list(self.levels or ())
        if self.kind == "color":
            return [c[0] for c in self.colors or ()]
        return list(range(self.n_classes))

    def describe(self) -> str:
        names = self.class_names
        if self.kind == "threshold":
            text = f"grey masks thresholded: value <= {self.threshold} -> {names[0]}, above -> {names[1]}"
        elif self.kind == "binary":
            text = f"binary masks: 0 -> {names[0]}, 255 -> {names[1]}"
        elif self.kind == "levels":
            text = (f"grey masks with {self.n_classes} values, in ascending order: "
                    + ", ".join(f"{v} -> {n}" for v, n in zip(self.levels or (), names)))
        elif self.kind == "color":
            text = "colour masks through class_colors.list: " + ", ".join(
                f"{tuple(c)} -> {n}" for c, n in zip(self.colors or (), names)
            )
        else:
            text = f"index masks: value k is class k (0 -> {names[0]} ... {self.n_classes - 1} -> {names[-1]})"
        if self.lossy:
            text += "; lossy (JPEG) masks: each pixel snapped to the nearest class value"
        if self.ignore_index is None:
            return text
        if self._void_color() is not None:
            return text + (f"; colour {self._void_color()} (class {self.ignore_index}, "
                           f"{names[self.ignore_index]}) and colours that fit no class are ignored")
        return text + f"; value {self.ignore_index} and values that fit no class are ignored"

    def _void_color(self) -> tuple[int, int, int] | None:
        """For RGB colour masks, a pixel's value is its class: ignore_index then names the class
        whose colour (in class_colors.list) is ignored."""
        if self.kind != "color" or self.ignore_index is None or self.ignore_index >= self.n_classes:
            return None
        if all(c[0] == c[1] == c[2] for c in self.colors or ()):
            return None  # grey colours are read as grey values
        return tuple(self.colors[self.ignore_index])

    def _grey_table(self) -> np.ndarray:
        """256-entry lookup: grey level -> class index, IGNORE, or -1 for 'fits no class'."""
        table = np.full(256, -1, dtype=np.int16)
        levels = np.arange(256)
        if self.kind == "threshold":
            table = (levels > self.threshold).astype(np.int16)
            if self.ignore_index is not None:
                table[self.ignore_index] = IGNORE
            return table
        values = self.grey_values()
        # The ignored value is ignored even when it is also a class's value (a "void" class).
        targets = [IGNORE if v == self.ignore_index else k for k, v in enumerate(values)]
        if self.ignore_index is not None and self.ignore_index not in values:
            values = values + [self.ignore_index]
            targets = targets + [IGNORE]
        if self.lossy:
            distance = np.abs(levels[:, None] - np.asarray(values)[None, :])
            return np.asarray(targets, dtype=np.int16)[distance.argmin(axis=1)]
        table[values] = targets
        if self.ignore_index is not None:
            table[table < 0] = IGNORE
        return table

    def decode(self, raw: np.ndarray, path: Path) -> np.ndarray:
        if raw.ndim == 3:
            return self._decode_color(raw, path)
        if self.kind == "color" and self.colors is not None and not all(c[0] == c[1] == c[2] for c in self.colors):
            raise DatasetError(
                f"{path}: a grey mask, but class_colors.list holds colours. Save the mask in RGB with "
                "the colours of class_colors.list, or remove class_colors.list to use grey values."
            )
        if raw.dtype != np.uint8:
            if raw.min() < 0 or raw.max() > 255:
                bad = int(raw.max() if raw.max() > 255 else raw.min())
                return self._fail(path, bad)
            raw = raw.astype(np.uint8)
        out = self._grey_table()[raw]
        if (out < 0).any():
            return self._fail(path, int(raw[out < 0][0]))
        return out.astype(np.uint8)

    def _decode_color(self, raw: np.ndarray, path: Path) -> np.ndarray:
        if self.colors is None:
            raise DatasetError(
                f"{path}: a colour (RGB) mask, but there is no class_colors.list to map colours to "
                "classes. Add class_colors.list with one 'R G B' line per class."
            )
        packed = (raw[..., 0].astype(np.int32) << 16) | (raw[..., 1].astype(np.int32) << 8) | raw[..., 2]
        palette = np.asarray(self.colors, dtype=np.int32)
        keys = (palette[:, 0] << 16) | (palette[:, 1] << 8) | palette[:, 2]
        uniques, inverse = np.unique(packed.ravel(), return_inverse=True)
        classes = np.full(len(uniques), -1, dtype=np.int16)
        for k, key in enumerate(keys):
            classes[uniques == key] = k
        if self.lossy:
            rgb = np.stack([(uniques >> 16) & 255, (uniques >> 8) & 255, uniques & 255], axis=1)
            classes = ((rgb[:, None, :] - palette[None, :, :]) ** 2).sum(axis=2).argmin(axis=1).astype(np.int16)
        elif self.ignore_index is not None:
            classes[classes < 0] = IGNORE
        if self._void_color() is not None:
            classes[classes == self.ignore_index] = IGNORE
        out = classes[inverse].reshape(packed.shape)
        if (out < 0).any():
            value = int(packed[out < 0][0])
            return self._fail(path, f"colour ({value >> 16}, {(value >> 8) & 255}, {value & 255})")
        return out.astype(np.uint8)

    def _fail(self, path: Path, value) -> np.ndarray:
        expected = {
            "binary": "0 or 255",
            "levels": "/".join(map(str, self.levels or ())),
            "index": f"0..{self.n_classes - 1}",
            "color": "a colour of class_colors.list",
        }.get(self.kind, "a class value")
        raise DatasetError(
            f"{path}: label value {value} fits no class (this folder's masks use {expected}). "
            "Fix the mask, or set \"ignore_index\" in config.list to ignore such pixels."
        )


def void_class(class_names: list[str], ignore_index: int | None) -> int | None:
    """The class an ignore_index names (a void class: "undefined", a lens border), or None.

    A trained model knows classes by index; ignore_index names one when it is a class index (index
    and colour masks; grey masks whose classes take the values 0, 1, ... from the darkest, as a
    void class at grey 0 does). A value outside the classes (CamVid's 11, VOC's 255) names none.
    """
    if ignore_index is None or not 0 <= ignore_index < len(class_names):
        return None
    return ignore_index


def spread_sample(paths: list[Path], n: int) -> list[Path]:
    """At most n of the paths, spread evenly over the list (the same ones every time)."""
    if len(paths) <= n:
        return list(paths)
    step = len(paths) / n
    return [paths[int(i * step)] for i in range(n)]


def detect_decoder(
    label_paths: list[Path],
    class_names: list[str],
    colors: list[list[int]] | None = None,
    ignore_index: int | None = None,
    threshold: int | None = None,
) -> LabelDecoder:
    """Pick the one encoding that explains a sample of the folder's masks."""
    names = tuple(class_names)
    n = len(names)
    color_tuple = tuple(tuple(c) for c in colors) if colors else None
    lossy = any(p.suffix.lower() in LOSSY_SUFFIXES for p in label_paths)
    if threshold is not None:
        if n != 2:
            raise DatasetError(
                f"label_threshold splits masks into two classes, but class_names.list has {n}. "
                "Remove label_threshold or list exactly two classes."
            )
        return LabelDecoder("threshold", names, threshold=threshold, ignore_index=ignore_index)

    first_seen, saw_color = _sampled_values(label_paths)
    if saw_color is not None:
        if color_tuple is None:
            raise DatasetError(
                f"{saw_color}: a colour (RGB) mask, but there is no class_colors.list to map colours "
                "to classes. Add class_colors.list with one 'R G B' line per class."
            )
        return LabelDecoder("color", names, lossy=lossy, colors=color_tuple, ignore_index=ignore_index)
    return _grey_decoder(names, first_seen, color_tuple, lossy, ignore_index)


def _sampled_values(label_paths: list[Path]) -> tuple[dict[int, Path], Path | None]:
    """Each grey value in a sample of the masks, with a mask holding it (to name in errors), and
    a colour mask when the sample has one."""
    first_seen: dict[int, Path] = {}
    saw_color = None
    for path in spread_sample(label_paths, DETECTION_SAMPLE):
        raw = read_mask(path)
        if raw.ndim == 3:
            saw_color = path
        else:
            for v in np.unique(raw):
                first_seen.setdefault(int(v), path)
    return first_seen, saw_color


def _grey_decoder(names: tuple[str, ...], first_seen: dict[int, Path], color_tuple, lossy: bool,
                  ignore_index: int | None) -> LabelDecoder:
    """The encoding of grey masks holding the values in first_seen."""
    n = len(names)
    grey_values = set(first_seen)
    allowed_extra = {ignore_index} if ignore_index is not None else set()
    if grey_values <= set(range(n)) | allowed_extra:
        return LabelDecoder("index", names, lossy=lossy, ignore_index=ignore_index)
    if n == 2 and grey_values <= {0, 255} | allowed_extra:
        return LabelDecoder("binary", names, lossy=lossy, ignore_index=ignore_index)
    if color_tuple is not None and all(c[0] == c[1] == c[2] for c in color_tuple):
        greys = {c[0] for c in color_tuple}
        if lossy or grey_values <= greys | allowed_extra:
            return LabelDecoder("color", names, lossy=lossy, colors=color_tuple, ignore_index=ignore_index)
    # As many grey values as classes (e.g. 0/100/255 for undefined, sky, cloud): the values in
    # ascending order are the classes in order, as 0/255 is for two classes; describe() says so.
    # ignore_index is an extra value, or the value of a void class when only then the counts agree.
    for levels in (grey_values - allowed_extra, grey_values):
        if not lossy and color_tuple is None and len(levels) == n:
            return LabelDecoder("levels", names, levels=tuple(sorted(levels)), ignore_index=ignore_index)
    if lossy:
        # JPEG noise spreads values around the true levels; the largest level tells the scheme.
        top = max(grey_values)
        kind = "binary" if n == 2 and top > (n - 1) * 4 else "index"
        return LabelDecoder(kind, names, lossy=True, ignore_index=ignore_index)
    if ignore_index is not None:
        return LabelDecoder("index", names, ignore_index=ignore_index)
    bad = sorted(grey_values - set(range(n)))
    raise DatasetError(
        f"{first_seen[bad[0]]}: label value {bad[0]} fits none of the {n} classes in class_names.list "
        f"(expected 0..{n - 1}" + (" or 0/255" if n == 2 else "") + f"; values outside seen: {bad[:8]}). "
        "Fix the masks, list more classes, "
        "add class_colors.list, or set \"ignore_index\" in config.list."
    )
