"""Shared test helpers: tiny synthetic folders and a way to run the CLI in-process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from segtrain.synthetic import write_sky_folder

torch.set_num_threads(min(2, os.cpu_count() or 1))

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


def tiny_config(**changes) -> dict:
    return {**TINY, **changes}


@pytest.fixture
def sky_root(tmp_path) -> Path:
    """12 train / 4 valid synthetic 32 px sky images with 0/255 masks and a tiny config."""
    return write_sky_folder(tmp_path / "data", n_train=12, n_valid=4, size=32, config=tiny_config())


def run_cli(*args, cwd=None, timeout=300) -> subprocess.CompletedProcess:
    """The real command in a subprocess, as a user runs it."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "2"}
    return subprocess.run([sys.executable, "-m", "segtrain", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, timeout=timeout, env=env)


def write_config(root: Path, **cfg) -> None:
    (root / "config.list").write_text(json.dumps(cfg, indent=2))
