"""The default recipe fits itself to the folder (data/fingerprint.py, config/recipe.py fit_recipe):
input size with the images' aspect, batch, a loss for rare classes; keys the config sets are kept,
and a config that sets lr (the original recipe) is left exactly as it was."""

import copy

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import write_config, write_mixed_split
from segtrain.cli import main
from segtrain.config.load import resolve
from segtrain.config.recipe import FIT_KEY, fit_recipe
from segtrain.data import fingerprint as fingerprint_module
from segtrain.data.folder import inspect_root

WIDE = (360, 480)  # (H, W) of CamVid's frames


def wide_root(path, n_train=5, n_valid=2):
    path.mkdir(parents=True)
    (path / "class_names.list").write_text("sky\ncloud\n")
    write_mixed_split(path / "train", [WIDE] * n_train)
    write_mixed_split(path / "valid", [WIDE] * n_valid, seed=2)
    return path


def rare_class_root(path, n_train=6):
    """Three classes in index masks: halves of 'ground' and 'sky', and a 2x2 'bird' (0.1%)."""
    path.mkdir(parents=True)
    (path / "class_names.list").write_text("ground\nsky\nbird\n")
    rng = np.random.default_rng(0)
    for split, count in (("train", n_train), ("valid", 2)):
        for kind in ("images", "labels"):
            (path / split / kind).mkdir(parents=True)
        for k in range(count):
            mask = np.zeros((64, 64), np.uint8)
            mask[:, 32:] = 1
            mask[10:12, 40:42] = 2
            Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(path / split / "images" / f"{k}.png")
            Image.fromarray(mask).save(path / split / "labels" / f"{k}.png")
    return path


def fitted(root, raw, device_type="cpu"):
    cfg = resolve(raw)
    lines = []
    cfg = cfg.with_changes(**fit_recipe(cfg, inspect_root(root, cfg), device_type, log=lines.append))
    return cfg, "\n".join(lines)


def test_input_keeps_the_images_aspect(tmp_path):
    cfg, said = fitted(wide_root(tmp_path / "data"), {})
    assert cfg["image_size"] == [144, 192]  # 4:3 like the images, about 160x160 pixels, sides multiples of 16
    assert cfg["batch_size"] == 5 and cfg["loss"] == "ce" and cfg["class_weights"] is None  # 5 images; no rare class
    assert "input 144x192 (median image 360x480, aspect 1.33 kept" in said and "batch 5 (5 training images)" in said
    assert "set model/encoder/image_size/batch_size/loss/class_weights/amp/n_workers in config.list to choose otherwise" in said
    assert cfg["model"] == "lraspp_mobilenet_v3_large" and cfg["output_dir"] == cfg["model"] and "model " not in said
    cfg, said = fitted(tmp_path / "data", {}, "cuda")
    assert cfg["image_size"] == [272, 368] and cfg["batch_size"] == 5 and "on the GPU" in said
    assert cfg["amp"] is True and cfg["n_workers"] >= 2 and "AMP (bf16 autocast)" in said
    cfg, _ = fitted(tmp_path / "data", {"amp": False, "n_workers": 1}, "cuda")
    assert cfg["amp"] is False and cfg["n_workers"] == 1  # what the config sets stays


def test_small_images_are_not_upsampled(tmp_path):
    root = tmp_path / "data"
    root.mkdir(parents=True)
    (root / "class_names.list").write_text("sky\ncloud\n")
    write_mixed_split(root / "train", [(48, 64)] * 4)
    write_mixed_split(root / "valid", [(48, 64)] * 2)
    assert fitted(root, {})[0]["image_size"] == [48, 64]


def test_rare_class_gets_dice_and_auto_weights(tmp_path):
    cfg, said = fitted(rare_class_root(tmp_path / "data"), {})
    assert cfg["loss"] == "ce+dice" and cfg["class_weights"] == "auto"
    assert "loss ce+dice, class_weights auto (rarest class 'bird': 0.1% of the labelled pixels of 6 masks" in said


def test_keys_the_config_sets_are_kept(tmp_path):
    root = rare_class_root(tmp_path / "data")
    cfg, said = fitted(root, {"image_size": 48, "loss": "focal"})
    assert cfg["image_size"] == [48, 48] and cfg["loss"] == "focal"
    assert cfg["class_weights"] == "auto" and cfg["batch_size"] == 6  # the open keys are still fitted
    assert cfg[FIT_KEY] == ["model", "encoder", "output_dir", "batch_size", "class_weights", "amp", "n_workers"]
    assert "set model/encoder/batch_size/class_weights/" in said
    cfg, _ = fitted(root, {"class_weights": None, "batch_size": 2})
    assert cfg["class_weights"] is None and cfg["batch_size"] == 2 and cfg["loss"] == "ce+dice"


