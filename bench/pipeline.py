"""Benchmark 2, input pipeline: images/s that segtrain's training DataLoader delivers (decode,
label decoding, augmentation, collate) on ../shared/data/swimseg, with and without the decoded
cache, against the images/s of the model's training step at the same input size.

Each loader is segtrain's own (`training.loaders.make_loaders` with the run's config), drained without a
model; the model side trains on one batch held in memory. The sides alternate in rounds.

    .venv/bin/python bench/pipeline.py --quick
"""

from __future__ import annotations

from common import data_folder, median, parser, report, table  # first: segtrain sets up OpenMP before torch loads
import dataclasses
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch

from segtrain.config.load import resolve
from segtrain.data.folder import inspect_root
from segtrain.models.registry import build_model
from segtrain.models.losses import build_loss
from segtrain.training.loaders import make_loaders

BATCH = 8


def loader_rate(cfg: dict, spec, batches: int) -> tuple[float, float]:
    """(images/s over `batches` batches after the first, seconds to build the loader incl. cache)."""
    start = time.perf_counter()
    loader, _, _, _ = make_loaders(spec, cfg, torch.device("cpu"), cfg["n_workers"], log=lambda *_: None)
    it = iter(loader)
    next(it)  # worker start-up is paid once per run, not per image
    setup = time.perf_counter() - start
    start = time.perf_counter()
    for _ in range(batches):
        next(it)
    rate = batches * cfg["batch_size"] / (time.perf_counter() - start)
    del it, loader
    return rate, setup


def epoch_peak_rss(images: int, cache_mb: float) -> tuple[float, float]:
    """(peak RSS MB of the main process, of the largest worker) over one epoch of the default
    loader on `images` swimseg images, in a fresh process so nothing else is counted."""
    code = f"""
import sys, resource, dataclasses, torch
sys.path.insert(0, {str(Path(__file__).parent)!r})
from pipeline import epoch_child
epoch_child({images}, {cache_mb})
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    main_mb, worker_mb = out.split()[-2:]
    return float(main_mb), float(worker_mb)


def epoch_child(images: int, cache_mb: float) -> None:
    cfg = resolve({"cache_mb": cache_mb, "pretrained_backbone": False}, "bench")
    spec = inspect_root(data_folder("swimseg"), cfg)
    spec = dataclasses.replace(spec, train=spec.train[:images], valid=spec.valid[:1])
    loader, sampler, _, _ = make_loaders(spec, cfg, torch.device("cpu"), cfg["n_workers"], log=lambda *_: None)
    it = iter(loader)
    for _ in range(sampler.batches_per_epoch):
        next(it)
    del it, loader  # persistent workers exit here, so their peak is in RUSAGE_CHILDREN
    # VmHWM, not ru_maxrss: the latter survives exec and would report the benchmark's own peak.
    with open("/proc/self/status") as f:
        hwm_kb = next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))
    print(hwm_kb / 1024, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024)


def model_rate(cfg: dict, steps: int) -> float:
    model = build_model(cfg["model"], 2)
    model.train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    criterion = build_loss(cfg, ["0", "1"])  # the two classes of its random masks
    h, w = cfg["image_size"]
    images, masks = torch.randn(cfg["batch_size"], 3, h, w), torch.randint(0, 2, (cfg["batch_size"], h, w))
    times = []
    for _ in range(steps + 1):
        start = time.perf_counter()
        loss = criterion(model(images)["out"], masks)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        times.append(time.perf_counter() - start)
    return cfg["batch_size"] / median(times[1:])


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--sizes", type=int, nargs="+", default=None, help="input sizes (default: 600 and the default)")
    args = p.parse_args()
    default = resolve({})
    sizes = args.sizes or [600, default["image_size"][0]]
    batches, rounds, images = (6, 2, 64) if args.quick else (15, 3, 400)
    root = data_folder("swimseg")
    rows, raw = [], {}
    for size in sizes:
        base = {"image_size": size, "batch_size": BATCH, "pretrained_backbone": False}
        spec = inspect_root(root, resolve(base))
        # The loader's rate does not depend on how many images there are; the cache fill does.
        spec = dataclasses.replace(spec, train=spec.train[:images], valid=spec.valid[:1])
        variants = {f"n_workers {w}, cache {'on' if c else 'off'}": {**base, "n_workers": w, "cache_mb": c}
                    for w in (default["n_workers"], 0) for c in (default["cache_mb"], 0)}
        rates = {name: [] for name in variants}
        setups = {name: [] for name in variants}
        model_rates = []
        for _ in range(rounds):
            for name, raw_cfg in variants.items():
                rate, setup = loader_rate(resolve(raw_cfg, "bench"), spec, batches)
                rates[name].append(rate)
                setups[name].append(setup)
            model_rates.append(model_rate(resolve(base, "bench"), 2 if size > 300 else 4))
        model_speed = median(model_rates)
        for name in variants:
            rows.append([size, name, median(rates[name]), median(setups[name]), f"{model_speed:.3g}",
                         f"{median(rates[name]) / model_speed:.1f}"])
        raw[size] = {"loader": rates, "setup_s": setups, "model": model_rates}
    text = table(["px", "loader", "loader img/s", "set-up s", f"{default['model']} train img/s", "loader/model"],
                 rows)
    text += (f"\n\n{images} images of the swimseg train split (600x600 PNG), batch {BATCH}, segtrain's training transform (scale-crop, "
             f"flips, colour jitter); medians of {rounds} alternating rounds of {batches} batches. Set-up = "
             f"building the loader, filling the cache, starting workers, first batch.")
    memory = []
    counts = (32, 128) if args.quick else (100, 400)
    for cache_mb in (0, 64, default["cache_mb"]):
        for n in counts:
            main_mb, worker_mb = epoch_peak_rss(n, cache_mb)
            memory.append([cache_mb, n, main_mb, worker_mb])
    raw["peak_rss"] = memory
    text += "\n\nPeak resident memory over one epoch of the default loader (fresh process each):\n\n"
    text += table(["cache_mb", "images", "main process peak RSS MB", "largest worker peak RSS MB"], memory)
    report("Benchmark 2: input pipeline", text, raw, args.out)


if __name__ == "__main__":
    main()
