"""One training iteration: forward, loss, backward, optimizer and schedule step, and the batch's
confusion matrix for its log.csv row."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel

from segtrain.errors import SegtrainError
from segtrain.evaluation.argmax import class_map
from segtrain.evaluation.inference import autocast
from segtrain.evaluation.metrics import confusion_matrix
from segtrain.outputs.checkpoints import cpu_state
from segtrain.runtime import distributed
from segtrain.training.consistency import Consistency
from segtrain.training.ema import make_ema

AUX_WEIGHT = 0.5  # torchvision references' weight for the auxiliary head


class TrainingError(SegtrainError):
    pass


@dataclass
class Stepper:
    """What one step needs; `step` is the whole of it."""

    model: nn.Module
    criterion: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    device: torch.device
    n_classes: int
    amp: bool = False
    channels_last: bool = False
    aux_loss: bool = False
    ema: AveragedModel | None = None  # the average of the weights (config ema_decay), updated every step
    compiled: nn.Module | None = None  # torch.compile(model) (config compile): the training forward only
    consistency: Consistency | None = None  # learning from unlabeled images (training/consistency.py)

    @property
    def lr(self) -> float:
        return self.optimizer.param_groups[0]["lr"]

    @property
    def weights(self) -> nn.Module:
        """What validation counts and checkpoints hold as model_state_dict: the average when EMA is on."""
        return self.model if self.ema is None else self.ema.module

    def average_weights(self, decay: float | None, ckpt: dict | None = None) -> None:
        """Turn EMA on (decay not None): continue the average a checkpoint holds, else start it from
        the live weights (also when resuming a run that had EMA off)."""
        if decay is None:
            return
        self.ema = make_ema(distributed.unwrap(self.model), decay)
        if ckpt is not None and "ema_updates" in ckpt:
            self.ema.module.load_state_dict(ckpt["model_state_dict"])
            self.ema.n_averaged.fill_(ckpt["ema_updates"])

    def ema_state(self) -> dict:
        """What a checkpoint needs besides the averaged weights to continue exactly."""
        if self.ema is None:
            return {}
        return {"live_state_dict": cpu_state(distributed.unwrap(self.model)), "ema_updates": int(self.ema.n_averaged)}

    def step(self, images: torch.Tensor, masks: torch.Tensor, unlabeled: torch.Tensor | None = None,
             iteration: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        """(loss, confusion matrix) of the batch, both left on the device (no wait for a GPU).
        unlabeled: the weak view of a batch of unlabeled images (needs `consistency`)."""
        if not self.model.training:  # train() walks every module: ~1 ms a step for LR-ASPP on the CPU
            self.model.train()
        images = images.to(self.device, non_blocking=True)
        masks = masks.to(self.device, non_blocking=True)
        n_labeled = len(images)
        if unlabeled is not None:
            unlabeled = unlabeled.to(self.device, non_blocking=True)
            targets = self.consistency.targets(self.teacher(), unlabeled, self.amp)
            strong, keep = self.consistency.strong_view(unlabeled, iteration)
            # One forward of labeled and strong images together: one pass through DDP, and batch
            # norm sees both, as in FixMatch's interleaved batches.
            images = torch.cat([images, strong])
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        with autocast(self.device, self.amp):
            out = (self.model if self.compiled is None else self.compiled)(images)
            if unlabeled is not None:
                strong_logits = out["out"][n_labeled:]
                out = {key: value[:n_labeled] for key, value in out.items() if value is not None}
            loss = self.criterion(out["out"].float(), masks)
            if self.aux_loss and out.get("aux") is not None:
                loss = loss + AUX_WEIGHT * self.criterion(out["aux"].float(), masks)
            if unlabeled is not None:
                loss = loss + self.consistency.loss(strong_logits, *targets, keep)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        if self.ema is not None:
            self.ema.update_parameters(distributed.unwrap(self.model))
        with torch.no_grad():
            hist = confusion_matrix(masks, class_map(out["out"], 1), self.n_classes)
        return loss.detach(), hist

    def teacher(self) -> nn.Module:
        """What predicts the pseudo-labels: the EMA in eval mode (nothing of it changes), else the
        live network in train mode, whose batch-norm statistics then see the weak views too."""
        if self.ema is None:
            return distributed.unwrap(self.model)  # no DDP: a pass without gradients needs no sync
        if self.ema.module.training:
            self.ema.module.eval()
        return self.ema.module

    def global_step(self, images, masks, iteration: int, ctx: distributed.Context,
                    unlabeled: torch.Tensor | None = None) -> tuple[float, torch.Tensor]:
        """A step whose loss and confusion matrix describe the global batch (summed over ranks);
        a loss that is no longer finite stops the run before anything more is written."""
        loss, hist = self.step(images, masks, unlabeled, iteration)
        if ctx.enabled:
            distributed.all_reduce_sum(hist, ctx)
            loss = distributed.all_reduce_sum(loss.reshape(1).double(), ctx)[0] / ctx.world_size
        value = float(loss)
        if not math.isfinite(value):
            raise TrainingError(
                f"loss became {value} at iteration {iteration} (lr {self.lr:g}). Lower lr, or use "
                "\"loss_reduction\": \"mean\"; checkpoints written so far are intact "
                "(to continue from the last one with a lower lr: --resume --set lr=...)."
            )
        return value, hist
