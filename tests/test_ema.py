"""EMA of the weights (config ema_decay): the average follows its rule, validation and the
checkpoints use it, and a stopped run resumes exactly."""

import contextlib
import io

import pytest
import torch
from torch import nn

from conftest import tiny_config
from segtrain.cli import main
from segtrain.data.synthetic import write_sky_folder
from segtrain.training.ema import WARMUP, make_ema
from segtrain.use.evaluate import evaluate
from test_distributed import single_process_evaluate, torchrun
from test_resume import assert_same_state, make_root, metric_rows

DECAY = 0.5  # low, so that six iterations already move the average away from the live weights


def test_the_average_follows_its_warmed_up_rule():
    torch.manual_seed(0)
    live = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
    ema = make_ema(live, DECAY)
    expected = {k: v.clone() for k, v in live.state_dict().items() if v.is_floating_point()}
    for n in range(4):
        with torch.no_grad():
            for p in live.parameters():
                p.add_(torch.randn_like(p))
        live(torch.randn(5, 3))  # moves BatchNorm's running statistics
        ema.update_parameters(live)
        decay = min(DECAY, (1 + n) / (WARMUP + n)) if n else 0.0  # the first update copies
        for key, value in live.state_dict().items():
            if value.is_floating_point():
                expected[key] = decay * expected[key] + (1 - decay) * value
    for key, value in ema.module.state_dict().items():
        if value.is_floating_point():  # weights and running statistics alike
            assert torch.allclose(value, expected[key], atol=1e-6), key


@pytest.fixture(scope="module")
def averaged_run(tmp_path_factory):
    """One uninterrupted run with an EMA of the weights and what it printed, read (never changed)
    by the tests below."""
    root = make_root(tmp_path_factory.mktemp("ema") / "data", ema_decay=DECAY)
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert main(["train", str(root)]) == 0
    return root, printed.getvalue()


def test_validation_and_checkpoints_use_the_average(averaged_run):
    root, printed = averaged_run
    assert "validating an EMA of the weights (decay 0.5)" in printed
    ckpt = torch.load(root / "MODEL-tiny" / "checkpoint.pth.tar", weights_only=True)
    averaged, live = ckpt["model_state_dict"], ckpt["live_state_dict"]
    assert ckpt["ema_updates"] == 6 and averaged.keys() == live.keys()
    assert not all(torch.equal(averaged[k], live[k]) for k in averaged)
    # evaluate counts model_state_dict; it equals the logged validation only if that counted the average too
    numbers = evaluate(root, root / "MODEL-tiny" / "checkpoint.pth.tar")
    assert numbers["confusion_matrix"] == ckpt["valid_metrics"]["confusion_matrix"]
    assert float(metric_rows(root / "MODEL-tiny")[-1]["valid/mean_iu"]) == numbers["mean_iu"]


def test_default_is_off(tmp_path):
    root = make_root(tmp_path / "data", max_iteration=1)
    assert main(["train", str(root)]) == 0
    ckpt = torch.load(root / "MODEL-tiny" / "checkpoint.pth.tar", weights_only=True)
    assert ckpt["config"]["ema_decay"] is None and "live_state_dict" not in ckpt and "ema_updates" not in ckpt


def test_stop_and_resume_with_ema_equals_one_run(averaged_run, tmp_path):
    uninterrupted, _ = averaged_run
    root = make_root(tmp_path / "data", ema_decay=DECAY)
    assert main(["train", str(root), "--stop-after", "3"]) == 0  # at a validation point, before validating
    assert main(["train", str(root), "--resume", "--stop-after", "1"]) == 0
    assert main(["train", str(root), "--resume"]) == 0
    out, reference = root / "MODEL-tiny", uninterrupted / "MODEL-tiny"
    assert metric_rows(out) == metric_rows(reference)
    for name in ("checkpoint.pth.tar", "model_best.pth.tar"):
        assert_same_state(out / name, reference / name)
        a, b = (torch.load(folder / name, weights_only=True) for folder in (out, reference))
        assert a["ema_updates"] == b["ema_updates"]
        assert all(torch.equal(a["live_state_dict"][k], b["live_state_dict"][k]) for k in b["live_state_dict"])


def test_bad_decay_is_a_one_line_error(sky_root, capsys):
    for value in ("1", "0", "true", "\"fast\""):
        assert main(["train", str(sky_root), "--set", f"ema_decay={value}"]) == 1
        err = capsys.readouterr().err
        assert err.startswith("error: ") and "'ema_decay'" in err and err.count("\n") == 1
    assert not list(sky_root.glob("MODEL-*"))


def test_torchrun_validates_the_average(tmp_path):
    root = write_sky_folder(tmp_path / "d", n_train=12, n_valid=5, size=32,
                            config=tiny_config(max_iteration=4, interval_validate=2, batch_size=2, ema_decay=DECAY))
    result = torchrun("train", root)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    ckpt = torch.load(root / "MODEL-tiny" / "checkpoint.pth.tar", weights_only=True)
    assert ckpt["ema_updates"] == 4 and not any(k.startswith("module.") for k in ckpt["live_state_dict"])
    single = single_process_evaluate(root, root / "MODEL-tiny" / "checkpoint.pth.tar")
    assert float(metric_rows(root / "MODEL-tiny")[-1]["valid/mean_iu"]) == single["mean_iu"]
    assert single["confusion_matrix"] == ckpt["valid_metrics"]["confusion_matrix"]
