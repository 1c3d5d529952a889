"""The training run's two loaders: shuffled, augmented batches for training, and validation's."""

from __future__ import annotations

import torch
from torch.utils.data import DataLoader

from segtrain.data.cache import fill_cache
from segtrain.data.folder import DataSpec, SegmentationDataset
from segtrain.data.sampling import EpochBatchSampler
from segtrain.data.transforms import train_transform
from segtrain.evaluation.validation import make_eval_loader
from segtrain.runtime import distributed, interrupt


def make_loaders(spec: DataSpec, cfg: dict, device: torch.device, workers: int, start_epoch=0, start_batch=0,
                 ctx: distributed.Context = distributed.Context(), log=print):
    """(training loader, its batch sampler, validation loader); `workers` is the planned count
    (runtime/workers.py), not the config's wish."""
    train_set = SegmentationDataset(
        spec.train, spec.decoder, train_transform(cfg["image_size"], cfg["augment"]), train=True,
        seed=cfg["seed"] if cfg["augment"] else None
    )
    valid_loader = make_eval_loader(spec.valid, spec.decoder, spec.sizes["valid"], cfg["image_size"],
                                    cfg["batch_size"], workers, device, ctx)
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
