"""Benchmark 5, GPU: fcn_resnet101 training at 512 px, fp32 vs AMP (bf16) vs AMP + channels_last
(vs + torch.compile): images/s, peak GPU memory, and the share of the GPU's own measured bf16
matmul rate that the model's FLOPs reach.

Each variant runs segtrain's own `train_step` (autocast, channels_last, non_blocking copies from
pinned memory, as training does). Variants alternate in rounds. FLOPs per step are counted once
with torch.utils.flop_counter. Without a GPU it stops with a note; `--device cpu --smoke` runs
the same code paths tiny on the CPU (what the test suite does).

    .venv/bin/python bench/gpu.py --quick
"""

from __future__ import annotations

from common import median, parser, report, table  # first: segtrain sets up OpenMP before torch loads
import sys
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from segtrain.config.load import resolve
from segtrain.models.losses import build_loss
from segtrain.models.registry import build_model
from segtrain.training.optimization import make_optimizer, make_scaler
from segtrain.training.schedule import Schedule
from segtrain.training.step import Stepper

VARIANTS = {  # name -> (amp, channels_last, compile)
    "fp32": (False, False, False),
    "AMP bf16": (True, False, False),
    "AMP bf16 + channels_last": (True, True, False),
    "AMP bf16 + channels_last + compile": (True, True, True),
}


def synchronize(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_rate(device, dtype=torch.bfloat16, n=8192, repeats=20) -> float:
    """The GPU's own dense bf16 matmul FLOP/s, the ceiling a model's convolutions can approach."""
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    a @ b
    synchronize(device)
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    synchronize(device)
    return 2 * n**3 * repeats / (time.perf_counter() - start)


def setup(name, variant, size, batch, device):
    amp, channels_last, compiled = VARIANTS[variant]
    cfg = resolve({"model": name, "image_size": size, "batch_size": batch, "amp": amp,
                   "channels_last": channels_last, "pretrained_backbone": False, "max_iteration": 10**6}, "bench")
    model = build_model(name, 2).to(device)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    if compiled:
        model = torch.compile(model)
    # The optimizer training builds (fused kernels where PyTorch has them; before 2026-11-26 this
    # benchmark used PyTorch's per-parameter SGD loop).
    optimizer = make_optimizer(model, {**cfg, "optimizer": "sgd", "lr": 0.01, "momentum": 0.9, "weight_decay": 0})
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, Schedule.of_plan(cfg).factor)
    scaler = make_scaler(amp, device)
    pin = device.type == "cuda"
    images = torch.randn(batch, 3, size, size)
    masks = torch.randint(0, 2, (batch, size, size))
    if pin:
        images, masks = images.pin_memory(), masks.pin_memory()

    stepper = Stepper(model, build_loss(cfg, ["0", "1"]), optimizer, scheduler, scaler, device, 2, amp, channels_last)

    def step():
        loss, hist = stepper.step(images, masks)
        return loss

    return step


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--device", default="cuda")
    p.add_argument("--model", default="fcn_resnet101")
    p.add_argument("--smoke", action="store_true", help="tiny run of every code path with fcn_resnet18 (works on the CPU)")
    args = p.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        sys.exit("bench/gpu.py: no CUDA GPU visible; nothing measured (run it where a GPU is, or "
                 "--device cpu --smoke to check the code paths).")
    size, batch, steps, rounds = (512, 8, 10, 3) if not args.quick else (512, 8, 5, 2)
    if args.smoke:
        size, batch, steps, rounds = 32, 2, 2, 1
        args.model = "fcn_resnet18"
    variants = list(VARIANTS) if device.type == "cuda" or not args.smoke else list(VARIANTS)[:3]
    steppers, flops, failures = {}, None, []
    for variant in variants:
        try:
            steppers[variant] = setup(args.model, variant, size, batch, device)
            for _ in range(3 if VARIANTS[variant][2] else 1):  # compile warms up over a few steps
                steppers[variant]()
        except Exception as e:  # torch.compile needs a compiler tool-chain; report, don't fail
            failures.append(f"{variant}: {type(e).__name__}: {str(e).splitlines()[0][:200]}")
            steppers.pop(variant, None)
    with FlopCounterMode(display=False) as counter:
        steppers["fp32"]()
    flops = counter.get_total_flops()
    times = {v: [] for v in steppers}
    memory = {}
    for _ in range(rounds):
        for variant, step in steppers.items():
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            for _ in range(steps):
                synchronize(device)
                start = time.perf_counter()
                step()
                synchronize(device)
                times[variant].append(time.perf_counter() - start)
            if device.type == "cuda":
                memory[variant] = torch.cuda.max_memory_allocated(device) / 2**30
    peak = matmul_rate(device) if device.type == "cuda" else float("nan")
    rows = []
    for variant, t in times.items():
        rate = flops / median(t)
        rows.append([variant, batch / median(t), memory.get(variant, float("nan")), rate / 1e12,
                     f"{rate / peak:.0%}" if peak == peak else "n/a"])
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    text = table(["variant", "train img/s", "peak GPU GiB", "model TFLOP/s", "of bf16 matmul peak"], rows)
    text += (f"\n\n{args.model}, {size} px, batch {batch}, training step (forward, loss, backward, SGD) on "
             f"{name}; {flops / batch / 1e9:.0f} GFLOP per image per step; measured bf16 matmul peak "
             f"{peak / 1e12:.0f} TFLOP/s; medians of {rounds} alternating rounds of {steps} steps.")
    if failures:
        text += "\n\n" + "\n".join(f"- {f}" for f in failures)
    report("Benchmark 5: GPU", text, {"times": times, "memory_gib": memory, "flops_per_step": flops}, args.out)


if __name__ == "__main__":
    main()
