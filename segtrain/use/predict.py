"""predict: images in; per image an index mask (palette PNG at native size), optionally a colour
overlay JPEG, and one summary.csv row of class fractions out.

The model is a segtrain checkpoint (PyTorch) or any file segtrain export writes (.onnx runs on
onnxruntime only; this module imports torch only for the other kinds, so a node without PyTorch
can predict with an ONNX file).
"""

from __future__ import annotations

import csv
import io
import time
from pathlib import Path

import numpy as np
from PIL import Image

from segtrain.errors import ConfigError, DatasetError
from segtrain.outputs.atomic import atomic_open
from segtrain.paths import cannot_write, output_file, output_folder, refuse_replacing
from segtrain.data.images import IMAGE_SUFFIXES, list_images, read_image
from segtrain.outputs.visualize import colorize, overlay

PROGRESS_SECONDS = 5.0


def open_predictor(model_path: Path, device: str = "auto", tile: int | None = None, overlap: int | None = None,
                   log=print, tta: bool = False):
    """A predictor with class_names, class_colors, image_size, batch_size and masks(images);
    tta: flip test-time augmentation (evaluation/tta.py)."""
    if tile is not None and tile < 8:
        raise ConfigError(f"--tile {tile}: a tile must be at least 8 pixels (e.g. --tile 512).")
    overlap = tile // 4 if tile is not None and overlap is None else (overlap or 0)
    if tile is not None and not 0 <= overlap < tile:
        raise ConfigError(f"--overlap {overlap}: must be at least 0 and smaller than --tile {tile}.")
    from segtrain.use.exported import ExportedPredictor, exported_kind

    if exported_kind(Path(model_path)) is not None:
        return ExportedPredictor(Path(model_path), tile, overlap, tta=tta)
    from segtrain.use.trained import TorchPredictor, load_trained

    return TorchPredictor(load_trained(Path(model_path), device, log), tile, overlap, tta)


def find_inputs(source: Path, recursive: bool, notes: list[str]) -> list[tuple[Path, Path]]:
    """(image, its path relative to `source`) for every image; outputs keep that relative path."""
    source = Path(source)
    if source.is_file():
        return [(source, Path(source.name))]
    if not source.is_dir():
        raise DatasetError(f"{source}: no such image or folder. Pass an image file or a folder of images.")
    folders = [source] + (sorted(p for p in source.rglob("*") if p.is_dir() and not p.name.startswith("."))
                          if recursive else [])
    found = []
    for folder in folders:
        found += [(path, path.relative_to(source)) for path in list_images(folder, IMAGE_SUFFIXES, notes).values()]
    if not found:
        raise DatasetError(f"{source}: no images found (supported: {', '.join(sorted(IMAGE_SUFFIXES))})"
                           + ("" if recursive else "; add --recursive to look in subfolders") + ".")
    return found


def mask_path(out_dir: Path, rel: Path) -> Path:
    return out_dir / rel.parent / f"{rel.stem}.png"


def overlay_path(out_dir: Path, rel: Path) -> Path:
    return out_dir / rel.parent / f"{rel.stem}_overlay.jpg"


def write_atomic(path: Path, write) -> None:
    """write(binary file) into path, its folder made when missing; an interrupted run leaves no
    half file. No fsync per mask: a crash costs the masks of that moment, which a rerun redoes."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise cannot_write(path, e) from None
    with atomic_open(path, durable=False) as f:
        write(f)


def mask_image(mask: np.ndarray, colors: list[list[int]]) -> Image.Image:
    """Mode P: pixel values are class indices, the palette shows them in the class colours."""
    image = Image.fromarray(mask)
    image.putpalette([v for color in colors for v in color])
    return image


def class_fractions(mask: np.ndarray, n_classes: int) -> list[float]:
    """Share of pixels whose argmax is each class: the edge plugins' cloud cover for `cloud`."""
    return [float(v) for v in np.bincount(mask.ravel(), minlength=n_classes)[:n_classes] / mask.size]


def write_summary(path: Path, rows: list[list], class_names: list[str]) -> None:
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(["image", "width", "height"] + [f"{name}_fraction" for name in class_names])
    writer.writerows(rows)
    # A file name that is not UTF-8 (possible on POSIX) keeps its exact bytes, so the column still
    # names the file; the rest of the file is plain UTF-8.
    write_atomic(path, lambda f: f.write(text.getvalue().encode("utf-8", errors="surrogateescape")))


def predict(source: Path, model_path: Path, out_dir: Path, overlay_jpeg: bool = False, tile: int | None = None,
            overlap: int | None = None, recursive: bool = False, batch_size: int | None = None,
            device: str = "auto", log=print, tta: bool = False) -> Path:
    """Predict every image of `source` into out_dir; returns the summary.csv path."""
    out_dir = output_folder(out_dir, "--out")
    summary = output_file(out_dir / "summary.csv", "--out")  # written last: find out now, not after every image
    notes: list[str] = []
    inputs = find_inputs(source, recursive, notes)
    for note in notes:
        log(note)
    outputs = [mask_path(out_dir, rel) for _, rel in inputs] + [summary]
    if overlay_jpeg:
        outputs += [overlay_path(out_dir, rel) for _, rel in inputs]
    refuse_replacing(outputs, {Path(model_path): "the model file", **{image: "input image" for image, _ in inputs}},
                     "--out")
    predictor = open_predictor(model_path, device, tile, overlap, log, tta)
    batch_size = batch_size or predictor.batch_size
    names, colors = predictor.class_names, predictor.class_colors
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise cannot_write(out_dir, e) from None
    size_text = "native size" if predictor.image_size is None else "x".join(map(str, predictor.image_size))
    log(f"predict: {len(inputs)} image(s) with {model_path} (classes {', '.join(names)}; model input {size_text}"
        + (f"; tiles {tile} px" if tile else "") + ("; flip TTA" if tta else "") + f") into {out_dir}")

    rows: list[list] = []
    start = last = time.perf_counter()
    pending: list[tuple[Path, np.ndarray]] = []

    def flush():
        nonlocal last
        masks = predictor.masks([image for _, image in pending])
        for (rel, image), mask in zip(pending, masks):
            write_atomic(mask_path(out_dir, rel), lambda f: mask_image(mask, colors).save(f, format="PNG"))
            if overlay_jpeg:
                blended = Image.fromarray(overlay(image, colorize(mask, colors)))
                write_atomic(overlay_path(out_dir, rel), lambda f: blended.save(f, format="JPEG", quality=90))
            rows.append([rel.as_posix(), mask.shape[1], mask.shape[0]]
                        + class_fractions(mask, len(names)))
        pending.clear()
        now = time.perf_counter()
        if now - last >= PROGRESS_SECONDS or len(rows) == len(inputs):
            log(f"predict: {len(rows)}/{len(inputs)} images ({len(rows) / max(now - start, 1e-9):.1f} img/s)")
            last = now

    for path, rel in inputs:
        image = read_image(path)
        if pending and (len(pending) >= batch_size or predictor.batch_key(pending[0][1]) != predictor.batch_key(image)):
            flush()
        pending.append((rel, image))
    flush()
    write_summary(summary, rows, names)
    log(f"predict: masks in {out_dir}, class fractions in {summary}")
    return summary
