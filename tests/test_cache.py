import csv

import numpy as np
import torch
from torchvision import tv_tensors
import pytest

from conftest import tiny_config
from segtrain.data.cache import fill_cache
from segtrain.config.load import resolve
from segtrain.config.recipe import DEFAULT_IMAGE_SIZE
from segtrain.data.folder import SegmentationDataset, inspect_root
from segtrain.errors import ConfigError
from segtrain.data.synthetic import write_sky_folder
from segtrain.training.loop import train
from segtrain.data.transforms import train_transform


def _dataset(root):
    spec = inspect_root(root, resolve(tiny_config()))
    return SegmentationDataset(spec.train, spec.decoder, train_transform([32, 32], True), train=True)


def test_cache_holds_what_disk_decoding_gives_and_stops_at_the_budget(tmp_path):
    root = write_sky_folder(tmp_path / "d", n_train=10, n_valid=2, size=32)
    data = _dataset(root)
    per_pair = 32 * 32 * 4
    cached, total, used = fill_cache([data], budget_mb=(3.5 * per_pair) / 2**20)
    assert (cached, total, used) == (3, 10, 3 * per_pair)
    assert sorted(data.cache) == [0, 1, 2]
    fresh = _dataset(root)
    for i in range(3):
        for a, b in zip(data.cache[i], fresh.load(i)):
            assert a.dtype == np.uint8 and np.array_equal(a, b)


@pytest.mark.parametrize("workers", [2])
def test_training_with_the_cache_logs_exactly_what_training_without_it_logs(tmp_path, workers):
    """Augmentation must never write into the shared arrays: every epoch sees the decoded pixels."""
    logs = []
    for cache_mb in (0, 64):
        root = write_sky_folder(tmp_path / f"d{cache_mb}", n_train=8, n_valid=2, size=32)
        cfg = resolve(tiny_config(max_iteration=4, interval_validate=2, augment=True, n_workers=workers,
                                  batch_size=2, cache_mb=cache_mb))
        out = train(root, cfg, log=lambda *_: None)
        with open(out / "log.csv") as f:
            logs.append([{k: v for k, v in r.items() if k != "elapsed_time"} for r in csv.DictReader(f)])
    assert logs[0] == logs[1] and len(logs[0]) == 7


def test_image_size_absent_means_the_default_size_except_for_the_original_recipe():
    assert resolve({})["image_size"] == [DEFAULT_IMAGE_SIZE] * 2
    assert resolve({"lr": 1e-10})["image_size"] is None  # the original trained at native size
    assert resolve({"image_size": None})["image_size"] is None  # explicit null is native, as before
    assert resolve({"cache_mb": 0})["cache_mb"] == 0
    assert resolve({"threads": 1})["threads"] == 1 and resolve({})["threads"] is None
    with pytest.raises(ConfigError, match="'threads'"):
        resolve({"threads": 0})


def test_cached_data_without_augmentation_loads_in_the_main_process_on_the_cpu(tmp_path):
    root = write_sky_folder(tmp_path / "d", n_train=8, n_valid=2, size=32)
    lines = []
    cfg = resolve(tiny_config(max_iteration=2, interval_validate=2, augment=False, n_workers=2, batch_size=2))
    train(root, cfg, log=lines.append)
    assert any("loading in this process instead of 2 worker(s)" in line for line in lines)
    assert any(line.startswith("cache: 10/10 images") for line in lines)


def test_a_training_batch_holds_each_sample_converted_as_evaluation_converts_it(tmp_path):
    """Samples stay uint8 until the batch is converted at once (collate_train); the values must be
    the ones the per-sample float transform of validation and predict gives, bit for bit."""
    from torchvision.transforms import v2

    from segtrain.data.transforms import _to_float, collate_train

    root = write_sky_folder(tmp_path / "d", n_train=3, n_valid=1, size=32)
    data = _dataset(root)
    samples = [data[(0, i)] for i in range(3)]
    assert {s[0].dtype for s in samples} == {torch.uint8} and {s[1].dtype for s in samples} == {torch.uint8}
    images, masks = collate_train(samples)
    per_sample = torch.stack([v2.Compose(_to_float())(tv_tensors.Image(s[0])).as_subclass(torch.Tensor)
                              for s in samples])
    assert images.dtype == torch.float32 and torch.equal(images, per_sample)
    assert masks.dtype == torch.int64 and torch.equal(masks, torch.stack([s[1] for s in samples]).long())
