"""What a newcomer types first: other tools' key names, --device on train, a mistyped checkpoint path."""

import os

from segtrain.cli import main
from segtrain.data.synthetic import write_sky_folder


def one_error_line(capsys) -> str:
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    return lines[0]


def test_epochs_and_other_tools_keys_say_what_to_use(tmp_path, capsys):
    root = write_sky_folder(tmp_path / "d", n_train=4, n_valid=2, size=32)
    assert main(["check", str(root), "--set", "epochs=10"]) == 1
    line = one_error_line(capsys)
    assert "unknown key 'epochs'" in line and "set max_iteration" in line and "time_budget" in line
    assert main(["check", str(root), "--set", "imgsz=64"]) == 1
    assert "use image_size" in one_error_line(capsys)
    assert not any(p.name.startswith("MODEL-") for p in root.iterdir())


def test_train_takes_device_like_evaluate_and_predict(tmp_path, capsys):
    root = write_sky_folder(tmp_path / "d", n_train=4, n_valid=2, size=32)
    assert main(["train", str(root), "--device", "tpu"]) == 1
    assert "device" in one_error_line(capsys)
    assert not any(p.name.startswith("MODEL-") for p in root.iterdir())


def test_a_missing_checkpoint_names_where_it_was_looked_for(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_sky_folder(tmp_path / "d", n_train=2, n_valid=1, size=32)
    assert main(["predict", "d/train/images", "--checkpoint", "MODEL-x/model_best.pth.tar", "--out", "masks"]) == 1
    line = one_error_line(capsys)
    assert f"nothing at {os.path.join(tmp_path, 'MODEL-x', 'model_best.pth.tar')}" in line
    assert "data folder" not in line
