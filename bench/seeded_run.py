"""Fingerprints of seeded runs, to show a restructure changed no behaviour: the SHA-256 of every
log.csv column but elapsed_time and of the final and best weights, for three runs on a synthetic
folder: the default recipe (fitted to the folder), the original tool's SGD recipe with an EMA, and
a run stopped half-way and resumed. Run it before and after a change and compare the output
(BENCHMARKS.md section 15).

    python bench/seeded_run.py OUT_DIR > fingerprints.json
"""

from __future__ import annotations

import csv
import hashlib
import json
import sys
from pathlib import Path

import torch

import segtrain
from segtrain.data.synthetic import write_sky_folder

RUNS = {
    "default_recipe": {"max_iteration": 24, "interval_validate": 8, "n_workers": 0, "class_weights": "auto",
                       "pretrained_backbone": False},
    "original_sgd_ema": {"model": "fcn_resnet18", "lr": 0.02, "image_size": 48, "max_iteration": 24,
                         "interval_validate": 8, "n_workers": 0, "ema_decay": 0.9, "pretrained_backbone": False},
}


def weights_digest(path: Path) -> str:
    state = torch.load(path, map_location="cpu", weights_only=True)["model_state_dict"]
    digest = hashlib.sha256()
    for name in sorted(state):
        digest.update(name.encode())
        digest.update(state[name].contiguous().numpy().tobytes())
    return digest.hexdigest()


def log_digest(path: Path) -> str:
    with open(path, newline="") as f:
        rows = [{k: v for k, v in row.items() if k != "elapsed_time"} for row in csv.DictReader(f)]
    return hashlib.sha256(json.dumps(rows, sort_keys=True).encode()).hexdigest()


def fingerprint(folder: Path) -> dict:
    return {"log_csv": log_digest(folder / "log.csv"), "final": weights_digest(folder / "checkpoint.pth.tar"),
            "best": weights_digest(folder / "model_best.pth.tar")}


def main(out: Path) -> None:
    quiet = lambda *args: None  # noqa: E731
    results = {}
    for name, overrides in RUNS.items():
        root = out / name
        write_sky_folder(root, n_train=12, n_valid=4, size=48)
        results[name] = fingerprint(segtrain.train(root, {**overrides, "output_dir": name}, log=quiet).folder)
    root = out / "resumed"
    write_sky_folder(root, n_train=12, n_valid=4, size=48)
    overrides = {**RUNS["default_recipe"], "output_dir": "resumed"}
    segtrain.train(root, overrides, stop_after=13, log=quiet)
    results["resumed"] = fingerprint(segtrain.train(root, overrides, resume=True, log=quiet).folder)
    json.dump(results, sys.stdout, indent=1)
    print()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
