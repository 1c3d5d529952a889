"""A starter config.list and class_names.list for a folder, from a look at it (`segtrain init`,
api.init, and after `segtrain download`).

What the masks reveal decides the classes: grey masks with values 0..k-1 hold k classes, masks with
only 0 and 255 hold two, a handful of other grey levels (in ascending order) or colours are one
class each. Names are neutral (class0, class1, ...), since a mask cannot tell what a class means;
init says which mask value each name stands for so the user can rename them. class_colors.list
holds the masks' colours for colour masks, else the colour each class is drawn in (by its name,
data/classes.py default_colors), for the user to change. Existing files are never overwritten.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from segtrain.data.classes import default_colors, read_class_names
from segtrain.config import recipe
from segtrain.config.load import KEYS, resolve
from segtrain.data.folder import check_sizes, find_splits
from segtrain.errors import DatasetError, OutputError, SegtrainError
from segtrain.paths import DATA_LISTS
from segtrain.data.labels import DETECTION_SAMPLE, LOSSY_SUFFIXES, detect_decoder, read_mask, spread_sample
from segtrain.data.void import find_void

MAX_GUESSED_LEVELS = 16  # more distinct values than this look like a photo or lossy noise, not classes


@dataclass
class ClassGuess:
    names: list[str]
    colors: list[list[int]] | None  # the masks' colours, for class_colors.list, when the masks are RGB
    meaning: list[str]  # "class0 = mask value 0", ...


@dataclass
class Starter:
    root: Path
    config: dict
    classes: ClassGuess | None
    found: list[str] = field(default_factory=list)  # what was seen, for the user
    problems: list[str] = field(default_factory=list)
    fitted: list[str] = field(default_factory=list)  # what training will fit to the folder (recipe.fit_recipe)


def guess_classes(label_paths: list[Path]) -> tuple[ClassGuess | None, str]:
    """The classes a sample of masks reveals, or None and the reason."""
    lossy = any(p.suffix.lower() in LOSSY_SUFFIXES for p in label_paths)
    greys: set[int] = set()
    colours: set[tuple[int, int, int]] = set()
    for path in spread_sample(label_paths, DETECTION_SAMPLE):
        raw = read_mask(path)
        if raw.ndim == 3:
            colours.update(map(tuple, np.unique(raw.reshape(-1, 3), axis=0).tolist()))
        else:
            greys.update(int(v) for v in np.unique(raw))
    if colours:
        if lossy or len(colours) > MAX_GUESSED_LEVELS:
            return None, (f"colour masks with {len(colours)} distinct colours"
                          + (" (JPEG)" if lossy else "") + "; cannot tell the classes")
        ordered = sorted(colours)
        names = [f"class{k}" for k in range(len(ordered))]
        return ClassGuess(names, [list(c) for c in ordered],
                          [f"{n} = colour {' '.join(map(str, c))}" for n, c in zip(names, ordered)]), ""
    if lossy:
        if greys and all(v < 64 or v > 191 for v in greys):  # JPEG noise around 0 and 255
            return ClassGuess(["class0", "class1"], None,
                              ["class0 = dark mask pixels (about 0)", "class1 = bright mask pixels (about 255)"]), ""
        return None, "JPEG (lossy) grey masks with many levels; cannot tell the classes"
    if len(greys) < 2:
        return None, f"every sampled mask holds only the value {min(greys, default=0)}; cannot tell the classes"
    if greys == {0, 255}:
        return ClassGuess(["class0", "class1"], None, ["class0 = mask value 0", "class1 = mask value 255"]), ""
    if max(greys) < MAX_GUESSED_LEVELS:
        names = [f"class{k}" for k in range(max(greys) + 1)]
        return ClassGuess(names, None, [f"{n} = mask value {k}" for k, n in enumerate(names)]), ""
    if len(greys) <= MAX_GUESSED_LEVELS:  # the classes are the values in ascending order (data/labels.py "levels")
        ordered = sorted(greys)
        names = [f"class{k}" for k in range(len(ordered))]
        return ClassGuess(names, None, [f"{n} = mask value {v}" for n, v in zip(names, ordered)]), ""
    return None, f"grey masks with {len(greys)} distinct values; cannot tell the classes"


def fitted_choices(root: Path, cfg: dict, class_names: list[str]) -> list[str]:
    """What `segtrain train` will fit to this folder on this machine (fit_recipe's own lines), from
    the resolved starter config; none when the folder cannot be read as training would read it yet
    (init says why elsewhere)."""
    from segtrain.data.folder import inspect_root
    from segtrain.runtime.device import select_device

    lines: list[str] = []
    try:
        device = select_device(cfg["device"], log=lambda _: None)
        recipe.fit_recipe(cfg, inspect_root(root, cfg, class_names), device.type, log=lines.append)
    except SegtrainError:
        return []
    return lines


def plan(root: Path, class_names: list[str] | None = None, fallback: dict | None = None) -> Starter:
    """Inspect ROOT. class_names, when given, are the classes (as `download` knows them); fallback
    holds config keys to add when the masks only fit those classes with them (a preset's rule)."""
    root = Path(root)
    notes: list[str] = []
    layout, train, valid = find_splits(root, notes)
    sizes = check_sizes(train + valid)
    labels = [p.label for p in train + valid]
    found = notes + [
        f"layout: {layout}; {len(train)} training and "
        + (f"{len(valid)} validation pairs" if valid else "no validation pairs (20% of training will be held out)"),
        "image sizes (w x h): " + ", ".join(f"{w}x{h}" for h, w in sorted(sizes)[:4]) + (" ..." if len(sizes) > 4 else ""),
    ]
    problems: list[str] = []
    classes = None
    names_file = root / "class_names.list"
    if names_file.is_file():
        class_names = read_class_names(names_file)
        found.append(f"class_names.list: {', '.join(class_names)}")
    elif class_names is None:
        classes, reason = guess_classes(labels)
        if classes is None:
            problems.append(f"{reason}. Write class_names.list yourself: one class name per line, in class-index order.")
        else:
            class_names = classes.names

    config = recipe.written_out()
    if class_names is not None:
        colors = classes.colors if classes is not None else None
        decoder, unexplained = None, None
        try:
            decoder = detect_decoder(labels, class_names, colors)
        except DatasetError as e:
            if not fallback:
                unexplained = str(e)
            else:
                decoder = detect_decoder(labels, class_names, colors, threshold=fallback.get("label_threshold"))
                config.update(fallback)
        void = find_void(labels, class_names, decoder, classes is not None, config)
        config.update(void.settings)
        if "ignore_index" in void.settings:  # the value that no class explained
            decoder, unexplained = detect_decoder(labels, class_names, colors, void.settings["ignore_index"]), None
        if void.rename:  # the decoder again, so that what init prints names the classes it writes
            class_names = [void.rename.get(k, name) for k, name in enumerate(class_names)]
            decoder = detect_decoder(labels, class_names, colors, config.get("ignore_index"))
            classes.names = class_names
            classes.meaning = [meaning.replace(f"class{k} =", f"{name} =", 1)
                               for k, (meaning, name) in enumerate(zip(classes.meaning, class_names))]
        if unexplained is not None:
            problems.append(unexplained)
        if decoder is not None:
            found.append(f"labels: {decoder.describe()}")
        found.extend(f"void: {note}" for note in void.notes)
    resolved = resolve(config, "starter config")  # what init writes must be what train and check accept
    fitted = fitted_choices(root, resolved, class_names) if class_names is not None and not problems else []
    return Starter(root, config, classes, found, problems, fitted)


STARTER_FILES = DATA_LISTS  # which no output of any command may replace (paths.py)


def _write_new(path: Path, text: str) -> bool:
    """Create path with text; False (and nothing written) when it already exists."""
    from segtrain.paths import cannot_write

    try:
        with open(path, "x", encoding="utf-8") as f:
            f.write(text)
    except FileExistsError:
        return False
    except OSError as e:
        raise cannot_write(path, e) from None
    return True


def write_starter(starter: Starter, class_names: list[str] | None = None, log=print) -> None:
    """Write config.list, class_names.list and class_colors.list where absent; say what each holds."""
    root = starter.root
    for name in STARTER_FILES:  # before writing any: a folder in the way would pass for a kept file
        if os.path.lexists(root / name) and not (root / name).is_file():
            raise OutputError(f"{root / name}: is not a file (a folder?); remove or rename it, then run segtrain init again.")
    for line in starter.found:
        log(line)
    for problem in starter.problems:
        log(f"problem: {problem}")
    names = class_names or (starter.classes.names if starter.classes else None)
    if names is not None:
        wrote = _write_new(root / "class_names.list", "\n".join(names) + "\n")
        log(f"{'wrote' if wrote else 'kept the existing'} {root / 'class_names.list'}"
            + (f": {', '.join(names)}" if wrote else ""))
        if wrote and starter.classes is not None:
            for meaning in starter.classes.meaning:
                log(f"  {meaning}")
            log("  rename them to what they are (e.g. sky, cloud); keep the order.")
    if names is not None:
        mask_colors = starter.classes is not None and starter.classes.colors is not None
        colors = starter.classes.colors if mask_colors else default_colors(names)
        wrote = _write_new(root / "class_colors.list", "".join(" ".join(map(str, c)) + "\n" for c in colors))
        log(f"{'wrote' if wrote else 'kept the existing'} {root / 'class_colors.list'} "
            + ("(the mask colour of each class)" if mask_colors else
               "(the colour each class is drawn in: change them freely, one 'R G B' line per class)"))
    text = json.dumps(starter.config, indent=4) + "\n"
    if _write_new(root / "config.list", text):
        log(f"wrote {root / 'config.list'}:")
    else:
        log(f"kept the existing {root / 'config.list'}; a starter config for this folder would be:")
    for key, value in starter.config.items():
        log(f"  {json.dumps(key) + ':':22s} {json.dumps(value):16s} {KEYS[key][1]}")
    if starter.fitted:
        log("when training starts, segtrain fits the rest of its recipe to this folder and machine:")
        for line in starter.fitted:
            log(f"  {line}")
    log("other keys and their defaults: segtrain train --help. Next: segtrain train " + str(root))
