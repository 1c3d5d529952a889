import csv
import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import SHARED_DATA, run_cli, tiny_config, write_config
from segtrain.outputs.visualize import GAP
from segtrain.cli import main
from segtrain.outputs.logcsv import HEADER
from segtrain.data.synthetic import write_sky_folder


def read_log(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def test_training_writes_log_checkpoints_and_visualizations(sky_root):
    assert main(["train", str(sky_root)]) == 0
    out = sky_root / "MODEL-tiny"
    assert (out / "log.csv").read_text().splitlines()[0] == HEADER
    rows = read_log(out / "log.csv")
    kinds = [("valid" if r["valid/loss"] else "train", int(r["iteration"])) for r in rows]
    assert kinds == [("valid", 0), ("train", 0), ("train", 1), ("train", 2), ("valid", 3),
                     ("train", 3), ("train", 4), ("train", 5), ("valid", 6)]
    for r in rows:
        filled = [k for k, v in r.items() if v != ""]
        split = "valid" if r["valid/loss"] else "train"
        assert sorted(filled) == sorted(["epoch", "iteration", "elapsed_time"] +
                                        [f"{split}/{m}" for m in ("loss", "acc", "acc_cls", "mean_iu", "fwavacc")])
    assert [int(r["epoch"]) for r in rows if r["train/loss"]] == [0, 0, 0, 1, 1, 1]  # 12 images / batch 4
    times = [float(r["elapsed_time"]) for r in rows]
    assert times == sorted(times)

    for name in ("checkpoint.pth.tar", "model_best.pth.tar"):
        ckpt = torch.load(out / name, weights_only=True)
        assert ckpt["arch"] == "fcn_resnet18" and ckpt["class_names"] == ["sky", "cloud"]
        assert ckpt["config"]["image_size"] == [32, 32] and ckpt["iteration"] in (0, 3, 6)
        assert set(ckpt) >= {"model_state_dict", "optim_state_dict", "epoch", "iteration", "best_mean_iu"}
        assert all(not k.startswith(("fcn.", "module.")) for k in ckpt["model_state_dict"])
    assert torch.load(out / "checkpoint.pth.tar", weights_only=True)["iteration"] == 6
    viz = sorted(p.name for p in (out / "visualization_viz").iterdir())
    assert viz == ["iter000000000000.jpg", "iter000000000003.jpg", "iter000000000006.jpg"]
    w, h = Image.open(out / "visualization_viz" / viz[0]).size
    assert w == 2 * 3 * 32 + GAP and h > 2 * 2 * 32 + GAP  # 4 samples: a 2x2 grid of 3-wide, 2-high tiles, titled


def test_loss_falls_with_the_default_recipe(tmp_path):
    root = write_sky_folder(tmp_path / "d", n_train=16, n_valid=4, size=32,
                            config=tiny_config(max_iteration=60, interval_validate=60))
    del_lr = json.loads((root / "config.list").read_text())
    del del_lr["lr"]  # a new user's config without lr gets the mean-loss poly recipe
    write_config(root, **del_lr)
    assert main(["train", str(root)]) == 0
    losses = [float(r["train/loss"]) for r in read_log(root / "MODEL-tiny" / "log.csv") if r["train/loss"]]
    assert np.mean(losses[-10:]) < 0.8 * np.mean(losses[:10])


def test_original_recipe_with_summed_loss_still_trains(tmp_path):
    """lr 1e-10 with momentum 0.99 works only because the loss is summed over every pixel. On one
    fixed batch (no augmentation, so no batch-to-batch noise) the loss must fall steadily."""
    root = write_sky_folder(tmp_path / "d", n_train=2, n_valid=1, size=128, config={
        "max_iteration": 60, "lr": 1e-10, "momentum": 0.99, "weight_decay": 0.0005, "interval_validate": 60,
        "batch_size": 2, "backbone": "resnet", "fcn": "50", "output_dir": "orig", "pretrained_net": "",
        "n_workers": 0, "mode": "train", "model": "fcn_resnet18", "pretrained_backbone": False, "augment": False})
    assert main(["train", str(root)]) == 0
    losses = [float(r["train/loss"]) for r in read_log(root / "MODEL-orig" / "log.csv") if r["train/loss"]]
    assert losses[0] > 2 * 128 * 128 * 0.5  # summed over two 128x128 images, as the original
    assert np.mean(losses[-10:]) < 0.95 * np.mean(losses[:10])


def test_two_runs_of_one_config_match(tmp_path):
    logs = []
    for k in range(2):
        root = write_sky_folder(tmp_path / f"d{k}", n_train=8, n_valid=4, size=32,
                                config=tiny_config(max_iteration=4, interval_validate=2, augment=True, n_workers=1))
        assert main(["train", str(root)]) == 0
        logs.append([{c: v for c, v in r.items() if c != "elapsed_time"} for r in read_log(root / "MODEL-tiny" / "log.csv")])
    assert logs[0] == logs[1]


def _flat_waggle_folder(root, n=10, size=40):
    """The original container's folder: flat images/ + labels/, JPEG masks, the original's keys."""
    sky = write_sky_folder(root / "tmp", n_train=n, n_valid=0, size=size)
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    for p in sorted((sky / "train" / "images").iterdir()):
        shutil.copy(p, root / "images" / p.name)
        mask = np.asarray(Image.open(sky / "train" / "labels" / p.name))
        Image.fromarray(mask).save(root / "labels" / (p.stem + ".jpg"), quality=75)
    shutil.rmtree(sky)
    write_config(root, max_iteration=2, lr=1e-10, momentum=0.99, weight_decay=0.0005, interval_validate=1,
                 batch_size=1, backbone="resnet", fcn="50", output_dir="resnet50", pretrained_net="",
                 n_workers=0, mode="train")


def test_original_container_command_line(tmp_path):
    root = tmp_path / "data"
    _flat_waggle_folder(root)
    result = run_cli("--config", "config.list", "--image_type", "waggle_cloud", "--data", root)
    assert result.returncode == 0, result.stderr
    assert "thresholded: value <= 175 -> sky, above -> cloud" in result.stdout
    assert "20% of the training images held out" in result.stdout
    out = root / "MODEL-resnet50"
    rows = read_log(out / "log.csv")
    assert [r["iteration"] for r in rows] == ["0", "0", "1", "1", "2"]
    ckpt = torch.load(out / "model_best.pth.tar", weights_only=True)
    assert ckpt["arch"] == "fcn_resnet50" and ckpt["class_names"] == ["sky", "cloud"]
    assert not (root / "class_names.list").exists()  # the preset's classes are not written into the folder


def test_exact_stem_matching_pairs_image1_with_image1_only(tmp_path):
    from segtrain.data.folder import find_pairs

    for folder in ("images", "labels"):
        (tmp_path / folder).mkdir()
        for stem in ("image1", "image10"):
            Image.new("L", (8, 8)).save(tmp_path / folder / f"{stem}.png")
    pairs = find_pairs(tmp_path / "images", tmp_path / "labels", [])
    assert [(p.image.stem, p.label.stem) for p in pairs] == [("image1", "image1"), ("image10", "image10")]


def test_pretrained_net_from_an_earlier_run_and_no_overwrite(sky_root):
    assert main(["train", str(sky_root), "--set", "max_iteration=2"]) == 0
    first_log = (sky_root / "MODEL-tiny" / "log.csv").read_text()
    assert main(["train", str(sky_root), "--set", "max_iteration=2",
                 "--set", "pretrained_net=MODEL-tiny/model_best.pth.tar"]) == 0
    assert (sky_root / "MODEL-tiny" / "log.csv").read_text() == first_log
    second = read_log(sky_root / "MODEL-tiny-2" / "log.csv")
    first = read_log(sky_root / "MODEL-tiny" / "log.csv")
    # the second run starts from the first run's best weights, so its first validation matches that model
    best = torch.load(sky_root / "MODEL-tiny" / "model_best.pth.tar", weights_only=True)
    assert float(second[0]["valid/mean_iu"]) == pytest.approx(best["best_mean_iu"])
    assert len(first) == len(second)


def test_demo_command_runs(tmp_path):
    assert main(["demo", str(tmp_path / "demo"), "--set", "max_iteration=2", "--set", "interval_validate=2"]) == 0
    assert (tmp_path / "demo" / "MODEL-demo" / "model_best.pth.tar").is_file()


@pytest.mark.skipif(not (SHARED_DATA / "swimseg").is_dir(), reason="../shared/data/swimseg not present")
def test_end_to_end_on_real_swimseg_images(tmp_path):
    root = tmp_path / "swim"
    for split, n in (("train", 8), ("valid", 4)):
        for kind in ("images", "labels"):
            (root / split / kind).mkdir(parents=True)
        for image in sorted((SHARED_DATA / "swimseg" / split / "images").iterdir())[:n]:
            (root / split / "images" / image.name).symlink_to(image)
            label = next((SHARED_DATA / "swimseg" / split / "labels").glob(image.stem + ".*"))
            (root / split / "labels" / label.name).symlink_to(label)
    shutil.copy(SHARED_DATA / "swimseg" / "class_names.list", root)
    write_config(root, **tiny_config(image_size=64, max_iteration=4, interval_validate=4))
    assert main(["train", str(root)]) == 0
    rows = read_log(root / "MODEL-tiny" / "log.csv")
    final = [r for r in rows if r["valid/loss"]][-1]
    assert 0.0 <= float(final["valid/mean_iu"]) <= 1.0
    ckpt = torch.load(root / "MODEL-tiny" / "model_best.pth.tar", weights_only=True)
    assert ckpt["label_encoding"].startswith("binary masks: 0 -> sky, 255 -> cloud")
