"""audit: which masks to re-check. A trained model scores every training and validation pair of
ROOT (the pairs training used, decoded as training decoded them) by how strongly it disagrees
with the mask (evaluation/audit.py says how and why by loss), and writes into one folder:

- audit.csv: every pair, most doubtful first: rank, split, image, mask (paths relative to ROOT),
  loss, mean_iu, disagree_share;
- for the top N, RANK_SPLIT_NAME.png: image | mask | model prediction, in the run's class colours.

The default folder is `audit/` beside the checkpoint (MODEL-<name>/audit/).
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image

from segtrain.data.folder import SegmentationDataset
from segtrain.errors import ConfigError
from segtrain.evaluation.audit import Doubt, rank_doubts
from segtrain.outputs.visualize import side_by_side
from segtrain.paths import output_file, output_folder
from segtrain.data.classes import void_class
from segtrain.use.evaluate import predictor_batches, split_pairs
from segtrain.use.predict import open_predictor, write_atomic

CSV_NAME = "audit.csv"
COLUMNS = ["rank", "split", "image", "mask", "loss", "mean_iu", "disagree_share"]


@dataclass(frozen=True)
class Row:
    rank: int
    split: str  # "train" or "valid"
    image: Path
    mask: Path
    doubt: Doubt

    def cells(self, root: Path) -> list:
        return [self.rank, self.split, relative(self.image, root), relative(self.mask, root), f"{self.doubt.loss:.6g}",
                f"{self.doubt.mean_iu:.6g}", f"{self.doubt.disagree_share:.6g}"]

    @property
    def picture(self) -> str:
        return f"{self.rank:03d}_{self.split}_{self.image.stem}.png"


def relative(path: Path, root: Path) -> str:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:  # a split outside ROOT keeps its full path
        return path.as_posix()


def audit(root: Path, checkpoint: Path, out: Path | None = None, top: int = 20, device: str = "auto",
          log=print) -> list[Row]:
    """Rank ROOT's training and validation pairs under the model of `checkpoint` (a checkpoint or
    an exported file), write audit.csv and the top pictures into `out`; returns the rows."""
    root, checkpoint = Path(root), Path(checkpoint)
    if top < 0:
        raise ConfigError(f"--top {top}: give how many pictures to write, 0 or more (0: the CSV only).")
    out = output_folder(Path(out) if out is not None else checkpoint.parent / "audit", "--out")
    output_file(out / CSV_NAME, "--out", {checkpoint: "the model file"})
    predictor = open_predictor(checkpoint, device, log=log)
    train, decoder, _ = split_pairs(root, predictor, checkpoint, "train", log)
    valid, _, _ = split_pairs(root, predictor, checkpoint, "valid", log)
    pairs, splits = train + valid, ["train"] * len(train) + ["valid"] * len(valid)
    dataset = SegmentationDataset(pairs, decoder, None, train=False)
    log(f"audit: scoring {len(train)} training and {len(valid)} validation pair(s) of {root} with {checkpoint}")
    with torch.inference_mode():
        doubts = rank_doubts(predictor_batches(predictor, dataset), lambda images, sizes: predictor.logits(images),
                             len(predictor.class_names), void=void_class(predictor.class_names, predictor.config,
                                                                         str(checkpoint)))
    rows = [Row(rank, splits[d.index], pairs[d.index].image, pairs[d.index].label, d)
            for rank, d in enumerate(doubts, start=1)]
    write_csv(out / CSV_NAME, rows, root)
    for row in rows[:top]:
        image, mask = dataset.load(row.doubt.index)
        picture = side_by_side(image, [mask, predictor.masks([image])[0]], predictor.class_names,
                               predictor.class_colors, ["image", "mask", "model"])
        write_atomic(out / row.picture, lambda f: Image.fromarray(picture).save(f, format="PNG"))
    log(f"audit: {len(rows)} pair(s) scored; most doubtful first (loss = mean cross-entropy of the mask under the "
        "model; disagree = share of pixels whose prediction is another class):")
    for row in rows[:5]:
        log(f"  {row.rank:>3}. {row.split:<5} {relative(row.image, root)}  loss {row.doubt.loss:.3f}  "
            f"mean IoU {row.doubt.mean_iu:.3f}  disagree {row.doubt.disagree_share:.1%}")
    log(f"audit: all pairs in {out / CSV_NAME}; image | mask | model pictures of the top {min(top, len(rows))} in {out}")
    return rows


def write_csv(path: Path, rows: list[Row], root: Path) -> None:
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(COLUMNS)
    writer.writerows(row.cells(root) for row in rows)
    # File names that are not UTF-8 keep their bytes, as in predict's summary.csv.
    write_atomic(path, lambda f: f.write(text.getvalue().encode("utf-8", errors="surrogateescape")))
