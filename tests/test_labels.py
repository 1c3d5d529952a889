import io

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import tiny_config
from segtrain.cli import main
from segtrain.errors import DatasetError
from segtrain.data.synthetic import write_sky_folder
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


VOID3 = ["a", "b", "void"]


def _palette(path, array):
    img = Image.fromarray(array, "L").convert("P")
    img.putpalette([255, 0, 0, 0, 255, 0, 0, 0, 255] + [0] * 759)
    img.save(path)
    return path


# encoding -> (write the mask, class names, class colours, ignore_index, label_threshold); in each,
# the ignored value is also a class value or a threshold side, where it used to be counted.
IGNORED_EVERYWHERE = {
    "index, ignored value is a class": (lambda p: save(p, TRUTH), VOID3, None, 2, None),
    "binary 0/255, ignored value is a class": (lambda p: save(p, (TRUTH == 1).astype(np.uint8) * 255),
                                               ["sky", "cloud"], None, 0, None),
    "palette, ignored index is a class": (lambda p: _palette(p, TRUTH), VOID3, None, 2, None),
    "threshold": (lambda p: save(p, np.array([[0, 10, 175, 176, 200, 255]] * 4, dtype=np.uint8)),
                  ["sky", "cloud"], None, 200, 175),
    "grey levels": (lambda p: save(p, np.array([0, 100, 255], dtype=np.uint8)[TRUTH]),
                    ["undefined", "sky", "cloud"], None, 100, None),
}


@pytest.mark.parametrize("case", list(IGNORED_EVERYWHERE))
def test_ignore_index_is_ignored_exactly_where_the_raw_value_equals_it(tmp_path, case):
    write, names, colors, ignore, threshold = IGNORED_EVERYWHERE[case]
    path = write(tmp_path / "m.png")
    raw = read_mask(path)
    decoder, out = decode(path, names, colors, ignore, threshold)
    assert ((out == IGNORE) == (raw == ignore)).all()
    assert (out[raw != ignore] < len(names)).all()
    assert f"value {ignore} and values that fit no class are ignored" in decoder.describe()


def test_ignore_index_names_the_void_class_of_rgb_colour_masks(tmp_path):
    colors = COLORS + [[255, 255, 255]]
    truth = TRUTH.copy()
    truth[:8, :16] = 3  # white: the void class
    decoder, out = decode(save(tmp_path / "m.png", np.asarray(colors, dtype=np.uint8)[truth]),
                          ["a", "b", "c", "void"], colors, ignore=3)
    assert ((out == IGNORE) == (truth == 3)).all() and (out[truth != 3] == truth[truth != 3]).all()
    assert "colour (255, 255, 255) (class 3, void) and colours that fit no class are ignored" in decoder.describe()


def test_ignore_index_in_lossy_jpeg_masks_ignores_what_snaps_to_it(tmp_path):
    yy, xx = np.mgrid[0:37, 0:41]
    truth = ((yy - 18) ** 2 + (xx - 20) ** 2 < 150).astype(np.uint8) + (xx > 30)  # 0, 1, 2 = void
    path = save(tmp_path / "m.jpg", np.array([0, 128, 255], dtype=np.uint8)[truth], quality=60)
    raw = read_mask(path).astype(int)
    assert len(np.unique(raw)) > 3  # really lossy
    levels = [[0, 0, 0], [128, 128, 128], [255, 255, 255]]
    decoder, out = decode(path, VOID3, levels, ignore=255)
    assert decoder.lossy and (raw[out == IGNORE] > 191).all() and (out[raw > 191] == IGNORE).all()
    assert (out[raw == 255] == IGNORE).all() and ((out == IGNORE) == (truth == 2)).mean() > 0.97


def relabel(root, values, names, void_rows=0):
    """The sky folder's 0/255 masks as grey `values` (sky, cloud[, void]) with the top void_rows rows
    set to the third value; returns the masks as written, by path."""
    (root / "class_names.list").write_text("\n".join(names) + "\n")
    written = {}
    for path in sorted(root.glob("*/labels/*.png")):
        classes = (np.asarray(Image.open(path)) > 0).astype(np.uint8)
        classes[:void_rows] = 2
        written[path] = np.asarray(values, dtype=np.uint8)[classes]
        Image.fromarray(written[path]).save(path)
    return written


def test_ignored_pixels_count_in_no_metric_end_to_end(tmp_path, capsys):
    root = write_sky_folder(tmp_path / "data", n_train=8, n_valid=4, size=32,
                            config=tiny_config(max_iteration=2, interval_validate=2, ignore_index=2))
    masks = relabel(root, [0, 1, 2], ["sky", "cloud", "void"], void_rows=10)
    assert main(["train", str(root)]) == 0
    assert "value 2 and values that fit no class are ignored" in capsys.readouterr().out
    matrix = torch.load(root / "MODEL-tiny" / "model_best.pth.tar", weights_only=True)["valid_metrics"]["confusion_matrix"]
    counted = sum(int((m != 2).sum()) for p, m in masks.items() if p.parent.parent.name == "valid")
    assert sum(map(sum, matrix)) == counted == 4 * 22 * 32 and sum(matrix[2]) == 0


def test_grey_masks_with_one_value_per_class_map_in_order_and_train(tmp_path, capsys):
    from segtrain.data.folder import inspect_root
    from segtrain.config.load import resolve

    root = write_sky_folder(tmp_path / "data", n_train=8, n_valid=4, size=32,
                            config=tiny_config(max_iteration=1, interval_validate=1))
    masks = relabel(root, [100, 255, 0], ["undefined", "sky", "cloud"], void_rows=3)
    assert main(["train", str(root)]) == 0
    assert "labels: grey masks with 3 values, in ascending order: 0 -> undefined, 100 -> sky, 255 -> cloud" \
        in capsys.readouterr().out
    spec = inspect_root(root, resolve(tiny_config()))
    for path, raw in masks.items():
        decoded = spec.decoder.decode(read_mask(path), path)
        assert (decoded == np.searchsorted([0, 100, 255], raw)).all()
    assert set(np.unique(decoded)) == {0, 1, 2}
