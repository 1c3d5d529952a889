"""Validation: the one counting of a model on labelled images, used by training, evaluate and
mode "test", so their numbers agree exactly.

The confusion matrix is counted at each label's native resolution (logits resized back to the
mask's size before argmax); the loss is averaged per image. Under torchrun each rank counts its
share of the batches and the counts are summed, so the numbers equal a one-process count.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from segtrain.data.folder import SegmentationDataset, collate_eval
from segtrain.data.labels import IGNORE
from segtrain.data.sampling import ShardedBatches
from segtrain.data.transforms import eval_transform
from segtrain.evaluation.argmax import class_map
from segtrain.evaluation.inference import native_logits
from segtrain.evaluation.metrics import confusion_matrix, scores
from segtrain.runtime import distributed, interrupt
from segtrain.runtime.workers import batches_of


def make_eval_loader(pairs, decoder, sizes: set, image_size: list[int] | None, batch_size: int, n_workers: int,
                     device: torch.device, ctx: distributed.Context = distributed.Context()) -> DataLoader:
    """Validation's loader; evaluate uses it too, so both batch the same images the same way."""
    dataset = SegmentationDataset(pairs, decoder, eval_transform(image_size), train=False)
    # At native size, images of different sizes cannot share a batch.
    batch = batch_size if image_size is not None or len(sizes) == 1 else 1
    return DataLoader(dataset, batch_sampler=ShardedBatches(len(dataset), batch, ctx.rank, ctx.world_size),
                      num_workers=min(n_workers, 1), collate_fn=collate_eval, pin_memory=device.type == "cuda",
                      worker_init_fn=interrupt.ignore_in_worker)


def count(batches, logits_of, criterion: nn.Module, n_classes: int, device: torch.device,
          collect: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, list[tuple[int, np.ndarray]]]:
    """The one count behind validation and evaluate: (confusion matrix, loss sum, images with a
    loss, the first `collect` predictions as (index, class map)). batches yields (inputs, masks,
    dataset indices); logits_of(inputs, mask sizes) gives each image's logits at its mask's size
    (a model through native_logits, or an exported file's predictor). Sums stay on the device
    and are read once at the end: no wait for a GPU per image."""
    hist = torch.zeros(n_classes, n_classes, dtype=torch.long, device=device)
    loss_total = torch.zeros((), dtype=torch.float64, device=device)
    loss_count = torch.zeros((), dtype=torch.long, device=device)
    shown: list[tuple[int, np.ndarray]] = []
    for inputs, masks, indices in batches:
        logits = logits_of(inputs, [tuple(m.shape) for m in masks])
        for one, mask, index in zip(logits, masks, indices):
            one = torch.as_tensor(one).to(device)
            mask = torch.as_tensor(mask).to(device, torch.long, non_blocking=True)
            pred = class_map(one, 0)
            hist += confusion_matrix(mask, pred, n_classes)
            labelled = (mask != IGNORE).any()  # a wholly ignored mask has no loss (mean would be NaN)
            loss_total += torch.where(labelled, criterion(one[None].float(), mask[None]), 0.0)
            loss_count += labelled
            if len(shown) < collect:
                shown.append((index, pred.to(torch.uint8).cpu().numpy()))
    return hist, loss_total, loss_count, shown


def summarize(hist: torch.Tensor, loss_total: float, loss_count: int, void: int | None = None) -> dict:
    """scores() of the confusion matrix (a void class apart) plus the mean per-image "loss" and the matrix itself."""
    result = scores(hist, void)
    result["loss"] = loss_total / loss_count if loss_count else math.nan
    result["confusion_matrix"] = hist.cpu().tolist()
    return result


def validate(model: nn.Module, loader: DataLoader, criterion: nn.Module, n_classes: int, device: torch.device, *,
             amp: bool = False, channels_last: bool = False, collect: int = 0,
             ctx: distributed.Context = distributed.Context(),
             void: int | None = None) -> tuple[dict, list[tuple[int, np.ndarray]]]:
    """summarize() of the whole set, and the predictions of the first `collect` samples (for the
    visualization tiles). Under torchrun each rank counts its share and the counts are summed."""
    distributed.sync_buffers(model, ctx)
    model = distributed.unwrap(model)  # no collectives inside: ranks may run different batch counts
    was_training = model.training
    model.eval()
    with torch.inference_mode(), batches_of(loader) as batches:
        hist, loss_total, loss_count, shown = count(
            batches, lambda images, sizes: native_logits(model, images, sizes, amp, channels_last), criterion,
            n_classes, device, collect)
    model.train(was_training)
    distributed.all_reduce_sum(hist, ctx)
    loss_sums = distributed.all_reduce_sum(torch.stack([loss_total, loss_count.double()]), ctx)
    return summarize(hist, float(loss_sums[0]), int(loss_sums[1]), void), shown
