"""Test-time augmentation (--tta): the average of the model on each image and on its left-right
flip (flipped back), for checkpoints and exported files alike, in evaluate and predict."""

import json

import numpy as np
import pytest
from PIL import Image

from conftest import VALID_SIZES
from segtrain.cli import main
from segtrain.data.synthetic import sky_sample
from segtrain.use.exported import ExportedPredictor
from segtrain.use.trained import TorchPredictor, load_trained

CKPT = "MODEL-tiny/model_best.pth.tar"


def images(sizes=VALID_SIZES, seed=7):
    rng = np.random.default_rng(seed)
    return [sky_sample(rng, max(h, w))[0][:h, :w] for h, w in sizes]


def assert_flip_average(plain, tta):
    """tta's logits equal the hand-made average of plain's on each image and on its flip, flipped back."""
    for image in images():
        expected = (np.asarray(plain.logits([image])[0])
                    + np.flip(np.asarray(plain.logits([np.ascontiguousarray(image[:, ::-1])])[0]), -1)) / 2
        got = np.asarray(tta.logits([image])[0])
        assert got.shape == expected.shape == (2, *image.shape[:2])
        assert np.allclose(got, expected, atol=1e-4)
        assert not np.allclose(got, np.asarray(plain.logits([image])[0]), atol=1e-3)  # the model is not flip-invariant


def test_checkpoint_tta_is_the_average_over_flips(trained_root):
    trained = load_trained(trained_root / CKPT, "cpu")
    assert_flip_average(TorchPredictor(trained), TorchPredictor(trained, tta=True))


def test_exported_tta_is_the_average_over_flips(trained_export):
    path = trained_export("onnx")
    assert_flip_average(ExportedPredictor(path), ExportedPredictor(path, tta=True))


def test_tta_with_tiles_runs_every_tile_flipped(trained_root):
    trained = load_trained(trained_root / CKPT, "cpu")
    image = images([(48, 64)])[0]
    plain, tta = (TorchPredictor(trained, tile=32, overlap=8, tta=t).logits([image])[0] for t in (False, True))
    assert tta.shape == plain.shape and not np.allclose(tta, plain, atol=1e-3)


def test_evaluate_tta_differs_from_plain(trained_root, tmp_path):
    numbers = {}
    for flag in ([], ["--tta"]):
        out = tmp_path / f"e{len(flag)}.json"
        assert main(["evaluate", str(trained_root), "--checkpoint", CKPT, "--json", str(out), *flag]) == 0
        numbers[bool(flag)] = json.loads(out.read_text())
    assert numbers[True]["tta"] is True and numbers[False]["tta"] is False
    assert numbers[True]["loss"] != pytest.approx(numbers[False]["loss"], rel=1e-6)
    assert numbers[True]["confusion_matrix"] != numbers[False]["confusion_matrix"]
    assert sum(map(sum, numbers[True]["confusion_matrix"])) == sum(h * w for h, w in VALID_SIZES)


def test_predict_tta_writes_the_masks_of_the_averaged_logits(trained_root, tmp_path, capsys):
    out = tmp_path / "masks"
    assert main(["predict", str(trained_root / "valid" / "images"), "--checkpoint", str(trained_root / CKPT),
                 "--out", str(out), "--tta"]) == 0
    assert "flip TTA" in capsys.readouterr().out
    tta = TorchPredictor(load_trained(trained_root / CKPT, "cpu"), tta=True)
    for path in sorted((trained_root / "valid" / "images").iterdir()):
        image = np.array(Image.open(path).convert("RGB"))
        mask = np.asarray(Image.open(out / f"{path.stem}.png"))
        assert np.array_equal(mask, tta.masks([image])[0])
    assert (out / "summary.csv").read_text().count("\n") == len(VALID_SIZES) + 1
