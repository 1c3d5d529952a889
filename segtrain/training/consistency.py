"""Learning from unlabeled images: FixMatch consistency (Sohn et al. 2020) for segmentation, as in
UniMatch (Yang et al. 2023) without its second strong view and feature perturbation.

Each step also takes a batch of unlabeled images, augmented by the loader like the labeled ones
(scale-crop and flips: the weak view). A forward pass without gradients (the EMA of the weights
when ema_decay is on, else the live network) predicts on it; pixels whose top softmax is at least
unlabeled_threshold get that class as pseudo-label. The strong view is the same tensor with
strong photometric changes and a cut-out rectangle, so its pixels stay aligned with the pseudo-
labels; the network learns to predict them there. The loss is the cross-entropy on confident
pixels averaged over all unlabeled pixels (FixMatch's form: few confident pixels, small loss;
summed instead with loss_reduction "sum", so it keeps its weight next to a summed labeled loss),
times unlabeled_weight, added to the supervised loss before the one backward pass.

Why FixMatch: one extra forward without gradients per step and no second network to train, so it
fits a CPU budget as well as a GPU one (mean teacher or co-training need more).

The strong view's randomness comes from its own generator seeded from (seed, iteration, rank),
so a resumed run draws exactly what the uninterrupted one drew.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.transforms.v2 import functional as TF

from segtrain.data.sampling import sample_seed
from segtrain.data.transforms import MEAN, STD
from segtrain.evaluation.inference import autocast

# Strong view, after UniMatch's: colour jitter 0.5 (p 0.8), greyscale (p 0.2), Gaussian blur
# sigma 0.1-2 (p 0.5), and a cut-out box of 2-40% of the image with aspect 0.3-3.3 (p 0.5).
# Without unlabeled_colour the jitter leaves saturation alone and nothing is greyed: where colour is
# what tells the classes apart (blue sky, white cloud), a greyed view cannot be told apart, and
# learning to match pseudo-labels on it cost swimseg 0.055 mean IoU (7 minutes on the CPU); on
# CamVid, whose classes share colours, the full view measured 0.017 better. So unlabeled_colour
# null decides from the data: the full view unless the pixels' chromaticity alone separates the
# classes at least COLOUR_CARRIES_CLASSES well (data/fingerprint.py colour_separability: swimseg
# 0.71, CamVid 0.11, grey EM membrane 0).
COLOUR_CARRIES_CLASSES = 0.5
# unlabeled_threshold null: FixMatch's 0.95, except with two classes, where it keeps most pixels from
# teaching: swimseg (40 labeled + 360 unlabeled, 7 CPU minutes) ended at 0.825 and 0.822 with 0.8
# against 0.810-0.817 with 0.95, while CamVid's 11 classes scored 0.305 with 0.8 against 0.327
# (BENCHMARKS.md section 8).
THRESHOLD_TWO_CLASSES, THRESHOLD = 0.8, 0.95
JITTER_P, JITTER = 0.8, 0.5
GREY_P = 0.2
BLUR_P, SIGMA = 0.5, (0.1, 2.0)
CUT_P, CUT_AREA, CUT_RATIO = 0.5, (0.02, 0.4), (0.3, 1 / 0.3)
CUT_FILL = 0.5  # mid-grey, in [0, 1] before normalisation


def grey(x: torch.Tensor) -> torch.Tensor:
    """(N, 1, H, W) luma of (N, 3, H, W) RGB in [0, 1] (ITU-R 601, as torchvision's rgb_to_grayscale)."""
    return (0.299 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3])


