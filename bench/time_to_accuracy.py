"""Benchmark 3, time to accuracy: valid mean_iu against training wall time on
../shared/data/swimseg (train 400 / valid 100), from scratch, for three recipes, each given the
same budget:

  default    segtrain's defaults (nothing set but pretrained_backbone false)
  original   the original tool's config: fcn_resnet50, lr 1e-10, momentum 0.99, batch 1, summed
             loss, constant lr, native 600 px
  reference  torchvision-references style, segtrain's earlier default: fcn_resnet18 at native
             600 px, batch 4, lr 0.01 poly, mean loss, flips and colour jitter

Each recipe is a real `segtrain.training.loop.train` run. The default recipe is given the budget as
its `time_budget` (it plans its own length, validations included, as a user's run would); the
others get a max_iteration set from a short calibration run so that training fills the budget (the
poly schedule needs its end). The time axis is
log.csv's elapsed_time minus the time spent validating, so recipes that validate at different
cost compare on training time. Each recipe's run is kept in bench/results/runs/, so recipes can be
run at different times (the machine is shared) and plotted together.

    .venv/bin/python bench/time_to_accuracy.py --quick                 # 30 s per recipe, 8 valid images
    .venv/bin/python bench/time_to_accuracy.py --recipes default --minutes 30
    .venv/bin/python bench/time_to_accuracy.py --recipes original --minutes 8 --valid-images 20
    .venv/bin/python bench/time_to_accuracy.py --plot-only
"""

from __future__ import annotations

from common import RESULTS, data_folder, machine, parser, peak_rss_mb, report, table  # first: segtrain sets up OpenMP before torch loads
import csv
import json
import re
import shutil
import statistics
from pathlib import Path

from segtrain.config.load import resolve
from segtrain.training.loop import train

RECIPES = {
    "default": {},
    "original": {"lr": 1e-10, "momentum": 0.99, "weight_decay": 0.0005, "batch_size": 1,
                 "backbone": "resnet", "fcn": "50"},
    "reference": {"model": "fcn_resnet18", "image_size": None, "batch_size": 4, "lr": 0.01,
                  "lr_schedule": "poly", "loss_reduction": "mean"},
}
THRESHOLDS = (0.8, 0.85, 0.9)
# Validations after the start, per recipe: native 600 px validation of the big models costs
# minutes each on two cores, so those curves get fewer points.
VALIDATIONS = {"default": 10, "original": 1, "reference": 3}


def seconds_per_iteration(root: Path, cfg: dict, iterations: int = 6) -> float:
    """A short real run (loader, augmentation, step, logging), timed as log.csv shows it."""
    out = train(root, {**cfg, "max_iteration": iterations, "interval_validate": iterations, "output_dir": "calibrate",
                       "max_visualizations": 0}, log=lambda *_: None)
    with open(out / "log.csv") as f:
        times = [float(r["elapsed_time"]) for r in csv.DictReader(f) if r["train/loss"]]
    shutil.rmtree(out)
    return statistics.median(b - a for a, b in zip(times[1:], times[2:]))


def training_curve(log_csv: Path) -> list[dict]:
    """Valid rows with training time = elapsed_time minus all validation time before the row."""
    with open(log_csv) as f:
        rows = list(csv.DictReader(f))
    points, validating, last_time = [], 0.0, 0.0
    for row in rows:
        elapsed = float(row["elapsed_time"])
        if row["valid/loss"]:
            validating += elapsed - last_time if points else elapsed
            points.append({"iteration": int(row["iteration"]), "elapsed": elapsed,
                           "train_time": elapsed - validating, "mean_iu": float(row["valid/mean_iu"]),
                           "acc": float(row["valid/acc"])})
        last_time = elapsed
    return points


def recipe_root(name: str, valid_limit: int | None) -> Path:
    """bench/results/runs/NAME: links to swimseg (valid/ cut to valid_limit images) plus this
    run's MODEL-NAME output, kept so a curve can be read back even from an interrupted run."""
    source = data_folder("swimseg")
    root = RESULTS / "runs" / name
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    for entry in ("train", "class_names.list"):
        (root / entry).symlink_to(source / entry)
    for kind in ("images", "labels"):
        (root / "valid" / kind).mkdir(parents=True)
        for path in sorted((source / "valid" / kind).iterdir())[:valid_limit]:
            (root / "valid" / kind / path.name).symlink_to(path)
    return root


