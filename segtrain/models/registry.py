"""The model registry: a name -> builder of torchvision's segmentation models, and the
architectures of segmentation_models_pytorch (with an "encoder"), see smp_models.py.

Every model returns torchvision's {"out": logits, "aux": logits?} at the input's resolution.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

import torch
from torch import nn
from torchvision import models as tvm
from torchvision.models import segmentation as seg
from torchvision.models._utils import IntermediateLayerGetter
from torchvision.models.segmentation.fcn import FCN, FCNHead

from segtrain.errors import ConfigError
from segtrain.models import smp_models


def _dilate_basic_layer(layer: nn.Sequential, previous_dilation: int, dilation: int) -> None:
    """Turn a stride-2 ResNet BasicBlock stage into a dilated stride-1 one, as torchvision does
    for Bottleneck stages (BasicBlock refuses dilation in its constructor)."""
    for i, block in enumerate(layer):
        first = i == 0
        for conv, d in ((block.conv1, previous_dilation if first else dilation), (block.conv2, dilation)):
            conv.stride = (1, 1)
            conv.dilation = (d, d)
            conv.padding = (d, d)
        if block.downsample is not None:
            block.downsample[0].stride = (1, 1)


def _small_fcn(depth: int):
    backbone_fn = {18: (tvm.resnet18, tvm.ResNet18_Weights), 34: (tvm.resnet34, tvm.ResNet34_Weights)}[depth]

    def build(num_classes: int, aux_loss: bool, backbone_weights) -> nn.Module:
        fn, _ = backbone_fn
        backbone = fn(weights=backbone_weights)
        # Output stride 8, like torchvision's fcn_resnet50: finer masks for small objects.
        _dilate_basic_layer(backbone.layer3, 1, 2)
        _dilate_basic_layer(backbone.layer4, 2, 4)
        return_layers = {"layer4": "out", "layer3": "aux"} if aux_loss else {"layer4": "out"}
        body = IntermediateLayerGetter(backbone, return_layers=return_layers)
        aux = FCNHead(256, num_classes) if aux_loss else None
        return FCN(body, FCNHead(512, num_classes), aux)

    return build, backbone_fn[1]


def _torchvision(fn, weights_enum):
    def build(num_classes: int, aux_loss: bool, backbone_weights) -> nn.Module:
        return fn(weights=None, weights_backbone=backbone_weights, num_classes=num_classes, aux_loss=aux_loss)

    return build, weights_enum


def _bn_momentum(entry, momentum: float = 0.1):
    """torchvision's MobileNetV3 keeps BatchNorm running statistics with momentum 0.01, tuned for
    long ImageNet runs. In a short run from scratch those statistics lag the weights for hundreds of
    iterations, so evaluation (which uses them) scores far below training; PyTorch's usual 0.1
    follows the weights."""
    builder, weights_enum = entry

    def build(num_classes: int, aux_loss: bool, backbone_weights) -> nn.Module:
        model = builder(num_classes, aux_loss, backbone_weights)
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.momentum = momentum
        return model

    return build, weights_enum


# name -> (builder(num_classes, aux_loss, backbone_weights), backbone weights enum)
REGISTRY: dict[str, tuple[Callable[..., nn.Module], type]] = {
    "fcn_resnet18": _small_fcn(18),
    "fcn_resnet34": _small_fcn(34),
    "fcn_resnet50": _torchvision(seg.fcn_resnet50, tvm.ResNet50_Weights),
    "fcn_resnet101": _torchvision(seg.fcn_resnet101, tvm.ResNet101_Weights),
    "deeplabv3_resnet50": _torchvision(seg.deeplabv3_resnet50, tvm.ResNet50_Weights),
    "lraspp_mobilenet_v3_large": _bn_momentum(_torchvision(seg.lraspp_mobilenet_v3_large, tvm.MobileNet_V3_Large_Weights)),
}
MODEL_NAMES = list(REGISTRY) + list(smp_models.ARCHITECTURES)
NO_AUX_HEAD = {"lraspp_mobilenet_v3_large", *smp_models.ARCHITECTURES}


def backbone_weights_path(weights) -> Path:
    """Where torchvision's builders look for the weights before they download them."""
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(weights.url)


def resolve_backbone_weights(name: str, wanted: bool | None, log=print, encoder: str | None = None):
    """ImageNet weights for the backbone: from the hub cache or a download; None means from scratch.

    wanted=None uses them when they can be had and otherwise warns; wanted=True insists.
    """
    if name in smp_models.ARCHITECTURES:
        return smp_models.resolve_encoder_weights(name, encoder, wanted, log)
    if wanted is False:
        return None
    weights = REGISTRY[name][1].DEFAULT
    cache = backbone_weights_path(weights)
    if cache.is_file():
        return weights
    try:
        # Fetched now rather than inside the builder, so failure is ours to explain; and by
        # download_url_to_file, since load_state_dict_from_url prints "Downloading ..." before it
        # knows whether it can (offline, that line came before our warning and contradicted it).
        cache.parent.mkdir(parents=True, exist_ok=True)
        digest = torch.hub.HASH_REGEX.search(cache.name)
        torch.hub.download_url_to_file(weights.url, str(cache), digest.group(1) if digest else None, progress=False)
    except Exception as e:  # offline, proxy, DNS: all mean "not available here"
        how = f"download {weights.url} to {cache}"
        if wanted:
            raise ConfigError(
                f"pretrained_backbone is true but ImageNet weights for {name} could not be downloaded "
                f"({type(e).__name__}: {e}). Go online, or {how}, or set \"pretrained_backbone\": false."
            ) from None
        log(f"warning: no ImageNet weights for {name} (offline?); training from scratch. To use them, {how}.")
        return None
    log(f"downloaded ImageNet weights for {name} to {cache}")
    return weights


def build_model(name: str, num_classes: int, aux_loss: bool = False, backbone_weights=None,
                encoder: str | None = None) -> nn.Module:
    """backbone_weights: from `resolve_backbone_weights`; encoder: smp models' (None = their default)."""
    if name not in MODEL_NAMES:
        raise ConfigError(f"unknown model {name!r}; known models: {', '.join(MODEL_NAMES)}.")
    if aux_loss and name in NO_AUX_HEAD:
        raise ConfigError(f"model {name} has no auxiliary head; set \"aux_loss\": false.")
    if name in smp_models.ARCHITECTURES:
        return smp_models.build(name, encoder or smp_models.default_encoder(name), num_classes, backbone_weights)
    return REGISTRY[name][0](num_classes, aux_loss, backbone_weights)
