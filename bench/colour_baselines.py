"""Context for benchmark 3: how far colour alone gets on ../shared/data/swimseg, at full resolution.

Sky is blue and cloud is white or grey, so the normalised blue-red ratio (B - R) / (B + R) of a
pixel separates them (Dev et al., JSTARS 2016). Two baselines, scored as valid mean IoU over the
whole valid split's confusion matrix, like validation:

  global threshold    one ratio threshold, fitted on train/ (a model-free floor)
  per-image oracle    each valid image gets the threshold that is best for its own labels: it
                      peeks at the answers, so it is not a method, but it says how much of the
                      labelling a per-image colour rule can reproduce
  labels on a grid    the valid labels themselves, averaged onto an N x N grid and drawn back at
                      600 px as validation draws logits (bilinear, then the larger class): what a
                      perfect model scores when its output is that coarse (LR-ASPP's output is
                      an eighth of its input: 20 x 20 at 160 px)

    .venv/bin/python bench/colour_baselines.py [--out bench/results/colour_baselines]
"""

from __future__ import annotations

from common import data_folder, parser, report, table  # first: segtrain sets up OpenMP before torch loads
from pathlib import Path

import numpy as np
from PIL import Image

BINS = 200  # ratio in [-1, 1] in steps of 0.01
GRIDS = (20, 40, 80)  # LR-ASPP's output at 160, 320 and 640 px inputs


def ratio_histograms(split: Path) -> np.ndarray:
    """Per image, pixel counts of the ratio's bins: shape (images, 2 classes, BINS)."""
    out = []
    for image_path in sorted((split / "images").iterdir()):
        label_path = next((split / "labels").glob(image_path.stem + ".*"))
        rgb = np.asarray(Image.open(image_path).convert("RGB"), dtype=np.float32)
        cloud = np.asarray(Image.open(label_path).convert("L")) > 127
        r, b = rgb[..., 0], rgb[..., 2]
        ratio = (b - r) / np.maximum(b + r, 1.0)
        bins = np.clip(((ratio + 1) / 2 * BINS).astype(np.int64), 0, BINS - 1)
        out.append([np.bincount(bins[cloud == c], minlength=BINS) for c in (False, True)])
    return np.asarray(out, dtype=np.int64)


def confusion_at(hist: np.ndarray, threshold_bin: int) -> np.ndarray:
    """2x2 confusion (rows truth sky, cloud) when bins below threshold_bin are called cloud."""
    sky, cloud = hist[0], hist[1]
    return np.array([[sky[threshold_bin:].sum(), sky[:threshold_bin].sum()],
                     [cloud[threshold_bin:].sum(), cloud[:threshold_bin].sum()]])


def mean_iou(confusion: np.ndarray) -> float:
    diag = np.diag(confusion)
    return float(np.mean(diag / (confusion.sum(0) + confusion.sum(1) - diag)))


def labels_on_grid(split: Path, grid: int) -> float:
    """Valid mean IoU of the labels drawn back from a grid x grid average of themselves."""
    import torch
    import torch.nn.functional as F

    confusion = np.zeros((2, 2), np.int64)
    for label_path in sorted((split / "labels").iterdir()):
        cloud = np.asarray(Image.open(label_path).convert("L")) > 127
        truth = torch.from_numpy(cloud.astype(np.float32))[None, None]
        coarse = F.interpolate(truth, size=(grid, grid), mode="area")
        drawn = F.interpolate(coarse, size=cloud.shape, mode="bilinear", align_corners=False)[0, 0].numpy() > 0.5
        confusion += np.bincount(2 * cloud.ravel() + drawn.ravel(), minlength=4).reshape(2, 2)
    return mean_iou(confusion)


def main() -> None:
    args = parser(__doc__).parse_args()
    root = data_folder("swimseg")
    train, valid = ratio_histograms(root / "train"), ratio_histograms(root / "valid")
    pooled = train.sum(0)
    best = max(range(BINS + 1), key=lambda t: mean_iou(confusion_at(pooled, t)))
    valid_global = mean_iou(confusion_at(valid.sum(0), best))
    oracle = sum(confusion_at(h, max(range(BINS + 1), key=lambda t: np.trace(confusion_at(h, t))))
                 for h in valid)
    rows = [["global threshold (fitted on train)", f"{best / BINS * 2 - 1:.2f}", f"{valid_global:.3f}"],
            ["per-image oracle threshold (best accuracy per image)", "per image", f"{mean_iou(oracle):.3f}"]]
    grids = {grid: labels_on_grid(root / "valid", grid) for grid in GRIDS}
    rows += [[f"the labels drawn from a {grid}x{grid} grid (a perfect model at that output size)", "–", f"{iou:.3f}"]
             for grid, iou in grids.items()]
    text = table(["baseline", "ratio threshold", "valid mean IoU"], rows)
    text += f"\n\nswimseg, {len(train)} train / {len(valid)} valid images at full resolution."
    report("Colour baselines for benchmark 3", text, {"global_threshold": best / BINS * 2 - 1,
                                                      "valid_global": valid_global,
                                                      "valid_oracle": mean_iou(oracle),
                                                      "valid_labels_on_grid": grids}, args.out)


if __name__ == "__main__":
    main()
