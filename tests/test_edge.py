"""From training to the edge node (issue 15): raw-input exports of every kind, the cloud-cover
plugin's own code lines, INT8 with its accuracy guard, and predict/evaluate on every exported kind."""

import json
import shutil
import subprocess
import sys
import time
import warnings

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from conftest import run_cli, save_fresh_checkpoint
from segtrain.data.synthetic import sky_sample
from segtrain.data.transforms import MEAN, STD
from segtrain.use.evaluate import evaluate
from segtrain.use.export import export
from segtrain.use.exported import EXTRA_FILE
from segtrain.use.trained import TorchPredictor, load_trained

CKPT = "MODEL-tiny/model_best.pth.tar"
SUFFIX = {"onnx": ".onnx", "torchscript": ".pt", "pt2": ".pt2"}


def by_hand(ckpt, image: torch.Tensor, size) -> np.ndarray:
    """Raw-input semantics written out independently: antialiased bilinear to the training size,
    whole grey levels, /255, normalise, run, logits bilinear back to the input size."""
    x = F.interpolate(image.float(), size=size, mode="bilinear", align_corners=False, antialias=True).round().clamp(0, 255)
    x = (x / 255 - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)
    with torch.inference_mode():
        logits = load_trained(ckpt, "cpu").model(x)["out"]
    return F.interpolate(logits, size=tuple(image.shape[-2:]), mode="bilinear", align_corners=False).numpy()


def sky_batch(h, w, seed=4) -> torch.Tensor:
    image = sky_sample(np.random.default_rng(seed), max(h, w))[0][:h, :w]
    return torch.from_numpy(image.transpose(2, 0, 1).copy())[None]  # uint8 NCHW


