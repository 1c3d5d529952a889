"""The edge app: frames from -stream, the model's mask of each, and per class its share of the
measured pixels published as env.coverage.<class> (the void class, where the model has one, is
in no denominator and not published); every -sampling-interval'th frame, the image, its mask and
an overlay are uploaded.

    python3 -m app.main -stream bottom_camera -interval 300 -sampling-interval 12
    PYWAGGLE_LOG_DIR=test-run python3 -m app.main -stream images/    # a folder: each image once

Nothing a node can throw at it ends it in a crash loop: an unreadable image or frame is logged
and skipped, a camera that fails is retried, an upload that cannot be written (a full disk) is
logged and the measurements still go out. A model file that is not the one model/model.json
names is refused at start, in one line.
"""

from __future__ import annotations

import argparse
import io
import logging
import math
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List

import numpy as np
from PIL import Image

from .frames import Frame, SourceError, frames, is_finite
from .measure import coverage
from .model import Model, ModelRefused
from .pictures import mask_image, overlay

STREAM_INTERVAL = 60.0  # seconds between inferences on a live stream when -interval is not given
log = logging.getLogger("app")


def parse_args(argv: List[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-stream", default="bottom_camera",
                        help="a camera name from the node's data config, a stream URL, a video file, an image, "
                        "or a folder of images (each processed once, in name order) (default: bottom_camera)")
    parser.add_argument("-interval", type=float, default=None,
                        help=f"seconds from one inference to the next (default: {STREAM_INTERVAL:g} for a "
                        "camera or URL, 0 for files and folders)")
    parser.add_argument("-sampling-interval", dest="sampling_interval", type=int, default=0,
                        help="upload the image, its mask and overlay on the first inference and every Nth "
                        "after it (default 0: never)")
    parser.add_argument("-run-once", dest="run_once", action="store_true", help="one inference, then exit")
    parser.add_argument("-model", type=Path, default=Path(__file__).resolve().parent.parent / "model",
                        help="the folder with model.json and the model file (default: model/ beside app/)")
    args = parser.parse_args(argv)
    if args.sampling_interval < 0 or (args.interval is not None and args.interval < 0):
        parser.error("-interval and -sampling-interval must be 0 or more")
    if args.interval is None:
        args.interval = 0.0 if is_finite(args.stream) else STREAM_INTERVAL
    return args


def publish_coverage(plugin, model: Model, frame: Frame, shares: List[float], meta: Dict[str, str]) -> str:
    """One message per measured class, stamped with the frame's time; returns what was published, for the log."""
    if any(math.isnan(share) for share in shares):  # only the measured classes' shares can be NaN
        return "every pixel is void: nothing measured"
    said = []
    for name, topic, share in zip(model.class_names, model.published, shares):
        if topic is not None:
            plugin.publish(topic, share, meta=meta, timestamp=frame.timestamp)
            said.append(f"{name} {share:.4f}")
    return ", ".join(said)


def upload_sample(plugin, model: Model, frame: Frame, mask: np.ndarray, meta: Dict[str, str]) -> None:
    """The frame (JPEG), its mask (palette PNG, as predict writes it) and the overlay, stamped
    with the frame's time. A full or unwritable disk costs the upload, never the measurements."""
    stem = Path(frame.name).stem if "://" not in frame.name else "sample"
    work = None
    try:
        work = Path(tempfile.mkdtemp(prefix="segtrain-upload-"))
        color = np.asarray(model.class_colors, dtype=np.uint8)[mask]
        pictures = [(f"{stem}.jpg", Image.fromarray(frame.image), {"quality": 90}),
                    (f"{stem}_mask.png", mask_image(mask, model.class_colors), {}),
                    (f"{stem}_overlay.jpg", Image.fromarray(overlay(frame.image, color)), {"quality": 90})]
        for name, picture, options in pictures:
            # Encoded in memory, then written in one call: Pillow writing into a full file system may
            # stop short without an error, and a truncated picture would be uploaded.
            encoded = io.BytesIO()
            picture.save(encoded, format=Image.registered_extensions()[Path(name).suffix], **options)
            (work / name).write_bytes(encoded.getvalue())
            plugin.upload_file(work / name, meta=meta, timestamp=frame.timestamp)
    except OSError as e:
        log.error("%s: upload skipped (%s); its measurements were published", frame.name, e.strerror or e)
    finally:
        if work is not None:
            shutil.rmtree(work, ignore_errors=True)


def process(plugin, model: Model, frame: Frame, upload: bool) -> None:
    started = time.perf_counter()
    mask = model.mask(frame.image)
    shares = coverage(mask, len(model.class_names), model.void_class)
    meta = {"model": model.name, "model_sha256": model.sha256, "segtrain_version": model.segtrain_version,
            "image": frame.name}
    said = publish_coverage(plugin, model, frame, shares, meta)
    elapsed = time.perf_counter() - started
    log.info("%s: %s (%.1f ms frame to publish)", frame.name, said, elapsed * 1000)
    if upload:
        upload_sample(plugin, model, frame, mask, meta)


def peak_memory() -> str:
    """This process's peak resident memory: Linux's VmHWM, which starts anew at exec (getrusage's
    maxrss keeps the peak of the process that started the app)."""
    try:
        status = Path("/proc/self/status").read_text()
    except OSError:
        return "unknown"
    found = re.search(r"^VmHWM:\s+(\d+) kB", status, re.MULTILINE)
    return f"{int(found.group(1)) / 1024:.0f} MB" if found else "unknown"


def run(args: argparse.Namespace) -> int:
    from waggle.plugin import Plugin

    try:
        model = Model(args.model)
    except ModelRefused as e:
        log.error("%s", e)
        return 1
    log.info("model %s (%s), classes %s; -stream %s", model.name, model.sha256[:12], ", ".join(model.class_names),
             args.stream)
    done = 0
    with Plugin() as plugin:
        try:
            source = frames(args.stream, args.run_once)
            next_at = time.monotonic()
            for frame in source:
                upload = args.sampling_interval > 0 and done % args.sampling_interval == 0
                try:
                    process(plugin, model, frame, upload)
                except Exception as e:  # one bad frame (an odd shape, a value pywaggle refuses) is skipped
                    log.error("%s: skipped (%s: %s)", frame.name, type(e).__name__, e)
                done += 1
                if args.run_once:
                    break
                next_at = max(next_at + args.interval, time.monotonic())  # a slow frame delays, never bunches, the next
                time.sleep(max(0.0, next_at - time.monotonic()))
        except SourceError as e:
            log.error("%s", e)
            return 1
    log.info("done: %d frame(s); peak memory %s", done, peak_memory())
    return 0


def main(argv: List[str] = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", stream=sys.stderr)
    return run(parse_args(sys.argv[1:] if argv is None else argv))


if __name__ == "__main__":
    sys.exit(main())
