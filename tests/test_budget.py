"""time_budget: its forms and one-line errors, a run that ends on time with its schedule complete,
and --resume continuing the saved plan exactly. Runs are timed by a clock the test controls
(simulated_time.py), so they pass on a machine at any load."""

import csv
import shutil

import pytest
import torch

from conftest import run_cli, tiny_config
from segtrain import api
from segtrain.config.load import parse_overrides
from segtrain.data.synthetic import write_sky_folder
from segtrain.errors import ConfigError
from segtrain.config.time_budget import budget_seconds, describe_budget
from segtrain.training.schedule import Schedule
from simulated_time import SimulatedTime
from test_resume import assert_same_state


def budget_root(path, budget):
    """The tiny folder and model; interval_validate left to the plan, max_iteration 6 for it to replace."""
    cfg = {key: value for key, value in tiny_config(time_budget=budget, threads=1).items() if key != "interval_validate"}
    return write_sky_folder(path, n_train=12, n_valid=4, size=32, config=cfg)


def log_rows(folder):
    with open(folder / "log.csv") as f:
        return list(csv.DictReader(f))


@pytest.mark.parametrize("value, seconds", [("30m", 1800), ("90s", 90), ("1h30m", 5400), ("2h", 7200),
                                            (" 1h 5s ", 3605), ("2.5m", 150), ("45", 45), (90, 90), (1.5, 1.5)])
def test_budget_forms(value, seconds):
    assert budget_seconds(value) == seconds
    assert budget_seconds(describe_budget(seconds)) == pytest.approx(seconds, abs=0.5)


@pytest.mark.parametrize("value", ["30x", "", "m", "1m1h", "-5", 0, -3, True, [30], "inf"])
def test_bad_budget_is_one_line_naming_the_forms(value):
    with pytest.raises(ConfigError) as error:
        budget_seconds(value, "config.list")
    message = str(error.value)
    assert message.startswith("config.list: key 'time_budget' is ") and '"30m", "1h30m"' in message
    assert "\n" not in message


def test_bad_budget_from_the_command_line(tmp_path):
    root = budget_root(tmp_path / "data", "10s")
    result = run_cli("train", root, "--set", "time_budget=30x", timeout=120)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    lines = (result.stdout + result.stderr).strip().splitlines()
    assert len(lines) == 1 and "'time_budget' is '30x'" in lines[0] and '"90s"' in lines[0], lines
    assert not list(root.glob("MODEL-*"))


def train(root, *args, clock, resume=None, stop_after=None):
    """`segtrain train ROOT --set ARGS...` on the given clock."""
    api.train(root, parse_overrides(list(args)), resume=resume, stop_after=stop_after, clock=clock)


def test_run_ends_on_time_with_the_schedule_complete(tmp_path, monkeypatch, capsys):
    root = budget_root(tmp_path / "data", "40s")
    # 2 s start-up, 1 s a step, 0.75 s a validation (0.5 s of it in the model), 6 s for the audit.
    clock = SimulatedTime(monkeypatch, step=1.0, audit=6.0)
    train(root, clock=clock)
    out = capsys.readouterr().out
    assert "time_budget 40s: ~27 iterations" in out and "replaces max_iteration 6 of the config" in out
    # 26 images (16 pairs, 10 pictures) at twice 0.125 s, and 0.25 s to draw the report.
    assert "6.8 s kept for the audit and report at the end" in out
    assert "instead of" not in out  # every step and validation cost what the plan measured: no re-plan
    # Planned at 12.75 s, after 10 steps: 17 more, validations at 12, 18, 24 and 27, the audit;
    # the command, start-up and audit included, ends within the budget.
    assert clock.t == 12.75 + 17 + 4 * 0.75 + 6.0 == 38.75
    folder = root / "MODEL-tiny"
    rows = log_rows(folder)
    ckpt = torch.load(folder / "checkpoint.pth.tar", weights_only=True)
    schedule = Schedule.saved(ckpt)
    planned = schedule.max_iteration
    assert planned == 27 and ckpt["iteration"] == planned == int(rows[-1]["iteration"]) == len(clock.lrs)
    # The last step ran at the poly schedule's end, not cut off on the way down.
    assert clock.lrs[-1] == 0.02 * schedule.factor(planned - 1) < 0.02 * 0.1
    # The plan is what the config said: the budget changed the schedule, not the plan.
    assert ckpt["config"]["max_iteration"] == 6 and ckpt["config"]["interval_validate"] is None
    validations = [int(r["iteration"]) for r in rows if r["valid/loss"]]
    assert len(validations) >= 3 and validations[0] == 0 and validations[-1] == planned
    # The report shows the plan (max_iteration 6 of the config) and the schedule the budget made of it.
    report = (folder / "report.html").read_text()
    every = ckpt["schedule"]["interval_validate"]
    assert f"schedule: 27 iterations, validation every {every}, planned by time_budget &#x27;40s&#x27;" in report


def test_resume_continues_the_saved_plan_exactly(tmp_path, monkeypatch, capsys):
    root = budget_root(tmp_path / "data", "40s")
    train(root, stop_after=12, clock=SimulatedTime(monkeypatch, step=1.0))  # planned after 10 steps
    saved = torch.load(root / "MODEL-tiny" / "checkpoint.pth.tar", weights_only=True)["schedule"]
    assert saved["time_plan"]["planned_at"] == 10 and saved["max_iteration"] > 20
    other = shutil.copytree(root, tmp_path / "other")
    capsys.readouterr()
    # Resumed runs on a slower machine: a new plan would differ, the saved one is kept.
    train(root, resume="", clock=SimulatedTime(monkeypatch, step=3.0))
    assert "time_budget" not in capsys.readouterr().out  # no new plan, no re-planning
    train(other, resume="", stop_after=5, clock=SimulatedTime(monkeypatch, step=3.0))
    train(other, resume="", clock=SimulatedTime(monkeypatch, step=3.0))
    assert_same_state(root / "MODEL-tiny" / "checkpoint.pth.tar", other / "MODEL-tiny" / "checkpoint.pth.tar")
    final = torch.load(root / "MODEL-tiny" / "checkpoint.pth.tar", weights_only=True)
    assert final["iteration"] == final["schedule"]["max_iteration"] == saved["max_iteration"]
    assert final["schedule"]["interval_validate"] == saved["interval_validate"]


def test_an_audit_over_a_quarter_of_the_budget_is_left_out(tmp_path, monkeypatch, capsys):
    root = budget_root(tmp_path / "data", "40s")
    # A slow model: 2 s for the 4 validation images, so ~26 s to audit 16 pairs and 10 pictures.
    clock = SimulatedTime(monkeypatch, step=1.0, inference=2.0, audit=26.0)
    train(root, clock=clock)
    out = capsys.readouterr().out
    assert "no audit of the labels then (~26 s, over 25% of the budget): run segtrain audit afterwards" in out
    assert not (root / "MODEL-tiny" / "audit").exists() and "labels to re-check" not in out
    assert 36 <= clock.t <= 40
