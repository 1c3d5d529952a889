"""segmentation_models_pytorch's architectures end to end: train, export with the parity check,
and on one of them resume, evaluate, tiled predict and torchrun."""

import csv
import json

import pytest
import torch
from torch import nn

from PIL import Image

from conftest import tiny_config, write_mixed_split
from segtrain.cli import main
from segtrain.config.load import resolve
from segtrain.data.synthetic import write_sky_folder
from segtrain.errors import ConfigError
from segtrain.models import smp_models
from segtrain.models.registry import MODELS, SMP, build_model, names
from segtrain.models.weights import resolve as resolve_weights
from test_distributed import single_process_evaluate, torchrun
from test_resume import assert_same_state, metric_rows

# A dependency (pyproject.toml), but a venv made before it was added lacks it: say so (-ra) rather than fail to collect.
smp = pytest.importorskip("segmentation_models_pytorch", reason="pip install -e . (segmentation-models-pytorch)")

# Small encoders: MAnet's decoder grows with the encoder's last width (mobilenet_v2: 1280 -> 49M
# parameters), resnet18's 512 keeps it at 22M; segformer keeps its default mit_b0.
ENCODER = {"manet": "resnet18", "segformer": None}


# Measured with PyTorch 2.14: what exports at the example's size only (the batch stays dynamic).
# TorchScript files are traced (see export.py), which keeps every architecture's size dynamic.
FIXED_SIZE = {("upernet", "onnx"), ("segformer", "onnx"), ("pspnet", "onnx")}


def zoo_config(arch, **changes):
    encoder = ENCODER.get(arch, "mobilenet_v2")
    return tiny_config(**{"model": arch, "max_iteration": 2, "interval_validate": 2, "lr": 0.01,
                          **({"encoder": encoder} if encoder else {}), **changes})


def test_every_smp_architecture_but_dpt_is_registered():
    assert set(names(SMP)) == set(smp.MODEL_ARCHITECTURES_MAPPING) - {"dpt"}
    assert set(names(SMP)) <= set(MODELS)


# ONNX export (torch.export, then the ONNX translation) takes ~10 s per architecture on 2 cores, most
# of the suite's time if every one ran it: it runs for each way ONNX export ends (a dynamic graph,
# a dynamic graph whose other sizes miss the eager model, redone at a fixed size: PSPNet; a graph
# fixed silently: SegFormer, and UPerNet the same way, so not run twice) and for U-Net, the plugin's
# architecture. TorchScript, which every architecture exports, costs under a second.
ONNX_CHECKED = {"unet", "pspnet", "segformer"}


@pytest.mark.parametrize("arch", names(SMP))
def test_train_and_export_each_architecture(arch, tmp_path, capsys):
    root = write_sky_folder(tmp_path / "d", n_train=8, n_valid=2, size=32, config=zoo_config(arch))
    assert main(["train", str(root)]) == 0
    ckpt = root / "MODEL-tiny" / "model_best.pth.tar"
    saved = torch.load(ckpt, weights_only=True)
    assert saved["arch"] == arch and saved["config"]["encoder"] == (ENCODER.get(arch, "mobilenet_v2") or "mit_b0")
    formats = (("torchscript", "pt"), ("onnx", "onnx")) if arch in ONNX_CHECKED else (("torchscript", "pt"),)
    for fmt, suffix in formats:
        capsys.readouterr()
        code = main(["export", "--checkpoint", str(ckpt), "--format", fmt, "--out", str(tmp_path / f"m.{suffix}")])
        out, err = capsys.readouterr()
        assert code == 0, err
        assert "argmax agreement" in out and (tmp_path / f"m.{suffix}").is_file()
        # Where a format cannot take any size, the export says so and verifies at the training size.
        fixed = (arch, fmt) in FIXED_SIZE
        assert ("any batch, 32x32)" in out) == fixed and ("any batch and size)" in out) != fixed, out
        if fmt == "onnx":  # each way an ONNX export ends, as ONNX_CHECKED says
            assert ("exact only at 32x32; exporting for that size only" in out) == (arch == "pspnet"), out
            assert ("graph takes 32x32 inputs only" in out) == (arch == "segformer"), out


