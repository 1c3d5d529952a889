import json

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import VALID_SIZES, run_cli, write_config, write_mixed_split
from segtrain.cli import main
from segtrain.errors import CheckpointError, DatasetError
from segtrain.use.evaluate import evaluate

CKPT = "MODEL-tiny/model_best.pth.tar"


def independent_confusion(pred_dir, label_dir, n=2):
    """A plain NumPy count over predict's PNG masks and the 0/255 labels, decoded here by hand."""
    hist = np.zeros((n, n), dtype=np.int64)
    for label_path in sorted(label_dir.iterdir()):
        truth = (np.asarray(Image.open(label_path)) == 255).astype(np.int64)
        pred = np.asarray(Image.open(pred_dir / label_path.name)).astype(np.int64)
        assert pred.shape == truth.shape  # predicted at the label's native resolution
        hist += np.bincount(n * truth.ravel() + pred.ravel(), minlength=n * n).reshape(n, n)
    return hist


def test_evaluate_equals_an_independent_count_over_predicted_masks(trained_root, tmp_path):
    out = tmp_path / "pred"
    assert main(["predict", str(trained_root / "valid" / "images"), "--checkpoint", str(trained_root / CKPT),
                 "--out", str(out)]) == 0
    assert main(["evaluate", str(trained_root), "--checkpoint", CKPT, "--json", str(tmp_path / "e.json")]) == 0
    numbers = json.loads((tmp_path / "e.json").read_text())

    hist = independent_confusion(out, trained_root / "valid" / "labels")
    assert numbers["confusion_matrix"] == hist.tolist()
    diag, truth, predicted = np.diag(hist), hist.sum(1), hist.sum(0)
    iou = diag / (truth + predicted - diag)
    assert numbers["acc"] == pytest.approx(diag.sum() / hist.sum(), abs=1e-12)
    assert numbers["mean_iu"] == pytest.approx(np.nanmean(iou), abs=1e-12)
    assert numbers["acc_cls"] == pytest.approx(np.nanmean(diag / truth), abs=1e-12)
    assert numbers["fwavacc"] == pytest.approx(((truth / hist.sum()) * iou).sum(), abs=1e-12)
    for k, entry in enumerate(numbers["per_class"]):
        assert entry["name"] == ["sky", "cloud"][k] and entry["pixels"] == truth[k]
        assert entry["iou"] == pytest.approx(iou[k], abs=1e-12)
        assert entry["recall"] == pytest.approx(diag[k] / truth[k], abs=1e-12)
        assert entry["precision"] == pytest.approx(diag[k] / predicted[k], abs=1e-12)
        assert entry["f1"] == pytest.approx(2 * diag[k] / (truth[k] + predicted[k]), abs=1e-12)
    assert hist.sum() == sum(h * w for h, w in VALID_SIZES)


def test_json_keys_and_printed_table(trained_root, tmp_path):
    result = run_cli("evaluate", trained_root, "--checkpoint", trained_root / CKPT, "--json", tmp_path / "e.json")
    assert result.returncode == 0, result.stderr
    numbers = json.loads((tmp_path / "e.json").read_text())
    assert {"acc", "acc_cls", "mean_iu", "fwavacc", "per_class", "confusion_matrix"} <= set(numbers)
    assert set(numbers["per_class"][0]) == {"name", "iou", "recall", "precision", "f1", "pixels"}
    for word in ("IoU", "recall", "precision", "F1", "share", "mean_iu", "fwavacc", "confusion matrix"):
        assert word in result.stdout
    assert f"mean_iu {numbers['mean_iu']:.4f}" in result.stdout


def test_evaluate_repeats_the_validation_that_chose_the_best_checkpoint(trained_root):
    ckpt = torch.load(trained_root / CKPT, weights_only=True)
    numbers = evaluate(trained_root, trained_root / CKPT)
    assert numbers["mean_iu"] == ckpt["valid_metrics"]["mean_iu"]
    assert numbers["confusion_matrix"] == ckpt["valid_metrics"]["confusion_matrix"]


