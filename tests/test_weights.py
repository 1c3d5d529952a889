"""ImageNet backbone weights: from a folder brought along, torch's or Hugging Face's cache, or a
download; one true line when there are none; where they came from in the start line and the report.
The weight files are made by the tests (random tensors of the real shapes), never downloaded."""

import os
import subprocess
import sys

import pytest
import torch
from torchvision import models as tvm

from segtrain.cli import main
from segtrain.data.synthetic import write_sky_folder
from segtrain.errors import ConfigError
from segtrain.models.registry import build_model
from segtrain.models.weights import ENVIRONMENT, HUGGING_FACE_FOLDER, TORCHVISION_FOLDER, resolve, weights_folder

RESNET18_FILE = os.path.basename(tvm.ResNet18_Weights.DEFAULT.url)
MOBILENET_FILE = os.path.basename(tvm.MobileNet_V3_Large_Weights.DEFAULT.url)
OFFLINE = {"HTTPS_PROXY": "http://127.0.0.1:9", "https_proxy": "http://127.0.0.1:9", "HF_HUB_OFFLINE": "1"}

OFFLINE_RUN = """
from segtrain.models.weights import resolve
w = resolve("fcn_resnet18", None, None)
assert w.file is None and w.source.startswith("none: trained from scratch"), w
"""


def imagenet_like(folder, builder, name, seed=3):
    torch.manual_seed(seed)
    state = builder().state_dict()
    path = folder / TORCHVISION_FOLDER / name
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, path)
    return state


