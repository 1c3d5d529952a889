"""The training loop: folder -> data -> model -> iterations with validation -> checkpoints.

Reads top to bottom: `train` sets up, `train_step` does one batch, `validate` counts the
validation set, `save` writes checkpoints. Validation runs at iteration 0, every
`interval_validate` iterations and at the end, as in the original tool.
"""

from __future__ import annotations

import math
import os
import random
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from segtrain import __version__
from segtrain.cache import fill_cache
from segtrain.checkpoint import load_weights, read_checkpoint, save_atomic
from segtrain.classes import voc_colormap
from segtrain.dataset import DataSpec, SegmentationDataset, collate_eval, inspect_root
from segtrain.errors import SegtrainError
from segtrain.inference import autocast, native_logits
from segtrain.labels import IGNORE
from segtrain.logcsv import LogWriter
from segtrain.metrics import confusion_matrix, scores
from segtrain.models import build_model, resolve_backbone_weights
from segtrain.sampling import EpochBatchSampler
from segtrain.transforms import MEAN, STD, eval_transform, train_transform
from segtrain.visualize import write_visualization

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
    while folder.exists() and any(folder.iterdir()):
        k += 1
        folder = root / f"MODEL-{name}-{k}"
    if folder != base:
        log(f"note: {base} holds an earlier run; this run writes to {folder} (nothing is overwritten).")
    try:
        (folder / "visualization_viz").mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise TrainingError(f"{folder}: cannot create the output folder ({e.strerror}). Check permissions and free space.") from None
    return folder


def poly_lambda(max_iteration: int):
    return lambda it: (1 - min(it, max_iteration - 1) / max_iteration) ** 0.9


def make_criterion(cfg: dict) -> nn.Module:
    return nn.CrossEntropyLoss(ignore_index=IGNORE, reduction=cfg["loss_reduction"])


@dataclass
class Setup:
    spec: DataSpec
    model: nn.Module
    device: torch.device
    colors: list[list[int]]


def checkpoint_payload(setup: Setup, cfg: dict, optimizer, scheduler, iteration: int, epoch: int,
                       best_mean_iu: float, valid_scores: dict | None, elapsed: float) -> dict:
    """Only tensors and built-ins, so `torch.load(weights_only=True)` reads it anywhere."""
    model = setup.model.module if hasattr(setup.model, "module") else setup.model
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
    pretrained = cfg["pretrained_net"]
    backbone_weights = None if pretrained else resolve_backbone_weights(cfg["model"], cfg["pretrained_backbone"], log)
    model = build_model(cfg["model"], len(spec.class_names), cfg["aux_loss"], backbone_weights)
    if pretrained:
        path = Path(pretrained) if Path(pretrained).is_absolute() else root / pretrained
        ckpt = read_checkpoint(path)
        load_weights(model, ckpt["model_state_dict"], str(path), log)
        if ckpt.get("class_names") not in (None, spec.class_names):
            log(f"note: {path} was trained on classes {ckpt['class_names']}; this run uses {spec.class_names}.")
    model.to(device)
    if cfg["channels_last"]:
        model.to(memory_format=torch.channels_last)
    colors = spec.class_colors or voc_colormap(len(spec.class_names))
    return Setup(spec, model, device, colors)


def make_loaders(spec: DataSpec, cfg: dict, device: torch.device, start_epoch=0, start_batch=0, rank=0, world=1,
                 log=print):
    workers = cfg["n_workers"]
    train_set = SegmentationDataset(
        spec.train, spec.decoder, train_transform(cfg["image_size"], cfg["augment"]), train=True, seed=cfg["seed"]
    )
    valid_set = SegmentationDataset(spec.valid, spec.decoder, eval_transform(cfg["image_size"]), train=False)
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
    sampler = EpochBatchSampler(len(train_set), cfg["batch_size"], cfg["seed"], start_epoch, start_batch, rank, world)
    pin = device.type == "cuda"
    train_loader = DataLoader(train_set, batch_sampler=sampler, num_workers=workers, pin_memory=pin,
                              persistent_workers=workers > 0)
    # At native size, images of different sizes cannot share a batch.
    valid_batch = cfg["batch_size"] if cfg["image_size"] is not None or len(spec.sizes["valid"]) == 1 else 1
    valid_loader = DataLoader(valid_set, batch_size=valid_batch, shuffle=False, num_workers=min(workers, 1),
                              collate_fn=collate_eval, pin_memory=pin)
    return train_loader, sampler, valid_loader


def train_step(model, images, masks, criterion, optimizer, scheduler, scaler, cfg, device, n_classes):
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
        hist = confusion_matrix(masks, out["out"].argmax(1), n_classes)
    return loss.detach(), hist


def validate(model, loader, criterion, cfg, n_classes, device, collect: int):
    """Whole-set confusion matrix at native label resolution; per-image loss averaged."""
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
                pred = one.argmax(0)
                hist += confusion_matrix(mask, pred, n_classes)
                labelled = (mask != IGNORE).any()  # a wholly ignored mask has no loss (mean would be NaN)
                loss_total += torch.where(labelled, criterion(one[None], mask[None]), 0.0)
                loss_count += labelled
                if len(shown) < collect:
                    shown.append((index, pred.to(torch.uint8).cpu().numpy()))
    model.train(was_training)
    result = scores(hist)
    count = int(loss_count)
    result["loss"] = float(loss_total) / count if count else math.nan
    result["confusion_matrix"] = hist.cpu().tolist()
    return result, shown


