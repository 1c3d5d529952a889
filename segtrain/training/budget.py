"""`time_budget`: a run that plans its own length, so training ends on time with its lr schedule
complete (like Ultralytics' `time` argument), instead of being cut off mid-schedule.

The budget is the wall time of the whole command: its clock (runtime/clock.py) starts when the
command starts, so reading the data and building the model count, and the plan keeps back the
time the end-of-run work needs (the audit of every pair for the report's "Labels to re-check",
and drawing the report once more), estimated from the validations' own timings. An audit that
would take more than AUDIT_SHARE of the budget is left out (the plan's line says so and how to
run it later): on a short budget it would crowd out the training it reports on.

The plan: the validation at iteration 0 is timed (its cost, checkpoints and pictures included,
recurs every interval_validate), then WARMUP_STEPS steps run untimed (the first steps pay for
allocator and cache warm-up) and CALIBRATION_STEPS steps are timed. max_iteration becomes the
iterations that fit the time left together with the validations they bring, and interval_validate
(unless the config sets it) gives about VALIDATIONS validations (fewer when they would take more
than VALIDATION_SHARE of the time). Each later validation plans again with the rates measured so
far, so the end lands on time. The budget owns the run's schedule (training/schedule.py), whose
lr decay continues from the factor reached when the end moves, so a re-plan may stretch or
shorten the decay but never raises the lr. The run's plan (config/plan.py) is never changed.

The schedule, with the budget's record of what it measured and decided (`time_plan`), is saved in
every checkpoint. A resumed run keeps the saved schedule and never plans again: it trains exactly
as the uninterrupted run with that schedule would (a plan made from its own timings could not be
repeated).
"""

from __future__ import annotations

import math

from segtrain.config.time_budget import budget_seconds, describe_budget
from segtrain.outputs.run_outputs import RECHECK_TOP, recheck_pairs
from segtrain.training.schedule import Schedule

WARMUP_STEPS = 2
CALIBRATION_STEPS = 8
VALIDATIONS = 10
# ... unless they would take more than this share of the time left: a short budget (or a slow
# validation) gets fewer validations rather than little training.
VALIDATION_SHARE = 0.2
# The audit's cost per image as a multiple of a validation's inference per image: it decodes every
# image from disk at full size (validation reads the cache) and draws its pictures at full size
# (BENCHMARKS.md, section 11).
AUDIT_COST = 2.0
AUDIT_SHARE = 0.25


def resumed_schedule(plan, ckpt: dict, log=print) -> Schedule:
    """A resumed run's schedule. Without a budget, the plan's (a larger max_iteration extends the
    run). With one, the checkpoint's schedule when its budget planned it for these seconds: the run
    trains exactly as the uninterrupted one would. A budget that plans the rest anew continues the
    lr decay from the checkpoint's factor."""
    fresh = Schedule.of_plan(plan)
    if plan.budget_seconds is None:
        return fresh
    saved = Schedule.saved(ckpt)
    saved_budget = ckpt.get("config", {}).get("time_budget")
    if saved.planned and budget_seconds(saved_budget) == plan.budget_seconds:
        return saved
    if saved.planned:
        log(f"time_budget: was {saved_budget!r}, now {plan['time_budget']!r}: planning the rest again.")
    return saved.continued_at(ckpt["iteration"], fresh)


def audits_at_the_end(schedule: Schedule) -> bool:
    """Whether the run's end includes the audit for the report's "Labels to re-check"."""
    return (schedule.time_plan or {}).get("audit", True)


