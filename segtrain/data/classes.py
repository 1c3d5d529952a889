"""class_names.list and class_colors.list, and the colours used when a folder has none."""

from __future__ import annotations

from pathlib import Path

from segtrain.config.load import read_user_text
from segtrain.errors import DatasetError

MAX_CLASSES = 254  # label index 255 is reserved internally for ignored pixels


def voc_colormap(n: int) -> list[list[int]]:
    """The PASCAL VOC colour map that the original tool drew with: 0 black, 1 dark red, 2 green, ..."""
    colors = []
    for i in range(n):
        r = g = b = 0
        c = i
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        colors.append([r, g, b])
    return colors


def void_class(class_names: list[str], cfg: dict, where: str = "config") -> int | None:
    """The index of the config's "void_class" among the classes (None: no void class)."""
    name = cfg.get("void_class")
    if name is None:
        return None
    if name not in class_names:
        raise DatasetError(f"{where}: key 'void_class' is {name!r}, which is not a class of class_names.list "
                           f"({', '.join(class_names)}). Name one of them, or set it to null.")
    return class_names.index(name)


def read_class_names(path: Path) -> list[str]:
    if not path.is_file():
        raise DatasetError(
            f"{path}: class_names.list not found. Create it with one class name per line in "
            "class-index order (e.g. 'sky' then 'cloud')."
        )
    names = [line.strip() for line in read_user_text(path, DatasetError).splitlines()]
    names = [n for n in names if n]
    if not names:
        raise DatasetError(f"{path}: class_names.list is empty. Write one class name per line.")
    if len(names) == 1:
        raise DatasetError(
            f"{path}: only one class ({names[0]!r}). Segmentation needs at least two, e.g. a background class."
        )
    seen: dict[str, int] = {}
    for index, name in enumerate(names):
        if name in seen:
            raise DatasetError(
                f"{path}: class name {name!r} appears twice (classes {seen[name]} and {index}). "
                "Each line must name a different class."
            )
        seen[name] = index
    if len(names) > MAX_CLASSES:
        raise DatasetError(f"{path}: {len(names)} classes; at most {MAX_CLASSES} are supported.")
    return names


def read_class_colors(path: Path, n_classes: int) -> list[list[int]] | None:
    """One "R G B" line per class (commas allowed); None when the file does not exist."""
    if not path.is_file():
        return None
    colors = []
    lines = read_user_text(path, DatasetError).splitlines()
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        parts = line.replace(",", " ").split()
        try:
            rgb = [int(p) for p in parts]
        except ValueError:
            rgb = []
        if len(rgb) != 3 or not all(0 <= v <= 255 for v in rgb):
            raise DatasetError(
                f"{path}, line {number}: {line.strip()!r} is not a colour. Write three integers "
                "0-255 per line, e.g. '255 255 255'."
            )
        colors.append(rgb)
    if len(colors) != n_classes:
        raise DatasetError(
            f"{path}: {len(colors)} colours for {n_classes} classes in class_names.list. "
            "Write exactly one 'R G B' line per class, in the same order."
        )
    if len({tuple(c) for c in colors}) != len(colors):
        raise DatasetError(f"{path}: two classes share one colour; every class needs its own colour.")
    return colors
