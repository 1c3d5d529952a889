"""The losses against values worked out by hand on a 3-pixel image whose third pixel is ignored.

Two classes; pixel 0 (class 0) has logits [0, 0] (p = .5, .5), pixel 1 (class 1) [0, ln 3]
(p = .25, .75), pixel 2 is ignored and has confident logits that would change every value if counted.
"""

import csv
import math

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import run_cli, tiny_config
from segtrain.config.load import resolve
from segtrain.data.labels import IGNORE
from segtrain.data.synthetic import write_sky_folder
from segtrain.errors import ConfigError
from segtrain.models.losses import AUTO_KEY, build_loss

LOGITS = torch.tensor([[0.0, 0.0, 5.0], [0.0, math.log(3), -5.0]])[None, :, None, :]  # N=1, C=2, H=1, W=3
TARGET = torch.tensor([[[0, 1, IGNORE]]])
NAMES = ["a", "b"]
LN2, LN43 = math.log(2), math.log(4 / 3)  # -log .5, -log .75


def loss(text, weights=None, reduction="mean"):
    cfg = resolve({"loss": text, "class_weights": weights, "loss_reduction": reduction})
    return float(build_loss(cfg, NAMES)(LOGITS, TARGET))


@pytest.mark.parametrize("text, weights, reduction, expected", [
    ("ce", None, "mean", (LN2 + LN43) / 2),
    ("ce", None, "sum", LN2 + LN43),
    ("ce", [1, 3], "mean", (LN2 + 3 * LN43) / 4),  # weighted mean, as torch's cross-entropy
    ("focal", None, "mean", (0.5 ** 2 * LN2 + 0.25 ** 2 * LN43) / 2),  # (1 - p_t)^2 * -log p_t
    ("focal", [1, 3], "sum", 0.5 ** 2 * LN2 + 3 * 0.25 ** 2 * LN43),
    # class 0: 2 * .5 / (.75 + 1) -> 1 - 4/7; class 1: 2 * .75 / (1.25 + 1) -> 1 - 2/3
    ("dice", None, "mean", ((1 - 4 / 7) + (1 - 2 / 3)) / 2),
    ("dice", [1, 3], "mean", ((1 - 4 / 7) + 3 * (1 - 2 / 3)) / 4),
    # Lovasz-Softmax: class 0 errors [.5 (fg), .25] -> grad [1, 0] -> .5; class 1 errors [.5, .25 (fg)]
    # -> Jaccard [.5, 1] -> grad [.5, .5] -> .375
    ("lovasz", None, "mean", (0.5 + 0.375) / 2),
    ("ce+dice", None, "mean", (LN2 + LN43) / 2 + ((1 - 4 / 7) + (1 - 2 / 3)) / 2),
])
def test_loss_by_hand(text, weights, reduction, expected):
    assert loss(text, weights, reduction) == pytest.approx(expected, rel=1e-5)


def test_ce_without_weights_is_the_original_loss():
    cfg = resolve({"lr": 1e-10})  # the original recipe: summed over pixels
    criterion = build_loss(cfg, NAMES)
    assert isinstance(criterion, torch.nn.CrossEntropyLoss) and criterion.reduction == "sum"
    assert criterion.ignore_index == IGNORE


def test_every_loss_has_a_gradient_and_ignores_a_wholly_ignored_class():
    logits = LOGITS.clone().requires_grad_()
    for text in ("dice", "lovasz", "focal", "ce+dice+focal+lovasz"):
        cfg = resolve({"loss": text})
        value = build_loss(cfg, ["a", "b", "c"])(torch.cat([logits, torch.zeros(1, 1, 1, 3)], 1), TARGET)
        (grad,) = torch.autograd.grad(value, logits)
        assert torch.isfinite(value) and grad[..., 2].abs().sum() == 0 and grad[..., :2].abs().sum() > 0, text


