"""Where frames come from: a folder of images or one image (testing, back-filling), a video file,
or a live stream (a Waggle camera name such as bottom_camera, or an rtsp:// / http:// URL).

Images are read as `segtrain predict` reads them (Pillow, EXIF rotation applied, RGB), so the same
file gives the same mask. Streams go through pywaggle's Camera; a snapshot that fails is logged and
retried with growing pauses, never a crash: a camera may come back.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Iterator, NamedTuple

import numpy as np
from PIL import Image, ImageOps

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff"}
VIDEO_SUFFIXES = {".mp4", ".avi", ".mkv", ".mov", ".webm", ".mjpeg"}
RETRY_SECONDS = (1, 2, 5, 10, 30, 60)  # pauses after a failed snapshot; the last repeats

log = logging.getLogger("app")


class Frame(NamedTuple):
    image: np.ndarray  # HxWx3 uint8 RGB
    timestamp: int  # nanoseconds since the epoch: when the image was taken (a file's: its modification time)
    name: str  # the image file's name, or the stream's


class SourceError(Exception):
    """The -stream cannot be used; the message is the one line to log."""


def read_image(path: Path) -> np.ndarray:
    with Image.open(path) as img:
        return np.array(ImageOps.exif_transpose(img).convert("RGB"))


def image_files(folder: Path) -> list:
    return sorted(p for p in folder.iterdir()
                  if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".") and p.is_file())


def _files(paths: list) -> Iterator[Frame]:
    for path in paths:
        try:
            image = read_image(path)
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:  # Pillow's errors for bad files
            log.error("%s: skipped, cannot read this image (%s)", path, e)
            continue
        yield Frame(image, path.stat().st_mtime_ns, path.name)


def _camera(stream: str):
    from waggle.data.vision import Camera

    try:
        return Camera(stream)
    except (OSError, KeyError) as e:  # pywaggle: no data config on this machine, or no such camera in it
        raise SourceError(f"-stream {stream}: no such camera, file or folder ({e}); give a camera name from the "
                          "node's data config (e.g. bottom_camera), a stream URL, a video file or a folder "
                          "of images.") from None


def _video(path: Path) -> Iterator[Frame]:
    camera = _camera(f"file://{path.absolute()}")
    try:
        with camera:
            for sample in camera.stream():
                yield Frame(sample.data, sample.timestamp, path.name)
    except RuntimeError as e:  # pywaggle: OpenCV cannot open the file
        raise SourceError(f"-stream {path}: cannot read this video ({e}).") from None


def _live(stream: str, once: bool) -> Iterator[Frame]:
    camera = _camera(stream)
    failures = 0
    while True:
        try:
            sample = camera.snapshot()
        except Exception as e:  # pywaggle raises RuntimeError, OpenCV its own cv2.error
            if once:
                raise SourceError(f"-stream {stream}: no frame ({e}).") from None
            pause = RETRY_SECONDS[min(failures, len(RETRY_SECONDS) - 1)]
            failures += 1
            log.error("-stream %s: no frame (%s); trying again in %d s", stream, e, pause)
            time.sleep(pause)
            continue
        failures = 0
        yield Frame(sample.data, sample.timestamp, stream)


def frames(stream: str, once: bool) -> Iterator[Frame]:
    """Frames of -stream, lazily: a live stream takes its snapshot when the next frame is asked for."""
    path = Path(stream)
    if "://" not in stream and path.is_dir():
        paths = image_files(path)
        if not paths:
            raise SourceError(f"-stream {stream}: no images in this folder ({', '.join(sorted(IMAGE_SUFFIXES))}).")
        return _files(paths)
    if "://" not in stream and path.is_file():
        return _video(path) if path.suffix.lower() in VIDEO_SUFFIXES else _files([path])
    return _live(stream, once)


def is_finite(stream: str) -> bool:
    """Folders, images and videos end; cameras and stream URLs do not."""
    return "://" not in stream and Path(stream).exists()
