"""Resume: stopping and continuing changes nothing; a SIGTERM mid-run saves a checkpoint that resumes."""

import csv
import os
import shutil
import signal
import subprocess
import sys

import pytest
import torch

from conftest import tiny_config
from segtrain.cli import main
from segtrain.outputs.logcsv import COLUMNS, keep_rows_through
from segtrain.data.synthetic import write_sky_folder

# 12 training images / batch 4 = 3 batches per epoch; validation at 0, 3 and 6.
RUN = tiny_config(max_iteration=6, interval_validate=3, log_interval=1)


def make_root(path, **changes):
    return write_sky_folder(path, n_train=12, n_valid=4, size=32, config={**RUN, **changes})


def metric_rows(folder):
    with open(folder / "log.csv") as f:
        return [{k: v for k, v in row.items() if k != "elapsed_time"} for row in csv.DictReader(f)]


def assert_same_state(a, b):
    ca = torch.load(a, weights_only=True)
    cb = torch.load(b, weights_only=True)
    assert ca["iteration"] == cb["iteration"] and ca["best_mean_iu"] == cb["best_mean_iu"]
    for key, tensor in ca["model_state_dict"].items():
        assert torch.equal(tensor, cb["model_state_dict"][key]), key
    for pa, pb in zip(ca["optim_state_dict"]["state"].values(), cb["optim_state_dict"]["state"].values()):
        assert pa.keys() == pb.keys()  # SGD: momentum_buffer; AdamW: step, exp_avg, exp_avg_sq
        for key in pa:
            assert torch.equal(torch.as_tensor(pa[key]), torch.as_tensor(pb[key])), key


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """One uninterrupted run of RUN."""
    root = make_root(tmp_path_factory.mktemp("ref") / "data")
    assert main(["train", str(root)]) == 0
    return root / "MODEL-tiny"


@pytest.mark.parametrize("workers", [0, 1])
def test_stop_and_resume_equals_one_run(tmp_path, reference, workers, capsys):
    root = make_root(tmp_path / "data", n_workers=workers)
    # Stop at 3 (a validation point, before its validation), then at 4 (between validations), then finish.
    assert main(["train", str(root), "--stop-after", "3"]) == 0
    out = root / "MODEL-tiny"
    assert torch.load(out / "checkpoint.pth.tar", weights_only=True)["iteration"] == 3
    assert main(["train", str(root), "--resume", "--stop-after", "1"]) == 0
    assert torch.load(out / "checkpoint.pth.tar", weights_only=True)["iteration"] == 4
    # Then as if the process had been killed later: rows past the checkpoint, a half-written row,
    # and the temporary file of an unfinished checkpoint write are left behind.
    with open(reference / "log.csv") as f:
        later = [line for line in f.readlines()[1:] if int(line.split(",")[1]) >= 4]
    with open(out / "log.csv", "a") as f:
        f.writelines(later)
        f.write("2,7,0.61")
    (out / ".checkpoint.pth.tar.x1y2.tmp").write_bytes(b"partial")
    capsys.readouterr()
    assert main(["train", str(root), "--resume"]) == 0
    assert f"dropped {len(later) + 1} log.csv row(s)" in capsys.readouterr().out
    assert not list(out.glob(".*.tmp"))
    assert not (root / "MODEL-tiny-2").exists()
    assert metric_rows(out) == metric_rows(reference)
    assert_same_state(out / "checkpoint.pth.tar", reference / "checkpoint.pth.tar")
    assert_same_state(out / "model_best.pth.tar", reference / "model_best.pth.tar")
    times = [float(r["elapsed_time"]) for r in csv.DictReader(open(out / "log.csv"))]
    assert times == sorted(times)  # elapsed time carries on across invocations


