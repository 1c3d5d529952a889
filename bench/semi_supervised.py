"""Benchmark 7, learning from unlabeled images: what FixMatch consistency (unlabeled/) adds when
few masks exist, against the same few masks alone and against every mask, in the same time.

swimseg: the first 40 training images by name keep their masks; the other 360 go to unlabeled/ as
images only (their masks are not copied, so cannot be read). Three runs of segtrain's default
recipe, from scratch, each given the same training time:

  labeled     the 40 labeled images alone
  semi        the 40 labeled + 360 unlabeled images
  all         all 400 images labeled (the ceiling)

Scored by valid mean IoU on valid/ as it is (the final validation; the best is shown too). The
targets: semi at least +0.03 over labeled, and at least half of the gap from labeled to all
closed. `--dataset camvid`: 50 labeled (+ 317 unlabeled), ignore_index 11 (void).

The time budget: each run gets `time_budget` = the minutes, so it plans its own length (a semi
step costs more than a labeled one) and ends on time with its schedule complete.

    .venv/bin/python bench/semi_supervised.py --minutes 30 --out bench/results/semi_supervised
    .venv/bin/python bench/semi_supervised.py --dataset camvid --minutes 30 --out bench/results/semi_supervised-camvid
    .venv/bin/python bench/semi_supervised.py --quick      # 20 s per run, 8 valid images
    .venv/bin/python bench/semi_supervised.py --minutes 7 --variants semi --set unlabeled_colour=true  # one run, a key changed
"""

from __future__ import annotations

from common import data_folder, machine, parser, peak_rss_mb, report, table  # first: segtrain sets up OpenMP before torch loads
import csv
import json
import shutil
import tempfile
from pathlib import Path

from segtrain.config.load import resolve
from segtrain.training.loop import train

DATASETS = {"swimseg": {"labeled": 40, "config": {}},
            "camvid": {"labeled": 50, "config": {"ignore_index": 11}}}
VARIANTS = ("labeled", "semi", "all")
TARGET_GAIN, TARGET_SHARE = 0.03, 0.5


def link_files(source: Path, dest: Path, stems: list[str]) -> None:
    """Links in dest to the files of source with these stems (the shared data stays read-only)."""
    dest.mkdir(parents=True, exist_ok=True)
    files = {p.stem: p for p in source.iterdir()}
    for stem in stems:
        (dest / files[stem].name).symlink_to(files[stem].resolve())


def link_pairs(source: Path, dest: Path, stems: list[str]) -> None:
    for kind in ("images", "labels"):
        link_files(source / kind, dest / kind, stems)


def variant_root(scratch: Path, source: Path, variant: str, n_labeled: int, valid_limit: int | None) -> Path:
    """ROOT for a variant: links to the data set's files; unlabeled/ holds images only."""
    root = scratch / variant
    stems = sorted(p.stem for p in (source / "train" / "images").iterdir())
    labeled = stems if variant == "all" else stems[:n_labeled]
    link_pairs(source / "train", root / "train", labeled)
    if variant == "semi":
        link_files(source / "train" / "images", root / "unlabeled", stems[n_labeled:])
    valid_stems = sorted(p.stem for p in (source / "valid" / "images").iterdir())[:valid_limit]
    link_pairs(source / "valid", root / "valid", valid_stems)
    (root / "class_names.list").symlink_to((source / "class_names.list").resolve())
    return root


