"""The training loss: cross-entropy, Dice, Focal, Lovasz-Softmax or a sum of them, each with
per-class weights and blind to ignored pixels (labels.IGNORE).

Written here rather than taken from smp.losses: smp's multiclass Focal is a sum of one-vs-all
sigmoid losses (not the softmax Focal loss of Lin et al.) and its Dice and Lovasz take no class
weights. Each term is a mean over the labelled pixels (or present classes), so a sum of terms
keeps every term's scale.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from segtrain.data.labels import IGNORE, read_mask
from segtrain.errors import ConfigError

TERMS = ("ce", "dice", "focal", "lovasz")
PIXEL_TERMS = ("ce", "focal")  # defined per pixel, so a sum over pixels (loss_reduction "sum") means something
FOCAL_GAMMA = 2.0  # Lin et al.'s value; with gamma 0 the Focal term equals cross-entropy
AUTO_KEY = "auto_class_weights"  # where the weights "auto" found are recorded in the run's config


def loss_terms(text) -> list[str]:
    return [term.strip() for term in text.split("+")] if isinstance(text, str) else []


def check_loss_keys(cfg: dict, source: str) -> None:
    """The loss keys' form; the class_weights' length is checked when the classes are known."""
    terms = loss_terms(cfg["loss"])
    if not terms or any(term not in TERMS for term in terms) or len(set(terms)) != len(terms):
        raise ConfigError(f"{source}: key 'loss' is {cfg['loss']!r}; use one of {', '.join(map(repr, TERMS))} "
                          "or a sum of different ones such as \"ce+dice\".")
    if cfg["loss_reduction"] == "sum" and any(term not in PIXEL_TERMS for term in terms):
        raise ConfigError(f"{source}: key 'loss_reduction' is 'sum' (over pixels), which only 'ce' and 'focal' "
                          f"have, but 'loss' is {cfg['loss']!r}. Set \"loss_reduction\": \"mean\" or drop dice/lovasz.")
    for key in ("class_weights", AUTO_KEY):
        weights = cfg.get(key)
        if weights is None or (weights == "auto" and key == "class_weights"):
            continue
        if (not isinstance(weights, list) or not weights
                or any(isinstance(w, bool) or not isinstance(w, (int, float)) or not np.isfinite(w) or w < 0 for w in weights)
                or not any(w > 0 for w in weights)):
            raise ConfigError(f"{source}: key {key!r} must be \"auto\", null or a list of numbers >= 0 "
                              f"(one per class, not all 0), got {weights!r}.")


def median_frequency_weights(pairs, decoder, n_classes: int) -> list[float]:
    """Median frequency balancing (Eigen & Fergus 2015): class c's frequency is its pixels over the
    labelled pixels of the images that hold it; its weight is the median frequency over that one.
    A class no training pixel holds gets 1 (it is never a target, so its weight does not matter)."""
    pixels = np.zeros(n_classes, dtype=np.int64)
    seen_in = np.zeros(n_classes, dtype=np.int64)  # labelled pixels of the images holding each class
    for pair in pairs:
        mask = decoder.decode(read_mask(pair.label), pair.label)
        counts = np.bincount(mask[mask != IGNORE].ravel(), minlength=n_classes)[:n_classes]
        pixels += counts
        seen_in += np.where(counts > 0, counts.sum(), 0)
    present = pixels > 0
    if not present.any():
        return [1.0] * n_classes
    freq = np.where(present, pixels / np.maximum(seen_in, 1), 0.0)
    median = float(np.median(freq[present]))
    return [round(float(median / f), 4) if p else 1.0 for f, p in zip(freq, present)]  # built-ins: checkpoints load weights_only


def fitted_class_weights(cfg, train_pairs, decoder, class_names, log=print) -> dict:
    """When training starts: class_weights "auto" counted from the training masks once, as the
    plan's AUTO_KEY, so checkpoints (and evaluate from them) carry the same numbers; {} otherwise."""
    if cfg["class_weights"] != "auto" or cfg.get(AUTO_KEY) is not None:
        return {}
    weights = median_frequency_weights(train_pairs, decoder, len(class_names))
    shown = ", ".join(f"{name} {w:g}" for name, w in zip(class_names, weights))
    log(f"class weights (auto, median frequency of {len(train_pairs)} training masks): {shown}")
    return {AUTO_KEY: weights}


def class_weights(cfg, n_classes: int, class_names) -> list[float] | None:
    """The weights of cfg["class_weights"]; "auto" means those recorded in cfg[AUTO_KEY]."""
    wanted = cfg.get("class_weights")
    if wanted is None:
        return None
    if wanted == "auto":
        wanted = cfg.get(AUTO_KEY)
        if wanted is None:
            raise ConfigError("class_weights is \"auto\" but the checkpoint does not record the weights it found; "
                              "train again with this segtrain, or set \"class_weights\" to a list.")
    if len(wanted) != n_classes:
        raise ConfigError(f"key 'class_weights' lists {len(wanted)} weight(s) but there are {n_classes} classes "
                          f"({', '.join(class_names)}); give one per class, or \"auto\".")
    return [float(w) for w in wanted]