def test_adamw_stop_and_resume_equals_one_run(tmp_path, capsys):
    uninterrupted = make_root(tmp_path / "ref", optimizer="adamw", lr=0.001)
    assert main(["train", str(uninterrupted)]) == 0
    root = make_root(tmp_path / "data", optimizer="adamw", lr=0.001)
    assert main(["train", str(root), "--stop-after", "4"]) == 0
    assert main(["train", str(root), "--resume"]) == 0
    out, reference = root / "MODEL-tiny", uninterrupted / "MODEL-tiny"
    assert metric_rows(out) == metric_rows(reference)
    assert_same_state(out / "checkpoint.pth.tar", reference / "checkpoint.pth.tar")
    assert "exp_avg" in torch.load(out / "checkpoint.pth.tar", weights_only=True)["optim_state_dict"]["state"][0]
    # Another optimizer's state would not fit: refused before anything is written.
    capsys.readouterr()
    assert main(["train", str(root), "--resume", "--set", "optimizer=sgd", "--set", "max_iteration=8"]) == 1
    assert "optimizer 'adamw' (this run: 'sgd')" in capsys.readouterr().err


def test_log_is_cut_back_to_the_checkpoint(tmp_path):
    path = tmp_path / "log.csv"
    def row(split, iteration):
        cells = {c: "" for c in COLUMNS}
        cells.update(epoch="0", iteration=str(iteration), elapsed_time="1.0")
        cells[f"{split}/loss"] = "0.5"
        return ",".join(cells[c] for c in COLUMNS) + "\n"
    lines = [",".join(COLUMNS) + "\n", row("valid", 0), row("train", 0), row("train", 1), row("valid", 2),
             row("train", 2), row("train", 3)]
    path.write_text("".join(lines))
    assert keep_rows_through(path, 2, validated=True) == 2
    assert path.read_text() == "".join(lines[:5])
    assert keep_rows_through(path, 2, validated=False) == 1  # the validation at 2 is redone on resume
    assert path.read_text() == "".join(lines[:4])
    assert keep_rows_through(path, 2, validated=False) == 0


def test_larger_max_iteration_extends_a_finished_run(tmp_path, reference, capsys):
    root = tmp_path / "data"
    shutil.copytree(reference.parent, root)
    before = metric_rows(root / "MODEL-tiny")
    assert main(["train", str(root), "--resume"]) == 0  # nothing left to do: says so, changes nothing
    assert "already reached max_iteration 6" in capsys.readouterr().out
    assert metric_rows(root / "MODEL-tiny") == before

    assert main(["train", str(root), "--resume", "--set", "max_iteration=9"]) == 0
    assert "max_iteration 6 -> 9" in capsys.readouterr().out
    rows = metric_rows(root / "MODEL-tiny")
    assert rows[: len(before)] == before
    added = [(("valid" if r["valid/loss"] else "train"), int(r["iteration"])) for r in rows[len(before):]]
    assert added == [("train", 6), ("train", 7), ("train", 8), ("valid", 9)]
    ckpt = torch.load(root / "MODEL-tiny" / "checkpoint.pth.tar", weights_only=True)
    # The poly schedule is recomputed for the new max_iteration (it decays to ~0 at the new end).
    assert ckpt["iteration"] == 9 and ckpt["config"]["max_iteration"] == 9
    assert ckpt["optim_state_dict"]["param_groups"][0]["lr"] == pytest.approx(RUN["lr"] * (1 - 8 / 9) ** 0.9)