def format_duration(seconds: float) -> str:
    seconds = int(max(0, seconds))
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def train(root: Path, cfg: dict, class_names: list[str] | None = None, log=print) -> Path:
    """Train on the folder ROOT with a resolved config; returns the output folder.

    class_names, when given (an --image_type preset), stand in for a missing class_names.list.
    """
    root = Path(root)
    if cfg["threads"] is not None:
        # With other busy processes on the cores, each parallel op waits for its slowest thread.
        torch.set_num_threads(cfg["threads"])
    seed_everything(cfg["seed"])
    setup = build_for_training(root, cfg, class_names, log)
    spec, model, device = setup.spec, setup.model, setup.device
    n_classes = len(spec.class_names)
    for note in spec.notes:
        log(note)
    log(f"data: {root} ({spec.layout}); {len(spec.train)} training, {len(spec.valid)} validation images "
        f"(validation: {spec.valid_source})")
    log(f"labels: {spec.decoder.describe()}")
    log(f"model: {cfg['model']} for {n_classes} classes ({', '.join(spec.class_names)}) on {device}; "
        f"input {'native size' if cfg['image_size'] is None else 'x'.join(map(str, cfg['image_size']))}; "
        f"lr {cfg['lr']:g} ({cfg['lr_schedule']}), loss {cfg['loss_reduction']} over pixels")
    if cfg["n_workers"] > (os.cpu_count() or 1):
        log(f"note: n_workers {cfg['n_workers']} is more than this machine's {os.cpu_count()} CPUs; using {os.cpu_count()}.")
        cfg = {**cfg, "n_workers": os.cpu_count() or 1}
    out_dir = output_folder(root, cfg["output_dir"], log)
    log(f"outputs: {out_dir}")

    optimizer = torch.optim.SGD(model.parameters(), lr=cfg["lr"], momentum=cfg["momentum"],
                                weight_decay=cfg["weight_decay"])
    schedule = poly_lambda(cfg["max_iteration"]) if cfg["lr_schedule"] == "poly" else (lambda it: 1.0)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    fp16 = cfg["amp"] and device.type == "cuda" and not torch.cuda.is_bf16_supported()
    scaler = torch.amp.GradScaler(device.type, enabled=fp16)
    criterion = make_criterion(cfg)
    train_loader, sampler, valid_loader = make_loaders(spec, cfg, device, log=log)
    valid_set = valid_loader.dataset
    writer = LogWriter(out_dir / "log.csv")

    best_mean_iu = -math.inf
    start = time.perf_counter()
    last_print, last_print_it = start, 0
    iteration, epoch = 0, 0
    batches = iter(train_loader)
    try:
        while True:
            if iteration % cfg["interval_validate"] == 0 or iteration == cfg["max_iteration"]:
                result, shown = validate(model, valid_loader, criterion, cfg, n_classes, device, cfg["max_visualizations"])
                writer.row("valid", epoch, iteration, result, time.perf_counter() - start)
                is_best = not math.isnan(result["mean_iu"]) and result["mean_iu"] > best_mean_iu
                if is_best:
                    best_mean_iu = result["mean_iu"]
                per_class = " ".join(f"{n} {v:.3f}" for n, v in zip(spec.class_names, result["iu"]))
                log(f"valid @ {iteration}: mean_iu {result['mean_iu']:.4f} acc {result['acc']:.4f} "
                    f"loss {result['loss']:.4g} | IoU {per_class}{'  (new best)' if is_best else ''}")
                samples = [(*valid_set.load(i), pred) for i, pred in shown]
                write_visualization(out_dir / "visualization_viz" / f"iter{iteration:012d}.jpg", samples, setup.colors)
                payload = checkpoint_payload(setup, cfg, optimizer, scheduler, iteration, epoch, best_mean_iu,
                                             result, time.perf_counter() - start)
                save_atomic(payload, out_dir / "checkpoint.pth.tar")
                if is_best:
                    save_atomic(payload, out_dir / "model_best.pth.tar")
            if iteration >= cfg["max_iteration"]:
                break
            batch = next(batches)
            images, masks = batch
            epoch = iteration // sampler.batches_per_epoch
            loss, hist = train_step(model, images, masks, criterion, optimizer, scheduler, scaler, cfg,
                                    device, n_classes)
            loss_value = float(loss)
            if not math.isfinite(loss_value):
                raise TrainingError(
                    f"loss became {loss_value} at iteration {iteration} (lr {optimizer.param_groups[0]['lr']:g}). "
                    "Lower lr, or use \"loss_reduction\": \"mean\"; checkpoints written so far are intact."
                )
            row = scores(hist)
            row["loss"] = loss_value
            writer.row("train", epoch, iteration, row, time.perf_counter() - start)
            iteration += 1
            if iteration % cfg["log_interval"] == 0 or iteration == 1 or iteration == cfg["max_iteration"]:
                now = time.perf_counter()
                speed = (iteration - last_print_it) * cfg["batch_size"] / max(now - last_print, 1e-9)
                eta = (cfg["max_iteration"] - iteration) * cfg["batch_size"] / max(speed, 1e-9)
                log(f"iter {iteration}/{cfg['max_iteration']} epoch {epoch} loss {loss_value:.4g} "
                    f"lr {optimizer.param_groups[0]['lr']:.3g} | {speed:.1f} img/s | ETA {format_duration(eta)}")
                last_print, last_print_it = now, iteration
    finally:
        writer.close()
    log(f"done: best valid mean_iu {best_mean_iu:.4f}; model in {out_dir / 'model_best.pth.tar'}")
    return out_dir
