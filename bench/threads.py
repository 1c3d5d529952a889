"""OpenMP threads on shared cores: a training step of the default model with PyTorch's default
(threads spin while they wait), with OMP_WAIT_POLICY=PASSIVE (what segtrain sets), and with one
thread. Each variant runs in its own process (the policy is read when torch loads); variants
alternate in rounds. The gap between them is large only while other processes use the cores.

    .venv/bin/python bench/threads.py --quick
"""

from __future__ import annotations

from common import REPO, median, parser, report, table  # first: segtrain sets up OpenMP before torch loads
import json
import os
import subprocess
import sys

VARIANTS = {  # name -> (OMP_WAIT_POLICY or None for unset, threads)
    "2 threads, spinning wait (PyTorch default)": (None, 2),
    "2 threads, OMP_WAIT_POLICY=PASSIVE (segtrain)": ("PASSIVE", 2),
    "1 thread": ("PASSIVE", 1),
}

CHILD = """
import json, os, sys, time
import torch
from segtrain.config.load import resolve
from segtrain.models.registry import build_model
torch.set_num_threads({threads})
cfg = resolve({{}})
model = build_model(cfg["model"], 2)
opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
h, w = cfg["image_size"]
x, y = torch.randn(cfg["batch_size"], 3, h, w), torch.randint(0, 2, (cfg["batch_size"], h, w))
times = []
for _ in range({steps} + 1):
    start = time.perf_counter()
    loss = torch.nn.functional.cross_entropy(model(x)["out"], y)
    opt.zero_grad(); loss.backward(); opt.step()
    times.append(time.perf_counter() - start)
print(json.dumps([cfg["batch_size"] / t for t in times[1:]]))
"""


def run_variant(policy: str | None, threads: int, steps: int) -> list[float]:
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    if policy is not None:  # unset: the child loads torch before segtrain, so libgomp keeps its default
        env["OMP_WAIT_POLICY"] = policy
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    out = subprocess.run([sys.executable, "-c", CHILD.format(threads=threads, steps=steps)], env=env,
                         capture_output=True, text=True, check=True).stdout
    return json.loads(out.splitlines()[-1])


def main() -> None:
    args = parser(__doc__).parse_args()
    steps, rounds = (3, 2) if args.quick else (5, 3)
    rates = {name: [] for name in VARIANTS}
    for _ in range(rounds):
        for name, (policy, threads) in VARIANTS.items():
            rates[name] += run_variant(policy, threads, steps)
    base = median(rates[next(iter(VARIANTS))])
    rows = [[name, median(r), f"{median(r) / base:.1f}", f"{min(r):.3g}-{max(r):.3g}"] for name, r in rates.items()]
    text = table(["variant", "train img/s (median)", "vs default", "range"], rows)
    text += (f"\n\nsegtrain's default model and input size, one training step on random data, {rounds} alternating "
             f"rounds of {steps} steps, each variant in its own process.")
    report("OpenMP threads on shared cores", text, rates, args.out)


if __name__ == "__main__":
    main()
