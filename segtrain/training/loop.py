"""The training loop: folder -> data -> model -> iterations with validation -> checkpoints.

`train` reads top to bottom, like torchvision's reference train.py: set up (setup.py), then for
each iteration: stop if asked, validate and save when due, take one step. Validation runs at
iteration 0, every `interval_validate` iterations and at the end, as in the original tool.
Everything written goes through one outputs object, which does nothing on torchrun ranks but 0.
"""

from __future__ import annotations

import contextlib
import math
import shutil
from pathlib import Path

from segtrain.config.plan import Plan
from segtrain.data.folder import too_large_to_train
from segtrain.data.sampling import sample_position
from segtrain.evaluation.metrics import row_scores
from segtrain.evaluation.validation import validate
from segtrain.run_folder import BEST_NAME, CHECKPOINT_NAME, run_folder
from segtrain.outputs.run_outputs import NoOutputs, RunOutputs
from segtrain.runtime import distributed, interrupt
from segtrain.runtime.clock import Clock
from segtrain.runtime.workers import batches_of
from segtrain.training.budget import TimeBudget, audits_at_the_end
from segtrain.training.loaders import make_loaders
from segtrain.training.resume import restore_rng
from segtrain.training.setup import TrainingRun, prepare_run
from segtrain.training.step import TrainingError


def train(root: Path, plan: Plan, class_names: list[str] | None = None, log=print,
          resume: str | None = None, stop_after: int | None = None, clock: Clock | None = None) -> Path:
    """Train on the folder ROOT with a resolved plan (config/load.py); returns the output folder.

    class_names, when given (an --image_type preset), stand in for a missing class_names.list.
    resume: None starts a new run; "" continues MODEL-<output_dir>/checkpoint.pth.tar; else the
    checkpoint to continue. stop_after: train that many iterations in this call, save and return
    (the schedule still runs to max_iteration). A SIGTERM/SIGINT (see runtime/interrupt.py) saves
    and raises interrupt.Stopped. clock: the command's (runtime/clock.py), which a time_budget
    counts from; by default one started now.
    """
    clock = clock if clock is not None else Clock()
    root = Path(root)
    run = prepare_run(root, plan, class_names, resume, clock, log)
    plan, schedule, progress = run.plan, run.schedule, run.progress  # the plan fitted to the folder
    # Every way out runs these callbacks, last registered first: the loaders' workers must end even
    # when the outputs cannot be opened, or the process would print its error and hang.
    with contextlib.ExitStack() as cleanup:
        if run.folder_lock is not None:
            cleanup.callback(run.folder_lock.release)  # last of all: no other run may start in it before
        cleanup.enter_context(explain_out_of_memory(run))  # sees the error after clean-up
        cleanup.enter_context(remove_if_untrained(run))
        cleanup.callback(distributed.shutdown, run.ctx)
        position = sample_position(progress.iteration, len(run.spec.train), plan["batch_size"], run.ctx.world_size)
        train_loader, sampler, valid_loader, unlabeled_loader = make_loaders(
            run.spec, plan, run.stepper.device, run.workers, *position, ctx=run.ctx, log=run.log,
            unlabeled=run.unlabeled, iteration=progress.iteration)
        batches = cleanup.enter_context(batches_of(train_loader))
        unlabeled = cleanup.enter_context(batches_of(unlabeled_loader)) if unlabeled_loader is not None else None
        if run.resumed_from is not None:  # after the loader drew its seed, as the first run's had before
            restore_rng(run.resumed_from["resume"]["rng"])
        outputs = cleanup.enter_context(contextlib.closing(open_outputs(run, valid_loader.dataset)))
        budget = TimeBudget(run, outputs)  # with a time_budget, plans the schedule as it goes
        run.start_clock()
        say_if_finished(run)
        while True:
            signum = distributed.agreed_stop(interrupt.requested(), run.ctx, run.stepper.device)
            if stop_due(run, signum, stop_after):
                return stop(run, outputs, signum, stop_after)
            if validation_due(run):
                started = run.spent()
                inference = validate_and_save(run, valid_loader, outputs)
                budget.validated(run.spent() - started, inference)
            if progress.iteration >= schedule.max_iteration:
                break
            images, masks = next(batches)
            progress.epoch = progress.iteration // sampler.batches_per_epoch
            loss, hist = run.stepper.global_step(images, masks, progress.iteration, run.ctx,
                                                 next(unlabeled) if unlabeled is not None else None)
            outputs.train_row(progress.iteration, progress.epoch, {**row_scores(hist, run.spec.void), "loss": loss},
                              run.stepper.lr, run.elapsed())
            if unlabeled is not None:
                outputs.unlabeled_step(progress.iteration, *run.stepper.consistency.stats())
            progress.iteration += 1
            budget.stepped()
        outputs.done(progress.best_mean_iu, (lambda folder, top: audit_best(run, folder, top))
                     if audits_at_the_end(schedule) else None)
    return run.out_dir


