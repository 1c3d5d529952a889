"""A void class (a fisheye lens's border, "undefined"): learned, so predictions can find it, but
outside what the user measures: not in the mean IoU, reported apart."""

import csv
import json
import math

import numpy as np
import pytest
import torch
from PIL import Image

from segtrain.cli import main
from segtrain.data.classes import void_class
from segtrain.errors import DatasetError
from segtrain.evaluation.metrics import row_scores, scores


def test_scores_leave_the_void_class_out_of_the_mean_and_its_pixels_out_of_the_others():
    # rows truth, columns prediction: void (0), sky (1), cloud (2)
    hist = torch.tensor([[50, 5, 5],    # void pixels: count for no measured class
                         [2, 30, 8],    # sky: 2 predicted void are misses for sky
                         [0, 4, 16]])
    result = scores(hist, void=0)
    # by hand, without the void row: sky IoU 30 / (40 + 34 - 30), cloud 16 / (20 + 24 - 16)
    sky, cloud = 30 / 44, 16 / 28
    assert result["iu"][1] == pytest.approx(sky) and result["iu"][2] == pytest.approx(cloud)
    assert result["mean_iu"] == pytest.approx((sky + cloud) / 2)
    assert result["acc"] == pytest.approx(46 / 60)
    assert result["acc_cls"] == pytest.approx((30 / 40 + 16 / 20) / 2)
    assert result["fwavacc"] == pytest.approx(40 / 60 * sky + 20 / 60 * cloud)
    # the void class apart, from the whole matrix: 50 / (60 + 52 - 50)
    assert result["iu"][0] == pytest.approx(50 / 62) and result["pixels"][0] == 60
    assert row_scores(hist, 0) == {k: result[k] for k in ("acc", "acc_cls", "mean_iu", "fwavacc")}
    # without a void class, the easy border lifts the mean: what the issue saw
    assert scores(hist)["mean_iu"] > result["mean_iu"]
    assert not math.isnan(scores(hist)["iu"][0])


def test_void_class_must_name_a_class():
    assert void_class(["undefined", "sky"], {"void_class": "undefined"}) == 0
    assert void_class(["undefined", "sky"], {"void_class": None}) is None
    with pytest.raises(DatasetError) as e:
        void_class(["undefined", "sky"], {"void_class": "border"}, "config.list")
    assert "config.list: key 'void_class' is 'border'" in str(e.value) and "undefined, sky" in str(e.value)


