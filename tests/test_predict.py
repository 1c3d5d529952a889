import csv
import subprocess
import sys
import warnings

import numpy as np
import pytest
from PIL import Image

from conftest import run_cli, save_fresh_checkpoint
from segtrain.cli import main
from segtrain.data.classes import default_colors
from segtrain.errors import OutputError
from segtrain.use.predict import predict
from segtrain.use.trained import TorchPredictor, load_trained
from segtrain.data.synthetic import sky_sample
from segtrain.evaluation.tiling import sliding_window, windows

CKPT = "MODEL-tiny/model_best.pth.tar"
SIZES_AND_MODES = [((32, 32), "RGB"), ((40, 56), "L"), ((56, 40), "RGBA"), ((75, 61), "RGB"), ((33, 47), "P")]


def mixed_folder(folder, seed=3):
    """Images of several sizes and modes, a JPEG, a subfolder and a file that is not an image."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True)
    for k, ((h, w), mode) in enumerate(SIZES_AND_MODES):
        image = Image.fromarray(sky_sample(rng, max(h, w))[0][:h, :w])
        image = image.quantize(64) if mode == "P" else image.convert(mode)
        image.save(folder / f"img{k}.png")
    Image.fromarray(sky_sample(rng, 48)[0]).save(folder / "photo.jpg", quality=90)
    (folder / "notes.txt").write_text("not an image")
    (folder / "sub").mkdir()
    Image.fromarray(sky_sample(rng, 36)[0]).save(folder / "sub" / "deep.png")
    return folder


def read_summary(path):
    with open(path) as f:
        return {row["image"]: row for row in csv.DictReader(f)}


def test_predict_a_folder_of_mixed_sizes_and_modes(trained_root, tmp_path):
    folder = mixed_folder(tmp_path / "in")
    out = tmp_path / "out"
    result = run_cli("predict", folder, "--checkpoint", trained_root / CKPT, "--out", out, "--overlay")
    assert result.returncode == 0, result.stderr
    assert "ignored 1 unsupported file(s)" in result.stdout and "6/6 images" in result.stdout
    summary = read_summary(out / "summary.csv")
    assert sorted(summary) == ["img0.png", "img1.png", "img2.png", "img3.png", "img4.png", "photo.jpg"]
    assert list(next(iter(summary.values()))) == ["image", "width", "height", "sky_fraction", "cloud_fraction"]
    for name, row in summary.items():
        source = Image.open(folder / name)
        mask_file = Image.open(out / (name.rsplit(".", 1)[0] + ".png"))
        assert mask_file.mode == "P" and mask_file.size == source.size
        assert mask_file.getpalette()[:6] == [v for c in default_colors(["sky", "cloud"]) for v in c]
        mask = np.asarray(mask_file)
        assert set(np.unique(mask)) <= {0, 1}
        # the cloud cover an edge plugin computes: share of pixels whose argmax is `cloud`
        assert float(row["cloud_fraction"]) == (mask == 1).mean()
        assert float(row["sky_fraction"]) + float(row["cloud_fraction"]) == pytest.approx(1)
        assert (int(row["width"]), int(row["height"])) == source.size
        assert Image.open(out / (name.rsplit(".", 1)[0] + "_overlay.jpg")).size == source.size
    assert not (out / "sub").exists()


def test_recursive_and_single_file(trained_root, tmp_path):
    folder = mixed_folder(tmp_path / "in")
    assert main(["predict", str(folder), "--checkpoint", str(trained_root / CKPT), "--out", str(tmp_path / "r"),
                 "--recursive"]) == 0
    assert "sub/deep.png" in read_summary(tmp_path / "r" / "summary.csv")
    assert Image.open(tmp_path / "r" / "sub" / "deep.png").size == (36, 36)
    assert main(["predict", str(folder / "img3.png"), "--checkpoint", str(trained_root / CKPT),
                 "--out", str(tmp_path / "one")]) == 0
    assert np.array_equal(np.asarray(Image.open(tmp_path / "one" / "img3.png")),
                          np.asarray(Image.open(tmp_path / "r" / "img3.png")))


def test_batching_does_not_change_masks(trained_root, tmp_path):
    folder = mixed_folder(tmp_path / "in")
    for batch in (1, 3):
        predict(folder, trained_root / CKPT, tmp_path / f"b{batch}", batch_size=batch)
    for name in ("img0.png", "img1.png", "img3.png", "photo.png"):
        assert np.array_equal(np.asarray(Image.open(tmp_path / "b1" / name)), np.asarray(Image.open(tmp_path / "b3" / name)))


def test_read_only_arrays_predict_as_writable_ones_without_a_warning(trained_root):
    """np.asarray of a PIL image is read-only; torch warns when it shares one, so it is copied first."""
    predictor = TorchPredictor(load_trained(trained_root / CKPT, "cpu"))
    image = np.asarray(Image.fromarray(sky_sample(np.random.default_rng(5), 40)[0]))
    assert not image.flags.writeable
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = predictor.masks([image])[0]
    assert np.array_equal(got, predictor.masks([image.copy()])[0])


def test_refuses_to_overwrite_input_images(trained_root, tmp_path):
    folder = mixed_folder(tmp_path / "in")
    before = (folder / "img0.png").read_bytes()
    with pytest.raises(OutputError, match="would overwrite input image"):
        predict(folder, trained_root / CKPT, folder)
    assert (folder / "img0.png").read_bytes() == before


def test_sliding_window_stitches_exactly_for_a_pixelwise_model():
    """Without a receptive field there are no border effects, so tiles must reproduce the whole."""
    image = np.random.default_rng(0).random((3, 37, 53)).astype(np.float32)
    for tile, overlap in ((8, 0), (16, 4), (16, 15), (64, 8)):
        out = sliding_window(lambda crops: [c[:2] * 3 for c in crops], image, tile, overlap, 3, np.zeros)
        assert np.allclose(out, image[:2] * 3, atol=1e-6)
        boxes = windows(37, 53, tile, overlap)
        assert len({(b[2] - b[0], b[3] - b[1]) for b in boxes}) == 1  # one shape: tiles batch


def test_tiled_equals_untiled_when_a_tile_covers_the_input(tmp_path):
    """A native-size model (image_size null): a tile as large as the image is one window and gives the
    untiled masks exactly. Smaller tiles differ near their seams (border effects, see segtrain.tiling)."""
    ckpt = save_fresh_checkpoint(tmp_path / "native.pth.tar", "fcn_resnet18", image_size=None)
    folder = mixed_folder(tmp_path / "in")
    predict(folder, ckpt, tmp_path / "whole")
    predict(folder, ckpt, tmp_path / "big", tile=80)
    predict(folder, ckpt, tmp_path / "small", tile=32, overlap=8)
    whole = read_summary(tmp_path / "whole" / "summary.csv")
    for name in whole:
        mask = tmp_path / "whole" / (name.rsplit(".", 1)[0] + ".png")
        assert np.array_equal(np.asarray(Image.open(mask)), np.asarray(Image.open(tmp_path / "big" / mask.name)))
        assert Image.open(tmp_path / "small" / mask.name).size == Image.open(mask).size


def test_onnx_predict_equals_checkpoint_predict_without_torch(trained_root, trained_export, tmp_path):
    onnx_file = trained_export("onnx")
    folder = mixed_folder(tmp_path / "in")
    predict(folder, trained_root / CKPT, tmp_path / "torch", tile=None)
    # a node without PyTorch: torch and torchvision cannot be imported in this process
    code = ("import sys; sys.modules['torch'] = None; sys.modules['torchvision'] = None; "
            "from segtrain.cli import main; sys.exit(main(sys.argv[1:]))")
    result = subprocess.run([sys.executable, "-c", code, "predict", str(folder), "--checkpoint", str(onnx_file),
                             "--out", str(tmp_path / "onnx")], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    torch_rows, onnx_rows = read_summary(tmp_path / "torch" / "summary.csv"), read_summary(tmp_path / "onnx" / "summary.csv")
    same = total = 0
    for name in torch_rows:
        a = np.asarray(Image.open(tmp_path / "torch" / (name.rsplit(".", 1)[0] + ".png")))
        b = np.asarray(Image.open(tmp_path / "onnx" / (name.rsplit(".", 1)[0] + ".png")))
        same, total = same + (a == b).sum(), total + a.size
        # Pillow's and torchvision's antialiased resize differ by one grey level on rare pixels
        assert float(onnx_rows[name]["cloud_fraction"]) == pytest.approx(float(torch_rows[name]["cloud_fraction"]), abs=2e-3)
    assert same / total >= 0.999
    tiled = run_cli("predict", folder, "--checkpoint", onnx_file, "--out", tmp_path / "onnx_tiled", "--tile", "32")
    assert tiled.returncode == 0, tiled.stderr  # a 32 px model: one 32 px tile is the whole input
    for name in onnx_rows:
        mask = name.rsplit(".", 1)[0] + ".png"
        assert np.array_equal(np.asarray(Image.open(tmp_path / "onnx" / mask)), np.asarray(Image.open(tmp_path / "onnx_tiled" / mask)))
