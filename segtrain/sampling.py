"""The order in which training samples are seen, as a pure function of (seed, epoch).

Each epoch is a seeded permutation, cut into full batches; each sample carries its (epoch,
index) key so augmentation can be seeded from it too. The whole data order is thus fixed by the
seed and the position, whatever the worker count, which is what makes resuming exact.
"""

from __future__ import annotations

import torch
from torch.utils.data import Sampler


def epoch_order(n: int, seed: int, epoch: int) -> list[int]:
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(n, generator=g).tolist()


class EpochBatchSampler(Sampler):
    """Endless full batches of (epoch, index) keys, starting at a given epoch and batch."""

    def __init__(self, n: int, batch_size: int, seed: int, start_epoch: int = 0, start_batch: int = 0,
                 rank: int = 0, world_size: int = 1):
        self.n = n
        self.batch_size = batch_size
        self.seed = seed
        self.start_epoch = start_epoch
        self.start_batch = start_batch
        self.rank = rank
        self.world_size = world_size

    @property
    def batches_per_epoch(self) -> int:
        return batches_per_epoch(self.n, self.batch_size, self.world_size)

    def __iter__(self):
        epoch, first = self.start_epoch, self.start_batch
        while True:
            order = epoch_order(self.n, self.seed, epoch)
            shard = order[self.rank :: self.world_size]
            for b in range(first, self.batches_per_epoch):
                yield [(epoch, i) for i in shard[b * self.batch_size : (b + 1) * self.batch_size]]
            epoch, first = epoch + 1, 0

    def __len__(self) -> int:  # endless; DataLoader only needs this for len(loader)
        return 2**62


def batches_per_epoch(n: int, batch_size: int, world_size: int = 1) -> int:
    return max(1, (n // world_size) // batch_size)


def sample_position(iteration: int, n: int, batch_size: int, world_size: int = 1) -> tuple[int, int]:
    """(epoch, batch within it) of a training iteration: where a resumed sampler starts."""
    return divmod(iteration, batches_per_epoch(n, batch_size, world_size))


def sample_seed(seed: int, epoch: int, index: int) -> int:
    return (seed * 1_000_003 + epoch) * 10_000_019 + index
