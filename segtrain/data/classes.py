"""class_names.list and class_colors.list, and the colours used when a folder has none."""

from __future__ import annotations

import re
from pathlib import Path

from segtrain.errors import DatasetError
from segtrain.textfiles import read_user_text

MAX_CLASSES = 254  # label index 255 is reserved internally for ignored pixels
MAX_CLASS_NAME_LENGTH = 200
# Names that say a class is outside what is measured (data/void.py).
VOID_NAMES = {"void", "undefined", "ignore", "ignored", "unlabeled", "unlabelled", "unknown", "dontcare",
              "outside", "background-outside", "border", "lens-border", "no-data", "nodata", "invalid", "masked"}


def void_name(name: str) -> bool:
    return re.sub(r"[\s_]+", "-", name.strip().lower()).replace("'", "") in VOID_NAMES


# Colours that follow what a class's name says, so that a class looks alike in every data set and
# every run: sky blue, cloud white, void dark; street classes as in the Cityscapes palette (CamVid's
# names map onto it). Other classes take FALLBACK_COLORS in order.
NAMED_COLORS = {
    "sky": (70, 130, 220), "clear_sky": (70, 130, 220), "cloud": (240, 240, 250), "clouds": (240, 240, 250),
    "thick_cloud": (240, 240, 250), "thin_cloud": (180, 180, 200), "sun": (255, 200, 0),
    "road": (128, 64, 128), "pavement": (244, 35, 232), "sidewalk": (244, 35, 232), "building": (70, 70, 70),
    "wall": (102, 102, 156), "fence": (190, 153, 153), "pole": (153, 153, 153), "traffic_light": (250, 170, 30),
    "sign": (220, 220, 0), "sign_symbol": (220, 220, 0), "traffic_sign": (220, 220, 0),
    "tree": (107, 142, 35), "vegetation": (107, 142, 35), "terrain": (152, 251, 152), "grass": (152, 251, 152),
    "person": (220, 20, 60), "pedestrian": (220, 20, 60), "rider": (255, 0, 0), "bicyclist": (255, 0, 0),
    "car": (0, 0, 142), "truck": (0, 0, 70), "bus": (0, 60, 100), "train": (0, 80, 100),
    "motorcycle": (0, 0, 230), "bicycle": (119, 11, 32), "water": (0, 105, 148),
}
VOID_COLOR = (20, 20, 30)
FALLBACK_COLORS = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75),
                   (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207), (174, 199, 232),
                   (255, 187, 120), (152, 223, 138), (255, 152, 150), (197, 176, 213), (196, 156, 148)]


def default_colors(names: list[str]) -> list[list[int]]:
    """A distinct colour per class: the name's colour where it has one (NAMED_COLORS, dark for a
    void name), else the next of FALLBACK_COLORS, then the VOC colour map past those; never all grey."""
    colors: list[tuple[int, ...]] = []
    spare = iter(FALLBACK_COLORS + [tuple(c) for c in voc_colormap(MAX_CLASSES + 2)[1:]])
    for name in names:
        key = name.strip().lower().replace(" ", "_").replace("-", "_")
        color = VOID_COLOR if void_name(name) else NAMED_COLORS.get(key)
        while color is None or color in colors:
            color = next(spare)
        colors.append(tuple(color))
    if all(r == g == b for r, g, b in colors):  # all grey would read as grey mask values (data/labels.py)
        colors[-1] = next(c for c in spare if c[0] != c[1] and c not in colors)
    return [list(c) for c in colors]


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
