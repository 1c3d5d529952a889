"""Every error path ends the process within seconds, with data-loading workers on: an unreadable
mask or image met in a worker, a full disk during a save, a second SIGTERM during a save."""

import os
import signal
import subprocess
import sys
import threading

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import run_cli, tiny_config
from segtrain.cli import main
from segtrain.data.labels import DETECTION_SAMPLE, spread_sample
from segtrain.data.synthetic import write_sky_folder
from test_resume import wait_for

TIMEOUT = 60  # seconds; a tiny run takes a few
WORKERS = {"n_workers": 2, "cache_mb": 0}  # nothing cached: every sample is read in a worker

LAUNCH = "import sys\n{}\nfrom segtrain.cli import main\nsys.exit(main(sys.argv[1:]))"


def start(setup: str, *args) -> subprocess.Popen:
    """`segtrain ARGS` in a subprocess that first runs `setup`; in a session of its own, so that a
    hung process can be killed together with its workers."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "2"}
    return subprocess.Popen([sys.executable, "-c", LAUNCH.format(setup), *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, start_new_session=True)


def ended(proc: subprocess.Popen) -> str:
    """Its stderr once it has exited; still running after TIMEOUT is a hang."""
    try:
        return proc.communicate(timeout=TIMEOUT)[1]
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        pytest.fail(f"still running {TIMEOUT} s later: the process hangs")


def worker_root(path):
    """36 training images read in 3 batches of 12 (so every one is read) and 4 validation images."""
    return write_sky_folder(path, n_train=36, n_valid=4, size=32,
                            config=tiny_config(batch_size=12, max_iteration=3, interval_validate=3, **WORKERS))


def unsampled_mask(root):
    """A training mask that label detection does not look at, so only a worker reads it."""
    train, valid = (sorted((root / split / "labels").glob("*.png")) for split in ("train", "valid"))
    return next(p for p in train if p not in spread_sample(train + valid, DETECTION_SAMPLE))


def assert_one_line_error(result, *words):
    assert result.returncode == 1, result.stderr
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1, result.stderr
    for word in words:
        assert word in result.stderr


def test_bad_mask_value_in_a_training_worker_exits_with_one_line(tmp_path):
    root = worker_root(tmp_path / "data")
    label = unsampled_mask(root)
    mask = np.array(Image.open(label))
    mask[0, 0] = 100
    Image.fromarray(mask).save(label)
    result = run_cli("train", root, timeout=TIMEOUT)
    assert_one_line_error(result, f"{label.name}: label value 100 fits no class", "ignore_index")


def test_corrupt_image_in_a_validation_worker_exits_with_one_line(tmp_path):
    root = worker_root(tmp_path / "data")
    image = root / "valid" / "images" / "sky0000.png"
    data = bytearray(image.read_bytes())
    third = len(data) // 3
    data[third:third + 200] = bytes(200)  # damaged inside: header and end are whole, so the start-up checks pass
    image.write_bytes(bytes(data))
    result = run_cli("train", root, timeout=TIMEOUT)
    assert_one_line_error(result, f"{image.name}: cannot read this image", "Replace or remove the file")


@pytest.fixture
def stopped_run(tmp_path):
    """A run with workers stopped at iteration 1 (checkpoint written), to be resumed."""
    root = write_sky_folder(tmp_path / "data", n_train=12, n_valid=4, size=32,
                            config=tiny_config(max_iteration=6, interval_validate=3, log_interval=1, **WORKERS))
    assert main(["train", str(root), "--stop-after", "1", "--set", "n_workers=0"]) == 0
    out = root / "MODEL-tiny"
    return root, {p: p.read_bytes() for p in out.glob("*.pth.tar")}


def test_full_disk_during_a_save_exits_with_one_line_and_keeps_the_checkpoints(stopped_run):
    root, before = stopped_run
    out = root / "MODEL-tiny"
    # A file size limit makes writes past it fail (EFBIG) as a full disk does (ENOSPC), for root too and
    # without mounting anything; torch.save then raises a RuntimeError, not the OSError.
    limit = os.path.getsize(out / "checkpoint.pth.tar") // 2
    setup = ("import resource, signal\nsignal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
             f"resource.setrlimit(resource.RLIMIT_FSIZE, ({limit}, {limit}))")
    proc = start(setup, "train", root, "--resume")
    err = ended(proc)
    assert proc.returncode == 1, err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert ".pth.tar: cannot write (File too large)" in err and "Free disk space" in err
    for path, content in before.items():
        assert path.read_bytes() == content, path
    assert not list(out.glob(".*.tmp"))


# The clean stop's save waits in a write in the middle of torch.save for the second signal
# (torch then reports the exception raised in the write as a RuntimeError of its own).
HELD_STOP_SAVE = """
import time, torch
from segtrain.runtime import interrupt
class HeldFile:
    writes = 0
    def __init__(self, file):
        self.file = file
    def write(self, data):
        if interrupt.requested():
            HeldFile.writes += 1
            if HeldFile.writes == 3:
                print("saving", flush=True)
                time.sleep(600)
        return self.file.write(data)
    def flush(self):
        self.file.flush()
save = torch.save
torch.save = lambda obj, f, **kwargs: save(obj, HeldFile(f), **kwargs)
"""


def test_second_sigterm_during_a_save_exits_at_once_and_keeps_the_checkpoint(stopped_run):
    root, before = stopped_run
    out = root / "MODEL-tiny"
    proc = start(HELD_STOP_SAVE, "train", root, "--resume")
    watchdog = threading.Timer(TIMEOUT, os.killpg, (proc.pid, signal.SIGKILL))  # wait_for reads without a timeout
    watchdog.start()
    try:
        wait_for(proc.stdout, "iter 2/6")
        proc.send_signal(signal.SIGTERM)
        wait_for(proc.stdout, "saving")
        proc.send_signal(signal.SIGTERM)
    finally:
        watchdog.cancel()
        err = ended(proc)
    assert proc.returncode == 143, err
    assert "second SIGTERM: stopped at once. The last checkpoint saved is intact" in err
    assert "Traceback" not in err
    for path, content in before.items():
        assert path.read_bytes() == content, path
    assert torch.load(out / "checkpoint.pth.tar", weights_only=True)["iteration"] == 1
    assert not list(out.glob(".*.tmp"))


def test_a_third_signal_ends_the_process_outright():
    """After the second signal's StopNow, the way out (shutting workers down) must not be cut short by
    yet another StopNow: a third signal takes the default action, ending the process."""
    from segtrain.runtime import interrupt

    with interrupt.graceful_stop():
        os.kill(os.getpid(), signal.SIGTERM)
        with pytest.raises(interrupt.StopNow):
            os.kill(os.getpid(), signal.SIGTERM)
        assert signal.getsignal(signal.SIGTERM) == signal.getsignal(signal.SIGINT) == signal.SIG_DFL
