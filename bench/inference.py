"""Benchmark 4, inference: images/s at 512 px on the CPU for eager PyTorch (inference_mode),
TorchScript (traced, frozen) and ONNX Runtime, for fcn_resnet50 and lraspp_mobilenet_v3_large.

The TorchScript and ONNX models are made here with torch.jit.trace and torch.onnx.export, the
same calls an export command makes; ONNX Runtime is skipped with a note when it or the exporter
is missing. The engines alternate image by image; weights are random (speed does not depend on
them).

    .venv/bin/python bench/inference.py --quick
"""

from __future__ import annotations

from common import median, parser, peak_rss_mb, report, table  # first: segtrain sets up OpenMP before torch loads
import tempfile
import time
import warnings
from pathlib import Path

import torch
from torch import nn

from segtrain.models.registry import build_model

MODELS = ["fcn_resnet50", "lraspp_mobilenet_v3_large"]


class LogitsOnly(nn.Module):
    """torchvision models return a dict; tracing and ONNX want a plain tensor out."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model(x)["out"]


def engines(name: str, size: int, folder: Path) -> tuple[dict, list[str]]:
    model = LogitsOnly(build_model(name, 2)).eval()
    example = torch.randn(1, 3, size, size)
    notes = []
    with torch.inference_mode():
        eager = model

        def run_eager(x):
            with torch.inference_mode():
                return eager(x)

        runs = {"eager": run_eager}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            traced = torch.jit.optimize_for_inference(torch.jit.freeze(torch.jit.trace(model, example)))

            def run_script(x):
                with torch.inference_mode():
                    return traced(x)

            runs["torchscript"] = run_script
        except Exception as e:  # TorchScript is deprecated upstream; report rather than fail
            notes.append(f"{name}: TorchScript unavailable ({type(e).__name__}: {e})")
        try:
            import onnxruntime as ort

            path = folder / f"{name}.onnx"
            torch.onnx.export(model, (example,), str(path), input_names=["image"], output_names=["logits"],
                              dynamo=False, opset_version=17)
            options = ort.SessionOptions()
            options.intra_op_num_threads = torch.get_num_threads()
            session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
            runs["onnxruntime"] = lambda x: session.run(None, {"image": x.numpy()})[0]
        except Exception as e:
            notes.append(f"{name}: ONNX Runtime skipped ({type(e).__name__}: {e})")
    return runs, notes


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--size", type=int, default=512)
    args = p.parse_args()
    images, rounds = (2, 2) if args.quick else (4, 3)
    rows, raw, notes = [], {}, []
    with tempfile.TemporaryDirectory() as tmp:
        for name in MODELS:
            runs, model_notes = engines(name, args.size, Path(tmp))
            notes += model_notes
            x = torch.randn(1, 3, args.size, args.size)
            for run in runs.values():
                run(x)  # warm-up: first calls allocate and (TorchScript) optimise
            times = {engine: [] for engine in runs}
            for _ in range(rounds):
                for engine, run in runs.items():
                    for _ in range(images):
                        start = time.perf_counter()
                        run(x)
                        times[engine].append(time.perf_counter() - start)
            base = median(times["eager"])
            for engine, t in times.items():
                rows.append([name, engine, 1 / median(t), f"{base / median(t):.2f}"])
            raw[name] = times
    text = table(["model", "engine", f"img/s at {args.size} px", "speed-up vs eager"], rows)
    text += (f"\n\nbatch 1, {torch.get_num_threads()} threads, medians of {rounds} alternating rounds of {images} "
             f"images. Peak RSS {peak_rss_mb():.0f} MB.")
    if notes:
        text += "\n\n" + "\n".join(f"- {n}" for n in notes)
    report("Benchmark 4: inference", text, raw, args.out)


if __name__ == "__main__":
    main()
