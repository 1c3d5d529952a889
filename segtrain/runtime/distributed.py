"""Distributed training through PyTorch's own engine: torchrun sets the environment, this module
joins the process group and answers "who am I". One process per GPU (or per CPU share)."""

from __future__ import annotations

import datetime
import signal
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from segtrain.errors import SegtrainError


class DistributedError(SegtrainError):
    pass


@dataclass(frozen=True)
class Context:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def launched_by_torchrun() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init(device: torch.device) -> Context:
    """Join torchrun's process group (NCCL on CUDA, gloo on the CPU); a single process is rank 0 of 1."""
    if not launched_by_torchrun():
        return Context()
    backend = "nccl" if device.type == "cuda" else "gloo"
    try:
        # A short timeout turns a peer that died before a collective into an error, not a hang.
        dist.init_process_group(backend, timeout=datetime.timedelta(minutes=10))
    except Exception as e:
        raise DistributedError(
            f"could not join the torchrun process group ({type(e).__name__}: {e}). Check --nnodes, "
            "--rdzv_endpoint and that every node can reach the rendezvous host."
        ) from None
    return Context(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def local_device(device: torch.device, ctx: Context) -> torch.device:
    """Each process drives the GPU of its local rank."""
    if ctx.enabled and device.type == "cuda":
        torch.cuda.set_device(ctx.local_rank)
        return torch.device("cuda", ctx.local_rank)
    return device


def wrap(model: nn.Module, device: torch.device, ctx: Context, sync_bn: bool, log=print) -> nn.Module:
    if not ctx.enabled:
        return model
    if sync_bn:
        if device.type == "cuda":
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        else:
            log("note: sync_bn needs CUDA GPUs (PyTorch's SyncBatchNorm); on the CPU each process keeps its own batch statistics.")
    ids = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=ids)


def unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def sync_buffers(model: nn.Module, ctx: Context) -> None:
    """BatchNorm running statistics from rank 0 everywhere: each rank updated them on its own last
    batch, and validation and the checkpoint must see one set."""
    if ctx.enabled:
        for buffer in unwrap(model).buffers():
            dist.broadcast(buffer, src=0)


def all_reduce_sum(tensor: torch.Tensor, ctx: Context) -> torch.Tensor:
    if ctx.enabled:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def agreed_stop(signum: int | None, ctx: Context, device: torch.device) -> int | None:
    """A stop signal seen by any rank stops every rank at the same step; otherwise the others
    would wait forever in the next collective. Ranks that saw none stop as if sent SIGTERM."""
    if not ctx.enabled:
        return signum
    seen = all_reduce_sum(torch.tensor([signum or 0], dtype=torch.long, device=device), ctx)
    return signum or (signal.SIGTERM if int(seen[0]) else None)


def shutdown(ctx: Context) -> None:
    if ctx.enabled and dist.is_initialized():
        dist.destroy_process_group()
