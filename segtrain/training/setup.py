"""Everything a training run needs before its first step, in the order that keeps runs exact:
seed, device and processes, checkpoint to resume (its folder held), data and loss fitted to the
folder, model, optimizer, state; a new run's output folder last, once everything is checked.

The order matters for reproducibility: the model's initial weights, then the loader's seed, come
from the global generator, so a resumed run must draw them as the first run did.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from segtrain.config.plan import Plan
from segtrain.config.recipe import fit_recipe
from segtrain.data.classes import default_colors
from segtrain.data.folder import DataSpec, check_batchable, inspect_root
from segtrain.data.transforms import MEAN, STD
from segtrain.data.unlabeled import Unlabeled, find_unlabeled
from segtrain.evaluation.inference import use_channels_last
from segtrain.models.losses import build_loss, fitted_class_weights
from segtrain.models.weights import Weights, resolve as resolve_weights, weights_folder
from segtrain.outputs.atomic import remove_stale_temps
from segtrain.outputs.checkpoints import load_weights, read_checkpoint, training_payload
from segtrain.outputs.logcsv import keep_rows_through
from segtrain.run_folder import LOG_NAME, FolderLock, claim_run_folder, hold
from segtrain.paths import from_root
from segtrain.runtime import cpu_threads, distributed, interrupt
from segtrain.runtime.clock import Clock
from segtrain.runtime.device import select_device
from segtrain.runtime.workers import plan_workers
from segtrain.training.budget import resumed_schedule
from segtrain.training.consistency import Consistency, confidence_threshold, strong_colour
from segtrain.training.optimization import make_optimizer, make_scaler
from segtrain.training.resume import (Progress, check_compatible, checkpoint_to_resume, read_resumable, restore,
                                      resume_state)
from segtrain.training.schedule import Schedule
from segtrain.training.step import Stepper


@dataclass
class TrainingRun:
    """The run's fixed parts, its plan among them, and what changes as it trains: its counters
    (`progress`) and its schedule, which a time budget plans (training/budget.py)."""

    root: Path
    plan: Plan
    schedule: Schedule
    spec: DataSpec
    stepper: Stepper
    ctx: distributed.Context
    colors: list[list[int]]
    out_dir: Path | None  # None on torchrun ranks other than 0, which write nothing
    progress: Progress
    workers: int
    clock: Clock  # started with the command: every time the run measures is read from it
    log: object = print
    resumed_from: dict | None = None  # the checkpoint this run continues
    start_iteration: int = 0
    last_result: dict | None = None  # the latest validation's numbers, kept in checkpoints
    clock_start: float = 0.0
    unlabeled: Unlabeled | None = None  # images without masks (training/consistency.py); None = off
    weights_source: str = ""  # where the starting weights came from (models/weights.py), for the report
    folder_lock: FolderLock | None = None  # rank 0's hold on out_dir (run_folder.py), released at the end

    def start_clock(self) -> None:
        """elapsed_time counts training, not set-up; a resumed run goes on from its saved time."""
        self.clock_start = self.clock.now() - self.progress.elapsed

    def elapsed(self) -> float:
        return self.clock.now() - self.clock_start

    def spent(self) -> float:
        """What a time_budget counts: this command's time from its start (set-up included), after
        the training time of the commands this run resumes."""
        return self.progress.elapsed + self.clock.since_start()

    def checkpoint(self) -> dict:
        """The payload of checkpoint.pth.tar / model_best.pth.tar at this moment."""
        p, s = self.progress, self.stepper
        state = {"optim_state_dict": s.optimizer.state_dict(), "scheduler_state_dict": s.scheduler.state_dict(),
                 "epoch": int(p.epoch), "iteration": int(p.iteration), "best_mean_iu": float(p.best_mean_iu),
                 "elapsed_time": float(self.elapsed()), "valid_metrics": self.last_result,
                 "resume": resume_state(s.scaler, p.validated, len(self.spec.train)),
                 "weights_source": self.weights_source, "schedule": self.schedule.state(), **s.ema_state()}
        return training_payload(distributed.unwrap(s.weights), self.plan["model"], self.plan, self.spec.class_names,
                                self.colors, self.spec.decoder.describe(), {"mean": list(MEAN), "std": list(STD)},
                                state)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _silent(*args, **kwargs) -> None:
    """Progress and notes come from rank 0 only."""


def build_model_for_run(root: Path, plan: Plan, class_names: list[str], device: torch.device,
                        ctx: distributed.Context, log, pretrained: str, pretrained_backbone: bool | None,
                        channels_last: bool = False) -> tuple[nn.Module, str]:
    """The network with its starting weights (ImageNet backbone, or the checkpoint `pretrained`),
    on the device, wrapped for DDP under torchrun; and where those weights came from, in words."""
    n_classes = len(class_names)
    if pretrained:
        backbone_weights = Weights(None, f"the checkpoint {pretrained} (pretrained_net)")
    else:
        folder = weights_folder(plan["weights_dir"] and str(from_root(plan["weights_dir"], root)))
        backbone_weights = resolve_weights(plan["model"], plan["encoder"], pretrained_backbone, folder, log)
    model = plan.model_entry.build(n_classes, plan["aux_loss"], backbone_weights.file, plan["encoder"])
    if pretrained:
        path = from_root(pretrained, root)
        ckpt = read_checkpoint(path)
        load_weights(model, ckpt["model_state_dict"], str(path), log)
        if ckpt.get("class_names") not in (None, class_names):
            log(f"note: {path} was trained on classes {ckpt['class_names']}; this run uses {class_names}.")
    model.to(device)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    return distributed.wrap(model, device, ctx, plan["sync_bn"], log), backbone_weights.source


def describe(root: Path, plan: Plan, spec: DataSpec, device: torch.device, ctx: distributed.Context, log,
             channels_last: bool = False, weights_source: str = "") -> None:
    for note in spec.notes:
        log(note)
    log(f"data: {root} ({spec.layout}); {len(spec.train)} training, {len(spec.valid)} validation images "
        f"(validation: {spec.valid_source})")
    log(f"labels: {spec.decoder.describe()}")
    size = "native size" if plan["image_size"] is None else "x".join(map(str, plan["image_size"]))
    log(f"model: {plan['model']} for {len(spec.class_names)} classes ({', '.join(spec.class_names)}) on {device}; "
        f"input {size}; {plan['optimizer']} lr {plan['lr']:g} ({plan['lr_schedule']}), "
        f"loss {plan['loss_reduction']} over pixels"
        + ("; channels_last" if channels_last else "")
        + ("; torch.compile" if plan["compile"] else "")
        + (f"; validating an EMA of the weights (decay {plan['ema_decay']:g})" if plan["ema_decay"] is not None else ""))
    log(f"starting weights: {weights_source}")
    if device.type == "cpu":
        log(f"CPU threads: {torch.get_num_threads()} ("
            + ("the config's `threads`" if plan["threads"] is not None else cpu_threads.current().why)
            + "; set `threads`, OMP_NUM_THREADS or OMP_WAIT_POLICY to choose)")
    if ctx.enabled:
        log(f"distributed: {ctx.world_size} processes ({'NCCL' if device.type == 'cuda' else 'gloo'}); "
            f"batch_size {plan['batch_size']} per process, global batch {plan['batch_size'] * ctx.world_size}")


@dataclass(frozen=True)
class FolderFit:
    """What the run trains on and with, judged against the folder: its plan with the open keys
    fitted, its data, its unlabeled images and its loss (`fit_to_folder`)."""

    plan: Plan
    spec: DataSpec
    unlabeled: Unlabeled | None
    criterion: nn.Module
    threshold_why: str
    colour_why: str


def fit_to_folder(root: Path, plan: Plan, class_names: list[str] | None, device_type: str, saved: dict | None,
                  log=print) -> FolderFit:
    """The plan fitted to ROOT (saved: a resumed run's config) and checked against the data: the
    one judgement of the config that `train` and `check` share, so check passes exactly what train
    will accept. Creates nothing."""
    spec = inspect_root(root, plan, class_names)
    plan = plan.with_changes(**fit_recipe(plan, spec, device_type, saved, log))
    check_batchable(spec, plan["image_size"], plan["batch_size"])
    unlabeled = find_unlabeled(root, plan, spec.sizes["train"], log)
    # Before check_compatible, which notes settings that differ from the checkpoint's. The threshold
    # is resolved with or without unlabeled images, so a checkpoint's config always holds a number.
    threshold, threshold_why = confidence_threshold(plan, len(spec.class_names))
    fitted, colour_why = {"unlabeled_threshold": threshold}, ""
    if unlabeled is not None:
        fitted["unlabeled_colour"], colour_why = strong_colour(plan, spec, saved)
    fitted.update(fitted_class_weights(plan, spec.train, spec.decoder, spec.class_names, log))
    plan = plan.with_changes(**fitted)
    return FolderFit(plan, spec, unlabeled, build_loss(plan, spec.class_names), threshold_why, colour_why)


def prepare_run(root: Path, plan: Plan, class_names: list[str] | None, resume: str | None, clock: Clock,
                log=print) -> TrainingRun:
    """resume: None starts a new run; "" continues MODEL-<output_dir>/checkpoint.pth.tar; else the
    checkpoint to continue. class_names stand in for a missing class_names.list (a preset's).
    clock: the command's, started when it started (runtime/clock.py).

    Everything is checked before anything is created: a new run's folder is claimed last. A resumed
    run holds its folder (rank 0) before it reads the checkpoint, so a run still training there is
    refused before anything is read or changed."""
    if plan["threads"] is not None:
        # With other busy processes on the cores, each parallel op waits for its slowest thread.
        torch.set_num_threads(plan["threads"])
    seed_everything(plan["seed"])
    device = select_device(plan["device"], log)
    ctx = distributed.init(device)
    device = distributed.local_device(device, ctx)
    log = log if ctx.is_main else _silent
    ckpt_path = checkpoint_to_resume(root, plan, resume, log) if resume is not None else None
    folder_lock = hold(ckpt_path.parent, log) if ckpt_path is not None and ctx.is_main else None
    try:
        run = _prepare(root, plan, class_names, ckpt_path, device, ctx, clock, log)
        if ckpt_path is None and ctx.is_main:
            run.out_dir = claim_run_folder(root, run.plan["output_dir"], log)
            folder_lock = hold(run.out_dir, log)
    except BaseException:
        if folder_lock is not None:
            folder_lock.release()
        raise
    run.folder_lock = folder_lock
    log(f"outputs: {run.out_dir}")
    if run.resumed_from is not None and ctx.is_main:
        trim_folder(run, ckpt_path)
    return run


def _prepare(root: Path, plan: Plan, class_names: list[str] | None, ckpt_path: Path | None, device: torch.device,
             ctx: distributed.Context, clock: Clock, log) -> TrainingRun:
    """prepare_run's checks and set-up, which write nothing; out_dir is the resumed run's folder, else None."""
    ckpt = read_resumable(ckpt_path, plan) if ckpt_path is not None else None
    fit = fit_to_folder(root, plan, class_names, device.type, None if ckpt is None else ckpt.get("config"), log)
    plan, spec, unlabeled = fit.plan, fit.spec, fit.unlabeled  # the plan is final from here on
    schedule = Schedule.of_plan(plan) if ckpt is None else resumed_schedule(plan, ckpt, log)
    # A resumed run's weights come from its checkpoint: fetch or load no others first.
    fresh = ckpt is None
    channels_last = use_channels_last(plan["channels_last"], plan["image_size"], device)  # image_size is fitted by now
    model, weights_source = build_model_for_run(root, plan, spec.class_names, device, ctx, log,
                                                plan["pretrained_net"] if fresh else "",
                                                plan["pretrained_backbone"] if fresh else False, channels_last)
    if not fresh:  # the run's weights come from its checkpoint; say where they came from at its start
        saved = ckpt.get("weights_source")
        weights_source = saved if isinstance(saved, str) and saved else "not recorded (a checkpoint from before segtrain said it)"
    describe(root, plan, spec, device, ctx, log, channels_last, weights_source)
    if ckpt is not None:
        check_compatible(ckpt, plan, spec.class_names, ckpt_path, log)
    if unlabeled is not None:
        log(f"unlabeled: {len(unlabeled.paths)} images from {unlabeled.folder} (FixMatch consistency, threshold "
            f"{plan['unlabeled_threshold']:g} ({fit.threshold_why}), weight {plan['unlabeled_weight']:g}, "
            f"{unlabeled.batch_size} per step; the strong view {fit.colour_why})")
    workers = plan_workers(plan, spec.sizes["train"], log, unlabeled.batch_size if unlabeled is not None else 0)
    if interrupt.requested():
        raise interrupt.Stopped("stopped before training began; nothing was written.", interrupt.requested())
    optimizer = make_optimizer(model, plan)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule.factor)
    scaler = make_scaler(plan["amp"], device)
    # Seeds: the labeled images' augmentation draws from seed, the unlabeled order and weak views
    # from seed + 1, the strong views from seed + 2, so no two streams coincide.
    consistency = None if unlabeled is None else Consistency(plan["unlabeled_threshold"], plan["unlabeled_weight"],
                                                             plan["seed"] + 2, ctx.rank, plan["loss_reduction"],
                                                             plan["unlabeled_colour"])
    stepper = Stepper(model, fit.criterion, optimizer, scheduler, scaler, device, len(spec.class_names),
                      plan["amp"], channels_last, plan["aux_loss"],
                      # validation and checkpoints use the plain module: eval-mode and size changes
                      # would each compile again
                      compiled=torch.compile(model) if plan["compile"] else None, consistency=consistency)
    out_dir = ckpt_path.parent if ckpt_path is not None and ctx.is_main else None
    run = TrainingRun(root, plan, schedule, spec, stepper, ctx, spec.class_colors or default_colors(spec.class_names),
                      out_dir, Progress(), workers, clock, log, unlabeled=unlabeled, weights_source=weights_source)
    if ckpt is not None:
        continue_from(run, ckpt)
    stepper.average_weights(plan["ema_decay"], ckpt)
    return run


def continue_from(run: TrainingRun, ckpt: dict) -> None:
    """Put a checkpoint's state back (in memory: trim_folder brings the folder to that moment)."""
    s = run.stepper
    run.progress = restore(ckpt, s.model, s.optimizer, s.scheduler, s.scaler, run.plan, run.schedule.factor)
    run.resumed_from = ckpt
    run.start_iteration = run.progress.iteration
    run.last_result = ckpt.get("valid_metrics")


def trim_folder(run: TrainingRun, path: Path) -> None:
    """The resumed run's folder as it was at its checkpoint: later log.csv rows and stray temporary files go."""
    p = run.progress
    dropped = keep_rows_through(run.out_dir / LOG_NAME, p.iteration, p.validated == p.iteration)
    remove_stale_temps(run.out_dir)
    (run.out_dir / "visualization_viz").mkdir(exist_ok=True)
    run.log(f"resuming {path} at iteration {p.iteration}/{run.schedule.max_iteration}"
            + (f"; dropped {dropped} log.csv row(s) written after that checkpoint" if dropped else ""))
