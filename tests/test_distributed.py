"""A real 2-process torchrun job on the CPU (gloo)."""

import csv
import os
import subprocess
import sys

import pytest
import torch

from conftest import tiny_config
from segtrain.use.evaluate import evaluate
from segtrain.data.sampling import EpochBatchSampler, ShardedBatches
from segtrain.data.synthetic import write_sky_folder


def torchrun(*args, nproc=2, timeout=300):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
                           "-m", "segtrain", *map(str, args)], capture_output=True, text=True, env=env, timeout=timeout)


def single_process_evaluate(root, ckpt_path):
    """`segtrain evaluate` of the same weights in one process, over the whole validation set."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as each torchrun worker ran
    try:
        return evaluate(root, ckpt_path, "valid", "cpu", log=lambda *a: None)
    finally:
        torch.set_num_threads(threads)


def test_train_shards_cover_each_epoch_once_and_validation_batches_once():
    shards = [list(EpochBatchSampler(10, 2, seed=1, rank=r, world_size=2).__iter__().__next__()) for r in (0, 1)]
    assert not set(shards[0]) & set(shards[1])
    batches = [b for r in (0, 1) for b in ShardedBatches(7, 2, r, 2)]
    assert sorted(i for b in batches for i in b) == list(range(7))
    assert sorted(map(tuple, batches)) == sorted(map(tuple, ShardedBatches(7, 2)))


def test_two_process_gloo_run_matches_single_process_evaluation(tmp_path):
    # 5 validation images with batch 2: rank 0 gets 2 batches, rank 1 one; nothing counted twice
    root = write_sky_folder(tmp_path / "d", n_train=12, n_valid=5, size=32,
                            config=tiny_config(max_iteration=4, interval_validate=2, batch_size=2))
    result = torchrun("train", root)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    assert "distributed: 2 processes (gloo)" in result.stdout
    assert sorted(p.name for p in root.iterdir() if p.name.startswith("MODEL-")) == ["MODEL-tiny"]
    with open(root / "MODEL-tiny" / "log.csv") as f:
        rows = list(csv.DictReader(f))
    assert [(r["iteration"], bool(r["valid/loss"])) for r in rows] == [
        ("0", True), ("0", False), ("1", False), ("2", True), ("2", False), ("3", False), ("4", True)]
    assert result.stdout.count("valid @ 4") == 1  # progress from rank 0 only

    ckpt = torch.load(root / "MODEL-tiny" / "checkpoint.pth.tar", weights_only=True)
    assert not any(k.startswith("module.") for k in ckpt["model_state_dict"])
    single = single_process_evaluate(root, root / "MODEL-tiny" / "checkpoint.pth.tar")
    final = rows[-1]
    for metric in ("acc", "acc_cls", "mean_iu", "fwavacc"):
        assert float(final[f"valid/{metric}"]) == single[metric], metric
    assert float(final["valid/loss"]) == pytest.approx(single["loss"], rel=1e-6)


def test_failure_on_one_rank_ends_all_ranks_with_a_message(tmp_path):
    root = write_sky_folder(tmp_path / "d", n_train=6, n_valid=2, size=32, config=tiny_config(batch_size=50))
    result = torchrun("train", root, timeout=120)
    assert result.returncode != 0
    assert "batch_size is 50" in result.stderr
