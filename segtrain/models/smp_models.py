"""segmentation_models_pytorch's architectures (U-Net, FPN, DeepLabV3+, SegFormer, ...) with its
encoders, shaped like torchvision's segmentation models: {"out": logits} at the input's size.

smp is imported only when one of its models is asked for, so the torchvision models' commands
do not pay for importing it (and timm) at start.
"""

from __future__ import annotations

import difflib
from typing import Dict

import torch
import torch.nn.functional as F
from torch import nn

from segtrain.errors import ConfigError

# Every encoder of depth 5 reduces by 32; padding to a multiple of it fits every decoder's skips.
MULTIPLE = 32
INSTALL_HINT = "pip install 'segmentation-models-pytorch>=0.5,<0.7'"


def _smp():
    try:
        import segmentation_models_pytorch as smp
    except ImportError:
        raise ConfigError(f"smp models need segmentation-models-pytorch, which is not installed: {INSTALL_HINT}.") from None
    return smp


def encoder_names() -> list[str]:
    """smp's own encoders; its deprecated "timm-" aliases are left out (they warn on every build)."""
    return [name for name in _smp().encoders.get_encoder_names() if not name.startswith("timm-")]


def check_encoder(encoder: str, source: str) -> None:
    names = encoder_names()
    if encoder not in names:
        near = difflib.get_close_matches(str(encoder), names, n=1)
        hint = f" Did you mean {near[0]!r}?" if near else ""
        raise ConfigError(f"{source}: key 'encoder' is {encoder!r}, which is not an encoder of "
                          f"segmentation_models_pytorch.{hint} Known encoders: {', '.join(names)}.")


class SmpSegmentation(nn.Module):
    """An smp model taking any input size: padded (edge pixels repeated) to what its encoder and
    decoder divide, and cropped back, so training sizes, tiles and predict's sizes need no care."""

    def __init__(self, net: nn.Module, multiple: int, min_size: int):
        super().__init__()
        self.net = net
        self.multiple = multiple
        self.min_size = min_size

    def forward(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        # No branch on the size: an exported graph must pad every size it is given as eager does.
        h, w = x.shape[-2], x.shape[-1]
        if torch.jit.is_scripting() or torch.jit.is_tracing():  # (a trace holds one size anyway)
            target_h, target_w = max(h, self.min_size), max(w, self.min_size)
        else:  # sym_max keeps the size symbolic under torch.export (max() would fix it to the example's)
            target_h, target_w = torch.sym_max(h, self.min_size), torch.sym_max(w, self.min_size)
        m = self.multiple
        pad_h = (target_h + m - 1) // m * m - h
        pad_w = (target_w + m - 1) // m * m - w
        x = F.pad(x, [0, pad_w, 0, pad_h], mode="replicate")
        return {"out": self.net(x)[:, :, :h, :w]}


def build(arch: str, encoder: str, num_classes: int, weights_file: str | None, min_side: int,
          default_encoder: str) -> nn.Module:
    """The architecture of a registry entry (models/registry.py: its min_side and default_encoder)
    on `encoder`; weights_file: the encoder's ImageNet weights (safetensors) from `weights.resolve`."""
    smp = _smp()
    try:
        net = smp.create_model(arch, encoder_name=encoder, encoder_weights=None, classes=num_classes)
    except (ValueError, KeyError, AssertionError, TypeError) as e:
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ConfigError(f"model {arch} cannot use encoder {encoder!r} ({reason}); choose another \"encoder\", "
                          f"e.g. {default_encoder!r}.") from None
    if weights_file is not None:
        from safetensors.torch import load_file

        # What smp's builder does with encoder_weights="imagenet", from a file we fetched ourselves
        # (dilation, applied by the builder, changes strides only, not weights).
        try:
            net.encoder.load_state_dict(load_file(weights_file, device="cpu"))
        except Exception as e:  # a damaged or foreign file in the cache
            raise ConfigError(f"{weights_file}: not ImageNet weights for encoder {encoder} "
                              f"({type(e).__name__}); delete it to fetch them again, or set "
                              "\"pretrained_backbone\": false.") from None
    return SmpSegmentation(net, MULTIPLE, min_side)


def imagenet_weights(encoder: str) -> tuple[str, str] | None:
    """(Hugging Face repo, revision) of the encoder's ImageNet weights, None if smp has none."""
    settings = _smp().encoders.encoders[encoder]["pretrained_settings"].get("imagenet")
    return (settings["repo_id"], settings["revision"]) if settings else None