def test_offline_without_weights_warns_once_and_trains_from_scratch(tmp_path):
    # A proxy that refuses connections: offline on any machine, and at once.
    env = {**os.environ, "TORCH_HOME": str(tmp_path), **OFFLINE}
    result = subprocess.run([sys.executable, "-c", OFFLINE_RUN], capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0, result.stderr
    lines = (result.stdout + result.stderr).splitlines()
    assert len(lines) == 1 and lines[0].startswith("warning: no ImageNet weights for fcn_resnet18 (offline?"), lines
    assert "Downloading" not in lines[0] and RESNET18_FILE in lines[0]
    assert "segtrain weights DIR --model fcn_resnet18" in lines[0] and "weights_dir" in lines[0]
    assert not any((tmp_path / "hub" / "checkpoints").iterdir())  # no partial download left behind


def test_cached_weights_are_loaded_without_a_word(tmp_path, monkeypatch, capfd):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    imagenet = imagenet_like(tmp_path / "hub", tvm.resnet18, RESNET18_FILE)
    weights = resolve("fcn_resnet18", None, True)
    assert weights.source.startswith("ImageNet weights from torch's cache")
    model = build_model("fcn_resnet18", 2, backbone_weights=weights.file)
    assert torch.equal(model.backbone.conv1.weight, imagenet["conv1.weight"])
    assert torch.equal(model.backbone.layer4[1].bn2.running_var, imagenet["layer4.1.bn2.running_var"])
    out, err = capfd.readouterr()
    assert out == err == ""


def test_a_weights_folder_serves_torchvision_backbones_before_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    imagenet_like(tmp_path / "torch" / "hub", tvm.mobilenet_v3_large, MOBILENET_FILE, seed=1)  # the cache: not used
    brought = imagenet_like(tmp_path / "weights", tvm.mobilenet_v3_large, MOBILENET_FILE, seed=2)
    monkeypatch.setenv(ENVIRONMENT, str(tmp_path / "weights"))
    weights = resolve("lraspp_mobilenet_v3_large", None, True, weights_folder(None))
    assert weights.source == f"ImageNet weights from the weights folder ({tmp_path / 'weights' / TORCHVISION_FOLDER / MOBILENET_FILE})"
    model = build_model("lraspp_mobilenet_v3_large", 3, backbone_weights=weights.file)
    # MobileNetV3's `features` are the backbone: "features.16.0.weight" -> "16.0.weight"
    assert torch.equal(model.backbone["16"][0].weight, brought["features.16.0.weight"])
    assert torch.equal(model.backbone["0"][1].running_mean, brought["features.0.1.running_mean"])


def test_a_folder_without_the_models_weights_is_one_warning_or_an_error_when_insisted_on(tmp_path):
    (tmp_path / "w").mkdir()
    lines = []
    weights = resolve("fcn_resnet18", None, None, tmp_path / "w", lines.append)
    assert weights.file is None and len(lines) == 1
    assert lines[0].startswith(f"warning: the weights folder {tmp_path / 'w'} has no ImageNet weights for fcn_resnet18")
    with pytest.raises(ConfigError) as e:
        resolve("fcn_resnet18", None, True, tmp_path / "w", lines.append)
    assert "pretrained_backbone is true but the weights folder" in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(ConfigError) as e:
        weights_folder(str(tmp_path / "missing"))
    assert 'key "weights_dir"' in str(e.value) and "is not a folder" in str(e.value)


MARKER_PICKLE = """
import os, torch
class Payload:
    def __reduce__(self):
        return (os.system, ("touch {marker}",))
torch.save({{"conv1.weight": Payload()}}, {path!r})
"""


def test_hostile_or_foreign_weight_files_are_refused_in_one_line_and_run_nothing(tmp_path):
    path = tmp_path / "w" / TORCHVISION_FOLDER / RESNET18_FILE
    path.parent.mkdir(parents=True)
    marker = tmp_path / "MARKER"
    subprocess.run([sys.executable, "-c", MARKER_PICKLE.format(marker=marker, path=str(path))], check=True)
    # the payload is live: a plain torch.load runs it
    torch.load(path, weights_only=False)
    assert marker.exists()
    marker.unlink()
    weights = resolve("fcn_resnet18", None, True, tmp_path / "w")
    with pytest.raises(ConfigError) as e:
        build_model("fcn_resnet18", 2, backbone_weights=weights.file)
    assert "not a file of tensors" in str(e.value) and not marker.exists()
    # tensors, but another network's: refused, not half-loaded
    torch.save(tvm.resnet34().state_dict(), path)
    with pytest.raises(ConfigError) as e:
        build_model("fcn_resnet18", 2, backbone_weights=resolve("fcn_resnet18", None, True, tmp_path / "w").file)
    assert "not ImageNet weights for fcn_resnet18's backbone" in str(e.value) and "\n" not in str(e.value)


def test_smp_encoder_weights_from_a_folder_in_hugging_face_layout(tmp_path):
    """The folder's huggingface/ is a Hugging Face cache: the file in it is what the encoder gets, offline."""
    from huggingface_hub import hf_hub_download
    from safetensors.torch import save_file

    from segtrain.models import smp_models

    repo, revision = smp_models.imagenet_weights("mobilenet_v2")
    cache = tmp_path / "w" / HUGGING_FACE_FOLDER
    # the layout huggingface_hub itself reads: models--OWNER--NAME/{refs,snapshots/REVISION}/
    snapshot = cache / f"models--{repo.replace('/', '--')}" / "snapshots" / revision
    snapshot.mkdir(parents=True)
    torch.manual_seed(3)
    imagenet = {k: v.clone() for k, v in build_model("unet", 2, encoder="mobilenet_v2").net.encoder.state_dict().items()}
    save_file(imagenet, str(snapshot / "model.safetensors"))
    assert hf_hub_download(repo, "model.safetensors", revision=revision, cache_dir=str(cache), local_files_only=True)
    lines = []
    weights = resolve("unet", "mobilenet_v2", True, tmp_path / "w", lines.append)
    assert weights.source.startswith("ImageNet weights from the weights folder") and lines == []
    torch.manual_seed(4)
    model = build_model("unet", 2, backbone_weights=weights.file, encoder="mobilenet_v2")
    for key, tensor in imagenet.items():
        assert torch.equal(model.net.encoder.state_dict()[key], tensor), key


def test_start_line_and_report_say_where_the_weights_came_from(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv(ENVIRONMENT, raising=False)
    root = write_sky_folder(tmp_path / "d", n_train=4, n_valid=2, size=32, config={
        "model": "fcn_resnet18", "image_size": 32, "batch_size": 2, "max_iteration": 2, "interval_validate": 2,
        "n_workers": 0, "output_dir": "w", "weights_dir": "weights"})
    brought = imagenet_like(root / "weights", tvm.resnet18, RESNET18_FILE)
    assert main(["train", str(root)]) == 0
    source = f"ImageNet weights from the weights folder ({root / 'weights' / TORCHVISION_FOLDER / RESNET18_FILE})"
    assert f"starting weights: {source}" in capsys.readouterr().out
    assert f"starting weights: {source}" in (root / "MODEL-w" / "report.html").read_text()
    assert torch.load(root / "MODEL-w" / "checkpoint.pth.tar", weights_only=True)["weights_source"] == source
    del brought
    # a resumed run says where its run's weights came from, not that they came from its checkpoint
    assert main(["train", str(root), "--resume", "--set", "max_iteration=3"]) == 0
    assert f"starting weights: {source}" in capsys.readouterr().out
    # without weights
    assert main(["train", str(root), "--set", "pretrained_backbone=false", "--set", "output_dir=\"none\""]) == 0
    assert 'starting weights: none: trained from scratch ("pretrained_backbone": false)' in capsys.readouterr().out
    assert "none: trained from scratch" in (root / "MODEL-none" / "report.html").read_text()


def test_weights_command_refuses_unknown_models_and_says_offline_in_one_line(tmp_path, capsys, monkeypatch):
    assert main(["weights", str(tmp_path / "w"), "--model", "nonet"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--model nonet: unknown model" in err[0]
    for key, value in OFFLINE.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    assert main(["weights", str(tmp_path / "w"), "--model", "fcn_resnet18"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "this command needs internet" in err[0]
    # kept files are not fetched again: the folder's file is reported, offline
    imagenet_like(tmp_path / "w", tvm.resnet18, RESNET18_FILE)
    assert main(["weights", str(tmp_path / "w"), "--model", "fcn_resnet18"]) == 0
    assert RESNET18_FILE in capsys.readouterr().out
