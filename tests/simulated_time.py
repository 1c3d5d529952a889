"""A clock the tests control for time_budget runs: time passes only as the run works, a fixed
number of seconds for each piece of work, so what the budget plans does not depend on how fast
or busy the machine is. The run itself is real (data, model, steps, validations, audit); only
its clock is simulated."""

from __future__ import annotations

from segtrain.outputs.run_outputs import RunOutputs
from segtrain.runtime.clock import Clock
from segtrain.training import loop
from segtrain.training.step import Stepper


# The real functions, taken before any test replaces them: a second clock in a test replaces the
# first one's wrappers instead of wrapping them.
REAL_PREPARE, REAL_STEP, REAL_VALIDATE = loop.prepare_run, Stepper.global_step, loop.validate
REAL_VALIDATION, REAL_AUDIT = RunOutputs.validation, loop.audit_best


def _seconds(cost, iteration: int) -> float:
    return cost(iteration) if callable(cost) else cost


class SimulatedTime(Clock):
    """Seconds per piece of work: start-up (reading data, building the model), a training step, a
    validation's pass over the images (`inference`) and its saving and drawing (`saving`), and the
    end-of-run audit. A step's cost may be a function of its iteration (a machine that gets busier
    or quieter), a validation's of its number in this command (0: the first, which pays for one-off
    work). `lrs` records the lr each training step ran with. Made, it times the runs that follow
    (until the next one is made)."""

    def __init__(self, monkeypatch, startup=2.0, step=0.25, inference=0.5, saving=0.25, audit=2.0):
        self.t = 0.0
        super().__init__()
        self.lrs: list[float] = []
        self.validations = 0
        clock = self

        def prepare_run(*args, **kwargs):
            run = REAL_PREPARE(*args, **kwargs)
            clock.t += startup
            return run

        def global_step(stepper, images, masks, iteration, *args, **kwargs):
            clock.lrs.append(stepper.lr)
            result = REAL_STEP(stepper, images, masks, iteration, *args, **kwargs)
            clock.t += _seconds(step, iteration)
            return result

        def validate(*args, **kwargs):
            result = REAL_VALIDATE(*args, **kwargs)
            clock.t += _seconds(inference, clock.validations)
            return result

        def validation(*args, **kwargs):
            REAL_VALIDATION(*args, **kwargs)
            clock.t += _seconds(saving, clock.validations)
            clock.validations += 1

        def audit_best(*args, **kwargs):
            rows = REAL_AUDIT(*args, **kwargs)
            clock.t += audit
            return rows

        monkeypatch.setattr(loop, "prepare_run", prepare_run)
        monkeypatch.setattr(Stepper, "global_step", global_step)
        monkeypatch.setattr(loop, "validate", validate)
        monkeypatch.setattr(RunOutputs, "validation", validation)
        monkeypatch.setattr(loop, "audit_best", audit_best)

    def now(self) -> float:
        return self.t
