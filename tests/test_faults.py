"""Faults during a run: a kill mid-save, a diverging loss, a full disk, a blocked output folder, runs
started at once, outputs that would replace inputs."""

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import run_cli, tiny_config
from segtrain.outputs.atomic import remove_stale_temps
from segtrain.cli import main
from segtrain.data.synthetic import write_sky_folder

SAVER = textwrap.dedent("""
    import sys, torch
    from segtrain.outputs.checkpoints import save_atomic
    k = 0
    while True:  # 32 MB per save, each one consistent: every value equals k
        save_atomic({"k": k, "w": torch.full((8_000_000,), float(k))}, sys.argv[1])
        print(k, flush=True)
        k += 1
""")


def test_killing_the_process_during_saves_leaves_a_loadable_checkpoint(tmp_path):
    path = tmp_path / "checkpoint.pth.tar"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    for delay in (0.0, 0.05, 0.13, 0.21):
        proc = subprocess.Popen([sys.executable, "-c", SAVER, str(path)], stdout=subprocess.PIPE, text=True, env=env)
        proc.stdout.readline()  # one save done: from here a kill lands during a save
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        ckpt = torch.load(path, weights_only=True)
        assert torch.all(ckpt["w"] == float(ckpt["k"]))
    remove_stale_temps(tmp_path)
    assert os.listdir(tmp_path) == ["checkpoint.pth.tar"]


@pytest.fixture
def root(tmp_path):
    return write_sky_folder(tmp_path / "data", n_train=8, n_valid=2, size=32,
                            config=tiny_config(max_iteration=4, interval_validate=2))


def test_diverging_loss_stops_with_a_message_and_keeps_model_best(root, capsys):
    assert main(["train", str(root), "--set", "lr=1e30"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: loss became") and "at iteration 1 (lr 5.3" in err
    assert "Lower lr" in err and "Traceback" not in err
    for name in ("model_best.pth.tar", "checkpoint.pth.tar"):  # both from the validation at 0
        ckpt = torch.load(root / "MODEL-tiny" / name, weights_only=True)
        assert ckpt["iteration"] == 0
        assert all(torch.isfinite(t.float()).all() for t in ckpt["model_state_dict"].values())


def test_full_disk_is_a_clear_error_and_keeps_the_checkpoint(root, capsys):
    assert main(["train", str(root), "--set", "max_iteration=2"]) == 0
    out = root / "MODEL-tiny"
    checkpoint = (out / "checkpoint.pth.tar").read_bytes()
    # /dev/full answers every write with ENOSPC, as a full disk does.
    (out / "log.csv").unlink()
    (out / "log.csv").symlink_to("/dev/full")
    capsys.readouterr()
    assert main(["train", str(root), "--resume", "--set", "max_iteration=4"]) == 1
    err = capsys.readouterr().err
    assert "log.csv: cannot write (No space left on device)" in err and "Free disk space" in err
    assert err.count("\n") == 1
    assert (out / "checkpoint.pth.tar").read_bytes() == checkpoint


def test_output_folder_blocked_by_a_file_is_a_clear_error(root, capsys):
    # Running as root ignores permissions, so a chmod-ed folder would still be writable; a file in
    # the way of the output folder is an unwritable output that holds for every user.
    (root / "MODEL-tiny").write_text("not a folder")
    assert main(["train", str(root)]) == 1
    err = capsys.readouterr().err
    assert "MODEL-tiny: is a file" in err and "output_dir" in err
    assert (root / "MODEL-tiny").read_text() == "not a folder"
    assert not list(root.glob("MODEL-tiny-*"))


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes to read-only folders")
def test_read_only_data_folder_is_a_clear_error(root, capsys):
    root.chmod(0o555)
    try:
        assert main(["train", str(root)]) == 1
    finally:
        root.chmod(0o755)
    assert "cannot create the output folder" in capsys.readouterr().err


def test_runs_started_at_once_get_a_folder_each(tmp_path, monkeypatch):
    from segtrain.run_folder import claim_run_folder

    # Both runs look for MODEL-tiny before either creates it: the race of two commands started at once.
    both_looked = threading.Barrier(2, timeout=10)
    waited = threading.local()
    exists = Path.exists

    def exists_after_the_other_looked(path):
        if path.name.startswith("MODEL-") and not getattr(waited, "done", False):
            waited.done = True
            both_looked.wait()
        return exists(path)

    monkeypatch.setattr(Path, "exists", exists_after_the_other_looked)
    with ThreadPoolExecutor(2) as pool:
        folders = list(pool.map(lambda _: claim_run_folder(tmp_path, "tiny", log=lambda *a: None), range(2)))
    assert sorted(f.name for f in folders) == ["MODEL-tiny", "MODEL-tiny-2"]


def test_outputs_get_the_users_umask(root):
    old = os.umask(0o002)  # the command inherits it; its mode is neither mkstemp's 0600 nor the usual 0644
    try:
        assert run_cli("train", root, "--set", "max_iteration=2", timeout=120).returncode == 0
    finally:
        os.umask(old)
    out = root / "MODEL-tiny"
    for name in ("checkpoint.pth.tar", "model_best.pth.tar", "log.csv", "visualization_viz/iter000000000000.jpg"):
        assert (out / name).stat().st_mode & 0o777 == 0o664, name


def test_predict_never_writes_over_an_input(tmp_path, capsys):
    from PIL import Image

    from conftest import save_fresh_checkpoint
    from segtrain.data.synthetic import sky_sample

    checkpoint = save_fresh_checkpoint(tmp_path / "model.pth.tar", "fcn_resnet18")
    folder = tmp_path / "photos"
    folder.mkdir()
    image, _ = sky_sample(np.random.default_rng(0), 32)
    for name in ("sky.jpg", "sky_overlay.jpg"):  # the second is where sky.jpg's overlay would go
        Image.fromarray(image).save(folder / name)
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    assert main(["predict", str(folder), "--checkpoint", str(checkpoint), "--out", str(folder), "--overlay"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1
    assert f"would overwrite input image {folder / 'sky_overlay.jpg'}" in err
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before
