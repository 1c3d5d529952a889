"""Context for benchmark 3: how much of a model's valid mean IoU a few images take.

Scores a checkpoint (or exported file) on a split the way `segtrain evaluate` does, one image at a
time, then again without the k images it disagrees with most (share of pixels where the model and
the mask differ). The removed images are chosen by the model's own disagreement, so any model
scores higher without them. The figure means something only together with a look at those
images' masks. On swimseg the first three are masks that call blue sky cloud (0696, 0259) or miss
wisps (0145); see BENCHMARKS.md section 3.

    .venv/bin/python bench/worst_images.py --checkpoint RUN/MODEL-x/checkpoint.pth.tar [--data ROOT]
"""

from __future__ import annotations

from common import data_folder, parser, report, table  # first: segtrain sets up OpenMP before torch loads
from pathlib import Path

import numpy as np
import torch

from segtrain.evaluation.metrics import scores
from segtrain.use.evaluate import count, split_pairs
from segtrain.use.predict import open_predictor

DROPS = (1, 3, 5, 10)


def per_image_confusion(checkpoint: Path, root: Path, split: str) -> list[tuple[str, np.ndarray]]:
    """(image name, confusion matrix at the label's native size) for each image of the split."""
    predictor = open_predictor(checkpoint, "cpu", log=lambda *a: None)
    pairs, decoder, _ = split_pairs(root, predictor, checkpoint, split, log=lambda *a: None)
    return [(Path(pair.image).name, np.asarray(count(predictor, [pair], decoder)["confusion_matrix"], dtype=np.int64))
            for pair in pairs]


def without_worst(rows: list[tuple[str, np.ndarray]], drops=DROPS) -> list[list]:
    """Table rows: images dropped, mean IoU of the rest's summed matrix, the dropped names."""
    def disagreement(matrix):  # an image whose pixels are all ignored counts as agreeing
        return 1 - np.trace(matrix) / matrix.sum() if matrix.sum() else 0.0

    def mean_iu(kept):
        return float(scores(torch.from_numpy(sum(matrix for _, matrix in kept)))["mean_iu"])

    ranked = sorted(rows, key=lambda row: disagreement(row[1]), reverse=True)
    return [[0, mean_iu(ranked), "-"]] + [[k, mean_iu(ranked[k:]), ", ".join(name for name, _ in ranked[:k])]
                                          for k in drops if k < len(ranked)]


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--checkpoint", type=Path, required=True)
    p.add_argument("--data", type=Path, default=None, help="data folder (default ../shared/data/swimseg)")
    p.add_argument("--split", default="valid")
    args = p.parse_args()
    root = args.data or data_folder("swimseg")
    rows = without_worst(per_image_confusion(args.checkpoint, root, args.split))
    text = table(["images left out", "mean IoU of the rest", "left out (most disagreeing first)"], rows)
    text += f"\n\n{args.checkpoint} on {root} {args.split}; each image scored at its label's native size."
    report("Mean IoU without the images the model disagrees with most", text,
           {"rows": rows, "checkpoint": str(args.checkpoint)}, args.out)


if __name__ == "__main__":
    main()
