"""Benchmark 4, inference on the CPU: images/s at the Waggle cloud-cover plugin's 256 px and at
512 px for eager PyTorch, TorchScript, ONNX Runtime fp32 and ONNX Runtime INT8, each file made by
`segtrain export` (INT8: static, calibrated on the data's training images), with each engine's
mean IoU on the validation split and its change against eager.

Without --checkpoint, a model is trained here first (a short run on --data; weights do not change
speed, but the accuracy change needs a model that has learnt something). Engines alternate
in blocks of a few images in one process, each engine loaded for its block and dropped after it;
the machine's load average is printed with the figures.

    .venv/bin/python bench/inference.py --quick                  # under ~3 minutes on 2 cores
    .venv/bin/python bench/inference.py --checkpoint run/MODEL-x/model_best.pth.tar --out bench/results/inference
"""

from __future__ import annotations

from common import SHARED_DATA, machine, median, parser, peak_rss_mb, report, scratch_root, table  # first: segtrain sets up OpenMP before torch loads
import os
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

from segtrain.config.load import resolve
from segtrain.training.loop import train
from segtrain.use.evaluate import evaluate
from segtrain.use.export import LogitsOnly, export
from segtrain.use.trained import load_trained

SIZES = (256, 512)
WARM_UP = 3  # untimed runs of each freshly loaded engine: first calls allocate, and TorchScript profiles and optimises


def quiet(*args, **kwargs) -> None:
    pass


def train_here(data: Path, arch: str, quick: bool, work: Path) -> Path:
    root = scratch_root(data, keep=work)
    cfg = resolve({"model": arch, "image_size": 96 if quick else 160, "batch_size": 8,
                   "max_iteration": 30 if quick else 300, "interval_validate": 1000, "lr": 0.01,
                   "pretrained_backbone": False, "n_workers": 0, "output_dir": "bench", "log_interval": 1000})
    train(root, cfg, log=quiet)
    return root / "MODEL-bench" / "model_best.pth.tar"


def valid_subset(data: Path, n: int | None, work: Path) -> str:
    """'valid', or a folder linking the first n validation pairs (--quick scores fewer images)."""
    if n is None:
        return "valid"
    folder = work / "valid_subset"
    for sub in ("images", "labels"):
        (folder / sub).mkdir(parents=True)
        for path in sorted((data / "valid" / sub).iterdir())[:n]:
            (folder / sub / path.name).symlink_to(path.resolve())
    return str(folder)


def engines(checkpoint: Path, files: dict) -> dict:
    """engine -> a function that loads it and returns its run(x). Each engine is loaded for its own
    block of timed runs and dropped after it, so no other engine's threads are alive while it runs: an
    idle ONNX Runtime session's threads still spin after each run and took the cores from the next
    engine's runs (fp32 LR-ASPP at 256 px: 10.1 ms a run alternating with the INT8 file, 3.5 ms alone)."""
    threads = torch.get_num_threads()

    def torch_engine(load):
        def start():
            module = load()

            def run(x):
                with torch.inference_mode():
                    return module(torch.from_numpy(x))
            return run
        return start

    def script():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return torch.jit.load(str(files["torchscript"]), map_location="cpu")

    def onnx_engine(path):
        def start():
            options = ort.SessionOptions()
            options.intra_op_num_threads = threads
            session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
            return lambda x: session.run(None, {"image": x})[0]
        return start

    eager = torch_engine(lambda: LogitsOnly(load_trained(checkpoint, "cpu", quiet).model).eval())
    return {"eager": eager, "torchscript": torch_engine(script),
            **{engine: onnx_engine(files[engine]) for engine in ("onnx fp32", "onnx int8")}}


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--checkpoint", type=Path, help="a segtrain checkpoint (default: train one here on --data)")
    p.add_argument("--data", type=Path, default=SHARED_DATA / "swimseg",
                   help="data folder: calibration (train/) and accuracy (valid/) (default ../shared/data/swimseg)")
    p.add_argument("--arch", default="fcn_resnet18", help="model to train when no --checkpoint is given")
    args = p.parse_args()
    images, rounds, n_valid = (3, 2, 20) if args.quick else (5, 4, None)
    load_start = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        start = time.perf_counter()
        checkpoint = args.checkpoint or train_here(args.data, args.arch, args.quick, work)
        trained_s = time.perf_counter() - start
        files = {"torchscript": work / "m.pt", "onnx fp32": work / "m.onnx", "onnx int8": work / "m.int8.onnx"}
        export(checkpoint, "torchscript", files["torchscript"], log=quiet)
        export(checkpoint, "onnx", files["onnx fp32"], log=quiet)
        # the guard is the export's job; here the change is measured, so nothing is refused
        int8 = export(checkpoint, "onnx", files["onnx int8"], int8=True, calibrate_on=args.data, max_iou_drop=1.0,
                      log=quiet)
        split = valid_subset(args.data, n_valid, work)
        accuracy = {engine: evaluate(args.data, path, split, "cpu", quiet)["mean_iu"]
                    for engine, path in [("eager", checkpoint), *files.items()]}
        runs = engines(checkpoint, files)
        times = {(engine, size): [] for size in SIZES for engine in runs}
        for size in SIZES:
            x = np.random.default_rng(0).standard_normal((1, 3, size, size), dtype=np.float32)
            for _ in range(rounds):
                for engine, start in runs.items():
                    run = start()
                    for _ in range(WARM_UP):
                        run(x)
                    for _ in range(images):
                        begin = time.perf_counter()
                        run(x)
                        times[engine, size].append(time.perf_counter() - begin)
                    del run
        arch = load_trained(checkpoint, "cpu", quiet).arch
    rows = []
    for engine in runs:
        speeds = [1 / median(times[engine, size]) for size in SIZES]
        ratio = median(times["onnx fp32", 256]) / median(times[engine, 256])
        rows.append([engine, *speeds, f"{ratio:.2f}", f"{accuracy[engine]:.4f}",
                     f"{accuracy[engine] - accuracy['eager']:+.4f}"])
    scored = f"first {n_valid}" if n_valid else "all"
    text = table(["engine", "img/s at 256 px", "img/s at 512 px", "speed vs onnx fp32 at 256", "mean IoU",
                  "change vs eager"], rows)
    text += (f"\n\n{arch} from {'--checkpoint ' + str(args.checkpoint) if args.checkpoint else f'a {trained_s:.0f} s training run here'}; "
             f"batch 1, {torch.get_num_threads()} threads, medians of {rounds} alternating rounds of {images} images, each engine loaded alone "
             f"for its block; "
             f"mean IoU on the {scored} validation images of {args.data} (model input at the training size). "
             f"INT8 calibrated on {int8['calibration_images']} training images. Load average at start "
             f"{load_start:.1f}. Peak RSS {peak_rss_mb():.0f} MB.")
    raw = {"times": {f"{engine} {size}": t for (engine, size), t in times.items()}, "mean_iu": accuracy,
           "load_start": load_start, "machine": machine()}
    report("Benchmark 4: inference", text, raw, args.out)


if __name__ == "__main__":
    main()
