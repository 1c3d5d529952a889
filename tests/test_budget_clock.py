"""time_budget on a clock the test controls (simulated_time.py): a re-plan moves the schedule's
end but never raises the lr, a resumed run repeats the uninterrupted run's lr bit for bit across a
re-plan, and the keys `init` writes leave the plan to the budget."""

import re

import pytest
import torch

from segtrain.config.load import resolve
from segtrain.config.recipe import written_out
from segtrain.training.schedule import UNPLANNED, Schedule, poly_factor
from simulated_time import SimulatedTime
from test_budget import budget_root, train
from test_resume import assert_same_state


def first_plan(out: str) -> int:
    return int(re.search(r"time_budget \w+: ~(\d+) iterations", out).group(1))


def assert_never_rises(lrs):
    rises = [(i, a, b) for i, (a, b) in enumerate(zip(lrs, lrs[1:])) if b > a]
    assert not rises, f"the lr rose at step(s) {rises[:3]}"


def test_poly_from_the_start_is_the_plain_schedule():
    for end in (1, 2, 7, 2000):
        for it in range(0, end + 2):
            assert poly_factor(it, end) == (1 - min(it, end - 1) / end) ** 0.9


@pytest.mark.parametrize("ends", [(60, 90, 150), (60, 40, 25), (60, 120, 30, 45)])
def test_moving_the_end_continues_the_decay(ends):
    """Each new end, later or earlier, is set at the next iteration: the factor goes on down from
    where it was, and the last step of the last end runs at that end's smallest factor."""
    schedule = Schedule("poly", ends[0], 10)
    factors, it = [], 0
    for end in ends[1:]:
        factors += [schedule.factor(i) for i in range(it, it + 10)]
        it += 10
        before = Schedule.saved({"schedule": schedule.state()})
        schedule.move_end(it, end)
        assert schedule.max_iteration == end and schedule.factor(it) == before.factor(it)  # no jump
    factors += [schedule.factor(i) for i in range(it, schedule.max_iteration)]
    assert_never_rises(factors)
    start, factor = schedule.decay_from
    assert factors[-1] == pytest.approx(factor * (1 / (schedule.max_iteration - start)) ** 0.9, rel=1e-12)


def test_keys_that_init_writes_leave_the_plan_to_the_budget():
    plan = resolve({**written_out(), "time_budget": "2m"}, "config.list")
    assert plan["interval_validate"] is None and plan["max_iteration"] == written_out()["max_iteration"]
    schedule = Schedule.of_plan(plan)
    assert schedule.interval_validate == schedule.max_iteration == UNPLANNED and not schedule.planned
    assert schedule.time_plan == {"replaced_max_iteration": written_out()["max_iteration"], "interval_given": False}


@pytest.mark.parametrize("before, after", [(1.5, 1.0), (1.0, 1.5)], ids=["quieter", "busier"])
def test_a_replan_never_raises_the_lr(tmp_path, monkeypatch, capsys, before, after):
    """Calibrated while the machine was busier (or quieter) than later: re-plans stretch (or
    shorten) the run, the lr only ever goes down, and the command still ends on time."""
    root = budget_root(tmp_path / "data", "45s")
    clock = SimulatedTime(monkeypatch, startup=4.0, step=lambda it: before if it < 10 else after, audit=6.0)
    train(root, clock=clock)
    out = capsys.readouterr().out
    schedule = Schedule.saved(torch.load(root / "MODEL-tiny" / "checkpoint.pth.tar", weights_only=True))
    assert "instead of" in out
    assert (schedule.max_iteration > first_plan(out)) == (before > after)
    assert_never_rises(clock.lrs)
    assert len(clock.lrs) == schedule.max_iteration
    assert clock.lrs[-1] == 0.02 * schedule.factor(schedule.max_iteration - 1) < 0.02 * 0.2
    assert 40 <= clock.t <= 45  # start-up to audit: the whole command


def test_resume_after_a_replan_repeats_the_uninterrupted_run_bit_for_bit(tmp_path, monkeypatch, capsys):
    """The first validation pays for one-off work (2 s more to save and draw), so the first plan is
    short; the re-plan at the next validation stretches it. A run stopped after that re-plan and
    resumed trains with the same lr at every step, to the same weights."""
    def clock():
        return SimulatedTime(monkeypatch, step=1.0, saving=lambda n: 2.25 if n == 0 else 0.25)

    whole = budget_root(tmp_path / "whole", "60s")
    uninterrupted = clock()
    train(whole, clock=uninterrupted)
    out = capsys.readouterr().out
    # Planned at 14.75 s: 41 iterations, validations at 21 and 41 at the first validation's 2.75 s;
    # at 21, with 0.75 s a validation, 46; at 42 the plan holds.
    assert "time_budget 1m: ~41 iterations" in out and "validation every 21" in out
    assert re.findall(r"time_budget: \d+ iterations instead of \d+", out) == ["time_budget: 46 iterations instead of 41"]
    assert uninterrupted.t <= 60

    root = budget_root(tmp_path / "data", "60s")
    before = clock()  # a clock is the run's from when it is made (it replaces the last one's timing)
    train(root, stop_after=22, clock=before)
    assert torch.load(root / "MODEL-tiny" / "checkpoint.pth.tar", weights_only=True)["schedule"]["decay_from"][0] == 21
    after = clock()
    train(root, resume="", clock=after)
    assert before.lrs + after.lrs == uninterrupted.lrs  # floats compared exactly
    assert_never_rises(uninterrupted.lrs)
    assert_same_state(root / "MODEL-tiny" / "checkpoint.pth.tar", whole / "MODEL-tiny" / "checkpoint.pth.tar")
