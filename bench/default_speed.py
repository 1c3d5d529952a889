"""The default recipe's training iteration on ../shared/data/swimseg, side by side: this checkout's
`segtrain train` (augmentation, data-loading workers, its own thread and memory-format choices),
an older segtrain checkout (`--old PATH`, e.g. a `git worktree` of an earlier commit) and a bare
PyTorch step of the same model, batch and input size without augmentation, in a process where
nothing was set by segtrain (torch loads first). Each run is its own process; runs alternate in
rounds. segtrain's iteration is the gap between consecutive log.csv rows (its elapsed_time).

    git worktree add /tmp/segtrain-old <commit>
    .venv/bin/python bench/default_speed.py --old /tmp/segtrain-old [--busy] [--quick]

--busy runs everything beside one process spinning on a core (a shared machine).
"""

from __future__ import annotations

from common import REPO, data_folder, median, parser, report, table, untouched_env  # first: segtrain sets up OpenMP
import csv
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

WARMUP = 3

BARE = """
import json, time
import torch  # first: nothing segtrain decides applies to this process
from segtrain.config.load import resolve
from segtrain.models.registry import build_model
cfg = resolve({{}})
torch.manual_seed(0)
model = build_model(cfg["model"], 2)
model.train()
opt = torch.optim.AdamW(model.parameters(), lr=cfg["lr"], weight_decay=cfg["weight_decay"])
h, w = cfg["image_size"]
b = cfg["batch_size"]
x, y = torch.randn(b, 3, h, w), torch.randint(0, 2, (b, h, w))
times = []
for _ in range({iterations}):
    start = time.perf_counter()
    loss = torch.nn.functional.cross_entropy(model(x)["out"], y)
    opt.zero_grad(set_to_none=True); loss.backward(); opt.step(); loss.item()
    times.append(time.perf_counter() - start)
print(json.dumps(times[{warmup}:]))
"""


def scratch_swimseg(tmp: Path) -> Path:
    """train/ of swimseg as is; valid/ cut to 2 pairs, because validation falls outside the timed gaps."""
    source = data_folder("swimseg")
    root = tmp / "swimseg"
    (root / "valid" / "images").mkdir(parents=True)
    (root / "valid" / "labels").mkdir(parents=True)
    (root / "train").symlink_to(source / "train")
    shutil.copy(source / "class_names.list", root)
    for name in sorted(os.listdir(source / "valid" / "images"))[:2]:
        stem = Path(name).stem
        (root / "valid" / "images" / name).symlink_to(source / "valid" / "images" / name)
        label = next((source / "valid" / "labels").glob(stem + ".*"))
        (root / "valid" / "labels" / label.name).symlink_to(label)
    return root


def segtrain_gaps(checkout: Path, root: Path, iterations: int, tag: str, cores: list[float]) -> list[float]:
    """The run's iteration times; appends to `cores` the CPU cores its processes used on average
    (CPU seconds of the run and its workers over its wall time: what "per core it gets" divides by)."""
    config = root / f"{tag}.json"
    config.write_text(json.dumps({"max_iteration": iterations, "interval_validate": 10**6, "output_dir": tag,
                                  "log_interval": 10**6, "max_visualizations": 0}))
    env = untouched_env(checkout)
    before, start = resource.getrusage(resource.RUSAGE_CHILDREN), time.perf_counter()
    # cwd: `python -m` puts the working directory first on sys.path, ahead of PYTHONPATH
    subprocess.run([sys.executable, "-m", "segtrain", "train", str(root), "--config", str(config)], env=env,
                   cwd=root, check=True, capture_output=True, text=True)
    after, wall = resource.getrusage(resource.RUSAGE_CHILDREN), time.perf_counter() - start
    cores.append((after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime) / wall)
    out = root / f"MODEL-{tag}"
    with open(out / "log.csv") as f:
        times = [float(r["elapsed_time"]) for r in csv.DictReader(f) if r["train/loss"]]
    shutil.rmtree(out)
    return [b - a for a, b in zip(times, times[1:])][WARMUP:]


def bare_steps(iterations: int) -> list[float]:
    env = untouched_env()
    out = subprocess.run([sys.executable, "-c", BARE.format(iterations=iterations, warmup=WARMUP + 1)], env=env,
                         check=True, capture_output=True, text=True).stdout
    return json.loads(out.splitlines()[-1])


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--old", type=Path, default=None, help="an older segtrain checkout to compare with")
    p.add_argument("--busy", action="store_true", help="beside one process spinning on a core")
    args = p.parse_args()
    iterations, rounds = (30, 2) if args.quick else (60, 3)
    sides = {"segtrain (this checkout)": REPO, **({"segtrain (--old)": args.old.resolve()} if args.old else {})}
    times = {name: [] for name in [*sides, "bare step, no augmentation"]}
    cores = {name: [] for name in times}
    tmp = Path(tempfile.mkdtemp(prefix="segtrain-speed-"))
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if args.busy else None
    try:
        root = scratch_swimseg(tmp)
        for r in range(rounds):
            for name, checkout in sides.items():
                times[name] += segtrain_gaps(checkout, root, iterations, f"run{r}-{len(times[name])}", cores[name])
            times["bare step, no augmentation"] += bare_steps(iterations)
    finally:
        if spinner:
            spinner.kill()
        shutil.rmtree(tmp, ignore_errors=True)
    bare = median(times["bare step, no augmentation"])
    this = median(times["segtrain (this checkout)"])
    rows = [[name, f"{median(t) * 1000:.0f}", f"{median(t) / bare:.2f}", f"{median(t) / this:.2f}",
             f"{min(t) * 1000:.0f}-{max(t) * 1000:.0f}",
             f"{median(cores[name]):.2f}" if cores[name] else "",
             f"{median(t) * median(cores[name]) * 1000:.0f}" if cores[name] else ""] for name, t in times.items()]
    text = table(["side", "ms/iteration (median)", "vs bare step", "vs this checkout", "range", "cores used",
                  "core-ms/iteration"], rows)
    text += (f"\n\nDefault recipe on swimseg's 400 training images ({'beside a busy process' if args.busy else 'idle'}"
             f"); {rounds} alternating rounds of {iterations} iterations, first {WARMUP} dropped; each run its own "
             "process. The bare step: same model, input size, batch and optimizer on one random batch in memory.")
    report("The default recipe's iteration", text, {"times": times, "cores": cores}, args.out)


if __name__ == "__main__":
    main()
