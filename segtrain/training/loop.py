"""The training loop: folder -> data -> model -> iterations with validation -> checkpoints.

Reads top to bottom: `train` sets up, `train_step` does one batch, `validate` counts the
validation set, `save` writes checkpoints. Validation runs at iteration 0, every
`interval_validate` iterations and at the end, as in the original tool.
"""

from __future__ import annotations

import math
import random
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from segtrain import __version__
from segtrain.runtime import distributed
from segtrain.runtime import interrupt
from segtrain.outputs.atomic import remove_stale_temps
from segtrain.data.cache import fill_cache
from segtrain.outputs.checkpoints import load_weights, read_checkpoint, save_atomic
from segtrain.data.classes import voc_colormap
from segtrain.data.folder import DataSpec, SegmentationDataset, collate_eval, inspect_root, too_large_to_train
from segtrain.errors import OutputError, SegtrainError
from segtrain.evaluation.inference import autocast, class_map, native_logits
from segtrain.data.labels import IGNORE
from segtrain.outputs.logcsv import LogWriter, keep_rows_through
from segtrain.evaluation.metrics import confusion_matrix, scores
from segtrain.models.losses import build_loss
from segtrain.models.registry import build_model, resolve_backbone_weights
from segtrain.outputs.progress import ProgressReporter
from segtrain.training.resume import (CHECKPOINT_NAME, Progress, check_compatible, checkpoint_to_resume, read_resumable,
                             restore, restore_rng, resume_state)
from segtrain.outputs.run_outputs import RunOutputs
from segtrain.data.sampling import EpochBatchSampler, ShardedBatches, sample_position
from segtrain.data.transforms import MEAN, STD, eval_transform, train_transform
from segtrain.outputs.visualize import write_visualization
from segtrain.runtime.workers import plan_workers

AUX_WEIGHT = 0.5  # torchvision references' weight for the auxiliary head


class TrainingError(SegtrainError):
    pass


def select_device(wanted: str, log=print) -> torch.device:
    if wanted == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if wanted.startswith("cuda") and not torch.cuda.is_available():
        log(f"note: device {wanted!r} asked for, but no CUDA GPU is visible; training on the CPU.")
        return torch.device("cpu")
    if wanted.startswith("cuda:") and int(wanted[5:]) >= torch.cuda.device_count():
        raise TrainingError(
            f"device {wanted!r}: only {torch.cuda.device_count()} GPU(s) visible. Set \"device\" to 'cuda:0'."
        )
    return torch.device(wanted)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def output_folder(root: Path, name: str, log=print) -> Path:
    """ROOT/MODEL-<name>; an earlier run's folder is never reused: the next free number is taken."""
    base = root / f"MODEL-{name}"
    folder, k = base, 1
    while folder.exists():
        if not folder.is_dir():
            raise OutputError(f"{folder}: is a file, so the outputs cannot go there. Move it away, "
                              "or set \"output_dir\" to another name.")
        if not any(folder.iterdir()):
            break
        k += 1
        folder = root / f"MODEL-{name}-{k}"
    if folder != base:
        log(f"note: {base} holds an earlier run; this run writes to {folder} (nothing is overwritten; "
            "to continue that run instead, add --resume).")
    try:
        (folder / "visualization_viz").mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OutputError(f"{folder}: cannot create the output folder ({e.strerror}). Check permissions and free space, "
                          "or set \"output_dir\" to another name.") from None
    return folder


def poly_lambda(max_iteration: int):
    return lambda it: (1 - min(it, max_iteration - 1) / max_iteration) ** 0.9


def make_criterion(cfg: dict, spec: DataSpec, log=print) -> nn.Module:
    return build_loss(cfg, spec.class_names, spec.train, spec.decoder, log)


def make_optimizer(model: nn.Module, cfg: dict) -> torch.optim.Optimizer:
    if cfg["optimizer"] == "adamw":
        return torch.optim.AdamW(model.parameters(), lr=cfg["lr"], weight_decay=cfg["weight_decay"])
    return torch.optim.SGD(model.parameters(), lr=cfg["lr"], momentum=cfg["momentum"],
                           weight_decay=cfg["weight_decay"])


@dataclass
class Setup:
    spec: DataSpec
    model: nn.Module
    device: torch.device
    colors: list[list[int]]
    ctx: distributed.Context = distributed.Context()