def load_any(path, kind):
    """Each kind loaded the way its own consumer loads it."""
    if kind == "onnx":
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return lambda x: session.run(None, {"image": x.float().numpy()})[0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        module = torch.jit.load(str(path)) if kind == "torchscript" else torch.export.load(str(path)).module()
    return lambda x: module(x.float()).detach().numpy()


@pytest.mark.parametrize("kind", ["torchscript", "pt2", "onnx"])
def test_raw_input_export_of_each_kind_matches_eager_with_preprocessing(kind, tmp_path):
    ckpt = save_fresh_checkpoint(tmp_path / "m.pth.tar", "fcn_resnet18", image_size=[48, 64])
    path = tmp_path / f"m{SUFFIX[kind]}"
    result = export(ckpt, kind, path, raw_input=True, log=lambda *a: None)
    assert result["argmax_agreement"] >= 0.999 and result["dynamic_size"]
    assert result["argmax_agreement_with_checkpoint_preprocessing"] >= 0.99  # uint8 vs float resize: one grey level
    run = load_any(path, kind)
    for x in (sky_batch(75, 90), torch.cat([sky_batch(50, 40, 5), sky_batch(50, 40, 6)])):  # other sizes and batches
        out, ref = run(x), by_hand(ckpt, x, [48, 64])
        assert out.shape == (x.shape[0], 2, *x.shape[-2:])
        assert np.abs(out - ref).max() < 1e-3 and (out.argmax(1) == ref.argmax(1)).mean() >= 0.999


def test_raw_torchscript_loads_through_torch_load_and_jit_load_and_takes_uint8(tmp_path):
    ckpt = save_fresh_checkpoint(tmp_path / "m.pth.tar", "fcn_resnet18", image_size=40)
    export(ckpt, "torchscript", tmp_path / "m.pt", raw_input=True, log=lambda *a: None)
    x = sky_batch(64, 56)
    extra = {EXTRA_FILE: ""}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        via_load = torch.load(tmp_path / "m.pt", weights_only=False)  # the plugin's call
        via_jit = torch.jit.load(str(tmp_path / "m.pt"), _extra_files=extra)
    assert json.loads(extra[EXTRA_FILE])["input_kind"] == "raw"
    with torch.inference_mode():
        outs = [via_load(x.float()), via_jit(x.float()), via_jit(x)]  # uint8 too
    for out in outs:
        assert torch.equal(out, outs[0])
    assert np.abs(outs[0].numpy() - by_hand(ckpt, x, [40, 40])).max() < 1e-3


def cv2_resize(image: np.ndarray, size) -> np.ndarray:
    """cv2.resize(image, (w, h)) stands in as bilinear when OpenCV is missing (it is not a segtrain dependency)."""
    try:
        import cv2
        return cv2.resize(image, size)
    except ImportError:
        return np.array(Image.fromarray(image).resize(size, Image.Resampling.BILINEAR))  # writable, as cv2's


def test_the_cloud_cover_plugins_exact_lines_run_the_raw_torchscript_file(trained_root, trained_export, tmp_path):
    shutil.copy(trained_export("torchscript", raw_input=True), tmp_path / "new_cloudcover_unet.pth")  # the plugin's name
    checkpoint = TorchPredictor(load_trained(trained_root / CKPT, "cpu"))

    class Plugin:  # module.py of the Waggle cloud-cover plugin, its lines unchanged but the paths
        device = "cpu"

        def __init__(self):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                self.net = torch.load(str(tmp_path / "new_cloudcover_unet.pth"), weights_only=False)
            self.net.to(device=self.device).eval()

        def cover(self, full_image):
            image = torch.from_numpy(cv2_resize(full_image, (256, 256)).transpose(2, 0, 1)).type(torch.float32)
            output = self.net(image.unsqueeze(0).to(self.device).float())
            copy_pred = output.argmax(axis=1).float()
            return float(copy_pred.mean()), cv2_resize(full_image, (256, 256))

    plugin = Plugin()
    for path in sorted((trained_root / "valid" / "images").iterdir()):
        cover, resized = plugin.cover(np.asarray(Image.open(path).convert("RGB")))
        expected = float((checkpoint.masks([resized])[0] == 1).mean())  # segtrain predict on the same pixels
        assert cover == pytest.approx(expected, abs=0.01)


@pytest.mark.parametrize("kind,raw", [("torchscript", True), ("pt2", True), ("onnx", True), ("onnx", False),
                                      ("torchscript", False)])
def test_predict_and_evaluate_score_each_exported_kind(trained_root, trained_export, tmp_path, kind, raw):
    path = trained_export(kind, raw)
    reference = evaluate(trained_root, trained_root / CKPT, log=lambda *a: None)
    numbers = evaluate(trained_root, path, log=lambda *a: None)
    assert numbers["checkpoint"] == str(path) and numbers["images"] == reference["images"]
    assert np.sum(numbers["confusion_matrix"]) == np.sum(reference["confusion_matrix"])
    assert numbers["mean_iu"] == pytest.approx(reference["mean_iu"], abs=0.02)
    images = trained_root / "valid" / "images"
    for model, out in ((path, tmp_path / "pred"), (trained_root / CKPT, tmp_path / "ref")):
        result = run_cli("predict", images, "--checkpoint", model, "--out", out, timeout=120)
        assert result.returncode == 0, result.stderr
    same = total = 0
    for mask in sorted((tmp_path / "ref").glob("*.png")):
        a, b = np.asarray(Image.open(mask)), np.asarray(Image.open(tmp_path / "pred" / mask.name))
        same, total = same + (a == b).sum(), total + a.size
    assert same / total >= 0.98


def onnx_meta(path):
    return json.loads({p.key: p.value for p in onnx.load(str(path)).metadata_props}["segtrain"])


def test_int8_export_prints_iou_before_and_after_and_is_scored_by_evaluate(trained_root, tmp_path):
    result = run_cli("export", "--checkpoint", trained_root / CKPT, "--format", "onnx", "--raw-input", "--int8",
                     "--calibrate-on", trained_root, "--out", tmp_path / "m.onnx", timeout=180)
    assert result.returncode == 0, result.stderr
    assert "int8: calibrating on 12 training image(s)" in result.stdout
    line = next(line for line in result.stdout.splitlines() if line.startswith("int8: mean IoU"))
    assert "fp32" in line and "int8" in line and "allowed drop 0.01" in line
    assert onnx_meta(tmp_path / "m.onnx")["int8"] is True
    assert any(node.op_type == "DequantizeLinear" for node in onnx.load(str(tmp_path / "m.onnx")).graph.node)
    after = float(line.split("int8 ")[1].split()[0])
    assert evaluate(trained_root, tmp_path / "m.onnx", log=lambda *a: None)["mean_iu"] == pytest.approx(after, abs=1e-4)
    timing = next(line for line in result.stdout.splitlines() if " ms an image against " in line)
    ms_int8, ms_fp32 = float(timing.split()[1]), float(timing.split(" against ")[1].split()[0])
    speed = float(timing.split("CPU (")[1].split("x the speed")[0])
    assert speed == pytest.approx(ms_fp32 / ms_int8, abs=0.01 + 0.02 * speed)  # the printed ms are rounded to 3 digits
    assert ("the INT8 file is slower than the fp32 one" in result.stdout) == (speed < 1)


def test_int8_timing_alternates_and_takes_each_files_median():
    """per_image_ms on two stand-in files of known cost: at least 1 ms and 20 ms a run (a sleep never
    ends early; only lower bounds, so a loaded machine cannot fail it)."""
    from segtrain.use.quantize import per_image_ms

    class Sleeper:
        def __init__(self, seconds):
            self.calls = 0
            self.seconds = seconds

        def run(self, batch):
            assert batch.shape == (1, 3, 8, 8)
            self.calls += 1
            time.sleep(self.seconds)

    fast, slow = Sleeper(0.001), Sleeper(0.020)
    ms_fast, ms_slow = per_image_ms(fast, slow, np.zeros((3, 8, 8), np.float32))
    assert ms_fast >= 1 and ms_slow >= 20 and ms_slow > ms_fast
    assert fast.calls == slow.calls >= 4  # a warm-up each, then at least three alternating rounds


def test_int8_export_times_the_two_files_with_threads_that_do_not_spin(trained_root, tmp_path, monkeypatch):
    """Two ONNX sessions timed in turn: a spinning session's threads would hold the cores during the
    other's runs, so both sessions export opens for the comparison sleep between runs instead."""
    import segtrain.use.exported as exported

    real, asked = exported.onnx_session_options, []

    def recording(spinning=True):
        asked.append(spinning)
        return real(spinning)

    monkeypatch.setattr(exported, "onnx_session_options", recording)
    export(trained_root / CKPT, "onnx", tmp_path / "m.onnx", int8=True, calibrate_on=trained_root, log=lambda *a: None)
    assert asked.count(False) == 2  # the fp32 and the INT8 file
    assert real(False).get_session_config_entry("session.intra_op.allow_spinning") == "0"


def test_int8_refused_when_iou_drops_more_than_allowed(trained_root, tmp_path):
    # calibrated on black images, activations saturate on real skies: IoU drops ~0.09 on this model
    bad = tmp_path / "bad"
    shutil.copytree(trained_root, bad, ignore=shutil.ignore_patterns("MODEL-*"))
    for image in (bad / "train" / "images").iterdir():
        Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(image)
    (tmp_path / "m.onnx").write_bytes(b"earlier export")
    result = run_cli("export", "--checkpoint", trained_root / CKPT, "--format", "onnx", "--raw-input", "--int8",
                     "--calibrate-on", bad, "--out", tmp_path / "m.onnx", "--max-iou-drop", "0.01", timeout=180)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "more than --max-iou-drop 0.01" in result.stderr
    assert (tmp_path / "m.onnx").read_bytes() == b"earlier export"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad", "m.onnx"]  # no temp files left


def test_int8_needs_onnx_and_a_calibration_folder(tmp_path):
    ckpt = save_fresh_checkpoint(tmp_path / "m.pth.tar", "fcn_resnet18")
    for extra in (["--format", "onnx"], ["--format", "torchscript", "--calibrate-on", tmp_path]):
        result = run_cli("export", "--checkpoint", ckpt, *extra, "--int8", "--out", tmp_path / "x", timeout=60)
        assert result.returncode == 1 and "--calibrate-on ROOT" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "x").exists()


