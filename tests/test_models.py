"""ImageNet backbone weights: one true line when they cannot be had, used when they are cached."""

import os
import subprocess
import sys

import torch
from torchvision import models as tvm

from segtrain.models.registry import backbone_weights_path, build_model, resolve_backbone_weights

OFFLINE = """
from segtrain.models.registry import resolve_backbone_weights
assert resolve_backbone_weights("fcn_resnet18", None) is None
"""


def test_offline_without_cached_weights_warns_once_and_trains_from_scratch(tmp_path):
    # A proxy that refuses connections: offline on any machine, and at once.
    env = {**os.environ, "TORCH_HOME": str(tmp_path), "HTTPS_PROXY": "http://127.0.0.1:9", "https_proxy": "http://127.0.0.1:9"}
    result = subprocess.run([sys.executable, "-c", OFFLINE], capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0, result.stderr
    lines = (result.stdout + result.stderr).splitlines()
    assert len(lines) == 1 and lines[0].startswith("warning: no ImageNet weights for fcn_resnet18 (offline?)"), lines
    assert "Downloading" not in lines[0] and "resnet18-f37072fd.pth" in lines[0]
    assert not any((tmp_path / "hub" / "checkpoints").iterdir())  # no partial download left behind


def test_cached_weights_are_loaded_without_a_word(tmp_path, monkeypatch, capfd):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    torch.manual_seed(3)
    imagenet = tvm.resnet18().state_dict()
    path = backbone_weights_path(tvm.ResNet18_Weights.DEFAULT)
    path.parent.mkdir(parents=True)
    torch.save(imagenet, path)
    weights = resolve_backbone_weights("fcn_resnet18", True)
    model = build_model("fcn_resnet18", 2, backbone_weights=weights)
    assert torch.equal(model.backbone.conv1.weight, imagenet["conv1.weight"])
    assert torch.equal(model.backbone.layer4[1].bn2.running_var, imagenet["layer4.1.bn2.running_var"])
    out, err = capfd.readouterr()
    assert out == err == ""
