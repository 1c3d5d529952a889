"""Benchmark 3, time to accuracy against the anchor: for each data set, segtrain's default recipe
(a config with nothing but `time_budget` and `pretrained_backbone: false`, and camvid's
ignore_index) and ../shared/anchors/bare_recipe.py, run unchanged (LR-ASPP, from scratch, AdamW,
cosine over the budget), each in a new process with the same budget, one after the other on the
same machine.

The anchor squashes every image to SIDE x SIDE; it gets segtrain's CPU input area (160 x 160), so
both models see the same pixels per image (segtrain keeps the aspect ratio: camvid 144 x 192).
Both score valid/ at each label's native resolution: segtrain validates along the way (its last
validation ends the budget), the anchor once after its budget. Time axis: segtrain's training time
(log.csv's elapsed_time less the time spent validating); the anchor's budget is all training (its
data loading before and scoring after are outside it). membrane has no valid/: both get the same
fixed split, its last 6 of 30 training pairs.

    .venv/bin/python bench/time_to_accuracy.py --quick                  # swimseg, 1 min each, 8 valid images
    .venv/bin/python bench/time_to_accuracy.py --datasets swimseg camvid --minutes 30
    .venv/bin/python bench/time_to_accuracy.py --recipes anchor --datasets camvid --minutes 30
    .venv/bin/python bench/time_to_accuracy.py --plot-only
"""

from __future__ import annotations

from common import REPO, RESULTS, SHARED_DATA, UNTOUCHED, data_folder, machine, parser, report, table, untouched_env  # first: segtrain sets up OpenMP before torch loads
import csv
import json
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import torch

ANCHOR = REPO.parent / "shared" / "anchors" / "bare_recipe.py"
RECIPES = ("default", "anchor")
DATASETS = {
    "swimseg": {"config": {}, "anchor": []},
    "camvid": {"config": {"ignore_index": 11}, "anchor": ["--ignore", "11"]},
    "membrane": {"config": {}, "anchor": [], "valid_from_train": 6},
}
ANCHOR_SIDE = 160  # segtrain's CPU input area (config/recipe.py INPUT_SIDE)
THRESHOLDS = {"swimseg": (0.8, 0.85, 0.88), "camvid": (0.4, 0.5, 0.58), "membrane": (0.7, 0.8, 0.85)}


def link_split(source: Path, target: Path, names: list[str]) -> None:
    for kind in ("images", "labels"):
        (target / kind).mkdir(parents=True)
        by_stem = {p.stem: p for p in (source / kind).iterdir()}
        for stem in names:
            (target / kind / by_stem[stem].name).symlink_to(by_stem[stem])


def run_root(dataset: str, recipe: str, tag: str, valid_limit: int | None) -> Path:
    """bench/results/runs/DATASET-RECIPE: links to the data set's pairs (valid/ cut to valid_limit),
    kept with the run's outputs so curves can be read back and runs made at different times plotted together."""
    source = data_folder(dataset)
    root = RESULTS / "runs" / f"{dataset}-{recipe}{tag}"
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    (root / "class_names.list").symlink_to(source / "class_names.list")
    stems = sorted(p.stem for p in (source / "train" / "images").iterdir())
    held = DATASETS[dataset].get("valid_from_train")
    if held:
        train, valid, valid_source = stems[:-held], stems[-held:], source / "train"
    else:
        train, valid_source = stems, source / "valid"
        valid = sorted(p.stem for p in (valid_source / "images").iterdir())
    link_split(source / "train", root / "train", train)
    link_split(valid_source, root / "valid", valid[:valid_limit])
    return root


def training_curve(log_csv: Path) -> list[dict]:
    """Valid rows with training time = elapsed_time minus all validation time before the row."""
    with open(log_csv) as f:
        rows = list(csv.DictReader(f))
    points, validating, last_time = [], 0.0, 0.0
    for row in rows:
        elapsed = float(row["elapsed_time"])
        if row["valid/loss"]:
            validating += elapsed - last_time if points else elapsed
            points.append({"iteration": int(row["iteration"]), "train_time": elapsed - validating,
                           "mean_iu": float(row["valid/mean_iu"])})
        last_time = elapsed
    return points


