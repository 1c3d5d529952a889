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


def one_error_line(text):
    """The single line a refused input prints (stderr of main or of the real command)."""
    lines = [line for line in text.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in text, text
    return lines[0]


# (what goes in config.list or --set, words the one line must hold)
BAD_VALUES = {
    "seed 2**32": ({"seed": 2**32}, ["config.list", "'seed' must be at most 4294967295, got 4294967296"]),
    "seed 2**70 by --set": ("seed=1180591620717411303424", ["--set", "'seed' must be at most 4294967295"]),
    "seed negative by --set": ("seed=-1", ["--set", "'seed' must be at least 0, got -1"]),
    "output_dir with NUL": ({"output_dir": "run\0x"}, ["'output_dir' must be a plain folder name", "no NUL"]),
    "output_dir too long": ({"output_dir": "x" * 250}, ["'output_dir' is 250 bytes long; at most 242 fit",
                                                        "Choose a shorter name"]),
    "output_dir multibyte too long": ({"output_dir": "é" * 125}, ["'output_dir' is 250 bytes long"]),
    "output_dir with a slash": ({"output_dir": "a/b"}, ["'output_dir' must be a plain folder name (no slashes"]),
    "output_dir ..": ("output_dir=..", ["'output_dir' must be a plain folder name"]),
    "threads 10**9": ({"threads": 10**9}, ["config.list", "'threads' must be at most 1024, got 1000000000"]),
    "threads 10**9 by --set": ("threads=1000000000", ["--set", "'threads' must be at most 1024"]),
}


@pytest.mark.parametrize("case", list(BAD_VALUES))
@pytest.mark.parametrize("command", ["check", "train"])
def test_bad_config_value_is_one_line_in_check_and_train(root, capsys, case, command):
    change, words = BAD_VALUES[case]
    extra = ["--set", change] if isinstance(change, str) else []
    if not extra:
        set_config(root, **change)
    before = snapshot(root)
    capsys.readouterr()
    assert main([command, str(root), *extra]) == 1
    captured = capsys.readouterr()
    line = one_error_line(captured.err)
    for word in words:
        assert word in line
    assert snapshot(root) == before


def save_as(path, encoding, text=None):
    path.write_bytes((path.read_text() if text is None else text).encode(encoding))


NOT_UTF8 = {
    "config.list latin-1": (lambda r: save_as(r / "config.list", "latin-1",
                                              (r / "config.list").read_text().replace('"tiny"', '"tiny\u00e9"')),
                            ["config.list, line 10: byte 0xe9 is not UTF-8", "save it as UTF-8"]),
    "config.list UTF-16": (lambda r: save_as(r / "config.list", "utf-16"),
                           ["config.list: saved as UTF-16; save it as UTF-8"]),
    "class_names.list latin-1": (lambda r: save_as(r / "class_names.list", "latin-1", "sky\nnu\u00e9e\n"),
                                 ["class_names.list, line 2: byte 0xe9 is not UTF-8", "save it as UTF-8"]),
    "class_names.list UTF-16": (lambda r: save_as(r / "class_names.list", "utf-16"),
                                ["class_names.list: saved as UTF-16; save it as UTF-8"]),
    "class_colors.list UTF-16": (lambda r: save_as(r / "class_colors.list", "utf-16", "0 0 0\n255 255 255\n"),
                                 ["class_colors.list: saved as UTF-16; save it as UTF-8"]),
}


@pytest.mark.parametrize("case", list(NOT_UTF8))
@pytest.mark.parametrize("command", ["check", "train"])
def test_text_file_not_in_utf8_is_one_line_naming_it(root, capsys, case, command):
    breaks, words = NOT_UTF8[case]
    breaks(root)
    before = snapshot(root)
    capsys.readouterr()
    assert main([command, str(root)]) == 1
    line = one_error_line(capsys.readouterr().err)
    for word in words:
        assert word in line
    assert snapshot(root) == before


def test_utf8_with_bom_is_accepted(root, capsys):
    save_as(root / "config.list", "utf-8-sig")
    save_as(root / "class_names.list", "utf-8-sig")
    assert main(["check", str(root)]) == 0, capsys.readouterr().err


@pytest.mark.parametrize("kind", ["folder", "fifo"])
@pytest.mark.parametrize("given", [False, True])
def test_config_list_that_is_not_a_file_is_an_error_not_ignored(root, capsys, kind, given):
    (root / "config.list").unlink()
    os.mkdir(root / "config.list") if kind == "folder" else os.mkfifo(root / "config.list")
    before = snapshot(root) if kind == "folder" else None  # reading a FIFO would block
    capsys.readouterr()
    extra = ["--config", str(root / "config.list")] if given else []
    assert main(["train", str(root), *extra]) == 1
    line = one_error_line(capsys.readouterr().err)
    assert "config.list: is not a regular file" in line
    assert not list(root.glob("MODEL-tiny-*"))
    if before is not None:
        assert snapshot(root) == before


CKPT = "MODEL-tiny/model_best.pth.tar"


def _predict(r, out, source="valid/images"):
    return ["predict", str(r / source), "--checkpoint", str(r / CKPT), "--out", str(out)]


def _folder_in_the_way(path):
    path.mkdir(parents=True)
    return path


# (put something in the way under ROOT and give the command, words the one line must hold)
UNWRITABLE = {
    "predict --out is a file": (lambda r: _predict(r, r / "config.list"), ["--out", "config.list: is a file, not a folder"]),
    "predict --out below a file": (lambda r: _predict(r, r / "config.list" / "masks"),
                                   ["config.list is a file, not a folder"]),
    "predict mask name is a folder": (lambda r: (_folder_in_the_way(r / "masks" / "sky0000.png"),
                                                 _predict(r, r / "masks", "valid/images/sky0000.png"))[1],
                                      ["masks/sky0000.png: cannot write (Is a directory)"]),
    "predict summary.csv is a folder": (lambda r: (_folder_in_the_way(r / "masks" / "summary.csv"),
                                                   _predict(r, r / "masks", "valid/images/sky0000.png"))[1],
                                        ["--out", "masks/summary.csv: is a folder"]),
    "evaluate --json is a folder": (lambda r: ["evaluate", str(r), "--checkpoint", str(r / CKPT), "--json", str(r / "MODEL-tiny")],
                                    ["--json", "MODEL-tiny: is a folder"]),
    "evaluate --json below a file": (lambda r: ["evaluate", str(r), "--checkpoint", str(r / CKPT), "--json",
                                                str(r / "config.list" / "e.json")], ["config.list is a file, not a folder"]),
    "export --out is a folder": (lambda r: ["export", "--checkpoint", str(r / CKPT), "--format", "torchscript", "--out",
                                            str(r / "MODEL-tiny")], ["--out", "MODEL-tiny: is a folder"]),
    "export --out below a file": (lambda r: ["export", "--checkpoint", str(r / CKPT), "--format", "torchscript", "--out",
                                             str(r / "config.list" / "m.pt")], ["config.list is a file, not a folder"]),
    "plot --out is a folder": (lambda r: ["plot", str(r / "MODEL-tiny" / "log.csv"), "--out", str(r / "MODEL-tiny")],
                               ["--out", "MODEL-tiny: is a folder"]),
    "plot --out below a file": (lambda r: ["plot", str(r / "MODEL-tiny" / "log.csv"), "--out", str(r / "config.list" / "c.png")],
                                ["config.list is a file, not a folder"]),
    "plot curves.png is a folder": (lambda r: (shutil.copy(r / "MODEL-tiny" / "log.csv", _folder_in_the_way(r / "old") / "log.csv"),
                                               _folder_in_the_way(r / "old" / "curves.png"), ["plot", str(r / "old" / "log.csv")])[2],
                                    ["old/curves.png: is a folder"]),
    "init config.list is a folder": (lambda r: ((r / "config.list").unlink(), _folder_in_the_way(r / "config.list"),
                                                ["init", str(r)])[2], ["config.list: is not a file", "run segtrain init again"]),
    "init class_names.list is a folder": (lambda r: ((r / "class_names.list").unlink(), (r / "config.list").unlink(),
                                                     _folder_in_the_way(r / "class_names.list"), ["init", str(r)])[3],
                                          ["class_names.list: is not a file"]),
}


@pytest.mark.parametrize("case", list(UNWRITABLE))
def test_output_that_cannot_be_written_is_one_line_naming_it(root, capsys, case):
    setup, words = UNWRITABLE[case]
    argv = setup(root)
    before = snapshot(root)
    capsys.readouterr()
    assert main(argv) == 1
    line = one_error_line(capsys.readouterr().err)
    for word in words:
        assert word in line
    assert snapshot(root) == before  # nothing written, no temporary file left behind


NOT_A_LOG = {
    "binary garbage": (lambda p: p.write_bytes(bytes(range(256)) * 8), ["not a CSV training log"]),
    "a PNG picture": (lambda p: Image.new("RGB", (8, 8)).save(p, format="PNG"), ["not a CSV training log"]),
    "empty file": (lambda p: p.write_bytes(b""), ["not a training log", "found nothing"]),
    "other columns": (lambda p: p.write_text("name,score\na,1\n"), ["not a training log", "found name, score"]),
}


@pytest.mark.parametrize("case", list(NOT_A_LOG))
def test_plot_of_a_file_that_is_not_a_log_is_one_line(root, capsys, case):
    write, words = NOT_A_LOG[case]
    write(root / "MODEL-tiny" / "other.csv")
    before = snapshot(root)  # holds MODEL-tiny/curves.png, where the picture would go
    capsys.readouterr()
    assert main(["plot", str(root / "MODEL-tiny" / "other.csv")]) == 1
    line = one_error_line(capsys.readouterr().err)
    assert "other.csv" in line
    for word in words:
        assert word in line
    assert snapshot(root) == before


def test_predict_keeps_a_file_name_that_is_not_utf8(root, tmp_path, capsys):
    folder = tmp_path / "in"
    folder.mkdir()
    name = b"sky\xff.png"
    try:
        shutil.copy(root / "valid" / "images" / "sky0000.png", os.fsencode(folder) + b"/" + name)
    except OSError:
        pytest.skip("this file system takes UTF-8 file names only")
    out = tmp_path / "out"
    assert main(["predict", str(folder), "--checkpoint", str(root / CKPT), "--out", str(out)]) == 0
    assert name in os.listdir(os.fsencode(out))  # the mask keeps the image's name
    rows = (out / "summary.csv").read_bytes().splitlines()
    assert rows[1].startswith(name + b",32,32,")


LEGACY = {
    "config.list missing": (lambda r: ((r / "config.list").unlink(), r)[1],
                            ["config.list: config file not found", "in the data folder (given by --data)",
                             "pass --config with the path"]),
    "data folder missing": (lambda r: r / "nothere", ["--data", "nothere: data folder not found", "Pass --data"]),
}


@pytest.mark.parametrize("case", list(LEGACY))
def test_original_container_form_advice_names_its_own_flags(root, case):
    setup, words = LEGACY[case]
    data = setup(root)
    before = snapshot(root)
    result = run_cli("--config", "config.list", "--image_type", "waggle_cloud", "--data", data, timeout=120)
    assert result.returncode == 1
    line = one_error_line(result.stderr + result.stdout)
    for word in words:
        assert word in line
    assert "without --config" not in line
    assert snapshot(root) == before
