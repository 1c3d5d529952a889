import os
import pickle
import sys
import textwrap

import pytest
import torch

from segtrain.outputs.checkpoints import load_weights, read_checkpoint, save_atomic
from segtrain.errors import CheckpointError
from segtrain.models.registry import build_model


def _same(a, b):
    return all(torch.equal(a[k], b[k]) for k in a)


def test_plain_state_dict_round_trip(tmp_path):
    model = build_model("fcn_resnet18", 3)
    torch.save(model.state_dict(), tmp_path / "plain.pth")
    ckpt = read_checkpoint(tmp_path / "plain.pth")
    fresh = build_model("fcn_resnet18", 3)
    load_weights(fresh, ckpt["model_state_dict"], "plain.pth")
    assert _same(model.state_dict(), fresh.state_dict())


def test_atomic_save_leaves_no_temp_and_loads_weights_only(tmp_path):
    save_atomic({"model_state_dict": {"w": torch.ones(2)}, "iteration": 3}, tmp_path / "c.pth.tar")
    assert os.listdir(tmp_path) == ["c.pth.tar"]
    assert torch.load(tmp_path / "c.pth.tar", weights_only=True)["iteration"] == 3


def test_failed_save_keeps_the_previous_file(tmp_path):
    path = tmp_path / "c.pth.tar"
    save_atomic({"model_state_dict": {"w": torch.ones(2)}}, path)

    class Unpicklable:
        def __reduce__(self):
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        save_atomic({"bad": Unpicklable()}, path)
    assert torch.equal(torch.load(path, weights_only=True)["model_state_dict"]["w"], torch.ones(2))
    assert os.listdir(tmp_path) == ["c.pth.tar"]


def _write_original_checkpoint(tmp_path, num_classes):
    """A checkpoint as the original tool wrote it: torchvision's model wrapped as self.fcn, the
    whole model pickled under 'model' by a class that no longer exists when loading."""
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "torchfcn_gone.py").write_text(textwrap.dedent("""
        import torch
        from segtrain.models.registry import build_model
        class FCNResNet(torch.nn.Module):
            def __init__(self, n):
                super().__init__()
                self.fcn = build_model("fcn_resnet18", n)
    """))
    sys.path.insert(0, str(pkg))
    try:
        import torchfcn_gone

        model = torchfcn_gone.FCNResNet(num_classes)
        opt = torch.optim.SGD(model.parameters(), lr=1e-10, momentum=0.99)
        torch.save({"model_state_dict": model.state_dict(), "optim_state_dict": opt.state_dict(),
                    "iteration": 400, "best_mean_iu": 0.5, "arch": "FCNResNet", "model": model},
                   tmp_path / "model_best.pth.tar")
    finally:
        sys.path.remove(str(pkg))
        sys.modules.pop("torchfcn_gone", None)
    return model


def test_original_tool_checkpoint_with_pickled_model_loads_without_executing_it(tmp_path):
    original = _write_original_checkpoint(tmp_path, 2)
    with pytest.raises(Exception):
        torch.load(tmp_path / "model_best.pth.tar", weights_only=True)
    ckpt = read_checkpoint(tmp_path / "model_best.pth.tar")
    assert "model" not in ckpt and ckpt["iteration"] == 400
    fresh = build_model("fcn_resnet18", 2)
    load_weights(fresh, ckpt["model_state_dict"], "orig")
    assert _same(original.fcn.state_dict(), fresh.state_dict())


def test_other_class_count_reinitialises_the_head_with_a_note(tmp_path):
    _write_original_checkpoint(tmp_path, 5)
    notes = []
    fresh = build_model("fcn_resnet18", 2)
    head_before = fresh.classifier[4].weight.clone()
    load_weights(fresh, read_checkpoint(tmp_path / "model_best.pth.tar")["model_state_dict"], "orig", notes.append)
    assert any("classifier" in n and "re-initialised" in n for n in notes)
    assert torch.equal(fresh.classifier[4].weight, head_before)


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_malicious_pickle_without_weights_is_refused_and_not_executed(tmp_path):
    marker = tmp_path / "pwned"
    torch.save({"payload": _Evil(marker), "iteration": 1}, tmp_path / "evil.pth")
    with pytest.raises(CheckpointError, match="refused, .* names posix.system.* nothing in it was executed"):
        read_checkpoint(tmp_path / "evil.pth")
    assert not marker.exists()


def test_malicious_legacy_pickle_is_not_executed(tmp_path):
    marker = tmp_path / "pwned"
    with open(tmp_path / "evil.pkl", "wb") as f:
        pickle.dump(_Evil(marker), f)
    with pytest.raises(CheckpointError):
        read_checkpoint(tmp_path / "evil.pkl")
    assert not marker.exists()


def test_random_bytes_are_not_a_checkpoint(tmp_path):
    (tmp_path / "junk.pth").write_bytes(os.urandom(2048))
    with pytest.raises(CheckpointError, match="not a PyTorch checkpoint"):
        read_checkpoint(tmp_path / "junk.pth")


def test_weights_of_another_architecture_are_refused(tmp_path):
    torch.save(build_model("lraspp_mobilenet_v3_large", 2).state_dict(), tmp_path / "l.pth")
    with pytest.raises(CheckpointError, match="none of its weights fit"):
        load_weights(build_model("fcn_resnet18", 2), read_checkpoint(tmp_path / "l.pth")["model_state_dict"], "l.pth")
