"""Context for benchmark 3: how far colour alone gets on ../shared/data/swimseg, at full resolution.

Sky is blue and cloud is white or grey, so the normalised blue-red ratio (B - R) / (B + R) of a
pixel separates them (Dev et al., JSTARS 2016). Two baselines, scored as valid mean IoU over the
whole valid split's confusion matrix, like validation:

  global threshold    one ratio threshold, fitted on train/ (a model-free floor)
  per-image oracle    each valid image gets the threshold that is best for its own labels: it
                      peeks at the answers, so it is not a method, but it says how much of the
                      labelling a per-image colour rule can reproduce

    .venv/bin/python bench/colour_baselines.py [--out bench/results/colour_baselines]
"""

from __future__ import annotations

from common import data_folder, parser, report, table  # first: segtrain sets up OpenMP before torch loads
from pathlib import Path

import numpy as np
from PIL import Image

BINS = 200  # ratio in [-1, 1] in steps of 0.01


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
    text = table(["baseline", "ratio threshold", "valid mean IoU"], rows)
    text += f"\n\nswimseg, {len(train)} train / {len(valid)} valid images at full resolution."
    report("Colour baselines for benchmark 3", text, {"global_threshold": best / BINS * 2 - 1,
                                                      "valid_global": valid_global,
                                                      "valid_oracle": mean_iou(oracle)}, args.out)


if __name__ == "__main__":
    main()