def test_other_splits(trained_root, tmp_path):
    on_train = evaluate(trained_root, trained_root / CKPT, split="train")
    assert on_train["images"] == 12 and sum(map(sum, on_train["confusion_matrix"])) == 12 * 32 * 32
    folder = tmp_path / "elsewhere"
    write_mixed_split(folder, [(36, 36), (30, 50)], seed=5)
    on_folder = evaluate(trained_root, trained_root / CKPT, split=str(folder))
    assert sum(map(sum, on_folder["confusion_matrix"])) == 36 * 36 + 30 * 50


def test_wrong_inputs_are_one_line_errors(trained_root, tmp_path):
    plain = tmp_path / "plain.pth"
    torch.save(torch.load(trained_root / CKPT, weights_only=True)["model_state_dict"], plain)
    with pytest.raises(CheckpointError, match="not written by segtrain train"):
        evaluate(trained_root, plain)
    with pytest.raises(DatasetError, match="--split nowhere"):
        evaluate(trained_root, trained_root / CKPT, split="nowhere")
    other = tmp_path / "other"
    write_mixed_split(other / "valid", [(32, 32)])
    write_mixed_split(other / "train", [(32, 32)] * 4)
    (other / "class_names.list").write_text("clear\nclouds\n")
    result = run_cli("evaluate", other, "--checkpoint", trained_root / CKPT)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.startswith("error: ") and "was trained on ['sky', 'cloud']" in result.stderr


def _test_folder(root, labels: bool):
    write_mixed_split(root / "test", [(32, 32), (45, 60), (60, 45)], seed=9)
    if not labels:
        for path in (root / "test" / "labels").iterdir():
            path.unlink()
        (root / "test" / "labels").rmdir()


def test_mode_test_predicts_and_scores_test_images(trained_root, tmp_path):
    root = tmp_path / "data"
    (root / "MODEL-tiny").mkdir(parents=True)
    (root / "MODEL-tiny" / "model_best.pth.tar").write_bytes((trained_root / CKPT).read_bytes())
    (root / "class_names.list").write_text("sky\ncloud\n")
    _test_folder(root, labels=True)
    # the original's keys, as its config.list for test mode looked; no train/ folder needed
    write_config(root, mode="test", pretrained_net=CKPT, output_dir="tested", backbone="resnet", fcn="50",
                 n_workers=0, max_iteration=100, lr=1e-10)
    result = run_cli("--config", "config.list", "--data", root)
    assert result.returncode == 0, result.stderr
    out = root / "test" / "tested"
    assert sorted(p.name for p in out.glob("*.png")) == ["mixed00.png", "mixed01.png", "mixed02.png"]
    assert len(list(out.glob("*_overlay.jpg"))) == 3 and (out / "summary.csv").is_file()
    numbers = json.loads((out / "metrics.json").read_text())
    assert numbers["confusion_matrix"] == independent_confusion(out, root / "test" / "labels").tolist()
    assert "confusion matrix" in result.stdout and f"mean_iu {numbers['mean_iu']:.4f}" in result.stdout
    assert not list(root.glob("MODEL-tested*"))  # nothing was trained


def test_mode_test_without_labels_only_predicts(trained_root, tmp_path):
    root = tmp_path / "data"
    _test_folder(root, labels=False)
    (root / "class_names.list").write_text("sky\ncloud\n")
    write_config(root, mode="test", pretrained_net=str(trained_root / CKPT), n_workers=0, output_dir="predicted")
    assert main(["train", str(root)]) == 0
    out = root / "test" / "predicted"
    assert len(list(out.glob("*.png"))) == 3 and not (out / "metrics.json").exists()
    write_config(root, mode="test", n_workers=0)
    result = run_cli("train", root)
    assert result.returncode == 1 and 'needs "pretrained_net"' in result.stderr
