"""Shared test helpers: tiny synthetic folders and a way to run the CLI in-process."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from cli_process import run_segtrain
from segtrain.data.synthetic import write_sky_folder

torch.set_num_threads(min(2, os.cpu_count() or 1))
# The CLI runs in these tests inherit this: libgomp's own default spin count, set explicitly, so
# segtrain's start-up look at the machine's load (runtime/cpu_threads.py, tested on its own in
# test_cpu_threads.py) neither costs 0.1 s per command nor makes a test depend on the CI machine's load.
os.environ.setdefault("GOMP_SPINCOUNT", "300000")

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"

TINY = {
    "model": "fcn_resnet18",
    "image_size": 32,
    "batch_size": 4,
    "max_iteration": 6,
    "interval_validate": 3,
    "lr": 0.02,
    "pretrained_backbone": False,
    "n_workers": 0,
    "output_dir": "tiny",
    "log_interval": 100,
}


@pytest.fixture(autouse=True)
def keep_torch_threads():
    """A run with the `threads` key sets the process's thread count; in-process runs of later tests
    must not inherit it (a different count sums floats in another order)."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def tiny_config(**changes) -> dict:
    return {**TINY, **changes}


@pytest.fixture
def sky_root(tmp_path) -> Path:
    """12 train / 4 valid synthetic 32 px sky images with 0/255 masks and a tiny config."""
    return write_sky_folder(tmp_path / "data", n_train=12, n_valid=4, size=32, config=tiny_config())


def run_cli(*args, cwd=None, timeout=300) -> subprocess.CompletedProcess:
    """The real command in a process of its own, as a user runs it (forked from a process that has
    imported torch already: cli_process.py)."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "2"}
    return run_segtrain(list(map(str, args)), cwd=cwd, env=env, timeout=timeout)


def write_config(root: Path, **cfg) -> None:
    (root / "config.list").write_text(json.dumps(cfg, indent=2))


def write_mixed_split(folder: Path, sizes, seed: int = 1) -> None:
    """images/ + labels/ (0/255 masks) of synthetic sky images with the given (H, W) sizes."""
    from PIL import Image

    from segtrain.data.synthetic import sky_sample

    rng = np.random.default_rng(seed)
    (folder / "images").mkdir(parents=True, exist_ok=True)
    (folder / "labels").mkdir(parents=True, exist_ok=True)
    for k, (h, w) in enumerate(sizes):
        image, mask = sky_sample(rng, max(h, w))
        Image.fromarray(image[:h, :w]).save(folder / "images" / f"mixed{k:02d}.png")
        Image.fromarray(mask[:h, :w] * 255).save(folder / "labels" / f"mixed{k:02d}.png")


VALID_SIZES = [(32, 32), (40, 48), (48, 40), (37, 53), (64, 64)]


@pytest.fixture(scope="session")
def trained_root(tmp_path_factory) -> Path:
    """A folder with a tiny fcn_resnet18 trained by `segtrain train` (32 px input) in MODEL-tiny,
    and validation images of mixed native sizes (so inference resizes in and out)."""
    from segtrain.cli import main

    root = write_sky_folder(tmp_path_factory.mktemp("trained") / "data", n_train=12, n_valid=0, size=32,
                            config=tiny_config(max_iteration=8, interval_validate=4))
    write_mixed_split(root / "valid", VALID_SIZES)
    assert main(["train", str(root)]) == 0
    return root


TRAINED_CHECKPOINT = "MODEL-tiny/model_best.pth.tar"
EXPORT_SUFFIX = {"onnx": ".onnx", "torchscript": ".pt", "pt2": ".pt2"}


@pytest.fixture(scope="session")
def trained_export(trained_root, tmp_path_factory):
    """trained_root's model exported by segtrain's export, each (format, raw_input) once a session, when
    a test first asks for it: exported("onnx") -> the file. Tests only read these files; a test that
    checks what export itself does or prints runs its own."""
    from segtrain.use.export import export

    folder = tmp_path_factory.mktemp("trained-exports")
    files: dict[tuple[str, bool], Path] = {}

    def exported(fmt: str, raw_input: bool = False) -> Path:
        if (fmt, raw_input) not in files:
            path = folder / f"model-{'raw' if raw_input else 'normalized'}{EXPORT_SUFFIX[fmt]}"
            export(trained_root / TRAINED_CHECKPOINT, fmt, path, raw_input=raw_input, log=lambda *a: None)
            files[fmt, raw_input] = path
        return files[fmt, raw_input]

    return exported


def save_fresh_checkpoint(path: Path, model: str, image_size=32, class_names=("sky", "cloud"), seed=0, **config) -> Path:
    """An untrained model saved in segtrain's checkpoint format (what export and predict read)."""
    from segtrain.outputs.checkpoints import save_atomic
    from segtrain.data.classes import voc_colormap
    from segtrain.config.load import resolve
    from segtrain.models.registry import build_model
    from segtrain.data.transforms import MEAN, STD

    torch.manual_seed(seed)
    cfg = resolve({"model": model, "image_size": image_size, "batch_size": 2, "pretrained_backbone": False, **config})
    net = build_model(model, len(class_names))
    save_atomic({"arch": model, "model_state_dict": net.state_dict(), "config": cfg.as_dict(), "class_names": list(class_names),
                 "class_colors": voc_colormap(len(class_names)), "normalization": {"mean": list(MEAN), "std": list(STD)}},
                path)
    return path
