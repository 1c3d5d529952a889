"""Images as users have them: far too large to decode safely, or stored sideways with EXIF rotation."""

import os
import struct
import subprocess
import sys
import zlib

import numpy as np
import pytest
from PIL import Image

from conftest import tiny_config
from segtrain.cli import main
from segtrain.errors import DatasetError
from segtrain.data.images import read_image
from segtrain.data.labels import read_mask
from segtrain.data.synthetic import sky_sample, write_sky_folder


def huge_png(path, width, height):
    """A few hundred bytes that declare width x height grey pixels (a decompression bomb's header)."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    rows = zlib.compress(b"\0" * (width + 1) * 4)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
                     + chunk(b"IDAT", rows) + chunk(b"IEND", b""))
    return path


def snapshot(root):
    return {str(p.relative_to(root)): (p.read_bytes() if p.is_file() else None) for p in sorted(root.rglob("*"))}


# 200 million pixels: past twice Pillow's limit, it refuses; 100 million: Pillow only warns and decodes.
@pytest.mark.parametrize("side", [20000, 10000])
@pytest.mark.parametrize("command", ["train", "check", "init"])
def test_image_too_large_to_decode_is_one_line_naming_it(tmp_path, capsys, command, side):
    root = write_sky_folder(tmp_path / "data", n_train=8, n_valid=4, size=32, config=tiny_config())
    huge_png(root / "train" / "images" / "sky0003.png", side, side)
    if command == "init":
        (root / "config.list").unlink()
    before = snapshot(root)
    capsys.readouterr()
    assert main([command, str(root)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err and "Warning" not in err
    assert err.startswith(f"error: {root / 'train' / 'images' / 'sky0003.png'}: this image is too large to decode safely")
    assert "Downscale it" in err
    assert snapshot(root) == before


@pytest.mark.parametrize("side", [20000, 10000])
def test_reading_a_too_large_image_or_mask_is_a_dataset_error(tmp_path, side):
    path = huge_png(tmp_path / "big.png", side, side)
    for read, what in ((read_image, "image"), (read_mask, "label image")):
        with pytest.raises(DatasetError, match=f"big.png: this {what} is too large to decode safely"):
            read(path)


def test_exif_rotated_jpeg_is_read_upright_and_its_mask_aligns(tmp_path, capsys):
    root = write_sky_folder(tmp_path / "data", n_train=8, n_valid=4, size=32, config=tiny_config())
    image, mask = sky_sample(np.random.default_rng(5), 48)
    image, mask = image[:, :32], mask[:, :32]  # upright: 32 wide, 48 tall
    sideways = Image.fromarray(image).transpose(Image.Transpose.ROTATE_90)  # as a phone stores it
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to view"
    path = root / "train" / "images" / "sky0002.jpg"
    (root / "train" / "images" / "sky0002.png").unlink()
    sideways.save(path, quality=100, subsampling=0, exif=exif)
    Image.fromarray(mask * 255).save(root / "train" / "labels" / "sky0002.png")
    assert Image.open(path).size == (48, 32)

    upright = read_image(path)
    assert upright.shape == (48, 32, 3) and np.abs(upright.astype(int) - image).mean() < 2
    assert main(["check", str(root), "--set", "batch_size=1"]) == 0, capsys.readouterr().err
    assert "problems: none" in capsys.readouterr().out


def test_image_too_large_to_train_names_it_and_leaves_no_model_folder(tmp_path):
    root = write_sky_folder(tmp_path / "data", n_train=3, n_valid=2, size=32,
                            config=tiny_config(image_size=None, batch_size=1, max_iteration=4, interval_validate=100,
                                              device="cpu", cache_mb=0))
    big = root / "train" / "images" / "huge.png"
    Image.new("RGB", (4096, 4096), (90, 140, 220)).save(big)
    Image.new("L", (4096, 4096), 255).save(root / "train" / "labels" / "huge.png")
    before = snapshot(root)

    # 800 MB above what the imports take (untouched, mostly): a 32 px step fits, the first layers'
    # outputs for a 4096 px image (1 GB each) do not, on any machine.
    little_memory = (
        "import resource, runpy, sys, segtrain.training.loop\n"
        "data = int(open('/proc/self/status').read().split('VmData:')[1].split()[0]) * 1024\n"
        "resource.setrlimit(resource.RLIMIT_DATA, (data + 800 * 2**20, resource.RLIM_INFINITY))\n"
        f"sys.argv = ['segtrain', 'train', {str(root)!r}]\n"
        "runpy.run_module('segtrain', run_name='__main__')\n")
    result = subprocess.run([sys.executable, "-c", little_memory], capture_output=True, text=True, timeout=300,
                            env={**os.environ, "OMP_NUM_THREADS": "2"})
    assert result.returncode == 1, result.stderr[-2000:]
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert f"out of memory training fcn_resnet18 on input of native size with batch_size 1; the largest image is {big} (4096x4096)" in result.stderr
    assert 'Set "image_size"' in result.stderr
    assert snapshot(root) == before  # no MODEL-tiny folder left
