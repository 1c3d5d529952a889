"""The model registry: a name -> builder of torchvision's segmentation models, and the
architectures of segmentation_models_pytorch (with an "encoder"), see smp_models.py.

Every model returns torchvision's {"out": logits, "aux": logits?} at the input's resolution.
"""

from __future__ import annotations

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


def build_model(name: str, num_classes: int, aux_loss: bool = False, backbone_weights: Path | None = None,
                encoder: str | None = None) -> nn.Module:
    """backbone_weights: the ImageNet file `weights.resolve` found (None: from scratch); encoder: smp
    models' (None = their default)."""
    if name not in MODEL_NAMES:
        raise ConfigError(f"unknown model {name!r}; known models: {', '.join(MODEL_NAMES)}.")
    if aux_loss and name in NO_AUX_HEAD:
        raise ConfigError(f"model {name} has no auxiliary head; set \"aux_loss\": false.")
    if name in smp_models.ARCHITECTURES:
        return smp_models.build(name, encoder or smp_models.default_encoder(name), num_classes, backbone_weights)
    model = REGISTRY[name][0](num_classes, aux_loss, None)
    if backbone_weights is not None:
        load_backbone(model.backbone, backbone_weights, name)
    return model


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
