"""What a checkpoint must hold for a run to continue exactly where it stopped, and putting it back.

The data order and each sample's augmentation are pure functions of (seed, epoch, position)
(see sampling.py), so besides weights, optimizer, schedule and AMP scaler only the random
generators (dropout, DataLoader seeds) and the loop's counters need saving. Everything is kept
as tensors and built-ins, so the checkpoint still loads with `weights_only=True`.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from segtrain.config.recipe import FIT_KEY
from segtrain.models.registry import recipe_choices
from segtrain.outputs.checkpoints import read_checkpoint
from segtrain.run_folder import CHECKPOINT_NAME, latest_run_folder, later_runs, run_folder
from segtrain.paths import from_command_line
from segtrain.errors import CheckpointError


def rng_state() -> dict:
    version, internal, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "python": [version, list(internal), gauss],
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached)],
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def restore_rng(state: dict) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


@dataclass
class Progress:
    """The loop's counters. `validated` is the last iteration whose validation is logged: a stop
    between steps can fall on a validation point before validating, and the resumed run then
    validates first, as the uninterrupted run would have."""

    iteration: int = 0
    epoch: int = 0
    best_mean_iu: float = -math.inf
    elapsed: float = 0.0
    validated: int = -1


def resume_state(scaler, validated: int, n_train: int) -> dict:
    """Taken at the moment of saving: the generators' state then is where the run continues."""
    return {"rng": rng_state(), "scaler": scaler.state_dict(), "validated": validated, "n_train": n_train}


def checkpoint_to_resume(root: Path, cfg: dict, given: str, log=print) -> Path:
    """`--resume` alone means MODEL-<output_dir>/checkpoint.pth.tar; a path is one typed on the
    command line (paths.py)."""
    if given:
        return from_command_line(given, root)
    folder = run_folder(root, cfg["output_dir"])
    if "output_dir" in cfg.get(FIT_KEY, ()):
        # Named after the model the recipe chose when the run began, which resume is to restore.
        folder = latest_run_folder(root, recipe_choices()) or folder
    path = folder / CHECKPOINT_NAME
    later = later_runs(folder)
    names = ", ".join(run.name for run in later)
    if not path.is_file():
        hint = f" Runs with a checkpoint here: {names}; pass --resume {later[-1] / CHECKPOINT_NAME}." if later else ""
        raise CheckpointError(f"{path}: no checkpoint to resume from.{hint} Or start a new run without --resume.")
    if later:
        log(f"note: resuming {folder.name}; {names} also exist (pass --resume {later[-1].name}/{CHECKPOINT_NAME} for those).")
    return path


def read_resumable(path: Path, plan) -> dict:
    ckpt = read_checkpoint(path)
    if not isinstance(ckpt.get("resume"), dict) or "optim_state_dict" not in ckpt:
        raise CheckpointError(
            f"{path}: holds weights but no training state to resume (written by another tool or an older "
            "segtrain). Start a new run with it as \"pretrained_net\" instead of --resume."
        )
    latest = path.parent / CHECKPOINT_NAME
    if latest.is_file() and not latest.samefile(path):
        try:
            newer = read_checkpoint(latest).get("iteration", -1)
        except CheckpointError:
            newer = -1  # unreadable: resuming from an older file is how to recover
        if newer > ckpt["iteration"]:
            # The run continues in this folder: it would cut log.csv back to the older iteration and
            # save over the newer checkpoint.
            raise CheckpointError(
                f"{path}: is at iteration {ckpt['iteration']}, but this run's {latest} is at iteration {newer}; "
                "resuming from the older file would drop the later log.csv rows and replace that checkpoint. "
                f"Resume from {latest} instead, or start a new run with {path.name} as \"pretrained_net\"."
            )
    if plan.budget_seconds is None and ckpt["iteration"] > plan["max_iteration"]:
        raise CheckpointError(
            f"{path}: is at iteration {ckpt['iteration']}, past max_iteration {plan['max_iteration']}. "
            f"Set max_iteration to at least {ckpt['iteration']} (e.g. --set max_iteration={ckpt['iteration']})."
        )
    return ckpt


def check_compatible(ckpt: dict, cfg, class_names: list[str], path: Path, log=print) -> None:
    """Refuse what would make the saved weights meaningless; note the settings that changed."""
    saved = ckpt.get("config", {})
    differ = []
    if ckpt.get("class_names") != list(class_names):
        differ.append(f"classes {ckpt.get('class_names')} (this run: {list(class_names)})")
    if ckpt.get("arch") != cfg["model"]:
        differ.append(f"model {ckpt.get('arch')!r} (this run: {cfg['model']!r})")
    if saved.get("encoder") != cfg["encoder"]:
        differ.append(f"encoder {saved.get('encoder')!r} (this run: {cfg['encoder']!r})")
    if saved.get("aux_loss", False) != cfg["aux_loss"]:
        differ.append(f"aux_loss {saved.get('aux_loss')} (this run: {cfg['aux_loss']})")
    if saved.get("optimizer", "sgd") != cfg["optimizer"]:  # its state (momenta, moments) would not fit
        differ.append(f"optimizer {saved.get('optimizer', 'sgd')!r} (this run: {cfg['optimizer']!r})")
    if saved.get("image_size") != cfg["image_size"]:
        differ.append(f"image_size {saved.get('image_size')} (this run: {cfg['image_size']})")
    if differ:
        raise CheckpointError(
            f"{path}: cannot resume: it was trained with {'; '.join(differ)}. Use the config it was trained "
            "with, or start a new run (without --resume, optionally with it as \"pretrained_net\")."
        )
    changed = [f"{k} {saved[k]!r} -> {cfg[k]!r}" for k in cfg if k in saved and saved[k] != cfg[k]]
    if changed:
        log(f"note: resuming with changed settings: {', '.join(changed)}.")


def restore(ckpt: dict, model, optimizer, scheduler, scaler, cfg, schedule) -> Progress:
    """Put the training state back. The run's plan wins over the saved hyperparameters, so
    `--set lr=...` or a larger max_iteration applies from here on: `schedule` (the lr factor of
    the run's schedule, training/schedule.py) gives the lr at the saved iteration."""
    model.load_state_dict(ckpt.get("live_state_dict", ckpt["model_state_dict"]))  # EMA: the average
    optimizer.load_state_dict(ckpt["optim_state_dict"])
    scheduler.load_state_dict(ckpt["scheduler_state_dict"])
    scaler.load_state_dict(ckpt["resume"]["scaler"])
    scheduler.base_lrs = [cfg["lr"] for _ in optimizer.param_groups]
    for group in optimizer.param_groups:
        group.update(initial_lr=cfg["lr"], lr=cfg["lr"] * schedule(scheduler.last_epoch),
                     weight_decay=cfg["weight_decay"])
        if "momentum" in group:  # SGD's; AdamW keeps its betas
            group["momentum"] = cfg["momentum"]
    return Progress(ckpt["iteration"], ckpt["epoch"], ckpt["best_mean_iu"], ckpt.get("elapsed_time", 0.0),
                    ckpt["resume"]["validated"])
