"""Learning from unlabeled images (FixMatch consistency): they change training when present,
nothing changes when they are absent, a resumed run is exact, and bad settings are one line."""

import csv
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import tiny_config
from segtrain.cli import main
from segtrain.data.synthetic import sky_sample, write_sky_folder
from test_bad_input import one_error_line, snapshot
from test_distributed import torchrun
from test_resume import assert_same_state, metric_rows

# 8 training images / batch 4 = 2 batches per epoch; 6 unlabeled / batch 4 = 1 batch per epoch.
RUN = tiny_config(max_iteration=4, interval_validate=2, log_interval=1)


def make_root(path, **changes):
    return write_sky_folder(path, n_train=8, n_valid=4, size=32, config={**RUN, **changes})


def add_unlabeled(folder, n=6, seed=7):
    """Images only, some a folder deeper (any depth counts), plus a file that is not an image."""
    rng = np.random.default_rng(seed)
    for k in range(n):
        path = folder / ("deeper" if k % 2 else "") / f"cam{k:03d}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(sky_sample(rng, 32)[0]).save(path)
    (folder / "notes.txt").write_text("not an image")


def weights(root):
    return torch.load(root / "MODEL-tiny" / "checkpoint.pth.tar", weights_only=True)["model_state_dict"]


def header(root):
    with open(root / "MODEL-tiny" / "log.csv") as f:
        return next(csv.reader(f))


@pytest.fixture(scope="module")
def labeled_only(tmp_path_factory):
    root = make_root(tmp_path_factory.mktemp("plain") / "data")
    assert main(["train", str(root)]) == 0
    return root


def test_unlabeled_images_change_training_and_are_reported(tmp_path, labeled_only, capsys):
    # threshold 0.5: with two classes every pixel is confident, so the consistency loss is never empty
    root = make_root(tmp_path / "data", unlabeled_threshold=0.5)
    add_unlabeled(root / "unlabeled")
    capsys.readouterr()
    assert main(["train", str(root)]) == 0
    out = capsys.readouterr().out
    assert (f"unlabeled: 6 images from {root / 'unlabeled'} (FixMatch consistency, threshold 0.5 (as configured), weight 1, "
            "4 per step; the strong view keeps colours (colour alone separates the classes 0.96, at least 0.5; "
            "set unlabeled_colour to choose))") in out
    saved = torch.load(root / "MODEL-tiny" / "checkpoint.pth.tar", weights_only=True)["config"]
    assert saved["unlabeled_colour"] is False  # decided once, kept for --resume
    assert "ignored 1 unsupported file(s)" in out and "notes.txt" in out
    changed = weights(root)
    assert any(not torch.equal(t, changed[k]) for k, t in weights(labeled_only).items())
    assert header(root) == header(labeled_only)  # log.csv keeps its columns
    report = (root / "MODEL-tiny" / "report.html").read_text()
    assert f"unlabeled images: 6 from {root / 'unlabeled'}" in report
    assert "last 4 iterations: unlabeled loss" in report and "confident pixels 100.0%" in report


def test_without_unlabeled_images_nothing_changes(tmp_path, labeled_only, capsys):
    # An empty unlabeled/ folder (and settings that only matter with images) train exactly as none.
    root = make_root(tmp_path / "data", unlabeled_weight=5.0, unlabeled_threshold=0.1)
    (root / "unlabeled" / "deeper").mkdir(parents=True)
    capsys.readouterr()
    assert main(["train", str(root)]) == 0
    assert "holds no images; training on the labeled images only" in capsys.readouterr().out
    assert metric_rows(root / "MODEL-tiny") == metric_rows(labeled_only / "MODEL-tiny")
    for key, tensor in weights(labeled_only).items():
        assert torch.equal(tensor, weights(root)[key]), key
    assert "unlabeled images" not in (root / "MODEL-tiny" / "report.html").read_text()