@dataclass
class Consistency:
    threshold: float
    weight: float
    seed: int
    rank: int = 0
    reduction: str = "mean"  # the config's loss_reduction
    colour: bool = True  # the config's unlabeled_colour (strong_colour): saturation jitter and greyscale in the strong view
    last: torch.Tensor | None = None  # (unlabeled loss, share of confident pixels) of the latest step

    def targets(self, teacher: nn.Module, weak: torch.Tensor, amp: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """(pseudo-labels, confident pixels) of the weak view."""
        with torch.no_grad(), autocast(weak.device, amp):
            logits = teacher(weak)["out"]
        confidence, labels = logits.float().softmax(1).max(1)
        return labels, confidence >= self.threshold

    def strong_view(self, weak: torch.Tensor, iteration: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(strong view, pixels outside its cut-out box) of a normalised (N, 3, H, W) batch."""
        n, _, h, w = weak.shape
        g = torch.Generator().manual_seed(sample_seed(self.seed, iteration, self.rank))
        # Every number is drawn, used or not, so the stream does not depend on earlier choices.
        jitter_on, grey_on, blur_on, cut_on = (torch.rand(4, n, generator=g) < torch.tensor(
            [[JITTER_P], [GREY_P], [BLUR_P], [CUT_P]]))
        factors = 1 + JITTER * (2 * torch.rand(3, n, generator=g) - 1)
        factors = torch.where(jitter_on, factors, torch.ones_like(factors))
        if not self.colour:  # keep what tells the classes apart: saturation, and colour at all
            factors[2] = 1
            grey_on = torch.zeros_like(grey_on)
        sigmas = SIGMA[0] + (SIGMA[1] - SIGMA[0]) * torch.rand(n, generator=g)
        cut = torch.rand(4, n, generator=g)

        dev = weak.device
        mean = torch.tensor(MEAN, device=dev).view(1, 3, 1, 1)
        std = torch.tensor(STD, device=dev).view(1, 3, 1, 1)
        x = (weak.float() * std + mean).clamp(0, 1)
        brightness, contrast, saturation = (f.to(dev).view(n, 1, 1, 1) for f in factors)
        x = (x * brightness).clamp(0, 1)
        m = grey(x).mean(dim=(1, 2, 3), keepdim=True)
        x = ((x - m) * contrast + m).clamp(0, 1)
        y = grey(x)
        x = ((x - y) * saturation + y).clamp(0, 1)
        x = torch.where(grey_on.to(dev).view(n, 1, 1, 1), grey(x).expand_as(x), x)
        largest = max(1, (min(h, w) - 1) // 2 * 2 + 1)  # an odd kernel that fits the image
        for i in torch.nonzero(blur_on).flatten().tolist():
            sigma = float(sigmas[i])
            size = min(2 * math.ceil(3 * sigma) + 1, largest)
            x[i] = TF.gaussian_blur(x[i], [size, size], [sigma, sigma])
        keep = torch.ones(n, h, w, dtype=torch.bool, device=dev)
        for i in torch.nonzero(cut_on).flatten().tolist():
            area = (CUT_AREA[0] + (CUT_AREA[1] - CUT_AREA[0]) * float(cut[0, i])) * h * w
            ratio = math.exp(math.log(CUT_RATIO[0]) + (math.log(CUT_RATIO[1]) - math.log(CUT_RATIO[0])) * float(cut[1, i]))
            ch, cw = min(h, max(1, round(math.sqrt(area / ratio)))), min(w, max(1, round(math.sqrt(area * ratio))))
            top, left = int(float(cut[2, i]) * (h - ch + 1)), int(float(cut[3, i]) * (w - cw + 1))
            x[i, :, top:top + ch, left:left + cw] = CUT_FILL
            keep[i, top:top + ch, left:left + cw] = False  # nothing there to predict
        return ((x - mean) / std).to(weak.dtype), keep

    def loss(self, logits: torch.Tensor, labels: torch.Tensor, confident: torch.Tensor,
             keep: torch.Tensor) -> torch.Tensor:
        per_pixel = F.cross_entropy(logits.float(), labels, reduction="none")
        masked = per_pixel * (confident & keep)
        loss = self.weight * (masked.sum() if self.reduction == "sum" else masked.mean())
        self.last = torch.stack([loss.detach(), confident.float().mean()])
        return loss

    def stats(self) -> tuple[float, float]:
        """(unlabeled loss, share of confident pixels) of the latest step on this process."""
        loss, share = self.last.tolist()
        return loss, share


def confidence_threshold(cfg: dict, n_classes: int) -> tuple[float, str]:
    """(the run's unlabeled_threshold, why, for the log): the config's, else decided by the
    number of classes."""
    if cfg["unlabeled_threshold"] is not None:
        return cfg["unlabeled_threshold"], "as configured"
    if n_classes == 2:
        return THRESHOLD_TWO_CLASSES, "two classes"
    return THRESHOLD, f"{n_classes} classes"


def strong_colour(cfg: dict, spec, saved: dict | None) -> tuple[bool, str]:
    """(the run's unlabeled_colour, why, for the log): the config's, a resumed run's own, else
    decided from the data."""
    if cfg["unlabeled_colour"] is not None:
        value, why = cfg["unlabeled_colour"], "as configured"
    elif saved is not None and isinstance(saved.get("unlabeled_colour"), bool):
        value, why = saved["unlabeled_colour"], "as the run began"
    else:
        from segtrain.data.fingerprint import colour_separability

        separability = colour_separability(spec)
        value = separability < COLOUR_CARRIES_CLASSES
        why = (f"colour alone separates the classes {separability:.2f}, {'under' if value else 'at least'} "
               f"{COLOUR_CARRIES_CLASSES}; set unlabeled_colour to choose")
    return value, f"{'changes' if value else 'keeps'} colours ({why})"