def _labelled(logits: torch.Tensor, target: torch.Tensor):
    """(labelled pixels as a bool mask, target with ignored pixels set to class 0 so it can index)."""
    valid = target != IGNORE
    return valid, torch.where(valid, target, torch.zeros_like(target))


def focal_loss(logits, target, weight, reduction: str, gamma: float = FOCAL_GAMMA):
    """Softmax Focal loss: -w[t] (1 - p_t)^gamma log p_t; the mean is weighted like cross-entropy's."""
    valid, safe = _labelled(logits, target)
    log_pt = F.log_softmax(logits, 1).gather(1, safe[:, None])[:, 0]
    per_pixel = -((1 - log_pt.exp()) ** gamma) * log_pt
    w = (weight[safe] if weight is not None else torch.ones_like(log_pt)) * valid
    total = (per_pixel * w).sum()
    return total if reduction == "sum" else total / w.sum().clamp_min(1e-12)


def _per_class_mean(losses: torch.Tensor, present: torch.Tensor, weight, anchor: torch.Tensor):
    """Mean over the classes the target holds (weighted); 0 with a gradient when it holds none."""
    w = present.to(losses.dtype) * (weight if weight is not None else 1.0)
    if not bool(w.sum() > 0):
        return anchor.sum() * 0.0
    return (losses * w).sum() / w.sum()


def dice_loss(logits, target, weight, reduction: str = "mean", eps: float = 1e-7):
    """1 - soft Dice per class over the batch's labelled pixels, averaged over the classes present."""
    valid, safe = _labelled(logits, target)
    n_classes = logits.shape[1]
    probs = F.softmax(logits, 1) * valid[:, None]
    onehot = F.one_hot(safe, n_classes).permute(0, 3, 1, 2).to(probs.dtype) * valid[:, None]
    dims = (0, 2, 3)
    inter = (probs * onehot).sum(dims)
    card = probs.sum(dims) + onehot.sum(dims)
    return _per_class_mean(1 - 2 * inter / card.clamp_min(eps), onehot.sum(dims) > 0, weight, logits)


def _lovasz_grad(fg_sorted: torch.Tensor) -> torch.Tensor:
    """Gradient of the Lovasz extension of the Jaccard loss at sorted errors (Berman et al. 2018)."""
    gts = fg_sorted.sum()
    intersection = gts - fg_sorted.cumsum(0)
    union = gts + (1 - fg_sorted).cumsum(0)
    jaccard = 1 - intersection / union
    return torch.cat([jaccard[:1], jaccard[1:] - jaccard[:-1]])


def lovasz_loss(logits, target, weight, reduction: str = "mean"):
    """Lovasz-Softmax over the batch's labelled pixels, averaged over the classes present."""
    valid = target != IGNORE
    probs = F.softmax(logits, 1).permute(0, 2, 3, 1)[valid]  # (pixels, classes)
    labels = target[valid]
    n_classes = logits.shape[1]
    losses, present = [], []
    for c in range(n_classes):
        fg = (labels == c).to(probs.dtype)
        errors, order = (fg - probs[:, c]).abs().sort(descending=True)
        losses.append(errors @ _lovasz_grad(fg[order]))
        present.append(fg.sum() > 0)
    return _per_class_mean(torch.stack(losses), torch.stack(present), weight, logits)


class SegmentationLoss(nn.Module):
    """The sum of the chosen terms, each called as term(logits, target, class weights, reduction)."""

    FUNCTIONS = {
        "ce": lambda logits, target, weight, reduction: F.cross_entropy(
            logits, target, weight=weight, ignore_index=IGNORE, reduction=reduction),
        "focal": focal_loss,
        "dice": dice_loss,
        "lovasz": lovasz_loss,
    }

    def __init__(self, terms: list[str], weight: list[float] | None, reduction: str):
        super().__init__()
        self.terms, self.reduction = terms, reduction
        self.weight = None if weight is None else torch.tensor(weight, dtype=torch.float32)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        weight = None if self.weight is None else self.weight.to(logits.device, logits.dtype)
        return sum(self.FUNCTIONS[term](logits, target, weight, self.reduction) for term in self.terms)


def build_loss(cfg, class_names, source: str = "the checkpoint's config") -> nn.Module:
    """The criterion of a run (its plan, fitted: class_weights "auto" recorded) or of a checkpoint's
    config: called as criterion(logits NCHW, target NHW with IGNORE) -> scalar."""
    check_loss_keys(cfg, source)  # again: a checkpoint's config was never read through `resolve`
    terms = loss_terms(cfg.get("loss", "ce"))
    weight = class_weights(cfg, len(class_names), class_names)
    if terms == ["ce"] and weight is None:
        return nn.CrossEntropyLoss(ignore_index=IGNORE, reduction=cfg["loss_reduction"])  # the original's loss
    return SegmentationLoss(terms, weight, cfg["loss_reduction"])
