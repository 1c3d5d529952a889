"""Benchmark 1, trainer overhead: segtrain's whole training iteration vs a bare PyTorch loop.

segtrain's side is `segtrain.training.loop.train` on a folder of images, timed as log.csv's
`elapsed_time` shows it: the gap between consecutive training rows, which holds fetching the
batch from the DataLoader, the step, the batch metrics and writing the row. Set-up and validation
fall outside those gaps. The bare side is the loop everyone writes: the same torchvision model
(no aux head), batch, image size and SGD optimizer, on batches already in memory as tensors, in
its own process where torch loads first (PyTorch's defaults, nothing segtrain sets). The sides
alternate, and the first iterations of each run are dropped as warm-up. Augmentation is off so both sides train on the same pixels.

    .venv/bin/python bench/overhead.py --quick
"""

from __future__ import annotations

from common import median, parser, peak_rss_mb, report, table, untouched_env  # first: segtrain sets up OpenMP before torch loads
import csv
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from segtrain.config.load import resolve
from segtrain.data.synthetic import write_sky_folder
from segtrain.training.loop import train

MODELS = ["fcn_resnet18", "fcn_resnet50", "lraspp_mobilenet_v3_large"]
WARMUP = 2


def segtrain_iterations(root: Path, raw: dict, tag: str, fresh: bool) -> tuple[list[float], bool]:
    """(segtrain's iteration gaps, whether its threads chose to sleep); fresh: `segtrain train` in its
    own new process, like the bare side (a process that trained before runs later steps at another
    speed), else in this one."""
    slept = False
    if fresh:
        config = root / f"{tag}.json"
        config.write_text(json.dumps({**raw, "output_dir": tag}))
        env = untouched_env()
        # cwd: `python -m` puts the working directory first on sys.path, ahead of PYTHONPATH
        done = subprocess.run([sys.executable, "-m", "segtrain", "train", str(root), "--config", str(config)],
                              env=env, cwd=root, check=True, capture_output=True, text=True)
        # How its threads wait is decided from the machine's load at its start (runtime/cpu_threads.py):
        # a run that chose PASSIVE on an idle machine measures the choice, not the trainer.
        slept = "OMP_WAIT_POLICY=PASSIVE" in done.stdout + done.stderr
        out = root / f"MODEL-{tag}"
    else:
        out = train(root, resolve({**raw, "output_dir": tag}, "bench"), log=lambda *_: None)
    with open(out / "log.csv") as f:
        times = [float(r["elapsed_time"]) for r in csv.DictReader(f) if r["train/loss"]]
    shutil.rmtree(out)
    gaps = [b - a for a, b in zip(times, times[1:])]
    return gaps[WARMUP:], slept


BARE = """
import json, time
import torch  # first: nothing segtrain would decide applies to this process (an untouched environment)
from torch import nn
from segtrain.models.registry import build_model
torch.manual_seed(0)
model = build_model({model!r}, 2)
model.train()
optimizer = torch.optim.SGD(model.parameters(), lr={lr}, momentum={momentum}, weight_decay={weight_decay})
criterion = nn.CrossEntropyLoss(ignore_index=255)
batches = [(torch.randn({batch}, 3, {size}, {size}), torch.randint(0, 2, ({batch}, {size}, {size}))) for _ in range(4)]
times = []
for it in range({iterations}):
    start = time.perf_counter()
    images, masks = batches[it % len(batches)]
    loss = criterion(model(images)["out"], masks)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    loss.item()  # every real loop reads the loss to log it
    times.append(time.perf_counter() - start)
print(json.dumps(times[{skip}:]))
"""


