"""How strongly a model disagrees with each mask: the ranking behind `segtrain audit` and the
report's "Labels to re-check".

Each image gets three numbers, counted over its non-ignored pixels at the mask's native size
(the logits are those of the one inference routine, evaluation/inference.py):
- loss: the mean cross-entropy of the mask under the model (plain, without the run's class
  weights or extra terms, so images compare on one scale);
- mean_iu: the mean IoU between the model's class map and the mask (classes in neither are skipped);
- disagree_share: the share of pixels where the model's argmax is not the mask's class.

Images are ranked by loss, highest first. Loss uses the model's confidence: a mask the model
contradicts with certainty (a wrong label, as a person would see it) ranks above one where the
model hesitates (a hard image, a soft cloud edge), while IoU and the share of disagreeing pixels
count both alike; they are reported beside it so a person sees how much of the mask is at stake.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from segtrain.data.labels import IGNORE
from segtrain.evaluation.argmax import class_map
from segtrain.evaluation.metrics import confusion_matrix, scores


@dataclass(frozen=True)
class Doubt:
    index: int  # the image's index in the batches' dataset
    loss: float  # NaN when every pixel of the mask is ignored
    mean_iu: float
    disagree_share: float


def rank_doubts(batches, logits_of, n_classes: int, device: torch.device = torch.device("cpu"),
                void: int | None = None) -> list[Doubt]:
    """Every image's Doubt, most doubtful (highest loss) first; wholly ignored masks last.

    batches and logits_of as for validation.count: batches yields (inputs, masks, dataset
    indices), logits_of(inputs, mask sizes) gives each image's logits (C, H, W) at its mask's size."""
    doubts = []
    for inputs, masks, indices in batches:
        logits = logits_of(inputs, [tuple(m.shape) for m in masks])
        for one, mask, index in zip(logits, masks, indices):
            one = torch.as_tensor(one).to(device).float()
            mask = torch.as_tensor(mask).to(device, torch.long)
            labelled = mask != IGNORE
            n_labelled = int(labelled.sum())
            if n_labelled == 0:
                doubts.append(Doubt(int(index), math.nan, math.nan, math.nan))
                continue
            pred = class_map(one, 0)
            loss = F.cross_entropy(one[None], mask[None], ignore_index=IGNORE)
            disagree = ((pred != mask) & labelled).sum()
            mean_iu = scores(confusion_matrix(mask, pred, n_classes), void)["mean_iu"]
            doubts.append(Doubt(int(index), float(loss), mean_iu, int(disagree) / n_labelled))
    # Ties (and the NaNs, last) in dataset order, so the same model and folder give the same ranking.
    return sorted(doubts, key=lambda d: (math.isnan(d.loss), -d.loss if not math.isnan(d.loss) else 0.0, d.index))
