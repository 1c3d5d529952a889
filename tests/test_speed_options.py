"""Speed options that must not change what is learnt: channels_last (on where measured faster) and
torch.compile (a compiled run trains the same weights as an eager one)."""

from __future__ import annotations

import torch

from conftest import tiny_config
from segtrain.cli import main
from segtrain.data.synthetic import write_sky_folder
from segtrain.evaluation.inference import use_channels_last

CPU, CUDA = torch.device("cpu"), torch.device("cuda")


def test_channels_last_follows_the_measured_rule_unless_set():
    assert use_channels_last(None, [160, 160], CPU) and use_channels_last(None, [192, 256], CPU)
    assert use_channels_last(None, [144, 192], CPU)  # camvid's fitted input: 1.29x faster
    assert not use_channels_last(None, [128, 128], CPU) and not use_channels_last(None, [128, 320], CPU)
    assert use_channels_last(None, None, CPU)  # native size: camera frames, far above 160 px
    assert use_channels_last(None, [32, 32], CUDA)
    assert not use_channels_last(False, [320, 320], CUDA) and use_channels_last(True, [32, 32], CPU)


def weights(root, **changes):
    write_sky_folder(root, n_train=8, n_valid=2, size=32, config=tiny_config(max_iteration=3, interval_validate=3,
                                                                               **changes))
    assert main(["train", str(root)]) == 0
    return torch.load(root / "MODEL-tiny" / "checkpoint.pth.tar", weights_only=True)["model_state_dict"]


def test_a_compiled_run_learns_what_an_eager_one_learns(tmp_path, monkeypatch):
    eager = weights(tmp_path / "eager")
    # The whole compiled path (dynamo's graph capture, AOTAutograd's backward, the checkpoint of the
    # compiled model) but Inductor's code generation, which is torch's own and costs 30 s cold on 2 cores.
    real_compile = torch.compile
    monkeypatch.setattr(torch, "compile", lambda model, **options: real_compile(model, backend="aot_eager", **options))
    try:
        compiled = weights(tmp_path / "compiled", compile=True)
    finally:
        torch._dynamo.reset()  # compiled code and its guards would stay in this process: torch.export fails after
    assert eager.keys() == compiled.keys()
    for key, tensor in eager.items():
        if tensor.is_floating_point():
            # Float sums in another order drift ~5e-4 in 3 SGD steps; a compiled step that lost its
            # gradients would leave the weights where they started, lr * grad (~1e-2) away.
            torch.testing.assert_close(compiled[key], tensor, rtol=1e-2, atol=3e-3, msg=key)


def test_new_runs_use_fused_optimizer_kernels_and_a_resumed_run_keeps_its_checkpoints(tmp_path):
    """Fused kernels round differently from PyTorch's per-parameter loop: a run that began without
    them (a checkpoint of an earlier version) must continue without them to continue exactly."""
    from segtrain.cli import main as cli

    root = tmp_path / "d"
    write_sky_folder(root, n_train=8, n_valid=2, size=32, config=tiny_config(max_iteration=4, interval_validate=2))
    assert cli(["train", str(root), "--stop-after", "2"]) == 0
    path = root / "MODEL-tiny" / "checkpoint.pth.tar"
    ckpt = torch.load(path, weights_only=True)
    assert all(group["fused"] for group in ckpt["optim_state_dict"]["param_groups"])
    for group in ckpt["optim_state_dict"]["param_groups"]:  # as an earlier segtrain saved it
        group["fused"] = None
    torch.save(ckpt, path)
    assert cli(["train", str(root), "--resume", "--stop-after", "1"]) == 0
    resumed = torch.load(path, weights_only=True)["optim_state_dict"]["param_groups"]
    assert resumed[0]["fused"] is None