def test_using_a_model_never_imports_the_training_code():
    code = ("import sys, segtrain.cli, segtrain.use.export, segtrain.use.predict, segtrain.use.evaluate, "
            "segtrain.use.quantize, segtrain.use.testmode, segtrain.use.exported, segtrain.use.trained; "
            "print(sorted(m for m in sys.modules if m.startswith('segtrain.training')))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


# Operators in torch 1.11 (the first with antialiased resizing) that a traced file may call.
TORCH_1_OPS = {"cat", "_convolution", "_upsample_bilinear2d_aa", "upsample_bilinear2d", "add", "add_", "batch_norm", "clamp",
               "div", "dropout", "max_pool2d", "relu", "relu_", "round", "size", "sub", "to", "mul", "sigmoid",
               "hardsigmoid", "hardswish_", "adaptive_avg_pool2d"}


@pytest.mark.parametrize("arch,raw", [("fcn_resnet18", True), ("lraspp_mobilenet_v3_large", True),
                                      ("deeplabv3_resnet50", False)])
def test_torchscript_calls_only_operators_torch_1_has(arch, raw, tmp_path):
    """torch 1.13.1 was seen (in a throwaway venv) to load and run the traced files identically,
    and to refuse scripted ones: "Unknown builtin op: aten::_upsample_lanczos2d_aa"."""
    import re
    import zipfile

    ckpt = save_fresh_checkpoint(tmp_path / "m.pth.tar", arch, image_size=40)
    result = export(ckpt, "torchscript", tmp_path / "m.pt", raw_input=raw, log=lambda *a: None)
    assert result["dynamic_size"] and result["argmax_agreement"] >= 0.999  # verified at a second size too
    with zipfile.ZipFile(tmp_path / "m.pt") as archive:
        code = "".join(archive.read(n).decode() for n in archive.namelist() if n.endswith(".py"))
    called = set(re.findall(r"torch\.([A-Za-z_0-9]+)\(", code))
    assert called and called <= TORCH_1_OPS, called - TORCH_1_OPS


def test_int8_timing_prints_three_digits_without_an_exponent():
    from segtrain.use.quantize import milliseconds
    assert [milliseconds(v) for v in (0.7124, 12.62, 99.94, 1234.4)] == ["0.712", "12.6", "99.9", "1234"]
