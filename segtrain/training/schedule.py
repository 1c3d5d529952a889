"""The run's schedule: how long it trains (max_iteration), how often it validates
(interval_validate) and the learning rate's decay over that length.

The plan (config/plan.py) fixes the schedule of a run without a time budget. With one, the budget
(training/budget.py) owns the schedule: it starts unplanned and is planned, then re-planned, from
measured speed. Moving the end continues the poly decay from the factor it has reached
(`move_end`), so a re-plan may stretch or shorten the decay but never raises the lr. The schedule
is the run's state, not its plan: checkpoints save it (`state`) and a resumed run continues it.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Mapping

from segtrain.config.plan import Plan

# max_iteration and interval_validate of a budget's schedule before its first plan: far beyond any
# calibration, so the loop neither ends nor validates early and the poly decay stays at its start.
UNPLANNED = 10**9


def poly_factor(it: int, max_iteration: int, start: tuple[int, float] = (0, 1.0)) -> float:
    """Poly (power 0.9) from `start` = (iteration, factor) down to 0 at max_iteration; from (0, 1.0)
    it is the plain poly schedule (the same floats as without a start)."""
    first, factor = start
    return factor * (1 - (min(it, max_iteration - 1) - first) / (max_iteration - first)) ** 0.9


@dataclass
class Schedule:
    lr_schedule: str  # "poly" or "constant", the plan's
    max_iteration: int
    interval_validate: int
    decay_from: tuple[int, float] = (0, 1.0)  # (iteration, factor) the poly decay continues from
    # A budget's record of what it measured and decided (budget.py), saved with the schedule; None
    # without a budget.
    time_plan: dict[str, Any] | None = field(default=None)

    @classmethod
    def of_plan(cls, plan: Plan) -> Schedule:
        """The schedule a new run starts with. A budget plans max_iteration, and interval_validate
        unless the config sets it; its record says which of them the config set."""
        if plan.budget_seconds is None:
            return cls(plan["lr_schedule"], plan["max_iteration"], plan["interval_validate"])
        return cls(plan["lr_schedule"], UNPLANNED, plan["interval_validate"] or UNPLANNED,
                   time_plan={"replaced_max_iteration": plan["max_iteration"],
                              "interval_given": plan["interval_validate"] is not None})

    @classmethod
    def saved(cls, ckpt: Mapping[str, Any]) -> Schedule:
        """A checkpoint's schedule; one written before the schedule had its own entry kept it in
        the run's config (max_iteration, interval_validate, time_plan, poly_decay_from)."""
        state = ckpt.get("schedule")
        if state is None:
            config = ckpt.get("config", {})
            state = {"lr_schedule": config.get("lr_schedule", "constant"), "max_iteration": config["max_iteration"],
                     "interval_validate": config["interval_validate"],
                     "decay_from": config.get("poly_decay_from") or (0, 1.0), "time_plan": config.get("time_plan")}
        return cls(state["lr_schedule"], int(state["max_iteration"]), int(state["interval_validate"]),
                   (int(state["decay_from"][0]), float(state["decay_from"][1])), state["time_plan"])

    def state(self) -> dict[str, Any]:
        """What a checkpoint stores (built-ins only: checkpoints load with weights_only)."""
        return {"lr_schedule": self.lr_schedule, "max_iteration": self.max_iteration,
                "interval_validate": self.interval_validate, "decay_from": list(self.decay_from),
                "time_plan": None if self.time_plan is None else dict(self.time_plan)}

    @property
    def planned(self) -> bool:
        """Whether a time budget has planned this schedule (never, without a budget)."""
        return self.time_plan is not None and "planned_at" in self.time_plan

    def factor(self, it: int) -> float:
        """The lr's factor at iteration `it`: LambdaLR reads it at every step."""
        if self.lr_schedule != "poly":
            return 1.0
        return poly_factor(it, self.max_iteration, self.decay_from)

    def move_end(self, it: int, max_iteration: int) -> None:
        """A new end at iteration `it`: the decay goes on from the factor it has reached and ends at
        the new end, so a longer run decays more slowly and a shorter one faster, but the lr never
        jumps back up (which recomputing poly over the new length would do)."""
        self.decay_from = (it, self.factor(it))
        self.max_iteration = max_iteration

    def continued_at(self, it: int, fresh: Schedule) -> Schedule:
        """`fresh` (a new plan's schedule) taking over from this one at iteration `it`: the decay
        continues from this schedule's factor there."""
        return replace(fresh, decay_from=(it, self.factor(it)))

    def due(self, it: int) -> bool:
        """Whether iteration `it` validates: every interval_validate iterations and at the end."""
        return it % self.interval_validate == 0 or it == self.max_iteration
