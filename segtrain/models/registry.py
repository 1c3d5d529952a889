"""The model registry: one entry per model, holding everything the rest of segtrain needs to know
about it (which family builds it, whether it has an auxiliary head, its smallest input, its
default encoder, whether the recipe may choose it, which ImageNet weights its backbone takes).
Callers ask the entry (`MODELS[name]`), never a list of their own.

Every model returns torchvision's {"out": logits, "aux": logits?} at the input's resolution.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

from torch import nn
from torchvision import models as tvm
from torchvision.models import segmentation as seg

from segtrain.errors import ConfigError
from segtrain.models import smp_models
from segtrain.models.torchvision_models import Network, bn_momentum, load_backbone, small_fcn, torchvision_network

TORCHVISION = "torchvision"  # a network of its own, its backbone in its name (torchvision_models.py)
SMP = "smp"  # a segmentation_models_pytorch architecture, built with an encoder of smp's (smp_models.py)


@dataclass(frozen=True)
class ModelEntry:
    """One model and what the rest of segtrain needs to know about it."""

    name: str
    family: str  # TORCHVISION or SMP
    network: Network | None = None  # TORCHVISION: its builder; smp builds its architectures by name
    imagenet_url: str | None = None  # TORCHVISION: its backbone's ImageNet file; SMP: the encoder's, which smp names
    aux_head: bool = False  # trains with "aux_loss"
    min_side: int = 0  # the smallest input side its network takes (an smp model pads smaller inputs up to it); 0: any
    default_encoder: str | None = None  # SMP: the encoder used when the config names none
    recipe_choice: bool = False  # the default recipe may choose it (config/recipe.py fit_recipe)

    @property
    def takes_encoder(self) -> bool:
        return self.family == SMP

    def encoder(self, given: str | None = None) -> str | None:
        """The encoder this model is built with: the given one, else the entry's default; None for a
        model whose backbone is in its name. The one place the default encoder is filled in."""
        return (given or self.default_encoder) if self.takes_encoder else None

    def build(self, num_classes: int, aux_loss: bool = False, backbone_weights: Path | None = None,
              encoder: str | None = None) -> nn.Module:
        """backbone_weights: the ImageNet file `weights.resolve` found (None: from scratch); encoder: smp
        models' (None = the default)."""
        if aux_loss and not self.aux_head:
            raise ConfigError(f"model {self.name} has no auxiliary head; set \"aux_loss\": false.")
        if self.takes_encoder:
            return smp_models.build(self.name, self.encoder(encoder), num_classes, backbone_weights, self.min_side,
                                    self.default_encoder)
        model = self.network(num_classes, aux_loss)
        if backbone_weights is not None:
            load_backbone(model.backbone, backbone_weights, self.name)
        return model


def _torchvision(name: str, network: Network, backbone: type[tvm.WeightsEnum], *, aux_head: bool = True,
                 recipe_choice: bool = False) -> ModelEntry:
    return ModelEntry(name, TORCHVISION, network, backbone.DEFAULT.url, aux_head=aux_head, recipe_choice=recipe_choice)


# smp's own default encoder: the one most of its users' results and issues are about, and ImageNet
# weights for it are small (85 MB) and widely cached.
SMP_DEFAULT_ENCODER = "resnet34"


def _smp(arch: str, *, default_encoder: str = SMP_DEFAULT_ENCODER, min_side: int = 0,
         recipe_choice: bool = False) -> ModelEntry:
    return ModelEntry(arch, SMP, min_side=min_side, default_encoder=default_encoder, recipe_choice=recipe_choice)


ENTRIES = (
    _torchvision("fcn_resnet18", small_fcn(tvm.resnet18), tvm.ResNet18_Weights),
    _torchvision("fcn_resnet34", small_fcn(tvm.resnet34), tvm.ResNet34_Weights),
    _torchvision("fcn_resnet50", torchvision_network(seg.fcn_resnet50), tvm.ResNet50_Weights),
    _torchvision("fcn_resnet101", torchvision_network(seg.fcn_resnet101), tvm.ResNet101_Weights),
    _torchvision("deeplabv3_resnet50", torchvision_network(seg.deeplabv3_resnet50), tvm.ResNet50_Weights),
    _torchvision("lraspp_mobilenet_v3_large", bn_momentum(torchvision_network(seg.lraspp_mobilenet_v3_large)),
                 tvm.MobileNet_V3_Large_Weights, aux_head=False, recipe_choice=True),
    # smp 0.6's architectures by their lower-case class names (smp.MODEL_ARCHITECTURES_MAPPING), less
    # DPT: it takes only timm ViT encoders ("tu-..."), which segtrain does not offer yet.
    _smp("unet", recipe_choice=True),
    _smp("unetplusplus"),
    _smp("manet"),
    _smp("linknet"),
    _smp("fpn"),
    _smp("pspnet"),
    _smp("deeplabv3"),
    _smp("deeplabv3plus"),
    # PAN's feature pyramid attention pools the stride-16 features three more times: below 128 px
    # nothing is left to pool.
    _smp("pan", min_side=128),
    _smp("upernet"),
    _smp("segformer", default_encoder="mit_b0"),  # SegFormer is defined by its Mix Transformer
)
MODELS: MappingProxyType[str, ModelEntry] = MappingProxyType({entry.name: entry for entry in ENTRIES})


def names(family: str | None = None) -> list[str]:
    """The registered models' names (of one family, when given), in the registry's order."""
    return [entry.name for entry in ENTRIES if family in (None, entry.family)]


def recipe_choices() -> list[str]:
    """The models a run whose config leaves the model open may have trained."""
    return [entry.name for entry in ENTRIES if entry.recipe_choice]


def build_model(name: str, num_classes: int, aux_loss: bool = False, backbone_weights: Path | None = None,
                encoder: str | None = None) -> nn.Module:
    """The untrained model `name` (see ModelEntry.build)."""
    if name not in MODELS:
        raise ConfigError(f"unknown model {name!r}; known models: {', '.join(MODELS)}.")
    return MODELS[name].build(num_classes, aux_loss, backbone_weights, encoder)