def test_any_input_size_is_padded_and_cropped_back():
    class Pixelwise(nn.Module):  # what a pad-and-crop must leave exact: a per-pixel net
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 2, 1)

        def forward(self, x):
            assert x.shape[-1] % 32 == 0 and x.shape[-2] % 32 == 0 and min(x.shape[-2:]) >= 128
            return self.conv(x)

    wrapped = smp_models.SmpSegmentation(Pixelwise(), 32, 128)
    x = torch.randn(2, 3, 37, 130)
    out = wrapped(x)["out"]
    assert out.shape == (2, 2, 37, 130) and torch.allclose(out, wrapped.net.conv(x), atol=1e-6)
    model = build_model("fpn", 3, encoder="mobilenet_v2").eval()
    assert model(torch.randn(1, 3, 45, 71))["out"].shape == (1, 3, 45, 71)


@pytest.mark.parametrize("raw, words", [
    ({"model": "unet", "encoder": "mobilenetv2"}, "key 'encoder' is 'mobilenetv2', which is not an encoder of "
                                               "segmentation_models_pytorch. Did you mean 'mobilenet_v2'?"),
    ({"model": "fcn_resnet18", "encoder": "resnet34"}, "key 'encoder' applies to smp models"),
    ({"model": "Unet"}, "Did you mean 'unet'?"),
])
def test_config_errors_are_one_line(raw, words):
    with pytest.raises(ConfigError) as e:
        resolve(raw)
    assert words in str(e.value) and "\n" not in str(e.value)


def test_encoder_defaults():
    assert resolve({"model": "unet"})["encoder"] == "resnet34"
    assert resolve({"model": "segformer"})["encoder"] == "mit_b0"
    assert resolve({})["encoder"] is None  # the default recipe is unchanged


def test_an_encoder_an_architecture_cannot_take_is_one_line():
    with pytest.raises(ConfigError) as e:
        build_model("deeplabv3", 2, encoder="vgg11")
    assert "model deeplabv3 cannot use encoder 'vgg11' ('VGG' models do not support dilated mode" in str(e.value) and "\n" not in str(e.value)


def test_offline_encoder_weights_warn_once_and_train_from_scratch(monkeypatch):
    import huggingface_hub

    def offline(*args, **kwargs):
        raise OSError("no network")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", offline)
    lines = []
    assert resolve_weights("unet", "resnet18", None, None, lines.append).file is None
    assert len(lines) == 1 and lines[0].startswith("warning: no ImageNet weights for unet with encoder resnet18 "
                                                   "(offline? OSError; Hugging Face repo smp-hub/resnet18.imagenet); "
                                                   "training from scratch. To use them, on a machine with internet "
                                                   "run `segtrain weights DIR --model unet --encoder resnet18`"), lines
    with pytest.raises(ConfigError) as e:
        resolve_weights("unet", "resnet18", True, None, lines.append)
    assert "pretrained_backbone is true but no ImageNet weights for unet with encoder resnet18" in str(e.value)
    assert resolve_weights("unet", "resnet18", False, None, lines.append).file is None and len(lines) == 1


