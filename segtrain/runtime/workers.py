"""How many data-loading worker processes this machine can take.

Workers hand batches to the main process through shared memory in /dev/shm. Docker gives a
container 64 MB there by default, which a few prefetched batches of large images overflow (the
loader then dies with a bus error). Both of torch's sharing strategies live in /dev/shm, so the
remedy is fewer workers: as many as fit, down to loading in the main process.
"""

from __future__ import annotations

import contextlib
import os
import shutil

PREFETCH = 2  # DataLoader's default prefetch_factor: batches in flight per worker
BYTES_PER_PIXEL = 3 * 4 + 8  # float32 RGB image + int64 mask
SHM_USE = 0.5  # leave half of /dev/shm to everything else


def shm_free_bytes(path: str = "/dev/shm") -> int | None:
    try:
        return shutil.disk_usage(path).free
    except OSError:
        return None  # no /dev/shm (not Linux): torch shares memory another way


def batch_bytes(batch_size: int, height: int, width: int) -> int:
    return batch_size * height * width * BYTES_PER_PIXEL


def fit_workers(wanted: int, cpus: int, shm_free: int | None, one_batch: int) -> tuple[int, list[str]]:
    """The worker count to use and a note for each reduction."""
    notes = []
    workers = wanted
    if workers > cpus:
        notes.append(f"note: n_workers {wanted} is more than this machine's {cpus} CPUs; using {cpus}.")
        workers = cpus
    if workers > 0 and shm_free is not None:
        fits = int(shm_free * SHM_USE) // max(1, PREFETCH * one_batch)
        if fits < workers:
            using = f"{fits} worker(s)" if fits else "the main process (n_workers 0)"
            notes.append(
                f"note: /dev/shm has only {shm_free / 2**20:.0f} MB free (Docker's default is 64 MB) and "
                f"{workers} worker(s) with {PREFETCH} batches of {one_batch / 2**20:.1f} MB each would not fit; "
                f"loading with {using}. For more, start the container with --shm-size=2g."
            )
            workers = fits
    return workers, notes


def plan_workers(cfg: dict, train_sizes: set[tuple[int, int]], log=print, unlabeled_batch: int = 0) -> int:
    """The run's worker count; train_sizes are the (H, W) of the training images. Each worker
    also prefetches unlabeled_batch unlabeled images per step (0: none)."""
    height, width = cfg["image_size"] or max(train_sizes, key=lambda hw: hw[0] * hw[1])
    one_batch = batch_bytes(cfg["batch_size"] + unlabeled_batch, height, width)
    workers, notes = fit_workers(cfg["n_workers"], os.cpu_count() or 1, shm_free_bytes(), one_batch)
    for note in notes:
        log(note)
    return workers


@contextlib.contextmanager
def batches_of(loader):
    """Iterate a DataLoader whose worker processes end on every way out of the `with`.

    Workers ignore SIGTERM (interrupt.ignore_in_worker), and torch only stops them when the
    iterator is garbage-collected, which an exception raised in a worker delays to after exit
    (its traceback holds the iterator in a reference cycle). Python's exit then sends them SIGTERM
    and waits for them without a timeout: the error was printed and the process never ended.
    """
    batches = iter(loader)
    try:
        yield batches
    finally:
        shut_down_workers(batches)


def shut_down_workers(batches) -> None:
    if not hasattr(batches, "_workers"):
        return  # n_workers 0: loading in this process
    batches._shutdown_workers()  # asks each worker to exit and joins it; idle ones exit at once
    for worker in batches._workers:
        if worker.is_alive():  # still busy after torch's join timeout, and deaf to its SIGTERM
            worker.kill()
            worker.join()
