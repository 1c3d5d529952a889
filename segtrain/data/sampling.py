"""The order in which samples are seen, as a pure function of (seed, epoch).

Training: each epoch is torch's DistributedSampler permutation (reshuffled per epoch with
set_epoch, sharded across processes, remainder dropped so every rank runs the same number of
steps), cut into full batches. Each sample carries its (epoch, index) key so augmentation can be
seeded from it too. The data order is thus fixed by the seed and the position, whatever the worker
count, which is what makes resuming exact.

Validation: fixed batches of consecutive images, dealt out whole to the ranks, so every image is
counted once and sees exactly the batch it would see in a single process.
"""

from __future__ import annotations

from torch.utils.data import DistributedSampler, Sampler


def epoch_order(n: int, seed: int, epoch: int, rank: int = 0, world_size: int = 1) -> list[int]:
    sampler = DistributedSampler(range(n), num_replicas=world_size, rank=rank, shuffle=True, seed=seed,
                                 drop_last=world_size > 1)
    sampler.set_epoch(epoch)
    return list(sampler)


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
            shard = epoch_order(self.n, self.seed, epoch, self.rank, self.world_size)
            for b in range(first, self.batches_per_epoch):
                yield [(epoch, i) for i in shard[b * self.batch_size : (b + 1) * self.batch_size]]
            epoch, first = epoch + 1, 0

    def __len__(self) -> int:  # endless; DataLoader only needs this for len(loader)
        return 2**62


class ShardedBatches(Sampler):
    """Batches [0..B), [B..2B), ... of range(n); rank r takes batches r, r + world, ..."""

    def __init__(self, n: int, batch_size: int, rank: int = 0, world_size: int = 1):
        starts = list(range(0, n, batch_size))[rank::world_size]
        self.batches = [list(range(s, min(s + batch_size, n))) for s in starts]

    def __iter__(self):
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


def batches_per_epoch(n: int, batch_size: int, world_size: int = 1) -> int:
    return max(1, (n // world_size) // batch_size)


def sample_position(iteration: int, n: int, batch_size: int, world_size: int = 1) -> tuple[int, int]:
    """(epoch, batch within it) of a training iteration: where a resumed sampler starts."""
    return divmod(iteration, batches_per_epoch(n, batch_size, world_size))


def sample_seed(seed: int, epoch: int, index: int) -> int:
    return (seed * 1_000_003 + epoch) * 10_000_019 + index