def whole_sky_folder(root, n_train=6, n_valid=3, size=48, seed=0):
    """Fisheye frames: black outside the circle (mask 0, "undefined"), sky 100, cloud 255 inside."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    inside = (yy - size / 2 + 0.5) ** 2 + (xx - size / 2 + 0.5) ** 2 < (size * 0.45) ** 2
    for split, n in (("train", n_train), ("valid", n_valid)):
        (root / split / "images").mkdir(parents=True)
        (root / split / "labels").mkdir(parents=True)
        for i in range(n):
            cloud = inside & (xx < rng.integers(size // 4, 3 * size // 4))
            image = np.zeros((size, size, 3), np.uint8)
            image[inside] = (70, 130, 220)
            image[cloud] = (235, 235, 235)
            mask = np.where(inside, np.where(cloud, 255, 100), 0).astype(np.uint8)
            Image.fromarray(image).save(root / split / "images" / f"{i}.png")
            Image.fromarray(mask).save(root / split / "labels" / f"{i}.png")
    (root / "class_names.list").write_text("undefined\nsky\ncloud\n")
    return root


def test_a_run_with_a_void_class_scores_it_apart_everywhere(tmp_path, capsys):
    root = whole_sky_folder(tmp_path / "sky")
    (root / "config.list").write_text(json.dumps({
        "model": "fcn_resnet18", "image_size": 48, "batch_size": 2, "max_iteration": 4, "interval_validate": 4,
        "n_workers": 0, "output_dir": "v", "pretrained_backbone": False, "void_class": "undefined"}))
    assert main(["train", str(root)]) == 0
    out = root / "MODEL-v"
    with open(out / "log.csv") as f:
        final = [r for r in csv.DictReader(f) if r["valid/mean_iu"]][-1]
    assert main(["evaluate", str(root), "--checkpoint", str(out / "model_best.pth.tar"), "--json",
                 str(tmp_path / "e.json")]) == 0
    table = capsys.readouterr().out
    numbers = json.loads((tmp_path / "e.json").read_text())
    # evaluate counts as validation did, and both leave the void class out of the mean
    assert numbers["mean_iu"] == pytest.approx(float(final["valid/mean_iu"]))
    measured = [c["iou"] for c in numbers["per_class"][1:] if c["iou"] is not None]
    assert numbers["mean_iu"] == pytest.approx(sum(measured) / len(measured))
    assert numbers["void_class"] == "undefined" and "undefined" in table and "(void: not in the mean)" in table
    assert "(void: not in the mean)" in (out / "report.html").read_text()
    # a void_class that names no class is one line, before anything is made
    assert main(["train", str(root), "--set", 'void_class="border"', "--set", 'output_dir="w"']) == 1
    assert "key 'void_class' is 'border'" in capsys.readouterr().err
    assert not (root / "MODEL-w").exists()


def test_init_names_a_lens_border_void_and_the_folder_trains(tmp_path, capsys):
    root = whole_sky_folder(tmp_path / "sky")
    (root / "class_names.list").unlink()
    assert main(["init", str(root)]) == 0
    said = capsys.readouterr().out
    assert "mask value 0 fills the same" in said and 'its class is named "void"' in said
    assert "0 -> void, 100 -> class1, 255 -> class2" in said  # the encoding line names the classes written
    assert (root / "class_names.list").read_text().split() == ["void", "class1", "class2"]
    assert json.loads((root / "config.list").read_text())["void_class"] == "void"


def test_init_reads_a_void_name_and_an_index_outside_the_classes(tmp_path, capsys):
    root = whole_sky_folder(tmp_path / "sky")  # class_names.list: undefined, sky, cloud
    assert main(["init", str(root)]) == 0
    assert json.loads((root / "config.list").read_text())["void_class"] == "undefined"
    # index masks 0..2 with 3 as no class (CamVid's 11 beside 11 classes)
    other = tmp_path / "street"
    for split, n in (("train", 10), ("valid", 3)):
        (other / split / "images").mkdir(parents=True)
        (other / split / "labels").mkdir(parents=True)
        for i in range(n):
            Image.fromarray(np.full((32, 32, 3), 20 * i, np.uint8)).save(other / split / "images" / f"{i}.png")
            Image.fromarray((np.arange(32 * 32).reshape(32, 32) % 4).astype(np.uint8)).save(
                other / split / "labels" / f"{i}.png")
    (other / "class_names.list").write_text("road\ncar\nsky\n")
    capsys.readouterr()
    assert main(["init", str(other)]) == 0
    said = capsys.readouterr().out
    assert "mask value 3 is outside the 3 classes" in said and "problem" not in said
    assert json.loads((other / "config.list").read_text())["ignore_index"] == 3
    assert main(["check", str(other)]) == 0  # init leaves a folder that trains


def test_a_border_the_user_named_is_a_question_not_a_setting(tmp_path, capsys):
    root = whole_sky_folder(tmp_path / "sky")
    (root / "class_names.list").write_text("frame\nsky\ncloud\n")
    assert main(["init", str(root)]) == 0
    said = capsys.readouterr().out
    assert "if class 'frame' is outside what you measure, set \"void_class\": 'frame'" in said
    assert "void_class" not in json.loads((root / "config.list").read_text())
    capsys.readouterr()
    assert main(["check", str(root), "--set", "batch_size=2"]) == 0
    assert "void: mask value 0 fills the same" in capsys.readouterr().out
