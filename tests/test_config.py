import json

import pytest

from segtrain.config.load import load_config, parse_overrides, resolve
from segtrain.errors import ConfigError

ORIGINAL = {
    "max_iteration": 100000, "lr": 1e-10, "momentum": 0.99, "weight_decay": 0.0005,
    "interval_validate": 4000, "batch_size": 1, "backbone": "resnet", "fcn": "101",
    "output_dir": "resnet101", "pretrained_net": "", "n_workers": 6, "mode": "train",
}


def test_original_keys_alone_resolve_to_the_original_recipe():
    cfg = resolve(dict(ORIGINAL))
    assert cfg["model"] == "fcn_resnet101"
    assert cfg["loss_reduction"] == "sum" and cfg["lr_schedule"] == "constant"
    assert cfg["image_size"] is None and cfg["output_dir"] == "resnet101"


def test_new_user_without_lr_gets_mean_loss_poly_recipe():
    cfg = resolve({})
    assert cfg["optimizer"] == "adamw" and cfg["lr"] == 0.001
    assert cfg["loss_reduction"] == "mean" and cfg["lr_schedule"] == "poly"
    assert cfg["model"] == "lraspp_mobilenet_v3_large" and cfg["output_dir"] == "lraspp_mobilenet_v3_large"


def test_optimizer_follows_lr_unless_given():
    assert resolve(dict(ORIGINAL))["optimizer"] == "sgd"  # the original's lr is an SGD lr
    assert resolve({"lr": 0.01})["optimizer"] == "sgd"
    assert resolve({"optimizer": "sgd"})["lr"] == 0.02
    cfg = resolve({"optimizer": "adamw", "lr": 0.003})
    assert cfg["optimizer"] == "adamw" and cfg["lr"] == 0.003
    with pytest.raises(ConfigError, match="'optimizer' is 'adam'; choose one of 'sgd', 'adamw'"):
        resolve({"optimizer": "adam"})


def test_fcn_50_maps_to_fcn_resnet50_and_model_wins_over_backbone():
    assert resolve({"fcn": "50"})["model"] == "fcn_resnet50"
    assert resolve({"fcn": 50, "model": "lraspp_mobilenet_v3_large"})["model"] == "lraspp_mobilenet_v3_large"


def test_image_size_int_or_pair():
    assert resolve({"image_size": 64})["image_size"] == [64, 64]
    assert resolve({"image_size": [48, 64]})["image_size"] == [48, 64]


@pytest.mark.parametrize("raw, words", [
    ({"lr": -1}, ["'lr'", "greater than 0"]),
    ({"batch_size": 0}, ["'batch_size'", "at least 1"]),
    ({"interval_validate": 0}, ["'interval_validate'"]),
    ({"fcn": "152"}, ["'fcn'", "152", "\"50\" or \"101\""]),
    ({"backbone": "vgg"}, ["'backbone'", "vgg"]),
    ({"batch_sise": 2}, ["unknown key", "batch_size"]),
    ({"model": "fcn_resnet5"}, ["fcn_resnet5", "Known models"]),
    ({"image_size": "big"}, ["image_size"]),
])
def test_bad_values_name_the_key_and_the_fix(raw, words):
    with pytest.raises(ConfigError) as e:
        resolve(raw, "cfg.list")
    for word in words:
        assert word in str(e.value)


def test_overrides_parse_json_where_they_can():
    assert parse_overrides(["lr=0.1", "image_size=[32,48]", "output_dir=run1", "aux_loss=true"]) == {
        "lr": 0.1, "image_size": [32, 48], "output_dir": "run1", "aux_loss": True}


def test_malformed_json_reports_line_and_column(tmp_path):
    (tmp_path / "config.list").write_text('{\n  "lr": 0.01,\n  "batch_size": 2,\n}\n')
    with pytest.raises(ConfigError) as e:
        load_config(tmp_path, None)
    assert "line 4, column 1" in str(e.value) and "config.list" in str(e.value)


def test_set_overrides_config_file(tmp_path):
    (tmp_path / "config.list").write_text(json.dumps({"lr": 0.5, "batch_size": 2}))
    cfg = load_config(tmp_path, None, ["lr=0.25"])
    assert cfg["lr"] == 0.25 and cfg["batch_size"] == 2