def bare_iterations(cfg: dict) -> list[float]:
    """The bare loop in its own process, where torch loads before anything segtrain sets up; batches
    of the same shape in memory (a convolution's time does not depend on the pixel values)."""
    code = BARE.format(model=cfg["model"], lr=cfg["lr"], momentum=cfg["momentum"], weight_decay=cfg["weight_decay"],
                       batch=cfg["batch_size"], size=cfg["image_size"][0], iterations=cfg["max_iteration"],
                       skip=WARMUP + 1)  # segtrain's gaps start at its second iteration
    env = untouched_env()
    out = subprocess.run([sys.executable, "-c", code], env=env, check=True, capture_output=True, text=True).stdout
    return json.loads(out.splitlines()[-1])


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--smoke", action="store_true", help="CI smoke test: one tiny model, a few iterations")
    p.add_argument("--workers", type=int, nargs="+", default=None, help="n_workers values for segtrain")
    p.add_argument("--models", nargs="+", choices=MODELS, default=None)
    p.add_argument("--iterations", type=int, default=None, help="per run (default: 10 quick, 25 full)")
    p.add_argument("--rounds", type=int, default=None, help="alternating runs per side (default: 2 quick, 3 full)")
    p.add_argument("--in-process", action="store_true",
                   help="run segtrain in this process (as before 2026-11-25) instead of a new one per run")
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
    rounds = args.rounds or rounds
    tmp = Path(tempfile.mkdtemp(prefix="segtrain-overhead-"))
    root = write_sky_folder(tmp / "data", n_train=16, n_valid=2, size=size)
    rows, raw, passive_runs = [], {}, []
    try:
        for name in models:
            for n_workers in workers:
                raw_cfg = {"model": name, "image_size": size, "batch_size": 2, "lr": 0.01,
                           "max_iteration": iterations, "interval_validate": iterations,
                           "pretrained_backbone": False, "augment": False, "n_workers": n_workers,
                           "max_visualizations": 0, "log_interval": 10**6}
                cfg = resolve(raw_cfg, "bench")
                ours, bare = [], []  # per round: that run's iteration times
                for r in range(rounds):  # alternate, so load changes hit both sides alike
                    # and swap who goes first each round (ABBA), so neither side always follows the other
                    for side in (("ours", "bare") if r % 2 == 0 else ("bare", "ours")):
                        if side == "ours":
                            tag = f"{name}-{n_workers}-{r}"
                            gaps, slept = segtrain_iterations(root, raw_cfg, tag, not args.in_process)
                            ours.append(gaps)
                            if slept:  # fresh runs that found the cores busy at their start
                                passive_runs.append(tag)
                        else:
                            bare.append(bare_iterations(cfg))
                raw[f"{name} n_workers={n_workers}"] = {"segtrain": ours, "bare": bare}
                pooled_ours, pooled_bare = sum(ours, []), sum(bare, [])
                round_ratios = sorted(median(o) / median(b) for o, b in zip(ours, bare))
                # The fastest run of each side: this VM's minute-to-minute drift (the same bare script
                # moves 36-48 ms a step between runs) only ever adds time, so each side's fastest run
                # is closest to its own cost (timeit's reasoning for reporting the minimum).
                fastest = min(map(median, ours)) / min(map(median, bare))
                rows.append([name, n_workers, median(pooled_ours) * 1000, median(pooled_bare) * 1000,
                             f"{median(pooled_ours) / median(pooled_bare):.3f}",
                             f"{median(round_ratios):.3f} ({round_ratios[0]:.2f}-{round_ratios[-1]:.2f})",
                             f"{fastest:.3f}", len(pooled_ours)])
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    text = table(["model", "n_workers", "segtrain ms/it", "bare ms/it", "ratio of medians",
                  "ratio per round: median (range)", "ratio of fastest runs", "iterations"], rows)
    text += (f"\n\n{size} px, batch 2, SGD, from scratch, augmentation off; medians over {rounds} alternating "
             f"runs of {iterations} iterations (first {WARMUP} dropped); a round is one run of "
             f"each side, its ratio the ratio of their medians. Peak RSS {peak_rss_mb():.0f} MB.")
    if not args.in_process:
        text += (f" segtrain runs whose threads chose to sleep (cores busy at their start): {len(passive_runs)}"
                 + (f" ({', '.join(passive_runs)})." if passive_runs else "."))
    raw["passive_runs"] = passive_runs
    report("Benchmark 1: trainer overhead", text, raw, args.out)


if __name__ == "__main__":
    main()