def run_default(root: Path, dataset: str, minutes: float) -> dict:
    cfg = {"time_budget": f"{minutes * 60:g}s", "pretrained_backbone": False, "output_dir": "default",
           **DATASETS[dataset]["config"]}
    (root / "config.list").write_text(json.dumps(cfg, indent=1))
    env = untouched_env()
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "segtrain", "train", str(root)], env=env, check=True, cwd=root.parent)
    wall = time.perf_counter() - start
    out = root / "MODEL-default"
    numbers = root / "evaluate-final.json"
    subprocess.run([sys.executable, "-m", "segtrain", "evaluate", str(root), "--checkpoint", str(out / "checkpoint.pth.tar"),
                    "--json", str(numbers)], env=env, check=True, cwd=root.parent, stdout=subprocess.DEVNULL)
    final = json.loads(numbers.read_text())
    saved = torch.load(out / "checkpoint.pth.tar", map_location="cpu", weights_only=True)["config"]
    return {"wall_s": wall, "final_mean_iu": final["mean_iu"], "points": training_curve(out / "log.csv"),
            "class_iu": {c["name"]: c["iou"] for c in final["per_class"] if c["iou"] is not None},
            "config": {key: saved.get(key) for key in ("model", "image_size", "batch_size", "loss", "class_weights",
                                                       "max_iteration", "interval_validate", "lr", "optimizer")}}


def run_anchor(root: Path, dataset: str, minutes: float) -> dict:
    command = [sys.executable, str(ANCHOR), str(root), "lraspp", str(ANCHOR_SIDE), f"{minutes:g}",
               *DATASETS[dataset]["anchor"]]
    start = time.perf_counter()
    result = subprocess.run(command, env=UNTOUCHED, capture_output=True, text=True, cwd=root.parent)
    wall = time.perf_counter() - start
    (root / "anchor.log").write_text(result.stdout + result.stderr)
    if result.returncode != 0:
        sys.exit(f"anchor failed ({result.returncode}); see {root / 'anchor.log'}")
    final = re.search(r"FINAL valid \S+ \S+ \S+ (\d+) it: acc ([\d.]+) mIoU ([\d.]+)", result.stdout)
    iterations, miou = int(final.group(1)), float(final.group(3))
    return {"wall_s": wall, "final_mean_iu": miou, "command": command[1:],
            "points": [{"iteration": iterations, "train_time": minutes * 60, "mean_iu": miou}]}


def run(dataset: str, recipe: str, minutes: float, valid_limit: int | None, tag: str) -> None:
    root = run_root(dataset, recipe, tag, valid_limit)
    meta = {"dataset": dataset, "recipe": recipe, "minutes": minutes, "machine_before": machine(),
            "valid_images": len(list((root / "valid" / "images").iterdir()))}
    print(f"{dataset} {recipe}: {minutes:g} min in {root}", flush=True)
    meta.update((run_default if recipe == "default" else run_anchor)(root, dataset, minutes))
    meta["machine_after"] = machine()
    (root / "run.json").write_text(json.dumps(meta, indent=1))


def load_result(dataset: str, recipe: str, tag: str) -> dict | None:
    path = RESULTS / "runs" / f"{dataset}-{recipe}{tag}" / "run.json"
    return json.loads(path.read_text()) if path.is_file() else None


def first_time(points: list[dict], threshold: float) -> str:
    hit = next((p for p in points if p["mean_iu"] >= threshold), None)
    return f"{hit['train_time'] / 60:.1f}" if hit else "–"