def checkpoint_payload(setup: Setup, cfg: dict, optimizer, scheduler, iteration: int, epoch: int,
                       best_mean_iu: float, valid_scores: dict | None, elapsed: float) -> dict:
    """Only tensors and built-ins, so `torch.load(weights_only=True)` reads it anywhere."""
    model = distributed.unwrap(setup.model)
    return {
        "format_version": 1,
        "segtrain_version": __version__,
        "arch": cfg["model"],
        "model_state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "optim_state_dict": optimizer.state_dict(),
        "scheduler_state_dict": scheduler.state_dict(),
        "epoch": int(epoch),
        "iteration": int(iteration),
        "best_mean_iu": float(best_mean_iu),
        "elapsed_time": float(elapsed),
        "config": dict(cfg),
        "class_names": list(setup.spec.class_names),
        "class_colors": [list(c) for c in setup.colors],
        "label_encoding": setup.spec.decoder.describe(),
        "normalization": {"mean": list(MEAN), "std": list(STD)},
        "image_size": cfg["image_size"],
        "valid_metrics": valid_scores,
    }


def build_for_training(root: Path, cfg: dict, class_names: list[str] | None = None, log=print) -> Setup:
    spec = inspect_root(root, cfg, class_names)
    device = select_device(cfg["device"], log)
    ctx = distributed.init(device)
    device = distributed.local_device(device, ctx)
    if not ctx.is_main:
        log = _silent
    pretrained = cfg["pretrained_net"]
    backbone_weights = None if pretrained else resolve_backbone_weights(cfg["model"], cfg["pretrained_backbone"], log,
                                                                        cfg["encoder"])
    model = build_model(cfg["model"], len(spec.class_names), cfg["aux_loss"], backbone_weights, cfg["encoder"])
    if pretrained:
        path = Path(pretrained) if Path(pretrained).is_absolute() else root / pretrained
        ckpt = read_checkpoint(path)
        load_weights(model, ckpt["model_state_dict"], str(path), log)
        if ckpt.get("class_names") not in (None, spec.class_names):
            log(f"note: {path} was trained on classes {ckpt['class_names']}; this run uses {spec.class_names}.")
    model.to(device)
    if cfg["channels_last"]:
        model.to(memory_format=torch.channels_last)
    model = distributed.wrap(model, device, ctx, cfg["sync_bn"], log)
    colors = spec.class_colors or voc_colormap(len(spec.class_names))
    return Setup(spec, model, device, colors, ctx)


def _silent(*args, **kwargs) -> None:
    """Progress and notes come from rank 0 only."""


def make_loaders(spec: DataSpec, cfg: dict, device: torch.device, start_epoch=0, start_batch=0,
                 ctx: distributed.Context = distributed.Context(), log=print):
    workers = cfg["n_workers"]
    train_set = SegmentationDataset(
        spec.train, spec.decoder, train_transform(cfg["image_size"], cfg["augment"]), train=True,
        seed=cfg["seed"] if cfg["augment"] else None
    )
    valid_loader = make_eval_loader(spec.valid, spec.decoder, spec.sizes["valid"], cfg, device, ctx)
    valid_set = valid_loader.dataset
    if cfg["cache_mb"] > 0:  # before any worker forks, so workers share the decoded arrays
        cached, total, used = fill_cache([train_set, valid_set], cfg["cache_mb"])
        log(f"cache: {cached}/{total} images decoded into memory ({used / 2**20:.0f} MB of cache_mb {cfg['cache_mb']:g})")
        if workers and cached == total and not cfg["augment"] and device.type == "cpu":
            # A sample is then a cheap resize of arrays in memory: workers have nothing to hide behind
            # the model's step and only add the hand-off and a process competing for its cores
            # (bench/overhead.py: 8-18% per iteration on 2 cores).
            log(f"note: all images are in memory and augmentation is off; loading in this process "
                f"instead of {workers} worker(s).")
            workers = 0
    sampler = EpochBatchSampler(len(train_set), cfg["batch_size"], cfg["seed"], start_epoch, start_batch,
                                ctx.rank, ctx.world_size)
    pin = device.type == "cuda"
    train_loader = DataLoader(train_set, batch_sampler=sampler, num_workers=workers, pin_memory=pin,
                              persistent_workers=workers > 0, worker_init_fn=interrupt.ignore_in_worker)
    return train_loader, sampler, valid_loader


