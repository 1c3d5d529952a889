"""The issue-16 audit target: after a default training run on swimseg with 5% of the training masks
corrupted, at least 80% of the corrupted ones are in the top 10% of `segtrain audit`'s ranking of
the training pairs.

A scratch copy of ../shared/data/swimseg (masks copied, images linked) gets 5% of its training
masks corrupted with a fixed seed: half have the two classes swapped inside a random rectangle
covering 30-60% of the image, half are replaced by another training image's mask. The default
recipe trains on it (--iterations, default the recipe's max_iteration; --quick 200), then the
audit ranks every pair with model_best.pth.tar.

    .venv/bin/python bench/audit.py --quick                       # bench/results/audit-quick.md/json
    .venv/bin/python bench/audit.py                               # bench/results/audit.md/json
"""

from __future__ import annotations

from common import RESULTS, SHARED_DATA, parser, report, table  # first: segtrain sets up OpenMP before torch loads
import os
import random
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from segtrain.config.load import resolve
from segtrain.config.recipe import DEFAULT_MAX_ITERATION
from segtrain.training.loop import train
from segtrain.use.audit import audit

SEED = 16
SHARE = 0.05
TARGET = 0.8


def quiet(*args, **kwargs) -> None:
    pass


def scratch_copy(source: Path, work: Path) -> Path:
    """Masks copied (they get corrupted), images and the lists linked (read only)."""
    root = work / "data"
    for split in ("train", "valid"):
        (root / split).mkdir(parents=True)
        (root / split / "images").symlink_to((source / split / "images").resolve())
        shutil.copytree(source / split / "labels", root / split / "labels")
    for entry in source.glob("*.list"):
        (root / entry.name).symlink_to(entry.resolve())
    return root


def swap_in_rectangle(path: Path, rng: random.Random) -> None:
    """0 <-> 255 inside a rectangle of 30-60% of the image's area, at a random place."""
    mask = np.array(Image.open(path))
    h, w = mask.shape[:2]
    area = rng.uniform(0.3, 0.6)
    h_share = rng.uniform(area, 1.0)  # so that the width share area / h_share is at most 1 too
    rh, rw = round(h * h_share), round(w * area / h_share)
    top, left = rng.randrange(h - rh + 1), rng.randrange(w - rw + 1)
    mask[top:top + rh, left:left + rw] = 255 - mask[top:top + rh, left:left + rw]
    Image.fromarray(mask).save(path)


def corrupt(labels: Path, rng: random.Random) -> dict[str, str]:
    """Corrupt SHARE of the masks in `labels`; returns {image stem: how}."""
    names = sorted(p.name for p in labels.iterdir())
    chosen = rng.sample(names, round(SHARE * len(names)))
    how = {}
    for k, name in enumerate(chosen):
        if k % 2 == 0:
            swap_in_rectangle(labels / name, rng)
            how[Path(name).stem] = "classes swapped in a rectangle"
        else:
            other = rng.choice([n for n in names if n not in chosen])  # an intact mask of another image
            shutil.copyfile(labels / other, labels / name)
            how[Path(name).stem] = f"replaced by {other}"
    return how


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--data", type=Path, default=SHARED_DATA / "swimseg")
    p.add_argument("--iterations", type=int, default=None,
                   help=f"training iterations (default the recipe's {DEFAULT_MAX_ITERATION}; --quick 200)")
    args = p.parse_args()
    iterations = args.iterations or (200 if args.quick else DEFAULT_MAX_ITERATION)
    out = args.out or RESULTS / ("audit-quick" if args.quick else "audit")
    load_start = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        root = scratch_copy(args.data, Path(tmp))
        corrupted = corrupt(root / "train" / "labels", random.Random(SEED))
        start = time.perf_counter()
        cfg = resolve({"max_iteration": iterations, "output_dir": "audit", "log_interval": 10 ** 6})
        train(root, cfg, log=quiet)
        minutes = (time.perf_counter() - start) / 60
        start = time.perf_counter()
        rows = audit(root, root / "MODEL-audit" / "model_best.pth.tar", top=0, log=quiet)
        audit_seconds = time.perf_counter() - start
    train_rows = [row for row in rows if row.split == "train"]
    ranks = {row.image.stem: k for k, row in enumerate(train_rows, start=1)}
    top = round(0.1 * len(train_rows))
    found = {stem: ranks[stem] <= top for stem in corrupted}
    share = sum(found.values()) / len(found)
    by_kind = {}
    for stem, how in corrupted.items():
        kind = "replaced" if how.startswith("replaced") else "rectangle"
        by_kind.setdefault(kind, []).append(found[stem])
    rows_out = [[kind, len(hits), sum(hits), f"{sum(hits) / len(hits):.0%}"] for kind, hits in sorted(by_kind.items())]
    rows_out.append(["all", len(found), sum(found.values()), f"{share:.0%}"])
    text = table(["corruption", "masks", f"in the top 10% ({top} of {len(train_rows)})", "share"], rows_out)
    text += (f"\n\nTarget: at least {TARGET:.0%} of the corrupted masks in the top 10% of the training pairs: "
             f"{'met' if share >= TARGET else 'NOT met'} ({share:.0%}). Ranks of the corrupted masks among "
             f"{len(train_rows)} training pairs: {sorted(ranks[s] for s in corrupted)}. Default recipe, {iterations} "
             f"iterations ({minutes:.1f} min); the audit of {len(rows)} pairs took {audit_seconds:.0f} s. "
             f"Corruption seed {SEED}. Load average at start {load_start:.1f}.")
    raw = {"iterations": iterations, "corrupted": corrupted, "ranks": {s: ranks[s] for s in corrupted},
           "top": top, "share_in_top": share, "train_minutes": minutes, "audit_seconds": audit_seconds,
           "load_start": load_start}
    report("Issue 16 target: the audit finds corrupted masks", text, raw, out)


if __name__ == "__main__":
    main()