def test_cached_encoder_weights_are_loaded_without_a_word(tmp_path, monkeypatch):
    """The file Hugging Face's cache holds is what the encoder gets, and nothing is downloaded."""
    import huggingface_hub
    from safetensors.torch import save_file

    torch.manual_seed(3)
    imagenet = {k: v.clone() for k, v in build_model("unet", 2, encoder="mobilenet_v2").net.encoder.state_dict().items()}
    save_file(imagenet, str(tmp_path / "model.safetensors"))
    calls = []

    def cache_only(repo, filename, revision=None, cache_dir=None, local_files_only=False):
        assert cache_dir is None  # no weights folder: Hugging Face's own cache
        calls.append((repo, filename, local_files_only))
        assert local_files_only, "downloaded although cached"
        return str(tmp_path / filename)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", cache_only)
    lines = []
    weights = resolve_weights("unet", "mobilenet_v2", True, None, lines.append)
    torch.manual_seed(4)
    model = build_model("unet", 2, backbone_weights=weights.file, encoder="mobilenet_v2")
    for key, tensor in imagenet.items():
        assert torch.equal(model.net.encoder.state_dict()[key], tensor), key
    assert lines == [] and calls == [("smp-hub/mobilenet_v2.imagenet", "model.safetensors", True)]


def test_resume_evaluate_and_tiled_predict_of_an_smp_model(tmp_path, capsys):
    run = zoo_config("unet", max_iteration=4, interval_validate=2, log_interval=1)
    reference = write_sky_folder(tmp_path / "ref", n_train=8, n_valid=3, size=32, config=run)
    assert main(["train", str(reference)]) == 0
    root = write_sky_folder(tmp_path / "d", n_train=8, n_valid=3, size=32, config=run)
    assert main(["train", str(root), "--stop-after", "3"]) == 0
    assert main(["train", str(root), "--resume"]) == 0
    out = root / "MODEL-tiny"
    assert metric_rows(out) == metric_rows(reference / "MODEL-tiny")
    assert_same_state(out / "checkpoint.pth.tar", reference / "MODEL-tiny" / "checkpoint.pth.tar")
    # Another encoder's weights would not fit: refused in one line before anything is written.
    capsys.readouterr()
    assert main(["train", str(root), "--resume", "--set", "encoder=resnet18", "--set", "max_iteration=6"]) == 1
    assert "encoder 'mobilenet_v2' (this run: 'resnet18')" in capsys.readouterr().err

    # evaluate counts as validation did
    assert main(["evaluate", str(root), "--checkpoint", str(out / "checkpoint.pth.tar"), "--json",
                 str(tmp_path / "e.json")]) == 0
    with open(out / "log.csv") as f:
        last = [r for r in csv.DictReader(f) if r["valid/mean_iu"]][-1]
    assert json.loads((tmp_path / "e.json").read_text())["mean_iu"] == float(last["valid/mean_iu"])
    # predict, whole and tiled, on images of odd sizes
    write_mixed_split(tmp_path / "mixed", [(37, 53), (64, 40)])
    for args, name in (([], "whole"), (["--tile", "24", "--overlap", "4"], "tiled")):
        assert main(["predict", str(tmp_path / "mixed" / "images"), "--checkpoint", str(out / "checkpoint.pth.tar"),
                     "--out", str(tmp_path / name), *args]) == 0
        sizes = sorted(Image.open(p).size for p in (tmp_path / name).glob("*.png"))
        assert sizes == [(40, 64), (53, 37)]


def test_torchrun_of_an_smp_model_matches_single_process_evaluation(tmp_path):
    root = write_sky_folder(tmp_path / "d", n_train=8, n_valid=3, size=32,
                            config=zoo_config("fpn", batch_size=2, max_iteration=2))
    result = torchrun("train", root, timeout=300)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    assert "distributed: 2 processes (gloo)" in result.stdout
    with open(root / "MODEL-tiny" / "log.csv") as f:
        final = [r for r in csv.DictReader(f) if r["valid/mean_iu"]][-1]
    single = single_process_evaluate(root, root / "MODEL-tiny" / "checkpoint.pth.tar")
    assert float(final["valid/mean_iu"]) == single["mean_iu"]


def test_a_damaged_cached_weights_file_is_one_line(tmp_path):
    (tmp_path / "model.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(ConfigError) as e:
        build_model("unet", 2, backbone_weights=tmp_path / "model.safetensors", encoder="mobilenet_v2")
    assert "not ImageNet weights for encoder mobilenet_v2" in str(e.value) and "\n" not in str(e.value)