def grid_root(path, size, spacing, n_train=4):
    """'membrane'-like masks: 1 px lines of class 0 every `spacing` pixels across class 1."""
    path.mkdir(parents=True)
    (path / "class_names.list").write_text("membrane\ncell\n")
    rng = np.random.default_rng(0)
    mask = np.full((size, size), 255, np.uint8)
    mask[::spacing, :] = 0
    mask[:, ::spacing] = 0
    for split, count in (("train", n_train), ("valid", 1)):
        for kind in ("images", "labels"):
            (path / split / kind).mkdir(parents=True)
        for k in range(count):
            Image.fromarray(rng.integers(0, 255, (size, size), dtype=np.uint8)).save(path / split / "images" / f"{k}.png")
            Image.fromarray(mask).save(path / split / "labels" / f"{k}.png")
    return path


def test_the_fingerprint_measures_each_class_width(tmp_path):
    fp = fingerprint_module.fingerprint(inspect_root(grid_root(tmp_path / "data", 64, 8), resolve({})))
    # Per 8x8 cell: 15 line pixels, each of the 7x7 cell pixels' 28 outer edges meets a line, and
    # so do the lines: widths 2 * 15 / 28 and 2 * 49 / 28 (the image border is no boundary, so a bit more).
    assert fp.class_share[0] == pytest.approx(15 / 64, abs=0.01)
    assert fp.class_width[0] == pytest.approx(30 / 28, rel=0.1) and fp.class_width[1] == pytest.approx(98 / 28, rel=0.1)


def test_a_large_thin_class_gets_a_unet_on_a_larger_input(tmp_path):
    root = grid_root(tmp_path / "data", 400, 8)  # a class of 23% of the pixels, about 1 px wide
    cfg, said = fitted(root, {})
    assert (cfg["model"], cfg["encoder"], cfg["output_dir"]) == ("unet", "resnet18", "unet")
    assert cfg["image_size"] == [320, 320]  # grown from 160 as far as the recipe grows it (2x)
    assert "model unet with encoder resnet18" in said and "grown from 160 for class 'membrane'" in said
    cfg, said = fitted(root, {"model": "fcn_resnet18"})  # a model the config names stays; the input still grows
    assert (cfg["model"], cfg["output_dir"], cfg["image_size"]) == ("fcn_resnet18", "fcn_resnet18", [320, 320])
    assert "model" not in cfg[FIT_KEY] and "model unet" not in said
    assert fitted(root, {"fcn": "50"})[0]["model"] == "fcn_resnet50"  # the original's keys pick the model
    # The class is judged at the input the config sets: 1 px at native size is thin, the model is fitted, the size kept.
    cfg, _ = fitted(root, {"image_size": None})
    assert cfg["model"] == "unet" and cfg["image_size"] is None
    assert fitted(root, {"output_dir": "mine"})[0]["output_dir"] == "mine"


def test_a_thin_class_that_is_rare_changes_nothing(tmp_path):
    cfg, said = fitted(grid_root(tmp_path / "data", 400, 60), {})  # the lines are 3% of the pixels
    assert cfg["model"] == "lraspp_mobilenet_v3_large" and cfg["image_size"] == [160, 160] and "grown" not in said


def test_a_small_thin_class_grows_the_input_only_with_a_long_time_budget(tmp_path):
    root = grid_root(tmp_path / "data", 400, 60)  # lines of 3.5% of the pixels, 1 px wide: 0.4 px at 160 px
    for budget in ({}, {"time_budget": "5m"}, {"time_budget": 599}):  # no budget, or under 10 minutes: kept
        cfg, said = fitted(root, budget)
        assert cfg["image_size"] == [160, 160] and "grown" not in said
    cfg, said = fitted(root, {"time_budget": "30m"})
    assert cfg["model"] == "lraspp_mobilenet_v3_large" and cfg["image_size"] == [288, 288]  # 1.75 x 160, to 16s
    assert "grown from 160 for class 'membrane': 3.5% of the pixels, 1.1 px wide in the masks, with time_budget 30m" in said
    assert fitted(root, {"time_budget": "30m"}, "cuda")[0]["image_size"] == [320, 320]  # the GPU's input: unchanged
    assert fitted(root, {"time_budget": "30m", "image_size": 200})[0]["image_size"] == [200, 200]  # the config's wins