def final_scores(log_csv: Path) -> tuple[float, float, int, float]:
    """(final valid mean IoU, best valid mean IoU, iterations, seconds per training iteration) of a run's log.csv."""
    with open(log_csv) as f:
        rows = list(csv.DictReader(f))
    valid = [r for r in rows if r["valid/loss"]]
    times = [float(r["elapsed_time"]) for r in rows if r["train/loss"]]
    gaps = sorted(b - a for a, b in zip(times, times[1:]))
    ious = [float(r["valid/mean_iu"]) for r in valid]
    return ious[-1], max(ious), int(valid[-1]["iteration"]), gaps[len(gaps) // 2] if gaps else float("nan")


def run_variant(scratch: Path, dataset: str, variant: str, minutes: float, valid_limit: int | None,
                extra: dict) -> dict:
    spec = DATASETS[dataset]
    source = data_folder(dataset)
    raw = {**spec["config"], "pretrained_backbone": False, "output_dir": variant, "log_interval": 10**6,
           "time_budget": minutes * 60, **extra}
    cfg = resolve(raw, f"variant {variant}")
    root = variant_root(scratch, source, variant, spec["labeled"], valid_limit)
    print(f"{dataset} {variant}: time_budget {minutes * 60:.0f} s in {root}", flush=True)
    out = train(root, cfg)
    final, best, done, seconds = final_scores(out / "log.csv")
    n_unlabeled = len(list((root / "unlabeled").iterdir())) if (root / "unlabeled").is_dir() else 0
    return {"variant": variant, "labeled": len(list((root / "train" / "images").iterdir())),
            "unlabeled": n_unlabeled, "seconds_per_iteration": seconds, "iterations": done,
            "final_mean_iu": final, "best_mean_iu": best, "config": cfg}


def summarize(dataset: str, minutes: float, runs: dict[str, dict]) -> tuple[str, dict]:
    rows = [[v, r["labeled"], r["unlabeled"], f"{r['seconds_per_iteration']:.2f}", r["iterations"],
             f"{r['final_mean_iu']:.3f}", f"{r['best_mean_iu']:.3f}"] for v, r in runs.items()]
    text = table(["run", "labeled", "unlabeled", "s/iteration", "iterations", "final mIoU", "best mIoU"], rows)
    if set(runs) != set(VARIANTS):  # --variants ran a part: no gain to state
        return text + f"\n\n{dataset}, {minutes:.3g} min of training each; runs: {', '.join(runs)}.", {}
    base, semi, full = (runs[v]["final_mean_iu"] for v in VARIANTS)
    gain = semi - base
    share = gain / (full - base) if full != base else float("nan")
    met = gain >= TARGET_GAIN and share >= TARGET_SHARE
    text = (text + f"\n\n{dataset}, {minutes:.3g} min of training each: semi - labeled = {gain:+.3f} mean IoU "
            f"(target +{TARGET_GAIN}); gap to all-labeled closed: {share:.0%} (target {TARGET_SHARE:.0%}); "
            f"targets {'met' if met else 'NOT met'}.")
    return text, {"gain": gain, "gap_closed": share, "targets_met": met}


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--dataset", choices=list(DATASETS), default="swimseg")
    p.add_argument("--minutes", type=float, default=30.0, help="training time of each run")
    p.add_argument("--valid-images", type=int, default=None, help="validate on the first N valid images")
    p.add_argument("--keep", type=Path, default=None, help="build the runs' folders here (default: a temp folder, removed)")
    p.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS), help="which runs (default: all three)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=JSON",
                   help="a config key for every run, e.g. --set unlabeled_colour=false (repeatable)")
    args = p.parse_args()
    extra = {}
    for item in args.set:
        key, _, value = item.partition("=")
        extra[key] = json.loads(value)
    minutes, valid_limit = (1 / 3, 8) if args.quick else (args.minutes, args.valid_images)
    scratch = Path(tempfile.mkdtemp(prefix="segtrain-semi-", dir=args.keep))
    try:
        runs = {v: run_variant(scratch, args.dataset, v, minutes, valid_limit, extra) for v in args.variants}
    finally:
        if args.keep is None:
            shutil.rmtree(scratch, ignore_errors=True)
    text, figures = summarize(args.dataset, minutes, runs)
    raw = {"dataset": args.dataset, "minutes": minutes, "valid_images": valid_limit, "config": extra, "runs": runs,
           **figures, "machine": machine(), "peak_rss_mb": peak_rss_mb()}
    report(f"Benchmark 7: learning from unlabeled images ({args.dataset})", text, raw, args.out)


if __name__ == "__main__":
    main()