def plot_curves(results: list[dict], png: Path) -> None:
    """One panel per data set: each recipe's valid mean IoU against training minutes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    datasets = list(dict.fromkeys(r["dataset"] for r in results))
    fig, axes = plt.subplots(1, len(datasets), figsize=(5 * len(datasets), 4), squeeze=False)
    for ax, dataset in zip(axes[0], datasets):
        for r in (r for r in results if r["dataset"] == dataset):
            pts = r["points"]
            style = {"marker": "o"} if r["recipe"] == "default" else {"marker": "*", "markersize": 14, "linestyle": ""}
            ax.plot([p["train_time"] / 60 for p in pts], [p["mean_iu"] for p in pts], label=r["recipe"], **style)
        ax.set_title(f"{dataset}, from scratch")
        ax.set_xlabel("training minutes (validation excluded)")
        ax.set_ylabel("valid mean IoU")
        ax.set_ylim(0, 1)
        ax.legend()
    fig.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=100)


def summarize(results: list[dict], png: Path) -> str:
    rows = []
    for r in results:
        pts = r["points"]
        worst = ""
        if r.get("class_iu"):
            name, value = min(r["class_iu"].items(), key=lambda item: item[1])
            worst = f"{name} {value:.3f}"
        rows.append([r["dataset"], r["recipe"], pts[-1]["iteration"], f"{pts[-1]['train_time'] / 60:.1f}",
                     f"{r['final_mean_iu']:.3f}", f"{max(p['mean_iu'] for p in pts):.3f}",
                     *[first_time(pts, t) for t in THRESHOLDS[r["dataset"]]], worst, f"{r['wall_s'] / 60:.1f}",
                     r["valid_images"]])
    headers = ["data", "recipe", "iterations", "train min", "final mIoU", "best mIoU", "min to 1st", "min to 2nd",
               "min to 3rd threshold", "worst class", "wall min", "valid imgs"]
    datasets = dict.fromkeys(r["dataset"] for r in results)
    thresholds = "; ".join(f"{d}: {', '.join(map(str, THRESHOLDS[d]))}" for d in datasets)
    runs = "\n".join(f"- {r['dataset']} {r['recipe']}: {r['machine_before']} .. {r['machine_after']}" for r in results)
    return (table(headers, rows) + f"\n\nThresholds: {thresholds}. Curves (every run kept): {png.name}. "
            f"Runs:\n{runs}")


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--datasets", nargs="+", choices=list(DATASETS), default=["swimseg", "camvid"])
    p.add_argument("--recipes", nargs="+", choices=RECIPES, default=list(RECIPES))
    p.add_argument("--minutes", type=float, default=30.0, help="budget per run")
    p.add_argument("--valid-images", type=int, default=None, help="score the first N valid images only")
    p.add_argument("--plot-only", action="store_true", help="table and PNG from the runs kept so far")
    args = p.parse_args()
    if not ANCHOR.is_file():
        sys.exit(f"{ANCHOR}: the anchor is not there; this benchmark needs ../shared/anchors/bare_recipe.py")
    if not SHARED_DATA.is_dir():
        sys.exit(f"{SHARED_DATA}: not found; this benchmark needs ../shared/data")
    datasets = ["swimseg"] if args.quick else args.datasets
    minutes, valid_limit = (1.0, 8) if args.quick else (args.minutes, args.valid_images)
    tag = "-quick" if args.quick else (f"-valid{valid_limit}" if valid_limit else "")
    results = []
    for dataset in datasets:
        for recipe in args.recipes:
            if not args.plot_only:
                run(dataset, recipe, minutes, valid_limit, tag)
            result = load_result(dataset, recipe, tag)
            if result is not None:
                results.append(result)
    # The curves show every run kept, not only this invocation's: a run of one data set must not
    # leave the others' curves out of the picture BENCHMARKS.md shows.
    png = RESULTS / f"time_to_accuracy{tag}.png"
    kept = [r for d in DATASETS for recipe in RECIPES if (r := load_result(d, recipe, tag)) is not None]
    if kept:
        plot_curves(kept, png)
    text = summarize(results, png)
    report("Benchmark 3: time to accuracy against the anchor", text, {f"{r['dataset']}-{r['recipe']}": r for r in results},
           args.out)


if __name__ == "__main__":
    main()
