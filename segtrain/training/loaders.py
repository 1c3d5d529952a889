"""The training run's loaders: shuffled, augmented batches for training, validation's, and the
unlabeled images' when there are some (training/consistency.py)."""

from __future__ import annotations

import torch
from torch.utils.data import DataLoader

from segtrain.data.cache import fill_cache
from segtrain.data.folder import DataSpec, SegmentationDataset
from segtrain.data.sampling import EpochBatchSampler, sample_position
from segtrain.data.transforms import collate_train, collate_unlabeled, train_transform
from segtrain.data.unlabeled import Unlabeled, UnlabeledDataset
from segtrain.evaluation.validation import make_eval_loader
from segtrain.runtime import distributed, interrupt


def make_loaders(spec: DataSpec, cfg: dict, device: torch.device, workers: int, start_epoch=0, start_batch=0,
                 ctx: distributed.Context = distributed.Context(), log=print, unlabeled: Unlabeled | None = None,
                 iteration: int = 0):
    """(training loader, its batch sampler, validation loader, unlabeled loader or None); `workers`
    is the planned count (runtime/workers.py), not the config's wish. The unlabeled loader starts
    at `iteration`, as the training one at (start_epoch, start_batch)."""
    train_set = SegmentationDataset(
        spec.train, spec.decoder, train_transform(cfg["image_size"], cfg["augment"]), train=True,
        seed=cfg["seed"] if cfg["augment"] else None
    )
    valid_loader = make_eval_loader(spec.valid, spec.decoder, spec.sizes["valid"], cfg["image_size"],
                                    cfg["batch_size"], workers, device, ctx)
    valid_set = valid_loader.dataset
    unlabeled_set = None if unlabeled is None else UnlabeledDataset(
        unlabeled.paths, train_transform(cfg["image_size"], cfg["augment"], jitter=False),
        cfg["seed"] + 1 if cfg["augment"] else None)
    if cfg["cache_mb"] > 0:  # before any worker forks, so workers share the decoded arrays
        cached, total, used = fill_cache([train_set, valid_set] + ([unlabeled_set] if unlabeled_set else []),
                                         cfg["cache_mb"])
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
    train_loader = DataLoader(train_set, batch_sampler=sampler, num_workers=workers, collate_fn=collate_train,
                              pin_memory=pin, persistent_workers=workers > 0, worker_init_fn=interrupt.ignore_in_worker)
    unlabeled_loader = None
    if unlabeled_set is not None:
        # Its own order (seed + 1), positioned from the iteration like the training sampler.
        position = sample_position(iteration, len(unlabeled_set), unlabeled.batch_size, ctx.world_size)
        unlabeled_sampler = EpochBatchSampler(len(unlabeled_set), unlabeled.batch_size, cfg["seed"] + 1, *position,
                                              ctx.rank, ctx.world_size)
        unlabeled_loader = DataLoader(unlabeled_set, batch_sampler=unlabeled_sampler, num_workers=workers,
                                      collate_fn=collate_unlabeled, pin_memory=pin, persistent_workers=workers > 0,
                                      worker_init_fn=interrupt.ignore_in_worker)
    return train_loader, sampler, valid_loader, unlabeled_loader