def test_unlabeled_dir_elsewhere_stop_and_resume_equals_one_run(tmp_path):
    # The EMA predicts the pseudo-labels here (the test above uses the live network).
    changes = dict(unlabeled_dir="../camera", unlabeled_threshold=0.6, ema_decay=0.9)
    add_unlabeled(tmp_path / "camera")
    reference = make_root(tmp_path / "data", **changes)
    assert main(["train", str(reference)]) == 0
    root = make_root(tmp_path / "again" / "data", **changes)
    shutil.copytree(tmp_path / "camera", tmp_path / "again" / "camera")
    assert main(["train", str(root), "--stop-after", "1"]) == 0
    assert main(["train", str(root), "--resume", "--stop-after", "2"]) == 0
    assert main(["train", str(root), "--resume"]) == 0
    assert metric_rows(root / "MODEL-tiny") == metric_rows(reference / "MODEL-tiny")
    assert_same_state(root / "MODEL-tiny" / "checkpoint.pth.tar", reference / "MODEL-tiny" / "checkpoint.pth.tar")


@pytest.mark.parametrize("changes, words", [
    (dict(unlabeled_threshold=1.5), ["config.list", "'unlabeled_threshold' must be at most 1, got 1.5"]),
    (dict(unlabeled_weight="high"), ["'unlabeled_weight' must be a number, got 'high'"]),
    (dict(unlabeled_batch_size=0), ["'unlabeled_batch_size' must be at least 1, got 0"]),
    (dict(unlabeled_colour="no"), ["'unlabeled_colour' must be true, false or null, got 'no'"]),
    (dict(unlabeled_dir="nowhere"), ["nowhere: unlabeled_dir (config key 'unlabeled_dir') is not a folder"]),
    (dict(unlabeled_batch_size=9), ["6 unlabeled image(s), fewer than the 9 each step takes"]),
    (dict(image_size=None, batch_size=1, unlabeled_batch_size=1), ["unlabeled images must have the training images' size"]),
])
def test_bad_unlabeled_setting_is_one_line_and_writes_nothing(tmp_path, capsys, changes, words):
    root = make_root(tmp_path / "data", **changes)
    add_unlabeled(root / "unlabeled")
    if changes.get("image_size", 32) is None:  # native size: one unlabeled image of another size
        Image.new("RGB", (40, 32)).save(root / "unlabeled" / "wide.png")
    before = snapshot(root)
    capsys.readouterr()
    assert main(["train", str(root)]) == 1
    line = one_error_line(capsys.readouterr().err)
    for word in words:
        assert word in line
    assert snapshot(root) == before


@pytest.mark.parametrize("model", [
    dict(model="unet", encoder="mobilenet_v2", channels_last=True),
    dict(model="lraspp_mobilenet_v3_large", amp=True),  # amp: a no-op on the CPU, the code path still runs
    dict(model="fcn_resnet18", aux_loss=True, unlabeled_batch_size=2),
])
def test_every_kind_of_model_trains_with_unlabeled_images(tmp_path, model):
    root = make_root(tmp_path / "data", max_iteration=2, interval_validate=2, unlabeled_threshold=0.5, **model)
    add_unlabeled(root / "unlabeled")
    assert main(["train", str(root)]) == 0
    assert "confident pixels 100.0%" in (root / "MODEL-tiny" / "report.html").read_text()


def test_two_process_run_shards_the_unlabeled_images(tmp_path):
    root = make_root(tmp_path / "data", max_iteration=2, interval_validate=2, batch_size=2, unlabeled_threshold=0.5)
    add_unlabeled(root / "unlabeled")  # 6 images: 3 per process, 2 of them each step
    result = torchrun("train", root, timeout=240)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    assert result.stdout.count("unlabeled: 6 images from") == 1  # said by rank 0 only
    assert "confident pixels 100.0%" in (root / "MODEL-tiny" / "report.html").read_text()


def test_strong_view_keeps_colour_when_told_and_draws_the_same_boxes():
    """unlabeled_colour false: no view is greyed or loses its blue, while the cut-out boxes (the
    same random stream) stay where they were; with colour on, some views are greyed."""
    from segtrain.data.transforms import MEAN, STD
    from segtrain.training.consistency import Consistency
    sky = torch.tensor([0.3, 0.5, 0.9]).view(1, 3, 1, 1).expand(16, 3, 24, 24)  # saturated blue
    weak = (sky - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)
    greyed = {True: 0, False: 0}
    for colour in (True, False):
        view = Consistency(0.9, 1.0, seed=3, colour=colour)
        for iteration in range(4):
            strong, keep = view.strong_view(weak, iteration)
            rgb = strong * torch.tensor(STD).view(1, 3, 1, 1) + torch.tensor(MEAN).view(1, 3, 1, 1)
            centre = rgb[:, :, 0, 0]  # cut-out boxes are grey by design: look at pixels outside them
            outside = keep[:, 0, 0]
            spread = (centre.max(1).values - centre.min(1).values)[outside]
            greyed[colour] += int((spread < 1e-3).sum())
            if not colour:
                assert (centre[outside, 2] > centre[outside, 0] + 0.05).all()  # still blue
                _, keep_colour = Consistency(0.9, 1.0, seed=3, colour=True).strong_view(weak, iteration)
                assert torch.equal(keep, keep_colour)
    assert greyed[True] > 0 and greyed[False] == 0


