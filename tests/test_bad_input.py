"""Every bad input: exit 1, one line naming the file/key/value and the fix, no traceback, and the
folder (with an earlier run's outputs in it) exactly as it was."""

import json
import os
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import run_cli, tiny_config
from segtrain.cli import main
from segtrain.data.synthetic import write_sky_folder
from segtrain.runtime.workers import batch_bytes, fit_workers

MB = 2**20


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A folder with a finished earlier run in MODEL-tiny."""
    root = write_sky_folder(tmp_path_factory.mktemp("done") / "data", n_train=12, n_valid=4, size=32,
                            config=tiny_config(max_iteration=1, interval_validate=1))
    assert main(["train", str(root)]) == 0
    return root


@pytest.fixture
def root(finished, tmp_path):
    return shutil.copytree(finished, tmp_path / "data")


def snapshot(root):
    return {str(p.relative_to(root)): (p.read_bytes() if p.is_file() else None) for p in sorted(root.rglob("*"))}


def set_config(root, drop=(), **changes):
    cfg = {k: v for k, v in json.loads((root / "config.list").read_text()).items() if k not in drop}
    (root / "config.list").write_text(json.dumps({**cfg, **changes}))


def truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def as_truncated_jpeg(root):
    png = root / "train" / "images" / "sky0004.png"
    Image.open(png).save(png.with_suffix(".jpg"), quality=90)
    png.unlink()
    truncate(png.with_suffix(".jpg"))


def evil_pickle(root):
    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {root.parent / 'pwned'}",))
    torch.save({"payload": Evil(), "iteration": 1}, root / "evil.pth")
    set_config(root, pretrained_net="evil.pth")


def mask_with_value_7(root):
    mask = np.array(Image.open(root / "train" / "labels" / "sky0001.png"))
    mask[0, :4] = 7
    Image.fromarray(mask).save(root / "train" / "labels" / "sky0001.png")


def empty_dataset(root):
    for kind in ("images", "labels"):
        for p in (root / "train" / kind).iterdir():
            p.unlink()


CASES = {
    "malformed JSON": (lambda r: (r / "config.list").write_text('{\n  "lr": 0.01,\n}\n'),
                       ["config.list: not valid JSON at line 3, column 1", "no trailing commas"]),
    "unknown key": (lambda r: set_config(r, batch_sise=2), ["unknown key 'batch_sise'", "Did you mean 'batch_size'?"]),
    "wrong type": (lambda r: set_config(r, lr="fast"), ["config.list", "'lr' must be a number, got 'fast'"]),
    "negative lr": (lambda r: set_config(r, lr=-1), ["'lr' must be greater than 0, got -1"]),
    "batch_size 0": (lambda r: set_config(r, batch_size=0), ["'batch_size' must be at least 1, got 0"]),
    "interval_validate 0": (lambda r: set_config(r, interval_validate=0), ["'interval_validate' must be at least 1, got 0"]),
    "unknown fcn": (lambda r: set_config(r, drop=["model"], fcn="152"), ["'fcn' is '152'", 'choose "50" or "101"']),
    "unknown backbone": (lambda r: set_config(r, drop=["model"], backbone="vgg"), ["'backbone' is 'vgg'", "set 'model'"]),
    "unknown model": (lambda r: set_config(r, model="fcn_resnet5"), ["'model' is 'fcn_resnet5'", "Known models"]),
    "missing train/images": (lambda r: shutil.rmtree(r / "train" / "images"), ["train/images: folder not found"]),
    "missing train/labels": (lambda r: shutil.rmtree(r / "train" / "labels"), ["train/labels: folder not found"]),
    "empty dataset": (empty_dataset, ["train/images: no images found"]),
    "image without label": (lambda r: (r / "train" / "labels" / "sky0003.png").unlink(),
                            ["1 image(s) without a label", "sky0003", "same file name"]),
    "label without image": (lambda r: (r / "train" / "images" / "sky0005.png").unlink(),
                            ["1 label(s) without an image", "sky0005"]),
    "size mismatch": (lambda r: Image.new("L", (40, 32)).save(r / "train" / "labels" / "sky0002.png"),
                      ["sky0002.png: image is 32x32 but its label", "is 40x32", "Masks must have the size"]),
    "label value outside classes": (mask_with_value_7, ["sky0001.png: label value 7 fits none of the 2 classes",
                                                        "ignore_index"]),
    "class_names.list missing": (lambda r: (r / "class_names.list").unlink(), ["class_names.list not found"]),
    "class_names.list empty": (lambda r: (r / "class_names.list").write_text("\n"), ["class_names.list is empty"]),
    "class_names.list duplicate": (lambda r: (r / "class_names.list").write_text("sky\nsky\n"),
                                   ["class name 'sky' appears twice"]),
    "class_colors.list count": (lambda r: (r / "class_colors.list").write_text("0 0 0\n"),
                                ["class_colors.list: 1 colours for 2 classes"]),
    "class_colors.list malformed": (lambda r: (r / "class_colors.list").write_text("0 0 0\n255 x 255\n"),
                                    ["class_colors.list, line 2: '255 x 255' is not a colour"]),
    "corrupt image": (lambda r: (r / "train" / "images" / "sky0004.png").write_bytes(os.urandom(3000)),
                      ["sky0004.png: cannot read this image", "Replace or remove"]),
    "truncated png": (lambda r: truncate(r / "train" / "images" / "sky0004.png"), ["sky0004.png: the file is truncated"]),
    "truncated jpeg": (as_truncated_jpeg, ["sky0004.jpg: the file is truncated"]),
    "pretrained_net missing": (lambda r: set_config(r, pretrained_net="nothere.pth"),
                               ["nothere.pth: checkpoint not found"]),
    "pretrained_net random bytes": (lambda r: ((r / "junk.pth").write_bytes(os.urandom(4096)),
                                               set_config(r, pretrained_net="junk.pth")),
                                    ["junk.pth: not a PyTorch checkpoint"]),
    "pickle without model_state_dict": (evil_pickle, ["evil.pth: refused, its pickle holds objects other than tensors",
                                                      "nothing in it was executed"]),
    "batch_size larger than the dataset": (lambda r: set_config(r, batch_size=100),
                                           ["batch_size is 100 but there are only 12 training images"]),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_one_clear_line_and_changes_nothing(root, capsys, case):
    breaks, words = CASES[case]
    breaks(root)
    before = snapshot(root)
    capsys.readouterr()
    assert main(["train", str(root)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err
    for word in words:
        assert word in err
    assert snapshot(root) == before
    assert not (root.parent / "pwned").exists()


def test_real_command_exits_1_without_traceback_and_debug_shows_it(root):
    CASES["malformed JSON"][0](root)
    result = run_cli("train", root)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.startswith("error: ") and "line 3, column 1" in result.stderr
    assert "Traceback" in run_cli("--debug", "train", root).stderr


def test_unsupported_file_is_ignored_with_a_note(root):
    (root / "train" / "images" / "notes.txt").write_text("taken on a cloudy day")
    result = run_cli("check", root)
    assert result.returncode == 0, result.stderr
    assert "ignored 1 unsupported file(s)" in result.stdout and "notes.txt" in result.stdout


def test_too_many_workers_are_capped_with_a_note(root, capsys):
    assert main(["check", str(root), "--set", "n_workers=999"]) == 0
    assert f"n_workers 999 is more than this machine's {os.cpu_count()} CPUs; using {os.cpu_count()}" in capsys.readouterr().out


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA GPU is present")
def test_cuda_asked_for_without_a_gpu_trains_on_the_cpu_with_a_note(root, capsys):
    assert main(["train", str(root), "--set", "device=cuda"]) == 0
    assert "device 'cuda' asked for, but no CUDA GPU is visible; training on the CPU" in capsys.readouterr().out
    assert (root / "MODEL-tiny-2" / "model_best.pth.tar").is_file()


def test_small_dev_shm_reduces_workers_with_a_note():
    big = batch_bytes(8, 512, 512)  # 40 MB per batch
    workers, notes = fit_workers(4, cpus=16, shm_free=64 * MB, one_batch=big)
    assert workers == 0
    assert "/dev/shm has only 64 MB free" in notes[0] and "--shm-size" in notes[0]
    workers, notes = fit_workers(4, cpus=16, shm_free=256 * MB, one_batch=big)
    assert workers == 1 and "loading with 1 worker(s)" in notes[0]
    assert fit_workers(4, cpus=16, shm_free=1024 * MB, one_batch=big) == (4, [])
    assert fit_workers(4, cpus=16, shm_free=64 * MB, one_batch=batch_bytes(4, 32, 32)) == (4, [])
    assert fit_workers(4, cpus=16, shm_free=None, one_batch=big) == (4, [])
