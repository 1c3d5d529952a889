"""Benchmark 1, trainer overhead: segtrain's whole training iteration vs a bare PyTorch loop.

segtrain's side is `segtrain.training.loop.train` on a folder of images, timed as log.csv's
`elapsed_time` shows it: the gap between consecutive training rows, which holds fetching the
batch from the DataLoader, the step, the batch metrics and writing the row. Set-up and validation
fall outside those gaps. The bare side is the loop everyone writes: the same torchvision model
(no aux head), batch, image size and SGD optimizer, on batches already in memory as tensors.
Both sides run in this process, alternating, and the first iterations of each run are dropped as
warm-up. Augmentation is off so both sides train on the same pixels.

    .venv/bin/python bench/overhead.py --quick
"""

from __future__ import annotations

from common import median, parser, peak_rss_mb, report, table  # first: segtrain sets up OpenMP before torch loads
import csv
import shutil
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

from segtrain.config.load import resolve
from segtrain.data.folder import SegmentationDataset, inspect_root
from segtrain.models.registry import build_model
from segtrain.data.synthetic import write_sky_folder
from segtrain.training.loop import train
from segtrain.training.setup import seed_everything
from segtrain.data.transforms import train_transform

MODELS = ["fcn_resnet18", "fcn_resnet50", "lraspp_mobilenet_v3_large"]
WARMUP = 2


def segtrain_iterations(root: Path, cfg: dict, tag: str) -> list[float]:
    out = train(root, {**cfg, "output_dir": tag}, log=lambda *_: None)
    with open(out / "log.csv") as f:
        times = [float(r["elapsed_time"]) for r in csv.DictReader(f) if r["train/loss"]]
    shutil.rmtree(out)
    gaps = [b - a for a, b in zip(times, times[1:])]
    return gaps[WARMUP:]


def in_memory_batches(root: Path, cfg: dict) -> list[tuple[torch.Tensor, torch.Tensor]]:
    spec = inspect_root(root, cfg)
    data = SegmentationDataset(spec.train, spec.decoder, train_transform(cfg["image_size"], False), train=True)
    samples = [data[(0, i)] for i in range(len(data))]
    b = cfg["batch_size"]
    return [(torch.stack([s[0] for s in samples[k:k + b]]), torch.stack([s[1] for s in samples[k:k + b]]))
            for k in range(0, len(samples) - b + 1, b)]


def bare_iterations(batches, cfg: dict) -> list[float]:
    seed_everything(cfg["seed"])
    model = build_model(cfg["model"], 2)
    model.train()
    optimizer = torch.optim.SGD(model.parameters(), lr=cfg["lr"], momentum=cfg["momentum"],
                                weight_decay=cfg["weight_decay"])
    criterion = nn.CrossEntropyLoss(ignore_index=255)
    times = []
    for it in range(cfg["max_iteration"]):
        start = time.perf_counter()
        images, masks = batches[it % len(batches)]
        loss = criterion(model(images)["out"], masks)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        loss.item()  # every real loop reads the loss to log it
        times.append(time.perf_counter() - start)
    return times[WARMUP + 1:]  # segtrain's gaps start at its second iteration


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--smoke", action="store_true", help="CI smoke test: one tiny model, a few iterations")
    p.add_argument("--workers", type=int, nargs="+", default=None, help="n_workers values for segtrain")
    p.add_argument("--models", nargs="+", choices=MODELS, default=None)
    p.add_argument("--iterations", type=int, default=None, help="per run (default: 10 quick, 25 full)")
    args = p.parse_args()
    if args.smoke:
        models, size, iterations, rounds, workers = MODELS[:1], 32, 5, 1, [0]
    elif args.quick:
        models, size, iterations, rounds, workers = MODELS, 128, 10, 2, [2]
    else:
        models, size, iterations, rounds, workers = MODELS, 128, 25, 3, [2, 0]
    workers = args.workers or workers
    models = args.models or models
    iterations = args.iterations or iterations
    tmp = Path(tempfile.mkdtemp(prefix="segtrain-overhead-"))
    root = write_sky_folder(tmp / "data", n_train=16, n_valid=2, size=size)
    rows, raw = [], {}
    try:
        for name in models:
            for n_workers in workers:
                cfg = resolve({"model": name, "image_size": size, "batch_size": 2, "lr": 0.01,
                               "max_iteration": iterations, "interval_validate": iterations,
                               "pretrained_backbone": False, "augment": False, "n_workers": n_workers,
                               "max_visualizations": 0, "log_interval": 10**6}, "bench")
                batches = in_memory_batches(root, cfg)
                ours, bare = [], []
                for r in range(rounds):  # alternate, so load changes hit both sides alike
                    ours += segtrain_iterations(root, cfg, f"{name}-{n_workers}-{r}")
                    bare += bare_iterations(batches, cfg)
                raw[f"{name} n_workers={n_workers}"] = {"segtrain": ours, "bare": bare}
                rows.append([name, n_workers, median(ours) * 1000, median(bare) * 1000,
                             f"{median(ours) / median(bare):.3f}", len(ours)])
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    text = table(["model", "n_workers", "segtrain ms/it", "bare ms/it", "ratio", "iterations"], rows)
    text += (f"\n\n{size} px, batch 2, SGD, from scratch, augmentation off; medians over {rounds} alternating "
             f"runs of {iterations} iterations (first {WARMUP} dropped). Peak RSS {peak_rss_mb():.0f} MB.")
    report("Benchmark 1: trainer overhead", text, raw, args.out)


if __name__ == "__main__":
    main()
