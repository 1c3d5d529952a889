"""OpenMP wait policy on an idle machine and beside a competing busy process: one training step of
a model (bare PyTorch, random data in memory) with PyTorch's own default (libgomp spins ~300k
rounds, then sleeps), with OMP_WAIT_POLICY=PASSIVE (sleep at once), with bounded spins
(GOMP_SPINCOUNT), and with segtrain's automatic choice (`segtrain.runtime.threads`). Each variant
runs in its own process (libgomp reads the policy when torch loads) and variants alternate in
rounds. "busy" runs each variant beside one process that spins on a core the whole time.

    .venv/bin/python bench/threads.py --quick
"""

from __future__ import annotations

from common import REPO, median, parser, report, table  # first: segtrain sets up OpenMP before torch loads
import json
import os
import subprocess
import sys
import time

OMP_KEYS = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "OMP_NUM_THREADS")
VARIANTS = {  # name -> environment set before torch loads; "segtrain" = whatever segtrain's import decides
    "PyTorch default (unset)": {},
    "OMP_WAIT_POLICY=PASSIVE": {"OMP_WAIT_POLICY": "PASSIVE"},
    "GOMP_SPINCOUNT=10000": {"GOMP_SPINCOUNT": "10000"},
    "GOMP_SPINCOUNT=100000": {"GOMP_SPINCOUNT": "100000"},
    "1 thread, unset": {"OMP_NUM_THREADS": "1"},
    "1 thread, PASSIVE": {"OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE"},
    "segtrain (automatic)": "segtrain",
}
MODELS = {  # name -> (image size, batch)
    "lraspp_mobilenet_v3_large": (160, 8),
    "fcn_resnet50": (96, 2),
}

CHILD = """
import json, sys, time
{first}
import torch
from segtrain.models.registry import build_model
model = build_model({model!r}, 2)
opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
x, y = torch.randn({batch}, 3, {size}, {size}), torch.randint(0, 2, ({batch}, {size}, {size}))
times = []
for _ in range({steps} + 2):
    start = time.perf_counter()
    loss = torch.nn.functional.cross_entropy(model(x)["out"], y)
    opt.zero_grad(); loss.backward(); opt.step()
    times.append(time.perf_counter() - start)
import os
print(json.dumps({{"times": times[2:], "policy": os.environ.get("OMP_WAIT_POLICY"),
                   "spin": os.environ.get("GOMP_SPINCOUNT")}}))
"""

SPINNER = "while True: pass"


def run_variant(variant, model: str, steps: int) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in OMP_KEYS}
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    first = "import segtrain" if variant == "segtrain" else ""  # else torch loads before segtrain can set anything
    if variant != "segtrain":
        env.update(variant)
    size, batch = MODELS[model]
    code = CHILD.format(first=first, model=model, size=size, batch=batch, steps=steps)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    return json.loads(out.splitlines()[-1])


def measure(situation: str, models, rounds: int, steps: int) -> dict:
    spinner = subprocess.Popen([sys.executable, "-c", SPINNER]) if situation == "busy" else None
    try:
        time.sleep(0.5 if spinner else 0)
        times = {(m, v): [] for m in models for v in VARIANTS}
        chosen = {}
        for _ in range(rounds):
            for model in models:
                for name, variant in VARIANTS.items():
                    result = run_variant(variant, model, steps)
                    times[model, name] += result["times"]
                    if variant == "segtrain":
                        chosen[model] = f"policy {result['policy']}, spin {result['spin']}"
        return {"times": times, "chosen": chosen}
    finally:
        if spinner:
            spinner.kill()
            spinner.wait()


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--situations", default="idle,busy")
    p.add_argument("--models", default=",".join(MODELS))
    p.add_argument("--variants", default=None, help="variant names separated by ';' (default: all)")
    args = p.parse_args()
    if args.variants:
        for name in set(VARIANTS) - set(args.variants.split(";")):
            del VARIANTS[name]
    steps, rounds = (4, 2) if args.quick else (6, 3)
    models = args.models.split(",")
    rows, raw = [], {}
    for situation in args.situations.split(","):
        result = measure(situation, models, rounds, steps)
        for model in models:
            base = median(result["times"][model, next(iter(VARIANTS))])
            for name in VARIANTS:
                t = result["times"][model, name]
                note = result["chosen"].get(model, "") if VARIANTS[name] == "segtrain" else ""
                rows.append([situation, model, name, f"{median(t) * 1000:.0f}", f"{median(t) / base:.2f}",
                             f"{min(t) * 1000:.0f}-{max(t) * 1000:.0f}", note])
            raw[situation] = {f"{m}|{v}": t for (m, v), t in result["times"].items()}
    text = table(["machine", "model", "variant", "ms/step (median)", "vs PyTorch default", "range", "segtrain chose"],
                 rows)
    text += (f"\n\nOne bare training step (SGD, cross-entropy, random data in memory), {rounds} alternating rounds "
             f"of {steps} timed steps per variant (2 warm-up steps dropped), each in its own process. busy: one "
             "other process spinning on a core throughout.")
    report("OpenMP wait policy, idle and beside a busy process", text, raw, args.out)


if __name__ == "__main__":
    main()
