"""`segtrain check`: the dataset report, and every broken file listed in one pass."""

import numpy as np
from PIL import Image

from conftest import tiny_config
from segtrain.cli import main
from segtrain.data.synthetic import write_sky_folder


def damage_middle(path):
    """Bytes flipped inside the image data: header and end intact, so only a full decode finds it."""
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 20] = bytes(b ^ 0xFF for b in data[middle : middle + 20])
    path.write_bytes(bytes(data))


def test_report_counts_sizes_encoding_and_pixel_shares(tmp_path, capsys):
    root = write_sky_folder(tmp_path / "data", n_train=6, n_valid=3, size=32, config=tiny_config())
    Image.open(root / "valid" / "images" / "sky0000.png").resize((40, 24)).save(root / "valid" / "images" / "sky0000.png")
    Image.open(root / "valid" / "labels" / "sky0000.png").resize((40, 24), Image.Resampling.NEAREST).save(root / "valid" / "labels" / "sky0000.png")
    assert main(["check", str(root)]) == 0
    out = capsys.readouterr().out
    assert "train: 6 image(s); sizes (W x H, count): 32x32 (6)" in out
    assert "valid: 3 image(s); sizes (W x H, count): 32x32 (2), 40x24 (1)" in out
    assert "label encoding: binary masks: 0 -> sky, 255 -> cloud" in out
    shares = {}
    for split in ("train", "valid"):
        masks = [np.asarray(Image.open(p)) for p in sorted((root / split / "labels").iterdir())]
        shares[split] = np.mean(np.concatenate([m.ravel() for m in masks]) == 255)
    cloud_line = next(line for line in out.splitlines() if line.strip().startswith("cloud"))
    assert cloud_line.split()[1:] == [f"{100 * shares['train']:.2f}%", f"{100 * shares['valid']:.2f}%"]
    assert "problems: none" in out
    assert not list(root.glob("MODEL-*"))


def test_check_lists_every_broken_file_and_fails(tmp_path, capsys):
    root = write_sky_folder(tmp_path / "data", n_train=6, n_valid=2, size=32, config=tiny_config())
    damage_middle(root / "train" / "images" / "sky0001.png")
    damage_middle(root / "valid" / "images" / "sky0001.png")
    assert main(["check", str(root)]) == 1
    captured = capsys.readouterr()
    assert "problems: 2" in captured.out
    assert "train/images/sky0001.png: cannot read this image" in captured.out
    assert "valid/images/sky0001.png: cannot read this image" in captured.out
    assert captured.err.startswith("error: ") and "2 problem(s) found" in captured.err


def test_check_stops_on_a_structural_problem_with_one_line(tmp_path, capsys):
    root = write_sky_folder(tmp_path / "data", n_train=6, n_valid=2, size=32, config=tiny_config())
    (root / "valid" / "labels" / "sky0001.png").unlink()
    assert main(["check", str(root)]) == 1
    assert "1 image(s) without a label" in capsys.readouterr().err
