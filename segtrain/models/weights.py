"""Where a model's ImageNet weights come from, said in one phrase for the start line and the report.

In order: a weights folder the user brought (the key "weights_dir", else the environment variable
SEGTRAIN_WEIGHTS), then torch's and Hugging Face's own caches (TORCH_HOME, HF_HOME: timm and
segmentation_models_pytorch read the latter), then a download. `segtrain weights DIR` fills such a
folder on a machine with internet, for machines without (cluster nodes, field stations).

A weights folder is laid out as those caches are, so that one folder serves both:
  DIR/checkpoints/<torchvision's file name>   torchvision backbones (ResNet, MobileNetV3), as torch.hub's folder
  DIR/huggingface/                             a Hugging Face hub cache (smp encoders, safetensors)

Every torchvision file, from a folder or a cache, is read by segtrain with `weights_only=True`
(tensors only: torchvision's own loader unpickles freely) and must fill the backbone exactly;
smp's files are safetensors, which hold tensors only.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch

from segtrain.errors import ConfigError
from segtrain.models import smp_models
from segtrain.models.registry import MODELS

ENVIRONMENT = "SEGTRAIN_WEIGHTS"
TORCHVISION_FOLDER = "checkpoints"
HUGGING_FACE_FOLDER = "huggingface"
SAFETENSORS = "model.safetensors"
NONE = "none: trained from scratch"


@dataclass(frozen=True)
class Weights:
    """The backbone's (or smp encoder's) ImageNet weights file, None for none, and where it came
    from in words."""

    file: Path | None
    source: str


def weights_folder(cfg_value: str | None, environ=os.environ) -> Path | None:
    """The folder the user brought: the config's "weights_dir", else SEGTRAIN_WEIGHTS; None if neither."""
    given, where = (cfg_value, 'key "weights_dir"') if cfg_value else (environ.get(ENVIRONMENT), ENVIRONMENT)
    if not given:
        return None
    folder = Path(given).expanduser()
    if not folder.is_dir():
        raise ConfigError(f"{where}: {folder} is not a folder. Give the folder that `segtrain weights` wrote, "
                          f"or unset {where}.")
    return folder


def _label(name: str, encoder: str | None) -> str:
    return f"{name} with encoder {encoder}" if encoder else name


def _fetch_hint(name: str, encoder: str | None) -> str:
    model = name + (f" --encoder {encoder}" if encoder else "")
    return (f"on a machine with internet run `segtrain weights DIR --model {model}`, bring DIR along and set "
            f'"weights_dir" (or {ENVIRONMENT}) to it')


def resolve(name: str, encoder: str | None, wanted: bool | None, folder: Path | None = None, log=print) -> Weights:
    """The ImageNet weights for the backbone (wanted: None = when they can be had, True = insist,
    False = none)."""
    if wanted is False:
        return Weights(None, NONE + ' ("pretrained_backbone": false)')
    entry = MODELS[name]
    if entry.takes_encoder:
        return _resolve_encoder(name, entry.encoder(encoder), wanted, folder, log)
    return _resolve_torchvision(name, entry.imagenet_url, wanted, folder, log)


def _missing(name: str, encoder: str | None, wanted: bool | None, why: str, log) -> Weights:
    """Offline (or a folder without them): an error when insisted on, else one warning and from scratch."""
    if wanted:
        raise ConfigError(f"pretrained_backbone is true but {why}. Go online, or {_fetch_hint(name, encoder)}, "
                          "or set \"pretrained_backbone\": false.")
    log(f"warning: {why}; training from scratch. To use them, {_fetch_hint(name, encoder)}.")
    return Weights(None, f"{NONE} ({why})")