def make_eval_loader(pairs, decoder, sizes: set, cfg: dict, device: torch.device,
                     ctx: distributed.Context = distributed.Context()) -> DataLoader:
    """Validation's loader; evaluate uses it too, so both batch the same images the same way."""
    dataset = SegmentationDataset(pairs, decoder, eval_transform(cfg["image_size"]), train=False)
    # At native size, images of different sizes cannot share a batch.
    batch = cfg["batch_size"] if cfg["image_size"] is not None or len(sizes) == 1 else 1
    return DataLoader(dataset, batch_sampler=ShardedBatches(len(dataset), batch, ctx.rank, ctx.world_size),
                      num_workers=min(cfg["n_workers"], 1), collate_fn=collate_eval, pin_memory=device.type == "cuda",
                      worker_init_fn=interrupt.ignore_in_worker)


def train_step(model, images, masks, criterion, optimizer, scheduler, scaler, cfg, device, n_classes):
    if not model.training:  # train() walks every module: ~1 ms a step for LR-ASPP on the CPU
        model.train()
    images = images.to(device, non_blocking=True)
    masks = masks.to(device, non_blocking=True)
    if cfg["channels_last"]:
        images = images.contiguous(memory_format=torch.channels_last)
    with autocast(device, cfg["amp"]):
        out = model(images)
        loss = criterion(out["out"].float(), masks)
        if "aux" in out and out["aux"] is not None and cfg["aux_loss"]:
            loss = loss + AUX_WEIGHT * criterion(out["aux"].float(), masks)
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
    scheduler.step()
    with torch.no_grad():
        hist = confusion_matrix(masks, class_map(out["out"], 1), n_classes)
    return loss.detach(), hist


def validate(model, loader, criterion, cfg, n_classes, device, collect: int,
             ctx: distributed.Context = distributed.Context()):
    """Whole-set confusion matrix at native label resolution; per-image loss averaged.

    Under torchrun each rank counts its share of the batches and the counts are summed, so the
    numbers equal a single-process count of the same weights.
    """
    distributed.sync_buffers(model, ctx)
    model = distributed.unwrap(model)  # no collectives inside: ranks may run different batch counts
    was_training = model.training
    model.eval()
    hist = torch.zeros(n_classes, n_classes, dtype=torch.long, device=device)
    # Sums stay on the device and are read once at the end: no wait for the GPU per image.
    loss_total = torch.zeros((), dtype=torch.float64, device=device)
    loss_count = torch.zeros((), dtype=torch.long, device=device)
    shown: list[tuple[int, np.ndarray]] = []
    with torch.inference_mode():
        for images, masks, indices in loader:
            logits = native_logits(model, images, [m.shape for m in masks], cfg["amp"], cfg["channels_last"])
            for one, mask, index in zip(logits, masks, indices):
                mask = mask.to(device, non_blocking=True)
                pred = class_map(one, 0)
                hist += confusion_matrix(mask, pred, n_classes)
                labelled = (mask != IGNORE).any()  # a wholly ignored mask has no loss (mean would be NaN)
                loss_total += torch.where(labelled, criterion(one[None], mask[None]), 0.0)
                loss_count += labelled
                if len(shown) < collect:
                    shown.append((index, pred.to(torch.uint8).cpu().numpy()))
    model.train(was_training)
    distributed.all_reduce_sum(hist, ctx)
    loss_sums = distributed.all_reduce_sum(torch.stack([loss_total, loss_count.double()]), ctx)
    total, count = float(loss_sums[0]), int(loss_sums[1])
    result = scores(hist)
    result["loss"] = total / count if count else math.nan
    result["confusion_matrix"] = hist.cpu().tolist()
    return result, shown


def resume_hint(root: Path, checkpoint: Path, cfg: dict) -> str:
    given = "" if checkpoint == root / f"MODEL-{cfg['output_dir']}" / CHECKPOINT_NAME else f" {checkpoint}"
    return f"checkpoint saved: {checkpoint}. To continue, run the same command with --resume{given} added."