def test_a_class_wide_enough_at_the_configs_input_keeps_lraspp(tmp_path):
    root = grid_root(tmp_path / "data", 400, 24)
    lines = np.asarray(Image.open(root / "train" / "labels" / "0.png")) == 0
    for _ in range(2):  # 1 px lines grown to 5 px: 37% of the pixels
        lines = lines | np.roll(lines, 1, 0) | np.roll(lines, -1, 0) | np.roll(lines, 1, 1) | np.roll(lines, -1, 1)
    for path in root.glob("*/labels/*.png"):
        Image.fromarray(np.where(lines, 0, 255).astype(np.uint8)).save(path)
    cfg, _ = fitted(root, {})
    assert cfg["model"] == "unet" and 160 < cfg["image_size"][0] <= 320  # about 2 px wide at 160 px: grown
    cfg, said = fitted(root, {"image_size": 400})  # 5 px wide at the config's 400 px: not thin there
    assert cfg["model"] == "lraspp_mobilenet_v3_large" and cfg["image_size"] == [400, 400] and "unet" not in said


def test_resume_finds_the_folder_of_the_model_the_recipe_chose(tmp_path, capsys):
    root = grid_root(tmp_path / "data", 64, 8)
    write_config(root, max_iteration=2, interval_validate=1, pretrained_backbone=False, n_workers=0, log_interval=100,
                 batch_size=2)
    assert main(["train", str(root), "--stop-after", "1"]) == 0
    assert "model unet with encoder resnet18" in capsys.readouterr().out
    assert main(["train", str(root), "--resume"]) == 0
    ckpt = torch.load(root / "MODEL-unet" / "checkpoint.pth.tar", weights_only=True)
    assert ckpt["iteration"] == 2 and ckpt["arch"] == "unet" and ckpt["config"]["encoder"] == "resnet18"
    assert not (root / "MODEL-lraspp_mobilenet_v3_large").exists()


@pytest.mark.parametrize("raw", [
    {"max_iteration": 100, "lr": 1e-10, "momentum": 0.99, "batch_size": 1, "backbone": "resnet", "fcn": "50"},
    {"lr": 0.01},
])
def test_a_config_that_sets_lr_is_not_fitted(tmp_path, raw):
    root = rare_class_root(tmp_path / "data")
    cfg = resolve(raw)
    lines = []
    assert fit_recipe(cfg, inspect_root(root, cfg), "cpu", log=lines.append) == {}
    assert FIT_KEY not in cfg and not lines


def test_at_most_50_masks_are_read(tmp_path, monkeypatch):
    root = tmp_path / "data"
    root.mkdir(parents=True)
    (root / "class_names.list").write_text("sky\ncloud\n")
    write_mixed_split(root / "train", [(16, 16)] * 60)
    write_mixed_split(root / "valid", [(16, 16)] * 2)
    read = []
    original = fingerprint_module.read_mask
    monkeypatch.setattr(fingerprint_module, "read_mask", lambda path: read.append(path) or original(path))
    cfg = resolve({})
    fp = fingerprint_module.fingerprint(inspect_root(root, cfg))
    assert len(read) == 50 and fp.n_train == 60 and fp.median_size == (16, 16)


def test_training_stores_the_choices_and_resume_keeps_them(tmp_path, capsys):
    root = wide_root(tmp_path / "data")
    write_config(root, model="fcn_resnet18", max_iteration=2, interval_validate=1, pretrained_backbone=False,
                 n_workers=0, output_dir="fit", log_interval=100)
    assert main(["train", str(root), "--stop-after", "1"]) == 0
    assert "recipe fitted to 5 training images: input 144x192" in capsys.readouterr().out
    # Resume keeps what the run started with, though the folder now has more (and other) images.
    write_mixed_split(root / "train", [(200, 200)] * 9, seed=3)
    assert main(["train", str(root), "--resume"]) == 0
    assert "recipe fitted" not in capsys.readouterr().out
    ckpt = torch.load(root / "MODEL-fit" / "checkpoint.pth.tar", weights_only=True)
    assert ckpt["iteration"] == 2 and ckpt["config"]["image_size"] == [144, 192] and ckpt["config"]["batch_size"] == 5