@pytest.mark.parametrize("raw, words", [
    ({"loss": "bce"}, "key 'loss' is 'bce'; use one of 'ce', 'dice', 'focal', 'lovasz'"),
    ({"loss": "ce+ce"}, "key 'loss' is 'ce+ce'"),
    ({"loss": "dice", "lr": 1e-10}, "key 'loss_reduction' is 'sum' (over pixels), which only 'ce' and 'focal'"),
    ({"class_weights": [1, -1]}, "key 'class_weights' must be \"auto\", null or a list of numbers >= 0"),
    ({"class_weights": "balanced"}, "key 'class_weights' must be"),
    ({"class_weights": [0, 0]}, "not all 0"),
])
def test_config_errors_are_one_line(raw, words):
    with pytest.raises(ConfigError) as e:
        resolve(raw)
    assert words in str(e.value) and "\n" not in str(e.value)


def test_class_weights_of_the_wrong_length_refuse_the_run_in_one_line(tmp_path):
    root = write_sky_folder(tmp_path / "d", n_train=4, n_valid=2, size=32, config=tiny_config(class_weights=[1, 2, 3]))
    result = run_cli("train", root, timeout=120)
    assert result.returncode == 1
    message = result.stderr.strip().splitlines()
    assert len(message) == 1 and "key 'class_weights' lists 3 weight(s) but there are 2 classes (sky, cloud)" in message[0]
    assert not (root / "MODEL-tiny" / "checkpoint.pth.tar").exists()


def test_auto_class_weights_are_median_frequency_printed_recorded_and_used_by_evaluate(tmp_path, capsys):
    from segtrain.cli import main
    from segtrain.use.evaluate import evaluate

    root = write_sky_folder(tmp_path / "d", n_train=4, n_valid=2, size=32,
                            config=tiny_config(class_weights="auto", loss="ce+dice", max_iteration=2, interval_validate=2))
    masks = [np.asarray(Image.open(p)) > 127 for p in sorted((root / "train" / "labels").iterdir())]
    cloud = sum(int(m.sum()) for m in masks)
    total = sum(m.size for m in masks)
    with_cloud = sum(m.size for m in masks if m.any())
    freq = np.array([(total - cloud) / total, cloud / with_cloud])  # every image holds sky
    expected = np.median(freq) / freq
    assert main(["train", str(root)]) == 0
    out = capsys.readouterr().out
    printed = [line for line in out.splitlines() if line.startswith("class weights (auto")]
    assert len(printed) == 1 and "of 4 training masks" in printed[0], out
    ckpt = torch.load(root / "MODEL-tiny" / "checkpoint.pth.tar", weights_only=True)
    assert ckpt["config"]["class_weights"] == "auto"
    assert ckpt["config"][AUTO_KEY] == pytest.approx(list(expected), abs=1e-4)
    # evaluate rebuilds the same weighted loss from the checkpoint alone: its loss equals validation's
    with open(root / "MODEL-tiny" / "log.csv") as f:
        valid_loss = float([r for r in csv.DictReader(f) if r["iteration"] == "2" and r["valid/loss"]][-1]["valid/loss"])
    result = evaluate(root, root / "MODEL-tiny" / "checkpoint.pth.tar", "valid", "cpu", log=lambda *a: None)
    assert result["loss"] == pytest.approx(valid_loss, rel=1e-4)


@pytest.mark.parametrize("edit, words", [
    ({"loss": "__import__('os')"}, "key 'loss' is \"__import__('os')\""),
    ({"class_weights": ["1", "2"]}, "key 'class_weights' must be"),
    ({"class_weights": "auto", AUTO_KEY: [1.0]}, "lists 1 weight(s) but there are 2 classes"),
    ({"class_weights": "auto", AUTO_KEY: None}, "the checkpoint does not record the weights it found"),
])
def test_an_edited_checkpoint_config_gives_one_line(edit, words):
    """evaluate, predict and export rebuild the loss from a checkpoint's config, which `resolve` never read."""
    cfg = {**resolve({}), **edit}
    with pytest.raises(ConfigError) as e:
        build_loss(cfg, NAMES)
    assert words in str(e.value) and "\n" not in str(e.value)