class TimeBudget:
    """Times the run and plans its schedule; `validated` after each validation, `stepped` after
    each step. Inactive (both do nothing) without a budget and after a resume that continues a
    planned schedule."""

    def __init__(self, run, outputs):
        self.run, self.outputs, self.schedule = run, outputs, run.schedule
        self.seconds = run.plan.budget_seconds
        self.active = self.seconds is not None and not self.schedule.planned
        self.validation_times: list[float] = []
        self.inference_times: list[float] = []  # the model's share of each validation
        self.calibration_start = run.progress.iteration + WARMUP_STEPS
        self.start_time = self.start_validating = 0.0
        if self.active:
            outputs.planned(None)  # the run's length is not known yet

    def validated(self, seconds: float, inference: float) -> None:
        """After a validation that took `seconds`, `inference` of them in the model."""
        if not self.active:
            return
        self.validation_times.append(seconds)
        self.inference_times.append(inference)
        if self.schedule.planned and self.run.progress.iteration < self.schedule.max_iteration:
            self._plan()  # not at the end: a longer plan then would restart a finished schedule

    def stepped(self) -> None:
        if not self.active:
            return
        iteration = self.run.progress.iteration
        if iteration == self.calibration_start:
            self.start_time, self.start_validating = self.run.spent(), sum(self.validation_times)
        elif iteration == self.calibration_start + CALIBRATION_STEPS:
            self._plan()

    def _measured(self) -> tuple[float, float, float, float, float]:
        """Seconds: per step, per validation, for the end-of-run audit, for drawing the report after
        it, and of the budget spent; the same on every torchrun rank."""
        import torch

        from segtrain.runtime import distributed

        now = self.run.spent()
        steps = self.run.progress.iteration - self.calibration_start
        training = now - self.start_time - (sum(self.validation_times) - self.start_validating)
        # The first validation also pays for one-off work (imports, first pictures): later ones are typical.
        typical = slice(1, None) if len(self.validation_times) > 1 else slice(None)
        validations = self.validation_times[typical] or [0.0]  # none yet: resumed on one
        inferences = self.inference_times[typical] or [0.0]
        numbers = torch.tensor([training / steps, sum(validations) / len(validations),
                                sum(inferences) / len(inferences), now], dtype=torch.float64,
                               device=self.run.stepper.device)
        distributed.all_reduce_sum(numbers, self.run.ctx)
        step, validation, inference, spent = (float(x) / self.run.ctx.world_size for x in numbers)
        return max(step, 1e-9), validation, self._audit(inference), max(0.0, validation - inference), spent

    def _audit(self, inference: float) -> float:
        """The end-of-run audit's seconds: rank 0 alone passes every pair, and its top pictures
        again, through the model, AUDIT_COST times slower an image than a validation."""
        shard = math.ceil(len(self.run.spec.valid) / self.run.ctx.world_size)
        pairs = recheck_pairs(self.run.spec)
        return (pairs + min(pairs, RECHECK_TOP)) * AUDIT_COST * inference / max(shard, 1)

    def _plan(self) -> None:
        # The report is drawn once more at the end: about what a validation's saving and drawing cost.
        step, validation, audit, report, spent = self._measured()
        schedule, record, now = self.schedule, self.schedule.time_plan, self.run.progress.iteration
        audited_before = record.get("audit")
        record["audit"] = audit <= AUDIT_SHARE * self.seconds
        reserve = report + (audit if record["audit"] else 0.0)
        first = not schedule.planned
        pending = self.run.progress.validated != now  # the first plan comes between validations
        interval = None if first and not record["interval_given"] else schedule.interval_validate
        left = self.seconds - spent - reserve
        affordable = int(VALIDATION_SHARE * left / validation) if validation > 0 else VALIDATIONS
        validations_wanted = max(1, min(VALIDATIONS, affordable))

        def cost(end: int) -> float:
            every = interval or max(1, math.ceil(end / validations_wanted))
            start = now if pending else now + 1
            validations = end // every - (start - 1) // every + (end % every != 0) if end >= start else 0
            return (end - now) * step + validations * validation

        # Cost grows with the end, so the latest end that fits is found by bisection. At least one
        # step more than now: the last step must run at the schedule's end lr.
        low, high = now + 1, now + 1 + max(0, int(left / step))
        while low < high:
            middle = (low + high + 1) // 2
            low, high = (middle, high) if cost(middle) <= left else (low, middle - 1)
        old = schedule.max_iteration
        if low != old:
            schedule.move_end(now, low)
        if first:
            schedule.interval_validate = interval or max(1, math.ceil(low / validations_wanted))
        record.update(planned_at=record.get("planned_at", now), seconds_per_step=step,
                      seconds_per_validation=validation, seconds_after_training=reserve)
        self.outputs.planned(low)
        if first:
            replaced = record["replaced_max_iteration"]
            self.run.log(f"time_budget {describe_budget(self.seconds)}: ~{low} iterations at {1 / step:.3g} it/s, "
                         f"validation every {schedule.interval_validate} ({validation:.2g} s each"
                         + ("; interval_validate of the config" if record["interval_given"] else "")
                         + f"), {reserve:.2g} s kept for the "
                         + ("audit and report at the end" if record["audit"] else
                            f"report at the end; no audit of the labels then (~{audit:.2g} s, over "
                            f"{AUDIT_SHARE:.0%} of the budget): run segtrain audit afterwards")
                         + (f"; this plan replaces max_iteration {replaced} of the config" if replaced else ""))
        elif low != old:
            self.run.log(f"time_budget: {low} iterations instead of {old} at the {1 / step:.3g} it/s measured so far")
        if not first and record["audit"] != audited_before:  # the first plan's line said otherwise
            self.run.log(f"time_budget: the audit of the labels at the end (~{audit:.2g} s) "
                         + ("now fits in the budget: it runs" if record["audit"] else
                            "no longer fits in the budget: run segtrain audit afterwards"))