def audit_best(run: TrainingRun, folder: Path, top: int) -> list:
    """`segtrain audit` of the best weights, at the validation input size, on the run's device."""
    from segtrain.use.audit import audit

    return audit(run.root, run.out_dir / BEST_NAME, folder, top, str(run.stepper.device), log=lambda *args: None)


def open_outputs(run: TrainingRun, valid_set) -> RunOutputs | NoOutputs:
    if not run.ctx.is_main:
        return NoOutputs()
    return RunOutputs(run.out_dir, run.plan, run.schedule, run.spec, run.colors, valid_set, run.progress.iteration, run.log,
                      run.unlabeled, run.weights_source)


def say_if_finished(run: TrainingRun) -> None:
    p = run.progress
    if p.iteration == run.schedule.max_iteration and p.validated == p.iteration:
        run.log(f"the run already reached max_iteration {p.iteration}; to extend it, raise max_iteration "
                f"(e.g. --set max_iteration={2 * p.iteration}).")


def validation_due(run: TrainingRun) -> bool:
    p = run.progress
    return run.schedule.due(p.iteration) and p.validated != p.iteration


def validate_and_save(run: TrainingRun, valid_loader, outputs) -> float:
    """Validate, log and save; returns the seconds the model's pass over the images took."""
    s, p = run.stepper, run.progress
    started = run.spent()
    result, shown = validate(s.weights, valid_loader, s.criterion, s.n_classes, s.device, amp=s.amp,
                             channels_last=s.channels_last, collect=run.plan["max_visualizations"], ctx=run.ctx,
                             void=run.spec.void)
    inference = run.spent() - started
    p.validated = p.iteration
    is_best = not math.isnan(result["mean_iu"]) and result["mean_iu"] > p.best_mean_iu
    if is_best:
        p.best_mean_iu = result["mean_iu"]
    run.last_result = result
    outputs.validation(p.iteration, p.epoch, result, shown, is_best, run.checkpoint, run.elapsed())
    return inference


def stop_due(run: TrainingRun, signum: int | None, stop_after: int | None) -> bool:
    """A stop signal or the --stop-after quota, before the end (a finished run just ends)."""
    quota_done = stop_after is not None and run.progress.iteration >= run.start_iteration + stop_after
    return bool(signum or quota_done) and run.progress.iteration < run.schedule.max_iteration


def stop(run: TrainingRun, outputs, signum: int | None, stop_after: int | None) -> Path:
    """Save where the run is (unless a resumed run has not moved) and say how to continue."""
    p = run.progress
    if p.iteration > run.start_iteration or run.resumed_from is None:
        outputs.save_checkpoint(run.checkpoint)
    outputs.pictures_current()
    hint = resume_hint(run.root, outputs.checkpoint_path, run.plan) if outputs.checkpoint_path else ""
    at = f"at iteration {p.iteration}/{run.schedule.max_iteration}"
    if signum:
        raise interrupt.Stopped(f"stopped by {interrupt.signal_name(signum)} {at}; {hint}", signum)
    run.log(f"stopped after {stop_after} iteration(s), {at}; {hint}")
    return run.out_dir


def resume_hint(root: Path, checkpoint: Path, cfg: dict) -> str:
    given = "" if checkpoint == run_folder(root, cfg["output_dir"]) / CHECKPOINT_NAME else f" {checkpoint}"
    return f"checkpoint saved: {checkpoint}. To continue, run the same command with --resume{given} added."


@contextlib.contextmanager
def explain_out_of_memory(run: TrainingRun):
    """An out-of-memory error becomes one line naming the largest image."""
    try:
        yield
    except (RuntimeError, MemoryError) as e:
        message = too_large_to_train(e, run.spec, run.plan)
        if message is None:
            raise
        raise TrainingError(message) from None


@contextlib.contextmanager
def remove_if_untrained(run: TrainingRun):
    """A new run that fails before it trained (or before any checkpoint) leaves no folder: one
    without a run in it would send the next run to MODEL-...-2, where a plain --resume finds
    nothing. A stopped run keeps a folder with a checkpoint: the stop message says to resume it."""
    try:
        yield
    except BaseException as e:
        saved = run.out_dir is not None and (run.out_dir / CHECKPOINT_NAME).exists()
        untrained = not saved or (run.progress.iteration == 0 and not isinstance(e, interrupt.Stopped))
        if run.out_dir is not None and run.resumed_from is None and untrained:
            shutil.rmtree(run.out_dir, ignore_errors=True)
        raise