def test_colour_separability_tells_coloured_classes_from_grey_ones(tmp_path):
    """Blue sky and white cloud: colour alone separates them; the same pictures in grey: not at
    all; a folder whose two classes are drawn at random over the pixels: no better than chance."""
    from segtrain.config.load import resolve
    from segtrain.data.fingerprint import colour_separability
    from segtrain.data.folder import inspect_root
    root = write_sky_folder(tmp_path / "sky", n_train=8, n_valid=2, size=32)
    assert colour_separability(inspect_root(root, resolve({}, "test"))) > 0.9
    for image in (root / "train" / "images").iterdir():
        Image.open(image).convert("L").convert("RGB").save(image)
    assert colour_separability(inspect_root(root, resolve({}, "test"))) == 0
    rng = np.random.default_rng(0)
    for image in (root / "train" / "images").iterdir():
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(image)
    assert colour_separability(inspect_root(root, resolve({}, "test"))) < 0.1


def test_colour_separability_reads_phone_photos_upright(tmp_path):
    """Images stored sideways with an EXIF rotation are measured as training sees them, upright
    under their masks; read as stored, sky pixels would be scored against cloud labels."""
    from segtrain.config.load import resolve
    from segtrain.data.fingerprint import colour_separability
    from segtrain.data.folder import inspect_root
    root = write_sky_folder(tmp_path / "sky", n_train=4, n_valid=2, size=32)
    rng = np.random.default_rng(5)
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to view"
    for image in sorted((root / "train" / "images").iterdir()):
        picture, mask = sky_sample(rng, 48)
        picture, mask = picture[:, :24], mask[:, :24]  # upright: 24 wide, 48 tall
        image.unlink()
        sideways = Image.fromarray(picture).transpose(Image.Transpose.ROTATE_90)
        sideways.save(image.with_suffix(".jpg"), quality=100, subsampling=0, exif=exif)
        Image.fromarray(mask * 255).save(root / "train" / "labels" / f"{image.stem}.png")
    assert colour_separability(inspect_root(root, resolve({}, "test"))) > 0.9


def test_confidence_threshold_follows_the_class_count_unless_configured(tmp_path, capsys):
    """null: 0.8 with two classes (sky and cloud here), FixMatch's 0.95 with more; a configured
    value wins. The run says which, and its checkpoint keeps the value it used."""
    from segtrain.training.consistency import confidence_threshold
    assert confidence_threshold({"unlabeled_threshold": None}, 2) == (0.8, "two classes")
    assert confidence_threshold({"unlabeled_threshold": None}, 11) == (0.95, "11 classes")
    assert confidence_threshold({"unlabeled_threshold": 0.6}, 2) == (0.6, "as configured")
    root = make_root(tmp_path / "data", max_iteration=1, interval_validate=1)
    add_unlabeled(root / "unlabeled")
    assert main(["train", str(root)]) == 0
    assert "FixMatch consistency, threshold 0.8 (two classes)" in capsys.readouterr().out
    saved = torch.load(root / "MODEL-tiny" / "checkpoint.pth.tar", weights_only=True)["config"]
    assert saved["unlabeled_threshold"] == 0.8


def test_threshold_is_a_number_in_the_checkpoint_without_unlabeled_images(labeled_only):
    """Resolved either way, so resuming a run from before the null default compares numbers."""
    saved = torch.load(labeled_only / "MODEL-tiny" / "checkpoint.pth.tar", weights_only=True)["config"]
    assert saved["unlabeled_threshold"] == 0.8  # two classes
