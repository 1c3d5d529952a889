"""The issue-15 target: the Waggle cloud-cover plugin's own code lines, given segtrain's raw-input
TorchScript file, report cloud cover within 0.05 (mean absolute error) of the ground truth.

Trains segtrain's default recipe on ../shared/data/swimseg/train (or takes --checkpoint), exports
it with `--raw-input --format torchscript`, then runs the plugin's lines unchanged on every
swimseg valid/ image (the real held-out set is never seen by this project; valid/ stands in) and
compares the cloud fraction with the label's. The same lines on the normalised-input export
show the failure the issue describes; `segtrain predict`'s cloud fraction from the checkpoint
itself (full image, no plugin) separates the model's own error from the plugin path's. cv2.resize is used when OpenCV is installed, else Pillow's
bilinear resize stands in (OpenCV is no segtrain dependency).

    .venv/bin/python bench/plugin_cloud_cover.py --quick          # a short training run
    .venv/bin/python bench/plugin_cloud_cover.py --out bench/results/plugin_cloud_cover
"""

from __future__ import annotations

from common import SHARED_DATA, median, parser, report, scratch_root, table  # first: segtrain sets up OpenMP before torch loads
import os
import shutil
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from segtrain.config.load import resolve
from segtrain.training.loop import train
from segtrain.use.export import export
from segtrain.use.trained import TorchPredictor, load_trained


def quiet(*args, **kwargs) -> None:
    pass


def cv2_resize(image: np.ndarray, size) -> np.ndarray:
    try:
        import cv2
        return cv2.resize(image, size)
    except ImportError:
        return np.asarray(Image.fromarray(image).resize(size, Image.Resampling.BILINEAR))


class Plugin:
    """The model lines of the cloud-cover plugin's module.py, unchanged but the file name."""

    def __init__(self, path: Path, device: str = "cpu"):
        self.device = device
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self.net = torch.load(str(path), weights_only=False)  # the node's torch.load(...)
        self.net.to(device=self.device).eval()

    def cloud_cover(self, full_image: np.ndarray) -> float:
        with torch.no_grad():
            image = torch.from_numpy(cv2_resize(full_image, (256, 256)).transpose(2, 0, 1)).type(torch.float32)
            output = self.net(image.unsqueeze(0).to(self.device).float())
            copy_pred = output.argmax(axis=1).float()
        return float(copy_pred.mean())  # class 1 = cloud


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--checkpoint", type=Path, help="a segtrain checkpoint (default: train one here)")
    p.add_argument("--data", type=Path, default=SHARED_DATA / "swimseg")
    p.add_argument("--iterations", type=int, default=None, help="training iterations (default 1000; --quick 250)")
    p.add_argument("--save-checkpoint", type=Path, help="keep the model trained here at this path")
    args = p.parse_args()
    iterations = args.iterations or (250 if args.quick else 1000)
    load_start = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        start = time.perf_counter()
        checkpoint = args.checkpoint
        if checkpoint is None:
            root = scratch_root(args.data, keep=work)
            cfg = resolve({"pretrained_backbone": False, "max_iteration": iterations, "interval_validate": iterations,
                           "n_workers": 0, "output_dir": "plugin", "log_interval": 10 ** 6})
            train(root, cfg, log=quiet)
            checkpoint = root / "MODEL-plugin" / "model_best.pth.tar"
        minutes = (time.perf_counter() - start) / 60
        if args.save_checkpoint and not args.checkpoint:
            shutil.copyfile(checkpoint, args.save_checkpoint)
        valid = args.data / "valid"
        files = {"raw-input": work / "raw.pt", "normalised": work / "normalised.pt"}
        verified = export(checkpoint, "torchscript", files["raw-input"], raw_input=True, verify_on=valid / "images",
                          log=quiet)
        export(checkpoint, "torchscript", files["normalised"], log=quiet)
        truth, covers, seconds = [], {name: [] for name in files}, []
        plugins = {name: Plugin(path) for name, path in files.items()}
        reference = TorchPredictor(load_trained(checkpoint, "cpu", quiet))
        covers["checkpoint (segtrain predict)"] = []
        for path in sorted((valid / "images").iterdir()):
            image = np.asarray(Image.open(path).convert("RGB"))
            label = np.asarray(Image.open(valid / "labels" / f"{path.stem}.png"))
            truth.append(float((label == 255).mean()))
            for name, plugin in plugins.items():
                begin = time.perf_counter()
                covers[name].append(plugin.cloud_cover(image))
                if name == "raw-input":
                    seconds.append(time.perf_counter() - begin)
            covers["checkpoint (segtrain predict)"].append(float((reference.masks([image])[0] == 1).mean()))
    truth = np.asarray(truth)
    rows, raw = [], {"truth": truth.tolist(), "load_start": load_start}
    for name in covers:
        error = np.abs(np.asarray(covers[name]) - truth)
        rows.append([f"{name} TorchScript" if name in files else name, f"{error.mean():.4f}", f"{np.median(error):.4f}", f"{error.max():.4f}",
                     f"{np.mean(covers[name]):.3f}"])
        raw[name] = covers[name]
    text = table(["model given to the plugin", "cloud-cover MAE", "median error", "max error", "mean cover"], rows)
    text += (f"\n\n{len(truth)} images of {valid} (mean true cover {truth.mean():.3f}); the plugin's lines at 256 px, "
             f"{1 / median(seconds):.1f} img/s with the raw-input file. Model: "
             f"{'--checkpoint ' + str(args.checkpoint) if args.checkpoint else f'segtrain defaults, {iterations} iterations ({minutes:.1f} min)'}; "
             f"export verification: argmax agreement {verified['argmax_agreement']:.4%} with the eager model, "
             f"{verified['argmax_agreement_with_checkpoint_preprocessing']:.4%} with the checkpoint's preprocessing. "
             f"Load average at start {load_start:.1f}.")
    report("Issue 15 target: cloud cover through the plugin's code", text, raw, args.out)


if __name__ == "__main__":
    main()
