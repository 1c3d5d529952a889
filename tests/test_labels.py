import io

import numpy as np
import pytest
from PIL import Image

from segtrain.errors import DatasetError
from segtrain.data.labels import IGNORE, detect_decoder, read_mask

TRUTH = np.array([[0, 1, 2, 1], [2, 2, 0, 0], [1, 0, 2, 1], [0, 0, 1, 2]], dtype=np.uint8).repeat(8, 0).repeat(8, 1)
COLORS = [[0, 0, 0], [200, 30, 30], [20, 180, 60]]


def save(path, array, mode=None, **kw):
    Image.fromarray(array, mode).save(path, **kw) if mode else Image.fromarray(array).save(path, **kw)
    return path


def decode(path, names, colors=None, ignore=None, threshold=None):
    decoder = detect_decoder([path], names, colors, ignore, threshold)
    return decoder, decoder.decode(read_mask(path), path)


def test_index_masks_grey(tmp_path):
    decoder, out = decode(save(tmp_path / "m.png", TRUTH), ["a", "b", "c"])
    assert decoder.kind == "index" and not decoder.lossy
    assert (out == TRUTH).all()


def test_palette_masks_use_indices_not_colours(tmp_path):
    img = Image.fromarray(TRUTH, "L").convert("P")
    img.putpalette([255, 0, 0, 0, 255, 0, 0, 0, 255] + [0] * 759)
    img.save(tmp_path / "m.png")
    decoder, out = decode(tmp_path / "m.png", ["a", "b", "c"])
    assert decoder.kind == "index" and (out == TRUTH).all()


def test_binary_0_255_masks(tmp_path):
    binary = (TRUTH == 1).astype(np.uint8)
    decoder, out = decode(save(tmp_path / "m.png", binary * 255), ["sky", "cloud"])
    assert decoder.kind == "binary" and (out == binary).all()


def test_rgb_colour_masks_through_class_colors(tmp_path):
    rgb = np.asarray(COLORS, dtype=np.uint8)[TRUTH]
    decoder, out = decode(save(tmp_path / "m.png", rgb), ["a", "b", "c"], COLORS)
    assert decoder.kind == "color" and (out == TRUTH).all()


def test_colour_mask_without_class_colors_is_a_clear_error(tmp_path):
    rgb = np.asarray(COLORS, dtype=np.uint8)[TRUTH]
    with pytest.raises(DatasetError, match="class_colors.list"):
        decode(save(tmp_path / "m.png", rgb), ["a", "b", "c"])


def test_lossy_jpeg_binary_masks_snap_to_nearest(tmp_path):
    yy, xx = np.mgrid[0:37, 0:41]
    binary = ((yy - 18) ** 2 + (xx - 20) ** 2 < 150).astype(np.uint8)  # curved edges: JPEG blurs them
    path = save(tmp_path / "m.jpg", binary * 255, quality=60)
    assert len(np.unique(read_mask(path))) > 2  # really lossy
    decoder, out = decode(path, ["sky", "cloud"])
    assert decoder.kind == "binary" and decoder.lossy
    assert (out == binary).mean() > 0.99


def test_lossy_jpeg_colour_masks_snap_to_nearest_colour(tmp_path):
    truth = TRUTH[3:, 5:]  # off the 8x8 JPEG grid, so edges really blur
    rgb = np.asarray(COLORS, dtype=np.uint8)[truth]
    path = save(tmp_path / "m.jpg", rgb, quality=70)
    assert len(np.unique(read_mask(path).reshape(-1, 3), axis=0)) > 3
    decoder, out = decode(path, ["a", "b", "c"], COLORS)
    assert decoder.lossy and (out == truth).mean() > 0.97


def test_waggle_threshold_above_175_is_cloud(tmp_path):
    grey = np.array([[0, 175, 176, 255]], dtype=np.uint8)
    decoder, out = decode(save(tmp_path / "m.png", grey), ["sky", "cloud"], threshold=175)
    assert out.tolist() == [[0, 0, 1, 1]]


def test_value_outside_classes_names_file_and_value(tmp_path):
    bad = TRUTH.copy()
    bad[0, 0] = 7
    with pytest.raises(DatasetError) as e:
        decode(save(tmp_path / "bad.png", bad), ["a", "b", "c"])
    assert "7" in str(e.value) and "ignore_index" in str(e.value)


def test_mask_breaking_the_detected_rule_names_the_file(tmp_path):
    good = save(tmp_path / "good.png", TRUTH)
    bad_array = TRUTH.copy()
    bad_array[3, 3] = 9
    bad = save(tmp_path / "bad.png", bad_array)
    decoder = detect_decoder([good], ["a", "b", "c"])
    with pytest.raises(DatasetError) as e:
        decoder.decode(read_mask(bad), bad)
    assert "bad.png" in str(e.value) and "label value 9" in str(e.value)


def test_ignore_index_marks_void_pixels_ignored(tmp_path):
    void = TRUTH.copy()
    void[:8] = 11  # CamVid-style void class index
    decoder, out = decode(save(tmp_path / "m.png", void), ["a", "b", "c"], ignore=11)
    assert (out[:8] == IGNORE).all() and (out[8:] == TRUTH[8:]).all()


def test_grey_rgb_masks_collapse_to_grey(tmp_path):
    rgb = np.stack([TRUTH] * 3, axis=-1)
    decoder, out = decode(save(tmp_path / "m.png", rgb), ["a", "b", "c"])
    assert decoder.kind == "index" and (out == TRUTH).all()


def test_corrupt_mask_is_a_clear_error(tmp_path):
    path = tmp_path / "m.png"
    buf = io.BytesIO()
    Image.fromarray(TRUTH).save(buf, format="PNG")
    path.write_bytes(buf.getvalue()[:60])
    with pytest.raises(DatasetError, match="m.png"):
        read_mask(path)
