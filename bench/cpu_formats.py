"""channels_last and torch.compile on the CPU, per model: one bare training step (AdamW,
cross-entropy, random data in memory) in NCHW, in channels_last, and compiled (with its one-off
compile time and the iterations it takes to pay that back). Variants alternate in rounds in one
process; the machine's load is printed with the table.

    .venv/bin/python bench/cpu_formats.py --quick [--compile]
"""

from __future__ import annotations

from common import median, parser, report, table  # first: segtrain sets up OpenMP before torch loads
import time

import torch

from segtrain.models.registry import build_model

MODELS = {  # name -> (encoder or None, image size, batch): the default recipe's size and batch
    "lraspp_mobilenet_v3_large": (None, 160, 8),
    "fcn_resnet18": (None, 160, 8),
    "fcn_resnet50": (None, 96, 2),
    "unet": ("resnet18", 160, 8),
    "deeplabv3plus": ("mobilenet_v2", 160, 8),
    "segformer": ("mit_b0", 160, 8),
}


def make_step(name: str, channels_last: bool, compiled: bool):
    encoder, size, batch = MODELS[name]
    torch.manual_seed(0)
    model = build_model(name, 2, encoder=encoder) if encoder else build_model(name, 2)
    model.train()
    if channels_last:
        model.to(memory_format=torch.channels_last)
    forward = torch.compile(model) if compiled else model
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    x, y = torch.randn(batch, 3, size, size), torch.randint(0, 2, (batch, size, size))
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)

    def step() -> float:
        start = time.perf_counter()
        loss = torch.nn.functional.cross_entropy(forward(x)["out"], y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return time.perf_counter() - start

    return step


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--models", default=",".join(MODELS))
    p.add_argument("--compile", action="store_true", help="also time torch.compile (minutes of compiling)")
    args = p.parse_args()
    steps, rounds = (4, 2) if args.quick else (6, 3)
    variants = {"NCHW": (False, False), "channels_last": (True, False)}
    if args.compile:
        variants["compiled (NCHW)"] = (False, True)
    rows, raw = [], {}
    for name in args.models.split(","):
        steppers, compile_s = {}, {}
        for v, (cl, comp) in variants.items():
            steppers[v] = make_step(name, cl, comp)
            start = time.perf_counter()
            steppers[v]()  # the first step compiles, or warms the allocator
            compile_s[v] = time.perf_counter() - start
            steppers[v]()
        times = {v: [] for v in variants}
        for _ in range(rounds):
            for v, step in steppers.items():
                times[v] += [step() for _ in range(steps)]
        base = median(times["NCHW"])
        for v in variants:
            t = median(times[v])
            payback = ""
            if variants[v][1]:
                saved = base - t
                payback = f"{(compile_s[v] - base) / saved:.0f} it" if saved > 0 else "never"
            rows.append([name, v, f"{t * 1000:.0f}", f"{base / t:.2f}", f"{compile_s[v]:.1f}", payback])
        raw[name] = times
    text = table(["model", "variant", "ms/step (median)", "speed-up vs NCHW", "first step s", "compile pays back after"],
                 rows)
    text += f"\n\nSize and batch per model: {MODELS}. {rounds} alternating rounds of {steps} steps."
    report("channels_last and torch.compile on the CPU", text, raw, args.out)


if __name__ == "__main__":
    main()
