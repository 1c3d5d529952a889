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
far, so the end lands on time. The poly schedule reads the config at every step
(optimization.make_schedule); a plan that moves the end continues the decay from the factor
reached (optimization.move_end), so a re-plan may stretch or shorten the decay but never raises
the lr.

The plan lives in the run's config (max_iteration, interval_validate, PLAN_KEY), so checkpoints
carry it. A resumed run keeps the saved plan and never plans again: it trains exactly as the
uninterrupted run with that plan would (a plan made from its own timings could not be repeated).
"""

from __future__ import annotations

import math
import re

from segtrain.errors import ConfigError
from segtrain.outputs.run_outputs import RECHECK_TOP, recheck_pairs
from segtrain.training.optimization import DECAY_KEY, lr_factor, move_end

PLAN_KEY = "time_plan"  # in the run's config, as losses.AUTO_KEY: what the plan measured and decided
# max_iteration and interval_validate before the first plan: far beyond any calibration, so the
# loop neither ends nor validates early and the poly schedule stays at its start (factor ~1).
UNPLANNED = 10**9
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
FORMS = ('a number of seconds (e.g. 90) or a duration such as "90s", "30m", "1h30m" or "2h"; '
         "null turns it off")
_NUMBER = r"(\d+(?:\.\d+)?)"
_DURATION = re.compile(rf"(?:{_NUMBER}h)?(?:{_NUMBER}m)?(?:{_NUMBER}s)?")


def budget_seconds(value, source: str = "config") -> float | None:
    """The seconds a time_budget value means (None: off); anything else is one line naming the forms."""
    if value is None:
        return None
    seconds = None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        seconds = float(value)
    elif isinstance(value, str):
        text = value.strip().lower().replace(" ", "")
        match = _DURATION.fullmatch(text)
        if re.fullmatch(_NUMBER, text):
            seconds = float(text)
        elif match and any(match.groups()):
            hours, minutes, secs = (float(group or 0) for group in match.groups())
            seconds = hours * 3600 + minutes * 60 + secs
    if seconds is None or not math.isfinite(seconds) or seconds <= 0:
        raise ConfigError(f"{source}: key 'time_budget' is {value!r}; give {FORMS}.")
    return seconds


def describe_budget(seconds: float) -> str:
    """1800 -> "30m", 5400 -> "1h30m", 90 -> "1m30s": the form a person writes."""
    whole = round(seconds)
    hours, minutes, secs = whole // 3600, whole % 3600 // 60, whole % 60
    text = (f"{hours}h" if hours else "") + (f"{minutes}m" if minutes else "") + (f"{secs}s" if secs else "")
    return text or f"{seconds:g}s"


def resolve_budget(cfg: dict, given: dict, source: str) -> None:
    """In `resolve`: check the key; with a budget, max_iteration and (unless given) interval_validate
    wait for the plan. Which of them the config set is kept for the plan and its message."""
    if budget_seconds(cfg["time_budget"], source) is None:
        return
    cfg[PLAN_KEY] = {"replaced_max_iteration": cfg["max_iteration"] if "max_iteration" in given else None,
                     "interval_given": "interval_validate" in given}
    cfg["max_iteration"] = UNPLANNED
    if "interval_validate" not in given:
        cfg["interval_validate"] = UNPLANNED


def continue_plan(cfg: dict, ckpt: dict, log=print) -> None:
    """On --resume: the checkpoint's plan, when it has one for this budget, replaces the new one.
    A budget that plans the rest anew continues the lr decay from the checkpoint's factor."""
    saved = ckpt.get("config", {})
    seconds = budget_seconds(cfg["time_budget"])
    if seconds is None:
        return
    planned = "planned_at" in saved.get(PLAN_KEY, {})
    if planned and budget_seconds(saved.get("time_budget")) == seconds:
        for key in ("max_iteration", "interval_validate", PLAN_KEY, DECAY_KEY):
            if key in saved:
                cfg[key] = saved[key]
        return
    if planned:
        log(f"time_budget: was {saved.get('time_budget')!r}, now {cfg['time_budget']!r}: planning the rest again.")
    cfg[DECAY_KEY] = [ckpt["iteration"], lr_factor({**cfg, **saved}, ckpt["iteration"])]


def audits_at_the_end(cfg: dict) -> bool:
    """Whether the run's end includes the audit for the report's "Labels to re-check"."""
    return (cfg.get(PLAN_KEY) or {}).get("audit", True)


class TimeBudget:
    """Times the run and plans it; `validated` after each validation, `stepped` after each step.
    Inactive (both do nothing) without a budget and after a resume that continues a saved plan."""

    def __init__(self, run, outputs):
        self.run, self.outputs, self.cfg = run, outputs, run.cfg
        self.seconds = budget_seconds(self.cfg["time_budget"])
        plan = self.cfg.get(PLAN_KEY) or {}
        self.active = self.seconds is not None and "planned_at" not in plan
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
        if "planned_at" in self.cfg[PLAN_KEY] and self.run.progress.iteration < self.cfg["max_iteration"]:
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
        cfg, plan, now = self.cfg, self.cfg[PLAN_KEY], self.run.progress.iteration
        audited_before = plan.get("audit")
        plan["audit"] = audit <= AUDIT_SHARE * self.seconds
        reserve = report + (audit if plan["audit"] else 0.0)
        first = "planned_at" not in plan
        pending = self.run.progress.validated != now  # the first plan comes between validations
        interval = None if first and not plan["interval_given"] else cfg["interval_validate"]
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
        old = cfg["max_iteration"]
        if low != old:
            move_end(cfg, now, low)
        if first:
            cfg["interval_validate"] = interval or max(1, math.ceil(low / validations_wanted))
        plan.update(planned_at=plan.get("planned_at", now), seconds_per_step=step, seconds_per_validation=validation,
                    seconds_after_training=reserve)
        self.outputs.planned(low)
        if first:
            replaced = plan["replaced_max_iteration"]
            self.run.log(f"time_budget {describe_budget(self.seconds)}: ~{low} iterations at {1 / step:.3g} it/s, "
                         f"validation every {cfg['interval_validate']} ({validation:.2g} s each"
                         + ("; interval_validate of the config" if plan["interval_given"] else "")
                         + f"), {reserve:.2g} s kept for the "
                         + ("audit and report at the end" if plan["audit"] else
                            f"report at the end; no audit of the labels then (~{audit:.2g} s, over "
                            f"{AUDIT_SHARE:.0%} of the budget): run segtrain audit afterwards")
                         + (f"; this plan replaces max_iteration {replaced} of the config" if replaced else ""))
        elif low != old:
            self.run.log(f"time_budget: {low} iterations instead of {old} at the {1 / step:.3g} it/s measured so far")
        if not first and plan["audit"] != audited_before:  # the first plan's line said otherwise
            self.run.log(f"time_budget: the audit of the labels at the end (~{audit:.2g} s) "
                         + ("now fits in the budget: it runs" if plan["audit"] else
                            "no longer fits in the budget: run segtrain audit afterwards"))