@pytest.mark.parametrize("change, words", [
    (["--set", "model=lraspp_mobilenet_v3_large"], ["model 'fcn_resnet18' (this run: 'lraspp_mobilenet_v3_large')"]),
    (["--set", "image_size=48"], ["image_size [32, 32] (this run: [48, 48])"]),
    ("classes", ["classes ['sky', 'cloud'] (this run: ['clear', 'overcast'])"]),
])
def test_checkpoint_of_another_setup_is_refused(tmp_path, reference, capsys, change, words):
    root = tmp_path / "data"
    shutil.copytree(reference.parent, root)
    if change == "classes":
        (root / "class_names.list").write_text("clear\novercast\n")
        change = []
    before = {p: p.read_bytes() for p in (root / "MODEL-tiny").rglob("*") if p.is_file()}
    assert main(["train", str(root), "--resume", *change]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "cannot resume" in err and err.count("\n") == 1
    for word in words:
        assert word in err
    assert {p: p.read_bytes() for p in (root / "MODEL-tiny").rglob("*") if p.is_file()} == before


def test_resume_without_a_checkpoint_or_from_weights_only_is_refused(tmp_path, capsys):
    root = make_root(tmp_path / "data")
    assert main(["train", str(root), "--resume"]) == 1
    assert "MODEL-tiny/checkpoint.pth.tar: no checkpoint to resume from" in capsys.readouterr().err
    torch.save({"w": torch.ones(2)}, root / "weights.pth")
    assert main(["train", str(root), "--resume", "weights.pth"]) == 1
    assert "no training state to resume" in capsys.readouterr().err
    assert not list(root.glob("MODEL-*"))


def start_cli(*args):
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "2"}
    return subprocess.Popen([sys.executable, "-m", "segtrain", *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)


def wait_for(stream, text):
    for line in stream:
        if text in line:
            return line
    raise AssertionError(f"{text!r} never printed")


def finish(proc):
    """The rest of stderr (read through the same file object as wait_for, so nothing buffered is lost)."""
    err = proc.stderr.read()
    proc.stdout.read()
    proc.wait(timeout=120)
    return err


def test_sigterm_mid_training_saves_a_checkpoint_that_resumes_exactly(tmp_path, reference):
    root = make_root(tmp_path / "data")
    proc = start_cli("train", root)
    wait_for(proc.stdout, "iter 2/6")
    proc.send_signal(signal.SIGTERM)
    err = finish(proc)
    assert proc.returncode == 143, err
    assert "SIGTERM received: finishing this step" in err
    assert "stopped by SIGTERM at iteration" in err and "run the same command with --resume added" in err
    assert "Traceback" not in err
    stopped_at = torch.load(root / "MODEL-tiny" / "checkpoint.pth.tar", weights_only=True)["iteration"]
    assert 2 <= stopped_at < 6
    assert main(["train", str(root), "--resume"]) == 0
    assert metric_rows(root / "MODEL-tiny") == metric_rows(reference)
    assert_same_state(root / "MODEL-tiny" / "checkpoint.pth.tar", reference / "checkpoint.pth.tar")


def test_second_signal_stops_at_once_and_leaves_the_checkpoint_loadable(tmp_path):
    root = make_root(tmp_path / "data", image_size=96, max_iteration=50, interval_validate=50)
    proc = start_cli("train", root)
    wait_for(proc.stdout, "iter 1/50")
    proc.send_signal(signal.SIGTERM)
    wait_for(proc.stderr, "SIGTERM received")
    proc.send_signal(signal.SIGTERM)
    err = "SIGTERM received" + finish(proc)
    assert proc.returncode == 143
    assert "second SIGTERM: stopped at once" in err and "Traceback" not in err
    out_dir = root / "MODEL-tiny"
    assert torch.load(out_dir / "checkpoint.pth.tar", weights_only=True)["iteration"] in (0, 1, 2)
    assert not list(out_dir.glob(".*.tmp"))


def test_resuming_from_a_checkpoint_older_than_the_runs_latest_is_refused(tmp_path, capsys):
    root = make_root(tmp_path / "data")
    out = root / "MODEL-tiny"
    assert main(["train", str(root), "--stop-after", "3"]) == 0
    older = tmp_path / "at3.pth.tar"
    shutil.copy(out / "checkpoint.pth.tar", older)
    assert main(["train", str(root), "--resume"]) == 0
    # As when the last validations did not improve: model_best is from iteration 3, the run ended at 6.
    shutil.copy(older, out / "model_best.pth.tar")
    before = {name: (out / name).read_bytes() for name in ("log.csv", "checkpoint.pth.tar", "model_best.pth.tar")}
    capsys.readouterr()
    assert main(["train", str(root), "--resume", str(out / "model_best.pth.tar")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1
    assert "model_best.pth.tar: is at iteration 3, but this run's" in err and "is at iteration 6" in err
    assert "would drop the later log.csv rows" in err and '"pretrained_net"' in err
    assert {name: (out / name).read_bytes() for name in before} == before
    assert not (root / "MODEL-tiny-2").exists()