def train(root: Path, cfg: dict, class_names: list[str] | None = None, log=print,
          resume: str | None = None, stop_after: int | None = None) -> Path:
    """Train on the folder ROOT with a resolved config; returns the output folder.

    class_names, when given (an --image_type preset), stand in for a missing class_names.list.
    resume: None starts a new run; "" continues MODEL-<output_dir>/checkpoint.pth.tar; else the
    checkpoint to continue. stop_after: train that many iterations in this call, save and return
    (the schedule still runs to max_iteration). A SIGTERM/SIGINT (see interrupt.py) saves and
    raises interrupt.Stopped.
    """
    root = Path(root)
    if cfg["threads"] is not None:
        # With other busy processes on the cores, each parallel op waits for its slowest thread.
        torch.set_num_threads(cfg["threads"])
    seed_everything(cfg["seed"])
    ckpt_path = checkpoint_to_resume(root, cfg, resume, log) if resume is not None else None
    ckpt = read_resumable(ckpt_path, cfg) if ckpt_path is not None else None
    # A resumed run's weights come from its checkpoint: fetch or load no others first.
    build_cfg = cfg if ckpt is None else {**cfg, "pretrained_net": "", "pretrained_backbone": False}
    setup = build_for_training(root, build_cfg, class_names, log)
    spec, model, device, ctx = setup.spec, setup.model, setup.device, setup.ctx
    if not ctx.is_main:
        log = _silent
    n_classes = len(spec.class_names)
    for note in spec.notes:
        log(note)
    log(f"data: {root} ({spec.layout}); {len(spec.train)} training, {len(spec.valid)} validation images "
        f"(validation: {spec.valid_source})")
    log(f"labels: {spec.decoder.describe()}")
    log(f"model: {cfg['model']} for {n_classes} classes ({', '.join(spec.class_names)}) on {device}; "
        f"input {'native size' if cfg['image_size'] is None else 'x'.join(map(str, cfg['image_size']))}; "
        f"{cfg['optimizer']} lr {cfg['lr']:g} ({cfg['lr_schedule']}), loss {cfg['loss_reduction']} over pixels")
    if ckpt is not None:
        check_compatible(ckpt, cfg, spec.class_names, ckpt_path, log)
    workers = plan_workers(cfg, spec.sizes["train"], log)
    if interrupt.requested():
        raise interrupt.Stopped("stopped before training began; nothing was written.", interrupt.requested())
    if ctx.enabled:
        log(f"distributed: {ctx.world_size} processes ({'NCCL' if device.type == 'cuda' else 'gloo'}); "
            f"batch_size {cfg['batch_size']} per process, global batch {cfg['batch_size'] * ctx.world_size}")
    out_dir = ckpt_path.parent if ckpt is not None else (output_folder(root, cfg["output_dir"], log) if ctx.is_main else None)
    log(f"outputs: {out_dir}")

    optimizer = make_optimizer(model, cfg)
    schedule = poly_lambda(cfg["max_iteration"]) if cfg["lr_schedule"] == "poly" else (lambda it: 1.0)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    fp16 = cfg["amp"] and device.type == "cuda" and not torch.cuda.is_bf16_supported()
    scaler = torch.amp.GradScaler(device.type, enabled=fp16)
    criterion = make_criterion(cfg, spec, log)
    progress = Progress()
    if ckpt is not None:
        progress = restore(ckpt, model, optimizer, scheduler, scaler, cfg, schedule)
        if ctx.is_main:
            dropped = keep_rows_through(out_dir / "log.csv", progress.iteration, progress.validated == progress.iteration)
            remove_stale_temps(out_dir)
            (out_dir / "visualization_viz").mkdir(exist_ok=True)
            log(f"resuming {ckpt_path} at iteration {progress.iteration}/{cfg['max_iteration']}"
                + (f"; dropped {dropped} log.csv row(s) written after that checkpoint" if dropped else ""))
    start_position = sample_position(progress.iteration, len(spec.train), cfg["batch_size"], ctx.world_size)
    train_loader, sampler, valid_loader = make_loaders(spec, {**cfg, "n_workers": workers}, device, *start_position,
                                                       ctx=ctx, log=log)
    batches = iter(train_loader)
    if ckpt is not None:
        restore_rng(ckpt["resume"]["rng"])  # after the loader drew its seed, as the first run's had before
    valid_set = valid_loader.dataset
    writer = LogWriter(out_dir / "log.csv") if ctx.is_main else None
    if ctx.is_main:
        outputs = RunOutputs(out_dir, cfg, spec, setup.colors, log)
        reporter = ProgressReporter(cfg["max_iteration"], cfg["batch_size"], cfg["log_interval"], log,
                                    start_iteration=progress.iteration)

    iteration, epoch, best_mean_iu, validated = progress.iteration, progress.epoch, progress.best_mean_iu, progress.validated
    start_iteration, result = iteration, ckpt.get("valid_metrics") if ckpt is not None else None
    start = time.perf_counter() - progress.elapsed
    if start_iteration == cfg["max_iteration"] and validated == iteration:
        log(f"the run already reached max_iteration {iteration}; to extend it, raise max_iteration "
            f"(e.g. --set max_iteration={2 * iteration}).")

    def snapshot():
        payload = checkpoint_payload(setup, cfg, optimizer, scheduler, iteration, epoch, best_mean_iu,
                                     result, time.perf_counter() - start)
        payload["resume"] = resume_state(scaler, validated, len(spec.train))
        return payload

    try:
        while True:
            signum = interrupt.requested()
            if ctx.enabled:  # every rank stops at the same step, or the others would wait in a collective
                flags = distributed.all_reduce_sum(torch.tensor([signum or 0], dtype=torch.long, device=device), ctx)
                signum = signum or (15 if int(flags[0]) else 0)
            quota_done = stop_after is not None and iteration >= start_iteration + stop_after
            if (signum or quota_done) and iteration < cfg["max_iteration"]:
                if (iteration > start_iteration or ckpt is None) and ctx.is_main:
                    save_atomic(snapshot(), out_dir / CHECKPOINT_NAME)
                hint = resume_hint(root, out_dir / CHECKPOINT_NAME, cfg) if ctx.is_main else ""
                if signum:
                    name = interrupt.signal_name(signum)
                    raise interrupt.Stopped(f"stopped by {name} at iteration {iteration}/{cfg['max_iteration']}; {hint}", signum)
                log(f"stopped after {stop_after} iteration(s), at iteration {iteration}/{cfg['max_iteration']}; {hint}")
                return out_dir
            if (iteration % cfg["interval_validate"] == 0 or iteration == cfg["max_iteration"]) and validated != iteration:
                result, shown = validate(model, valid_loader, criterion, cfg, n_classes, device,
                                         cfg["max_visualizations"], ctx)
                validated = iteration
                is_best = not math.isnan(result["mean_iu"]) and result["mean_iu"] > best_mean_iu
                if is_best:
                    best_mean_iu = result["mean_iu"]
                if ctx.is_main:
                    writer.row("valid", epoch, iteration, result, time.perf_counter() - start)
                    reporter.validation(iteration, result, spec.class_names, is_best)
                    samples = [(*valid_set.load(i), pred) for i, pred in shown]
                    write_visualization(out_dir / "visualization_viz" / f"iter{iteration:012d}.jpg", samples,
                                        setup.colors)
                    payload = snapshot()
                    if is_best:  # best first: a crash between the two leaves the best no older than the latest
                        save_atomic(payload, out_dir / "model_best.pth.tar")
                    save_atomic(payload, out_dir / CHECKPOINT_NAME)
                    outputs.validation(iteration, result, is_best)
            if iteration >= cfg["max_iteration"]:
                break
            batch = next(batches)
            images, masks = batch
            epoch = iteration // sampler.batches_per_epoch
            loss, hist = train_step(model, images, masks, criterion, optimizer, scheduler, scaler, cfg,
                                    device, n_classes)
            if ctx.enabled:  # the row describes the global batch, summed over ranks
                distributed.all_reduce_sum(hist, ctx)
                loss = distributed.all_reduce_sum(loss.reshape(1).double(), ctx)[0] / ctx.world_size
            loss_value = float(loss)
            if not math.isfinite(loss_value):
                raise TrainingError(
                    f"loss became {loss_value} at iteration {iteration} (lr {optimizer.param_groups[0]['lr']:g}). "
                    "Lower lr, or use \"loss_reduction\": \"mean\"; checkpoints written so far are intact "
                    "(to continue from the last one with a lower lr: --resume --set lr=...)."
                )
            if ctx.is_main:
                row = scores(hist)
                row["loss"] = loss_value
                writer.row("train", epoch, iteration, row, time.perf_counter() - start)
                outputs.train_step(iteration, row, optimizer.param_groups[0]["lr"])
            iteration += 1
            if ctx.is_main:
                reporter.iteration(iteration, epoch, loss_value, optimizer.param_groups[0]["lr"])
    except (RuntimeError, MemoryError) as e:
        message = too_large_to_train(e, spec, cfg)
        if message is None:
            raise
        if ckpt is None and iteration == 0 and ctx.is_main:  # nothing trained: leave no folder behind
            shutil.rmtree(out_dir, ignore_errors=True)
        raise TrainingError(message) from None
    finally:
        if ctx.is_main:
            reporter.close()
            outputs.close()
            writer.close()
        distributed.shutdown(ctx)
    if ctx.is_main:
        log(f"done: best valid mean_iu {best_mean_iu:.4f}; model in {out_dir / 'model_best.pth.tar'}")
    return out_dir
