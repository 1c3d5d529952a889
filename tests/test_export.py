import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from conftest import run_cli, save_fresh_checkpoint
from segtrain.use.export import ExportError, export
from segtrain.use.trained import load_trained


def eager_logits(ckpt, x):
    with torch.inference_mode():
        return load_trained(ckpt, "cpu").model(x)["out"].numpy()


@pytest.mark.parametrize("arch", ["fcn_resnet18", "lraspp_mobilenet_v3_large"])
def test_onnx_parity_and_metadata(arch, tmp_path):
    ckpt = save_fresh_checkpoint(tmp_path / "m.pth.tar", arch, image_size=[48, 64], class_names=("sky", "cloud", "sun"))
    result = export(ckpt, "onnx", tmp_path / "m.onnx")
    assert result["argmax_agreement"] >= 0.999 and result["dynamic_size"]
    meta = json.loads({p.key: p.value for p in onnx.load(str(tmp_path / "m.onnx")).metadata_props}["segtrain"])
    assert meta["class_names"] == ["sky", "cloud", "sun"] and meta["image_size"] == [48, 64]
    assert meta["mean"] == [0.485, 0.456, 0.406] and meta["std"] == [0.229, 0.224, 0.225] and meta["arch"] == arch
    # an independent run: another batch size and input size than the export's example
    session = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    x = torch.randn(3, 3, 40, 72, generator=torch.Generator().manual_seed(1))
    out = session.run(None, {"image": x.numpy()})[0]
    ref = eager_logits(ckpt, x)
    assert out.shape == (3, 3, 40, 72)
    assert np.abs(out - ref).max() < 1e-3 and (out.argmax(1) == ref.argmax(1)).mean() >= 0.999


@pytest.mark.parametrize("arch", ["fcn_resnet18", "lraspp_mobilenet_v3_large"])
def test_torchscript_parity_and_metadata(arch, tmp_path):
    ckpt = save_fresh_checkpoint(tmp_path / "m.pth.tar", arch, image_size=40)
    result = export(ckpt, "torchscript", tmp_path / "m.pt")
    assert result["argmax_agreement"] >= 0.999
    extra = {"segtrain.json": ""}
    loaded = torch.jit.load(str(tmp_path / "m.pt"), _extra_files=extra)  # how an edge node loads it
    assert json.loads(extra["segtrain.json"])["class_names"] == ["sky", "cloud"]
    x = torch.randn(2, 3, 56, 48, generator=torch.Generator().manual_seed(2))
    with torch.inference_mode():
        out = loaded(x).numpy()
    assert np.abs(out - eager_logits(ckpt, x)).max() < 1e-4


def test_cli_export_of_a_trained_model_reports_verification(trained_root, tmp_path):
    result = run_cli("export", "--checkpoint", trained_root / "MODEL-tiny" / "model_best.pth.tar", "--format", "onnx",
                     "--out", tmp_path / "cloud.onnx", "--verify-on", trained_root / "valid" / "images")
    assert result.returncode == 0, result.stderr
    assert "max |logit difference|" in result.stdout and "argmax agreement" in result.stdout
    assert f"4 image(s) of {trained_root / 'valid' / 'images'}" in result.stdout  # the real images given were used
    assert (tmp_path / "cloud.onnx").is_file()


def test_failed_export_keeps_an_existing_file(tmp_path):
    ckpt = save_fresh_checkpoint(tmp_path / "native.pth.tar", "fcn_resnet18", image_size=None)
    (tmp_path / "m.onnx").write_bytes(b"earlier export")
    with pytest.raises(ExportError, match="add --size H W"):
        export(ckpt, "onnx", tmp_path / "m.onnx")
    result = run_cli("export", "--checkpoint", ckpt, "--format", "torchscript", "--out", tmp_path / "m.onnx",
                     "--size", "16", "16")
    assert result.returncode == 1 and "at least 32" in result.stderr and "Traceback" not in result.stderr
    assert (tmp_path / "m.onnx").read_bytes() == b"earlier export"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx", "native.pth.tar"]  # no temp file left


def test_pt2_parity_and_metadata(tmp_path):
    ckpt = save_fresh_checkpoint(tmp_path / "m.pth.tar", "lraspp_mobilenet_v3_large", image_size=40)
    result = export(ckpt, "pt2", tmp_path / "m.pt2")
    assert result["argmax_agreement"] >= 0.999 and result["dynamic_size"]
    extra = {"segtrain.json": ""}
    program = torch.export.load(str(tmp_path / "m.pt2"), extra_files=extra)  # how a torch 2.x consumer loads it
    meta = json.loads(extra["segtrain.json"])
    assert meta["input_kind"] == "normalized" and meta["class_names"] == ["sky", "cloud"]
    x = torch.randn(3, 3, 56, 48, generator=torch.Generator().manual_seed(2))
    with torch.inference_mode():
        out = program.module()(x).numpy()
    assert np.abs(out - eager_logits(ckpt, x)).max() < 1e-4
