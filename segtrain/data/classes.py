"""class_names.list and class_colors.list, and the colours used when a folder has none."""

from __future__ import annotations

from pathlib import Path

from segtrain.config.load import read_user_text
from segtrain.errors import DatasetError

MAX_CLASSES = 254  # label index 255 is reserved internally for ignored pixels
MAX_CLASS_NAME_LENGTH = 200


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


def read_class_names(path: Path) -> list[str]:
    if not path.is_file():
        raise DatasetError(
            f"{path}: class_names.list not found. Create it with one class name per line in "
            "class-index order (e.g. 'sky' then 'cloud')."
        )
    names = [line.strip() for line in read_user_text(path, DatasetError).splitlines()]
    return check_class_names([n for n in names if n], str(path))


def check_class_names(names, source: str, error: type[Exception] = DatasetError) -> list[str]:
    """The rules of class_names.list, for the file and for the names a model file holds."""
    if not isinstance(names, list) or not all(isinstance(n, str) and n and n == n.strip() and "\n" not in n
                                              for n in names):
        raise error(f"{source}: class names must be a list of non-empty one-line names, got {str(names)[:80]}.")
    if not names:
        raise error(f"{source}: class_names.list is empty. Write one class name per line.")
    if len(names) == 1:
        raise error(
            f"{source}: only one class ({names[0]!r}). Segmentation needs at least two, e.g. a background class."
        )
    if len(names) > MAX_CLASSES:
        raise error(f"{source}: {len(names)} classes; at most {MAX_CLASSES} are supported.")
    seen: dict[str, int] = {}
    for index, name in enumerate(names):
        if len(name) > MAX_CLASS_NAME_LENGTH:
            raise error(f"{source}: class {index} has a name of {len(name)} characters; at most "
                        f"{MAX_CLASS_NAME_LENGTH} are supported (they head summary.csv's columns). Shorten it.")
        if name in seen:
            raise error(
                f"{source}: class name {name!r} appears twice (classes {seen[name]} and {index}). "
                "Each line must name a different class."
            )
        seen[name] = index
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
        if not _is_color(rgb):
            raise DatasetError(
                f"{path}, line {number}: {line.strip()!r} is not a colour. Write three integers "
                "0-255 per line, e.g. '255 255 255'."
            )
        colors.append(rgb)
    return check_class_colors(colors, n_classes, str(path))


def _is_color(rgb) -> bool:
    return (isinstance(rgb, list) and len(rgb) == 3
            and all(isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= 255 for v in rgb))


def check_class_colors(colors, n_classes: int, source: str, error: type[Exception] = DatasetError) -> list[list[int]]:
    """The rules of class_colors.list (one distinct R G B colour, 0-255, per class), for the file and
    for the colours a model file holds."""
    if not isinstance(colors, list) or not all(_is_color(c) for c in colors):
        raise error(f"{source}: class colours must be [R, G, B] lists of integers 0-255, got {str(colors)[:80]}.")
    if len(colors) != n_classes:
        raise error(
            f"{source}: {len(colors)} colours for {n_classes} classes in class_names.list. "
            "Write exactly one 'R G B' line per class, in the same order."
        )
    if len({tuple(c) for c in colors}) != len(colors):
        raise error(f"{source}: two classes share one colour; every class needs its own colour.")
    return colors