def _resolve_torchvision(name: str, url: str, wanted: bool | None, folder: Path | None, log) -> Weights:
    if folder is not None:
        path = folder / TORCHVISION_FOLDER / os.path.basename(url)
        if not path.is_file():
            return _missing(name, None, wanted, f"the weights folder {folder} has no ImageNet weights for {name} "
                            f"({path.name})", log)
        return Weights(path, f"ImageNet weights from the weights folder ({path})")
    cache = Path(torch.hub.get_dir()) / TORCHVISION_FOLDER / os.path.basename(url)
    if cache.is_file():
        return Weights(cache, f"ImageNet weights from torch's cache ({cache})")
    try:
        download_torchvision(url, cache)
    except Exception as e:  # offline, proxy, DNS: all mean "not available here"
        return _missing(name, None, wanted, f"no ImageNet weights for {name} (offline? {type(e).__name__}; "
                        f"nothing at {cache})", log)
    log(f"downloaded ImageNet weights for {name} to {cache}")
    return Weights(cache, f"ImageNet weights downloaded to {cache}")


def download_torchvision(url: str, path: Path) -> None:
    """By download_url_to_file, since load_state_dict_from_url prints "Downloading ..." before it
    knows whether it can (offline, that line came before our warning and contradicted it); the hash
    in the name is checked."""
    path.parent.mkdir(parents=True, exist_ok=True)
    digest = torch.hub.HASH_REGEX.search(path.name)
    torch.hub.download_url_to_file(url, str(path), digest.group(1) if digest else None, progress=False)


def _resolve_encoder(name: str, encoder: str, wanted: bool | None, folder: Path | None, log) -> Weights:
    source = smp_models.imagenet_weights(encoder)
    if source is None:
        if wanted:
            raise ConfigError(f"pretrained_backbone is true but segmentation_models_pytorch has no ImageNet weights "
                              f"for encoder {encoder!r}; choose another \"encoder\" or set \"pretrained_backbone\": false.")
        log(f"note: encoder {encoder} has no ImageNet weights in segmentation_models_pytorch; training from scratch.")
        return Weights(None, f"{NONE} (encoder {encoder} has no ImageNet weights)")
    from huggingface_hub import hf_hub_download

    repo, revision = source
    cache_dir = None if folder is None else str(folder / HUGGING_FACE_FOLDER)
    where = "the weights folder" if folder is not None else "Hugging Face's cache"
    try:  # the cache first: offline, the download would first wait for the network to fail
        path = hf_hub_download(repo, SAFETENSORS, revision=revision, cache_dir=cache_dir, local_files_only=True)
        return Weights(Path(path), f"ImageNet weights from {where} ({path})")
    except Exception:
        if folder is not None:
            return _missing(name, encoder, wanted, f"the weights folder {folder} has no ImageNet weights for "
                            f"encoder {encoder} ({repo})", log)
    try:
        path = hf_hub_download(repo, SAFETENSORS, revision=revision)
    except Exception as e:  # offline, proxy, DNS: all mean "not available here"
        return _missing(name, encoder, wanted, f"no ImageNet weights for {name} with encoder {encoder} "
                        f"(offline? {type(e).__name__}; Hugging Face repo {repo})", log)
    log(f"downloaded ImageNet weights for encoder {encoder} to {path}")
    return Weights(Path(path), f"ImageNet weights downloaded to {path}")


def fetch(folder: Path, name: str, encoder: str | None = None, log=print) -> Path:
    """Into a weights folder, for `segtrain weights`: the file `resolve` will read from it."""
    entry = MODELS[name]
    if entry.takes_encoder:
        encoder = entry.encoder(encoder)
        source = smp_models.imagenet_weights(encoder)
        if source is None:
            raise ConfigError(f"--encoder {encoder}: segmentation_models_pytorch has no ImageNet weights for it; "
                              "nothing to fetch (it trains from scratch).")
        from huggingface_hub import hf_hub_download

        repo, revision = source
        try:
            return Path(hf_hub_download(repo, SAFETENSORS, revision=revision, cache_dir=str(folder / HUGGING_FACE_FOLDER)))
        except Exception as e:
            raise ConfigError(f"could not download ImageNet weights for encoder {encoder} from Hugging Face repo "
                              f"{repo} ({type(e).__name__}); this command needs internet.") from None
    url = entry.imagenet_url
    path = folder / TORCHVISION_FOLDER / os.path.basename(url)
    if not path.is_file():
        try:
            download_torchvision(url, path)
        except Exception as e:
            raise ConfigError(f"could not download {url} ({type(e).__name__}); this command needs internet.") from None
    return path
