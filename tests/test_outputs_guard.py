"""No command overwrites what it reads or what a run or a data set holds (paths.refuse_replacing);
one run at a time trains in a folder (run_folder.py hold); a run that fails in set-up
creates nothing; `check` judges the config that `train` fits (training/setup.py fit_to_folder)."""

import hashlib
import multiprocessing
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
from PIL import Image

from conftest import run_cli, tiny_config, write_config
from segtrain.cli import main
from segtrain.data.synthetic import write_sky_folder
from segtrain.run_folder import FolderBusy, hold

CKPT = Path("MODEL-tiny") / "model_best.pth.tar"
LOG = Path("MODEL-tiny") / "log.csv"


def link_or_copy(source, target):
    """Checkpoints are hard-linked (large; every segtrain write replaces a file, never writes into
    it); the rest is copied, so appending to a log never reaches the shared run."""
    if str(source).endswith(".pth.tar"):
        os.link(source, target)
    else:
        shutil.copy2(source, target)


@pytest.fixture(scope="module")
def data(trained_root, tmp_path_factory):
    """A copy of the trained folder (ROOT with MODEL-tiny), a photo and an empty folder beside it."""
    base = tmp_path_factory.mktemp("guard")
    root = shutil.copytree(trained_root, base / "data", copy_function=link_or_copy)
    (root / "unlabeled").mkdir()
    shutil.copy2(root / "train" / "images" / "sky0000.png", root / "unlabeled" / "u0.png")
    Image.open(root / "train" / "images" / "sky0001.png").save(base / "photo.png")
    return root


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def names(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


def one_error_line(result) -> str:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 1 and len(lines) == 1 and lines[0].startswith("error: "), result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    return lines[0]


def _symlink(root: Path, name: str, target: Path) -> Path:
    link = root.parent / name
    if not os.path.lexists(link):
        link.symlink_to(target)
    return link


def _hard_link(root: Path, name: str, target: Path) -> Path:
    link = root.parent / name
    if not link.exists():
        os.link(target, link)
    return link


def _demo_target(root: Path) -> Path:
    """A user's folder of images and masks, not yet given a class_names.list."""
    mine = root.parent / "mine"
    if not mine.exists():
        shutil.copytree(root / "train", mine / "train", copy_function=shutil.copy2)
        (mine / "config.list").write_text('{"lr": 0.01}\n')
    return mine


def _archive_in_extracted(root: Path) -> Path:
    """An archive where download clears its extraction folder before extracting."""
    dest = root.parent / "dl"
    archive = dest / "download" / "extracted" / "clouds.tar.gz"
    if not archive.exists():
        archive.parent.mkdir(parents=True)
        with tarfile.open(archive, "w:gz") as tar:
            tar.add(root / "train", arcname="train")
    return archive


# name: (argv from ROOT, the files that must keep their bytes, words the one line holds). Each is an
# output path that names an input, a run's or a data set's file, directly or through a link.
CASES = {
    "export over the checkpoint it reads": (
        lambda r: ["export", "--checkpoint", r / CKPT, "--format", "torchscript", "--out", r / CKPT],
        lambda r: [r / CKPT], ["would overwrite the checkpoint", "Choose another path for --out"]),
    "export over a training image": (
        lambda r: ["export", "--checkpoint", r / CKPT, "--format", "onnx", "--out", r / "train/images/sky0000.png"],
        lambda r: [r / "train/images/sky0000.png"], ["train/images", "images or masks", "Choose a path outside it"]),
    "export over a mask": (
        lambda r: ["export", "--checkpoint", r / CKPT, "--format", "onnx", "--out", r / "train/labels/sky0000.png"],
        lambda r: [r / "train/labels/sky0000.png"], ["train/labels"]),
    "export into images/ under a new name": (
        lambda r: ["export", "--checkpoint", r / CKPT, "--format", "onnx", "--out", r / "train/images/model.onnx"],
        lambda r: [], ["images or masks"]),
    "export over the run's other checkpoint": (
        lambda r: ["export", "--checkpoint", r / CKPT, "--format", "onnx", "--out", r / "MODEL-tiny/checkpoint.pth.tar"],
        lambda r: [r / "MODEL-tiny/checkpoint.pth.tar"], ["a training run's checkpoint"]),
    "export over a symlink to the checkpoint": (
        lambda r: ["export", "--checkpoint", r / CKPT, "--format", "onnx", "--out", _symlink(r, "model.onnx", r / CKPT)],
        lambda r: [r / CKPT], ["would overwrite the checkpoint"]),
    "export over a hard link of the checkpoint": (
        lambda r: ["export", "--checkpoint", r / CKPT, "--format", "onnx", "--out", _hard_link(r, "hard.onnx", r / CKPT)],
        lambda r: [r / CKPT], ["would overwrite the checkpoint"]),
    "export into images/ through a symlinked folder": (
        lambda r: ["export", "--checkpoint", r / CKPT, "--format", "onnx",
                   "--out", _symlink(r, "pictures", r / "train/images") / "sky0002.png"],
        lambda r: [r / "train/images/sky0002.png"], ["images or masks"]),
    "export over the image it verifies on": (
        lambda r: ["export", "--checkpoint", r / CKPT, "--format", "onnx", "--verify-on", r.parent / "photo.png",
                   "--out", r.parent / "photo.png"],
        lambda r: [r.parent / "photo.png"], ["would overwrite the --verify-on image"]),
    "export over the data folder's class_names.list": (
        lambda r: ["export", "--checkpoint", r / CKPT, "--format", "onnx", "--out", r / "class_names.list"],
        lambda r: [r / "class_names.list"], ["a data folder's class_names.list"]),
    "export into unlabeled/": (
        lambda r: ["export", "--checkpoint", r / CKPT, "--format", "onnx", "--out", r / "unlabeled/u0.png"],
        lambda r: [r / "unlabeled/u0.png"], ["unlabeled", "images or masks"]),
    "evaluate --json over the checkpoint": (
        lambda r: ["evaluate", r, "--checkpoint", r / CKPT, "--json", r / CKPT],
        lambda r: [r / CKPT], ["--json", "would overwrite the model file"]),
    "evaluate --json over a training image": (
        lambda r: ["evaluate", r, "--checkpoint", r / CKPT, "--json", r / "train/images/sky0000.png"],
        lambda r: [r / "train/images/sky0000.png"], ["--json", "images or masks"]),
    "evaluate --json over a validation mask": (
        lambda r: ["evaluate", r, "--checkpoint", r / CKPT, "--json", r / "valid/labels/mixed00.png"],
        lambda r: [r / "valid/labels/mixed00.png"], ["valid/labels"]),
    "evaluate --json over config.list": (
        lambda r: ["evaluate", r, "--checkpoint", r / CKPT, "--json", r / "config.list"],
        lambda r: [r / "config.list"], ["a data folder's config.list"]),
    "evaluate --json over the run's log": (
        lambda r: ["evaluate", r, "--checkpoint", r / CKPT, "--json", r / LOG],
        lambda r: [r / LOG], ["a training run's log"]),
    "evaluate --json over the checkpoint given relative to ROOT": (
        lambda r: ["evaluate", r, "--checkpoint", CKPT, "--json", r / CKPT],
        lambda r: [r / CKPT], ["would overwrite the model file"]),
    "plot over the log it reads": (
        lambda r: ["plot", r / LOG, "--out", r / LOG],
        lambda r: [r / LOG], ["would overwrite the log", "Choose another path for --out"]),
    "plot over a symlink to the log": (
        lambda r: ["plot", r / LOG, "--out", _symlink(r, "curves-link.png", r / LOG)],
        lambda r: [r / LOG], ["would overwrite the log"]),
    "plot over a mask": (
        lambda r: ["plot", r / LOG, "--out", r / "train/labels/sky0003.png"],
        lambda r: [r / "train/labels/sky0003.png"], ["images or masks"]),
    "predict into the masks of the images it reads": (
        lambda r: ["predict", r / "train/images", "--checkpoint", r / CKPT, "--out", r / "train/labels"],
        lambda r: [r / "train/labels/sky0000.png"], ["images or masks"]),
    "predict over a hard link of its input": (
        lambda r: ["predict", r.parent / "photo.png", "--checkpoint", r / CKPT,
                   "--out", _hard_link(r, "photo-out/photo.png", r.parent / "photo.png").parent],
        lambda r: [r.parent / "photo.png"], ["would overwrite input image"]),
    "audit into a folder of images": (
        lambda r: ["audit", r, "--checkpoint", r / CKPT, "--out", r / "valid/images"],
        lambda r: [r / "valid/images/mixed00.png"], ["images or masks"]),
    "demo into a data folder without class_names.list": (
        lambda r: ["demo", _demo_target(r)],
        lambda r: [_demo_target(r) / "config.list", _demo_target(r) / "train/images/sky0000.png"],
        ["holds files but no demo"]),
    "download with the archive where it extracts": (
        lambda r: ["download", "waggle_clouds", r.parent / "dl", "--archive", _archive_in_extracted(r)],
        lambda r: [_archive_in_extracted(r)], ["--archive", "Move the archive out"]),
}


@pytest.mark.parametrize("case", list(CASES))
def test_an_output_never_replaces_an_input_or_a_run_or_data_file(data, case):
    argv, kept, words = CASES[case]
    (data.parent / "photo-out").mkdir(exist_ok=True)
    args = argv(data)  # makes the links and folders a case needs
    before = {path: digest(path) for path in kept(data)}
    listed = names(data.parent)
    line = one_error_line(run_cli(*args, timeout=120))
    for word in words:
        assert word in line, line
    assert {path: digest(path) for path in before} == before
    assert names(data.parent) == listed  # nothing written anywhere: no output, no temporary file


# --- one run at a time in a folder -------------------------------------------------------------

HOLDER = ("import sys\nfrom segtrain.run_folder import hold\nhold(sys.argv[1])\n"
          "print('held', flush=True)\nsys.stdin.read()\n")


def resumable_copy(trained_root, tmp_path) -> Path:
    return shutil.copytree(trained_root, tmp_path / "data", copy_function=link_or_copy)


def test_resume_is_refused_while_another_process_holds_the_run_and_works_once_it_is_killed(trained_root, tmp_path):
    root = resumable_copy(trained_root, tmp_path)
    run = root / "MODEL-tiny"
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(run)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "held\n"  # it holds the folder from here on
        before = {name: digest(run / name) for name in ("checkpoint.pth.tar", "model_best.pth.tar", "log.csv")}
        line = one_error_line(run_cli("train", root, "--resume", "--set", "max_iteration=9", timeout=120))
        assert f"{run}: another segtrain run (pid {holder.pid}: " in line and "is training in this folder" in line
        assert {name: digest(run / name) for name in before} == before
    finally:
        holder.kill()  # SIGKILL: nothing of the holder runs any more
        holder.wait()
    result = run_cli("train", root, "--resume", "--set", "max_iteration=9", timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "resuming" in result.stdout and "iteration 8/9" in result.stdout


def test_a_training_run_holds_its_folder_until_it_ends(tmp_path):
    """The real train: while it runs (seen from its own log, so no timing is involved) its folder
    cannot be held by anyone else; once it returns it can."""
    from segtrain.config.load import resolve
    from segtrain.training.loop import train

    root = write_sky_folder(tmp_path / "data", n_train=4, n_valid=2, size=32)
    seen = []

    def log(line, *args):
        if line.startswith("outputs: "):
            folder = Path(line.removeprefix("outputs: "))
            with pytest.raises(FolderBusy, match=f"pid {os.getpid()}"):
                hold(folder)
            seen.append(folder)

    out = train(root, resolve(tiny_config(max_iteration=1, interval_validate=1)), log=log)
    assert seen == [out] == [root / "MODEL-tiny"]
    hold(out).release()


def _started_then_wait(connection):
    connection.send("started")  # after the fork's handlers ran in this child
    connection.recv()


def test_a_forked_child_does_not_keep_the_folder_held(tmp_path):
    """A DataLoader worker is a fork of the run: when the run dies first, the worker must not keep
    the folder held (the lock's descriptor is closed in every forked child)."""
    folder = tmp_path / "run"
    folder.mkdir()
    lock = hold(folder)
    parent_end, child_end = multiprocessing.Pipe()
    child = multiprocessing.get_context("fork").Process(target=_started_then_wait, args=(child_end,))
    child.start()
    try:
        assert parent_end.recv() == "started"
        lock.release()  # as the kernel does for a killed run
        hold(folder).release()  # while the fork lives
    finally:
        parent_end.send("done")
        child.join()


# --- a run that fails in set-up creates nothing ----------------------------------------------

def spoil_pixels(path: Path) -> None:
    """Keep the PNG's header and its end marker (so the cheap look before training passes), zero
    the compressed pixels between: the file fails only when it is decoded."""
    data = path.read_bytes()
    path.write_bytes(data[:60] + b"\0" * (len(data) - 72) + data[-12:])


# (--set arguments, what to spoil, words of the one line): errors found after the run folder was
# made before this fix (the loss's class weights), and data that fails only when first loaded.
LATE_ERRORS = {
    "class_weights=[1] for two classes": (["--set", "class_weights=[1]"], None, "lists 1 weight(s) but there are 2 classes"),
    "class_weights=[1,2,3] with ce+dice": (["--set", "class_weights=[1,2,3]", "--set", 'loss="ce+dice"'], None,
                                           "lists 3 weight(s)"),
    "a validation image that fails to decode": ([], "valid/images/sky0001.png", "sky0001.png"),
    "a training image that fails to decode": ([], "train/images/sky0002.png", "sky0002.png"),
}


@pytest.mark.parametrize("case", list(LATE_ERRORS))
def test_an_error_in_set_up_or_before_training_leaves_no_run_folder(tmp_path, capsys, case):
    extra, spoil, words = LATE_ERRORS[case]
    root = write_sky_folder(tmp_path / "data", n_train=4, n_valid=2, size=32,
                            config=tiny_config(max_iteration=2, interval_validate=1, batch_size=2))
    if spoil is not None:
        spoil_pixels(root / spoil)
    before = names(root)
    capsys.readouterr()
    assert main(["train", str(root), *extra]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and words in err, err
    assert names(root) == before  # no MODEL-tiny: the next run gets MODEL-tiny and --resume finds it


# --- check judges the config train will use ----------------------------------------------------

def test_check_fits_the_recipe_as_train_does(tmp_path, capsys):
    """5 pairs and no config: train fits the batch to the 4 training images, and so does check;
    a batch_size set by hand is judged as set, in both."""
    root = write_sky_folder(tmp_path / "data", n_train=5, n_valid=0, size=32)
    shutil.rmtree(root / "valid")
    assert main(["check", str(root)]) == 0
    out = capsys.readouterr().out
    assert "batch 4 (4 training images)" in out and "problems: none" in out
    for command in ("check", "train"):
        assert main([command, str(root), "--set", "batch_size=8"]) == 1
        assert "batch_size is 8 but there are only 4 training images" in capsys.readouterr().err
    write_config(root, **tiny_config(class_weights=[1]))
    for command in ("check", "train"):  # the loss's weights are judged by check too
        assert main([command, str(root)]) == 1
        assert "lists 1 weight(s) but there are 2 classes" in capsys.readouterr().err
    assert not list(root.glob("MODEL-*"))
