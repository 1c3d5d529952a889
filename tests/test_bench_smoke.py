"""The benchmarks run as a user runs them (their own process); CI checks they produce their
tables. No timing is asserted: the machine is shared."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]


def run_bench(script, *args):
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "2"}
    return subprocess.run([sys.executable, str(REPO / "bench" / script), *map(str, args)], capture_output=True,
                          text=True, timeout=600, env=env, cwd=REPO)


def test_overhead_benchmark_smoke_run_prints_its_table(tmp_path):
    result = run_bench("overhead.py", "--smoke", "--out", tmp_path / "overhead")
    assert result.returncode == 0, result.stderr
    assert ("| model | n_workers | segtrain ms/it | bare ms/it | ratio of medians | ratio per round: median (range) "
            "| ratio of fastest runs | iterations |") in result.stdout
    assert "| fcn_resnet18 | 0 |" in result.stdout
    assert "segtrain runs whose threads chose to sleep" in result.stdout
    raw = json.loads((tmp_path / "overhead.json").read_text())
    sides = raw["fcn_resnet18 n_workers=0"]  # per round, that run's iteration times
    assert len(sides["segtrain"]) == len(sides["bare"]) == 1
    assert len(sides["segtrain"][0]) == len(sides["bare"][0]) == 2
    assert all(t > 0 for t in sides["segtrain"][0] + sides["bare"][0])
    assert isinstance(raw["passive_runs"], list)
    assert (tmp_path / "overhead.md").read_text().startswith("## Benchmark 1: trainer overhead")


def test_gpu_benchmark_code_paths_run_on_the_cpu(tmp_path):
    """AMP, channels_last and pinned-memory paths of training, tiny, on the CPU."""
    result = run_bench("gpu.py", "--smoke", "--device", "cpu", "--out", tmp_path / "gpu-0.5min")  # a dot in the name
    assert result.returncode == 0, result.stderr
    for variant in ("| fp32 |", "| AMP bf16 |", "| AMP bf16 + channels_last |"):
        assert variant in result.stdout
    assert sorted(path.name for path in tmp_path.iterdir()) == ["gpu-0.5min.json", "gpu-0.5min.md"]
    raw = json.loads((tmp_path / "gpu-0.5min.json").read_text())
    assert raw["flops_per_step"] > 0


def test_gpu_benchmark_without_a_gpu_says_so():
    if __import__("torch").cuda.is_available():
        return
    result = run_bench("gpu.py", "--quick")
    assert result.returncode != 0 and "no CUDA GPU visible" in result.stderr


def test_worst_images_benchmark_drops_the_most_disagreeing_images(trained_root, tmp_path, monkeypatch):
    """Its mean IoU of all images equals segtrain evaluate's; each row leaves out the images the
    model disagrees with most, recomputed here from per-image matrices."""
    monkeypatch.syspath_prepend(str(REPO / "bench"))
    from worst_images import per_image_confusion, without_worst
    from segtrain.use.evaluate import evaluate

    ckpt = trained_root / "MODEL-tiny" / "model_best.pth.tar"
    rows = per_image_confusion(ckpt, trained_root, "valid")
    table = without_worst(rows, drops=(1, 2))
    assert table[0][1] == evaluate(trained_root, ckpt, device="cpu", log=lambda *a: None)["mean_iu"]
    wrong = {name: 1 - np.trace(m) / m.sum() for name, m in rows}
    worst = sorted(wrong, key=wrong.get, reverse=True)
    assert table[1][2] == worst[0] and table[2][2] == ", ".join(worst[:2])
    kept = sum(m for name, m in rows if name not in worst[:2])
    iou = np.diag(kept) / (kept.sum(0) + kept.sum(1) - np.diag(kept))
    assert table[2][1] == pytest.approx(np.nanmean(iou))

    result = run_bench("worst_images.py", "--checkpoint", ckpt, "--data", trained_root, "--out", tmp_path / "w")
    assert result.returncode == 0, result.stderr
    assert "| images left out | mean IoU of the rest |" in result.stdout and "| 1 |" in result.stdout
