"""torchvision's segmentation networks (FCN, DeepLabV3, LR-ASPP) and the small FCNs segtrain adds
on ResNet-18/34, each as a builder (num_classes, aux_loss) -> network, and the reading of their
backbones' ImageNet files. Every network returns {"out": logits, "aux": logits?} at the input's
resolution.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import torch
from torch import nn
from torchvision import models as tvm
from torchvision.models._utils import IntermediateLayerGetter
from torchvision.models.segmentation.fcn import FCN, FCNHead

from segtrain.errors import ConfigError

Network = Callable[[int, bool], nn.Module]  # (num_classes, aux_loss) -> an untrained network


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


def small_fcn(resnet: Callable[..., tvm.ResNet]) -> Network:
    """An FCN on a BasicBlock ResNet (18 or 34), which torchvision does not offer."""

    def build(num_classes: int, aux_loss: bool) -> nn.Module:
        backbone = resnet(weights=None)
        # Output stride 8, like torchvision's fcn_resnet50: finer masks for small objects.
        _dilate_basic_layer(backbone.layer3, 1, 2)
        _dilate_basic_layer(backbone.layer4, 2, 4)
        return_layers = {"layer4": "out", "layer3": "aux"} if aux_loss else {"layer4": "out"}
        body = IntermediateLayerGetter(backbone, return_layers=return_layers)
        aux = FCNHead(256, num_classes) if aux_loss else None
        return FCN(body, FCNHead(512, num_classes), aux)

    return build


def torchvision_network(fn: Callable[..., nn.Module]) -> Network:
    """One of torchvision.models.segmentation's builders, untrained (its backbone's ImageNet
    weights are read by `load_backbone`)."""

    def build(num_classes: int, aux_loss: bool) -> nn.Module:
        return fn(weights=None, weights_backbone=None, num_classes=num_classes, aux_loss=aux_loss)

    return build


def bn_momentum(network: Network, momentum: float = 0.1) -> Network:
    """torchvision's MobileNetV3 keeps BatchNorm running statistics with momentum 0.01, tuned for
    long ImageNet runs. In a short run from scratch those statistics lag the weights for hundreds of
    iterations, so evaluation (which uses them) scores far below training; PyTorch's usual 0.1
    follows the weights."""

    def build(num_classes: int, aux_loss: bool) -> nn.Module:
        model = network(num_classes, aux_loss)
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.momentum = momentum
        return model

    return build


IMAGENET_CLASSIFIERS = ("fc.", "classifier.")  # ResNet's and MobileNetV3's heads, not part of a backbone


def load_backbone(backbone: nn.Module, file: Path, name: str) -> None:
    """torchvision's ImageNet file into a segmentation model's backbone, read as tensors only (torchvision's
    own loader unpickles freely). The backbone keeps the classifier's layers' names ("layer4.1.conv2.weight")
    or, for MobileNetV3, those of its `features` ("features.16.0.weight" -> "16.0.weight"); the file must
    fill every one of them with a tensor of its shape, and hold nothing else but the ImageNet classifier."""
    try:
        state = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as e:
        raise ConfigError(f"{file}: not a file of tensors ({type(e).__name__}); delete it to fetch it again, or "
                          "set \"pretrained_backbone\": false.") from None
    wanted = backbone.state_dict()
    for prefix in ("", "features."):
        if not isinstance(state, dict):
            break
        found = {key: state.get(prefix + key) for key in wanted}
        # everything but the ImageNet classifier must be used: a deeper network's file fills a shallower one's keys
        unused = set(state) - {prefix + key for key in wanted}
        if all(isinstance(t, torch.Tensor) and t.shape == wanted[k].shape for k, t in found.items()) and all(
                str(key).startswith(IMAGENET_CLASSIFIERS) for key in unused):
            backbone.load_state_dict(found)
            return
    raise ConfigError(f"{file}: not ImageNet weights for {name}'s backbone (its tensors do not fit); delete it to "
                      "fetch it again, or set \"pretrained_backbone\": false.")
