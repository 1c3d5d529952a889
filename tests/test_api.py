"""The Python API (segtrain/api.py): docs/api.md's example runs as written, on a tiny synthetic
folder, and its results are checked against the command line's and the run's own files."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import segtrain
from conftest import VALID_SIZES, run_cli, tiny_config, write_mixed_split
from segtrain.data.synthetic import write_sky_folder
from segtrain.outputs.checkpoints import read_checkpoint

DOCS = Path(__file__).resolve().parents[1] / "docs" / "api.md"
EXPORTS = {"onnx": "cloud.onnx", "torchscript": "cloud.pt", "pt2": "cloud.pt2"}


def code_blocks(markdown: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", markdown, flags=re.DOTALL)


@pytest.fixture(scope="module")
def example(tmp_path_factory):
    """docs/api.md's code blocks, run in order in a folder holding clouds/: 8 iterations of a tiny
    FCN (its config.list), validation images of mixed sizes. Returns the names they defined."""
    import os

    here = tmp_path_factory.mktemp("api")
    root = write_sky_folder(here / "clouds", n_train=12, n_valid=0, size=32,
                            config=tiny_config(max_iteration=4, interval_validate=2))
    write_mixed_split(root / "valid", VALID_SIZES)
    lines: list[str] = []
    names: dict = {"log": lambda *args: lines.append(" ".join(map(str, args)))}  # the blocks' print() goes here
    before = Path.cwd()
    os.chdir(here)
    try:
        for block in code_blocks(DOCS.read_text(encoding="utf-8")):
            exec(compile(block.replace("print(", "log("), str(DOCS), "exec"), names)
    finally:
        os.chdir(before)
    names["here"], names["root"], names["printed"] = here, root, lines
    return names


def test_the_docs_example_ran_every_block(example):
    assert len(code_blocks(DOCS.read_text(encoding="utf-8"))) == 4
    assert isinstance(example["run"], segtrain.Run) and isinstance(example["model"], segtrain.Predictor)
    assert "greater than 0" in example["printed"][-1]  # the error block printed the CLI's one line


def test_train_returns_the_scores_log_csv_and_the_checkpoints_hold(example):
    run = example["run"]
    with open(run.folder / "log.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(run.history) == len(rows) == 4 + 3  # 4 steps, validations at 0, 2 and 4
    for row, typed in zip(rows, run.history):
        split = "valid" if row["valid/loss"] else "train"
        assert (typed.split, typed.iteration, typed.epoch) == (split, int(row["iteration"]), int(row["epoch"]))
        assert [typed.loss, typed.acc, typed.mean_iu, typed.elapsed_time] == \
            [float(row[f"{split}/loss"]), float(row[f"{split}/acc"]), float(row[f"{split}/mean_iu"]),
             float(row["elapsed_time"])]
    best, latest = read_checkpoint(run.best_checkpoint), read_checkpoint(run.checkpoint)
    # what the training loop itself kept: the best validation's score, and the last validation's numbers
    assert run.best.mean_iu == best["best_mean_iu"] and run.best.iteration == best["iteration"]
    assert run.final.iteration == 4 == latest["iteration"]
    assert {k: getattr(run.final, k) for k in ("loss", "acc", "acc_cls", "mean_iu", "fwavacc")} == \
        {k: latest["valid_metrics"][k] for k in ("loss", "acc", "acc_cls", "mean_iu", "fwavacc")}
    assert segtrain.Run.read(run.folder) == run


@pytest.fixture(scope="module")
def predicted(example, tmp_path_factory):
    """`segtrain predict` of the validation images with the checkpoint and each exported file."""
    out = tmp_path_factory.mktemp("predicted")
    files = {"checkpoint": example["run"].best_checkpoint,
             **{kind: example["here"] / name for kind, name in EXPORTS.items()}}
    for kind, path in files.items():
        done = run_cli("predict", example["root"] / "valid" / "images", "--checkpoint", path, "--out", out / kind)
        assert done.returncode == 0, done.stderr
    return files, out


@pytest.mark.parametrize("kind", ["checkpoint", *EXPORTS])
def test_every_file_kind_loads_into_one_predictor_whose_masks_are_predicts(example, predicted, kind):
    files, out = predicted
    predictor = segtrain.load(files[kind])
    images = sorted((example["root"] / "valid" / "images").iterdir())
    as_arrays = [np.asarray(Image.open(path).convert("RGB")) for path in images]
    masks = predictor.masks(as_arrays)
    assert [m.shape for m in masks] == [a.shape[:2] for a in as_arrays]
    for path, mask in zip(images, masks):
        assert np.array_equal(mask, np.asarray(Image.open(out / kind / f"{path.stem}.png")))
    assert all(np.array_equal(a, b) for a, b in zip(masks, predictor.masks([Image.open(p) for p in images])))
    assert all(np.array_equal(a, b) for a, b in zip(masks, predictor.masks(images)))  # paths, too

    probabilities = predictor.probabilities(as_arrays[:2])
    assert all(p.dtype == np.float32 and np.allclose(p.sum(0), 1, atol=1e-5) for p in probabilities)
    assert all((p.argmax(0) == m).mean() > 0.99 for p, m in zip(probabilities, masks))
    with open(out / kind / "summary.csv", newline="") as f:
        summary = {row["image"]: row for row in csv.DictReader(f)}
    for path, fractions in zip(images, predictor.class_fractions(images)):
        assert list(fractions) == ["sky", "cloud"]
        assert [f"{v!r}" for v in fractions.values()] == [summary[path.name][f"{n}_fraction"] for n in fractions]


def test_evaluate_returns_the_numbers_the_command_writes(example, tmp_path):
    done = run_cli("evaluate", example["root"], "--checkpoint", example["here"] / "cloud.onnx",
                   "--json", tmp_path / "n.json")
    assert done.returncode == 0, done.stderr
    numbers = segtrain.evaluate(example["here"] / "cloud.onnx", example["root"], log=lambda *a: None)
    assert json.loads(json.dumps(numbers)) == json.loads((tmp_path / "n.json").read_text())
    assert example["numbers"]["mean_iu"] == segtrain.evaluate(example["run"].best_checkpoint, example["root"],
                                                              log=lambda *a: None)["mean_iu"]


def test_errors_are_the_one_line_the_command_prints(example, tmp_path):
    done = run_cli("predict", example["root"] / "valid" / "images", "--checkpoint", tmp_path / "none.onnx",
                   "--out", tmp_path / "out")
    with pytest.raises(segtrain.SegtrainError) as raised:
        segtrain.load(tmp_path / "none.onnx")
    assert done.returncode == 1 and done.stderr.strip() == f"error: {raised.value}"
    with pytest.raises(segtrain.SegtrainError, match="uint8"):
        example["model"].masks([np.zeros((8, 8, 3), dtype=np.float32)])
    with pytest.raises(segtrain.SegtrainError, match="name the format"):
        segtrain.export(example["run"].best_checkpoint, tmp_path / "model.bin")