def run_recipe(name: str, minutes: float, valid_limit: int | None, tag: str) -> None:
    raw = {**RECIPES[name], "pretrained_backbone": False, "output_dir": name, "log_interval": 10**6}
    if name == "default":
        raw["time_budget"] = minutes * 60
    cfg = resolve(raw, f"recipe {name}")
    seconds = None
    if cfg["time_budget"] is None:
        calibration = recipe_root(f"{name}{tag}-calibrate", 1)  # one valid image: validation is not timed
        seconds = seconds_per_iteration(calibration, cfg, 4 if cfg["image_size"] is None else 8)
        shutil.rmtree(calibration)
        iterations = max(2, int(minutes * 60 / seconds))
        cfg.update(max_iteration=iterations, interval_validate=max(1, -(-iterations // VALIDATIONS[name])))
    root = recipe_root(name + tag, valid_limit)
    meta = {"recipe": name, "minutes": minutes, "config": cfg,  # train() records its plan and fitted keys in cfg "seconds_per_iteration_estimate": seconds,
            "machine": machine(), "valid_images": len(list((root / "valid" / "images").iterdir()))}
    (root / "run.json").write_text(json.dumps(meta, indent=1))
    plan = (f"time_budget {minutes:g} min" if seconds is None
            else f"{seconds:.2f} s/iteration -> {cfg['max_iteration']} iterations")
    print(f"{name}: {cfg['model']}, lr {cfg['lr']:g}; {plan} in {root}", flush=True)
    train(root, cfg)
    meta["peak_rss_mb"] = peak_rss_mb()
    (root / "run.json").write_text(json.dumps(meta, indent=1))


def load_result(name: str, quick: bool) -> dict | None:
    """The latest kept run of a recipe (full runs may use a slice of valid/: NAME-validN)."""
    pattern = re.compile(rf"{name}-quick" if quick else rf"{name}(-valid\d+)?")
    roots = [r for r in (RESULTS / "runs").glob(f"{name}*") if pattern.fullmatch(r.name)
             and (r / "run.json").is_file() and (r / f"MODEL-{name}" / "log.csv").is_file()]
    if not roots:
        return None
    root = max(roots, key=lambda r: (r / "run.json").stat().st_mtime)
    result = json.loads((root / "run.json").read_text())
    result["points"] = training_curve(root / f"MODEL-{name}" / "log.csv")
    return result


def first_time(points: list[dict], threshold: float) -> str:
    hit = next((p for p in points if p["mean_iu"] >= threshold), None)
    return f"{hit['train_time'] / 60:.1f}" if hit else "–"


def summarize(results: list[dict], png: Path) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    rows = []
    for r in results:
        cfg, pts = r["config"], r["points"]
        ax.plot([p["train_time"] / 60 for p in pts], [p["mean_iu"] for p in pts], marker="o", label=r["recipe"])
        size = "native 600" if cfg["image_size"] is None else f"{cfg['image_size'][0]}"
        rows.append([r["recipe"], cfg["model"], size, cfg["batch_size"], f"{cfg.get('optimizer', 'sgd')} {cfg['lr']:g} {cfg['lr_schedule']}",
                     cfg["loss_reduction"], pts[-1]["iteration"], f"{pts[-1]['train_time'] / 60:.1f}",
                     f"{pts[-1]['mean_iu']:.3f}", f"{max(p['mean_iu'] for p in pts):.3f}",
                     *[first_time(pts, t) for t in THRESHOLDS], r["valid_images"], f"{r.get('peak_rss_mb', float('nan')):.0f}"])
    ax.axhline(0.9, color="grey", linestyle=":", linewidth=1)
    ax.set_xlabel("training wall time, minutes (validation excluded)")
    ax.set_ylabel("valid mean IoU")
    ax.set_title("swimseg, from scratch, 2 CPU cores")
    ax.set_ylim(0, 1)
    ax.legend()
    fig.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=100)
    headers = ["recipe", "model", "px", "batch", "optimizer, lr", "loss", "iterations", "train min", "final mIoU",
               "best mIoU", *[f"min to {t}" for t in THRESHOLDS], "valid imgs", "peak RSS MB"]
    runs = "\n".join(f"- {r['recipe']}: {r['machine']}" for r in results)
    return table(headers, rows) + f"\n\nCurves: {png.name}. Runs:\n{runs}"


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--recipes", nargs="+", choices=list(RECIPES), default=list(RECIPES))
    p.add_argument("--minutes", type=float, default=30.0, help="training budget per recipe")
    p.add_argument("--valid-images", type=int, default=None,
                   help="validate on the first N valid images (for recipes whose validation takes too long)")
    p.add_argument("--plot-only", action="store_true", help="table and PNG from the results kept so far")
    args = p.parse_args()
    minutes, valid_limit = (0.5, 8) if args.quick else (args.minutes, args.valid_images)
    tag = "-quick" if args.quick else (f"-valid{valid_limit}" if valid_limit else "")
    results = []
    for name in args.recipes:
        if not args.plot_only:
            run_recipe(name, minutes, valid_limit, tag)
        result = load_result(name, args.quick)
        if result is not None:
            results.append(result)
    text = summarize(results, RESULTS / f"time_to_accuracy{'-quick' if args.quick else ''}.png")
    report("Benchmark 3: time to accuracy", text, {r["recipe"]: r for r in results}, args.out)


if __name__ == "__main__":
    main()
