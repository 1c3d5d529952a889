"""predict: images in; per image an index mask (palette PNG at native size), optionally a colour
overlay JPEG, and one summary.csv row of class fractions out.

The model is a segtrain checkpoint (PyTorch) or any file segtrain export writes (.onnx runs on
onnxruntime only; this module imports torch only for the other kinds, so a node without PyTorch
can predict with an ONNX file).
"""

from __future__ import annotations

import csv
import io
import os
import time
from pathlib import Path

import numpy as np
from PIL import Image

from segtrain.errors import ConfigError, DatasetError
from segtrain.outputs.atomic import atomic_open
from segtrain.paths import cannot_write, output_file, output_folder, refuse_replacing
from segtrain.data.images import IMAGE_SUFFIXES, list_images, open_image, read_image
from segtrain.outputs.visualize import colorize, overlay
from segtrain.data.classes import void_class
from segtrain.edge_app.measure import coverage
from segtrain.edge_app.pictures import mask_image
from segtrain.use.predictor import Engine

PROGRESS_SECONDS = 5.0


def open_predictor(model_path: Path, device: str = "auto", tile: int | None = None, overlap: int | None = None,
                   log=print, tta: bool = False) -> Engine:
    """The engine that runs the model file: ExportedPredictor for what segtrain export writes, else
    TorchPredictor for a checkpoint; tta: flip test-time augmentation (evaluation/tta.py)."""
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


MEMORY_ENV = "SEGTRAIN_PREDICT_MAX_GB"
GB = 1 << 30
# Bytes a pixel of the model's input takes in its activations: assumed, not measured per model.
# The registry's heaviest case, U-Net's full-resolution decoder in fp32, holds a few hundred bytes
# a pixel in its largest layers at once; 2 KB leaves room.
ACTIVATION_BYTES_PER_PIXEL = 2048


def memory_limit(environ=os.environ) -> int:
    """Bytes one batch of predict may need: SEGTRAIN_PREDICT_MAX_GB, else half this machine's memory."""
    text = environ.get(MEMORY_ENV)
    if text is None:
        try:
            return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2
        except (ValueError, OSError, AttributeError):  # no sysconf (Windows): a laptop's half
            return 8 * GB
    try:
        gb = float(text)
    except ValueError:
        gb = -1.0
    if not gb > 0:
        raise ConfigError(f"{MEMORY_ENV}={text!r}: must be a positive number of GB (default: half this machine's memory).")
    return int(gb * GB)


def prediction_bytes(height: int, width: int, n_classes: int, image_size: list[int] | None, tile: int | None,
                     overlay_jpeg: bool) -> int:
    """About the memory predicting one image takes beyond the loaded model: its decoded pixels
    (Pillow's and the array), the mask and its PNG; the model's float input and its logits (with
    --tile their running sums) at the input's size, which is the image's own without image_size;
    the model's activations, per tile with --tile; with --overlay the float blend. Logits resized to
    a larger native size are resized in strips of a bounded size (evaluation/resize.py)."""
    pixels = height * width
    model_pixels = pixels if image_size is None else image_size[0] * image_size[1]
    run_pixels = min(model_pixels, tile * tile) if tile else model_pixels
    need = pixels * (4 + 3 + 1 + 1) + model_pixels * (12 + 4 * (n_classes + 1))
    need += run_pixels * ACTIVATION_BYTES_PER_PIXEL
    if overlay_jpeg:
        need += pixels * (3 + 12 + 12 + 3)
    return need


def image_size_of(path: Path) -> tuple[int, int]:
    """(height, width) from the file's header, before anything is decoded."""
    with open_image(path) as img:
        width, height = img.size
    return height, width


def check_memory(path: Path, need: int, limit: int, tile: int | None) -> None:
    if need > limit:
        how = "use a smaller --tile" if tile else "predict it in tiles (--tile 512)"
        raise DatasetError(f"{path}: predicting this image needs about {need / GB:.1f} GB of memory, over the "
                           f"limit of {limit / GB:.1f} GB; {how} or downscale it, or raise the limit with "
                           f"{MEMORY_ENV}=GB (default: half this machine's memory).")


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


def summary_columns(class_names: list[str], void: int | None) -> list[str]:
    """`NAME_fraction`: the class's share of the non-void pixels (the edge plugins' cloud cover for
    `cloud`); the void class's column, `NAME_share_of_image`, is its share of the whole image."""
    return ["image", "width", "height"] + [f"{name}_share_of_image" if k == void else f"{name}_fraction"
                                           for k, name in enumerate(class_names)]


def write_summary(path: Path, rows: list[list], columns: list[str]) -> None:
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(columns)
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
    limit = memory_limit()
    predictor = open_predictor(model_path, device, tile, overlap, log, tta)
    batch_size = batch_size or predictor.batch_size
    names, colors = predictor.class_names, predictor.class_colors
    void = void_class(names, predictor.config, str(model_path))
    # Every image's need from its header first: one that cannot fit refuses the run before any work.
    needs = [prediction_bytes(*image_size_of(path), len(names), predictor.image_size, tile, overlay_jpeg)
             for path, _ in inputs]
    for (path, _), need in zip(inputs, needs):
        check_memory(path, need, limit, tile)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise cannot_write(out_dir, e) from None
    size_text = "native size" if predictor.image_size is None else "x".join(map(str, predictor.image_size))
    log(f"predict: {len(inputs)} image(s) with {model_path} (classes {', '.join(names)}; model input {size_text}"
        + (f"; tiles {tile} px" if tile else "") + ("; flip TTA" if tta else "")
        + (f"; {names[void]} is void: outside every fraction" if void is not None else "") + f") into {out_dir}")

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
                        + coverage(mask, len(names), void))
        pending.clear()
        now = time.perf_counter()
        if now - last >= PROGRESS_SECONDS or len(rows) == len(inputs):
            log(f"predict: {len(rows)}/{len(inputs)} images ({len(rows) / max(now - start, 1e-9):.1f} img/s)")
            last = now

    pending_bytes = 0
    for (path, rel), need in zip(inputs, needs):
        if pending and pending_bytes + need > limit:
            flush()  # the batch so far, before this image's memory is spent
            pending_bytes = 0
        image = read_image(path)
        if pending and (len(pending) >= batch_size or predictor.batch_key(pending[0][1]) != predictor.batch_key(image)):
            flush()
            pending_bytes = 0
        pending.append((rel, image))
        pending_bytes += need
    flush()
    write_summary(summary, rows, summary_columns(names, void))
    log(f"predict: masks in {out_dir}, class fractions in {summary}")
    return summary
