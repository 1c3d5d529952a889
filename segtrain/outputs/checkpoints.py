"""Checkpoints: written atomically, read without running code from the file.

Our own files hold only tensors and built-ins, so `torch.load(weights_only=True)` reads them.
The original tool also pickled its whole model object; for such files a restricted unpickler
replaces every global other than tensor rebuilders with an inert stub, then keeps only the
`model_state_dict` of tensors.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import torch
from torch import nn

from segtrain.outputs.atomic import atomic_open
from segtrain.errors import CheckpointError

FORMAT_VERSION = 1


def save_atomic(obj: Any, path: Path) -> None:
    """Write to a temp file in the same folder, fsync, then rename: a crash leaves the old file."""
    with atomic_open(path) as f:
        torch.save(obj, f)


class _Inert:
    """Stands in for any class or function a legacy pickle names; calling it does nothing."""

    def __init__(self, *args, **kwargs):
        pass

    def __new__(cls, *args, **kwargs):
        return object.__new__(cls)

    def __setstate__(self, state):
        pass

    def __call__(self, *args, **kwargs):
        return _Inert()

    def __setitem__(self, key, value):
        pass

    def append(self, item):
        pass

    def extend(self, items):
        pass


def _allowed(module: str, name: str) -> bool:
    if module == "collections" and name == "OrderedDict":
        return True
    if module == "torch._utils" and name.startswith("_rebuild_"):
        return True  # these only rebuild tensors and parameters from storages
    if module == "torch" and (name.endswith("Storage") or name in ("Size", "device")):
        return True
    if module == "torch" and isinstance(getattr(torch, name, None), torch.dtype):
        return True
    return False


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        if _allowed(module, name):
            return super().find_class(module, name)
        return type(f"Inert_{name}", (_Inert,), {})


class _RestrictedPickleModule:
    """The pickle_module torch.load uses: its Unpickler stubs every global not allowed."""

    Unpickler = _RestrictedUnpickler

    @staticmethod
    def load(file, **kwargs):  # torch's legacy format unpickles its header with load(): restrict it too
        return _RestrictedUnpickler(file, **kwargs).load()
    __name__ = "segtrain_restricted_pickle"


def _is_tensor_dict(obj) -> bool:
    return isinstance(obj, dict) and len(obj) > 0 and all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()
    )


def read_checkpoint(path: Path) -> dict[str, Any]:
    """The file's top-level dict. Plain state_dicts come back as {"model_state_dict": ...}."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found. Check the path (relative paths are from the data folder).")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as safe_error:  # not loadable safely: maybe the original tool's pickled model
        obj = _read_legacy(path, safe_error)
    if _is_tensor_dict(obj):
        return {"model_state_dict": obj}
    if isinstance(obj, dict) and _is_tensor_dict(obj.get("model_state_dict")):
        return obj
    if isinstance(obj, dict) and _is_tensor_dict(obj.get("state_dict")):
        return {**obj, "model_state_dict": obj["state_dict"]}
    raise CheckpointError(
        f"{path}: holds no model weights (expected a state_dict of tensors, or a dict with "
        "'model_state_dict'). Point pretrained_net / --checkpoint at a model_best.pth.tar or checkpoint.pth.tar."
    )


def _read_legacy(path: Path, safe_error: Exception) -> dict[str, Any]:
    try:
        obj = torch.load(path, map_location="cpu", weights_only=False, pickle_module=_RestrictedPickleModule)
    except Exception:
        raise CheckpointError(
            f"{path}: not a PyTorch checkpoint ({type(safe_error).__name__}). "
            "Point pretrained_net / --checkpoint at a .pth/.pth.tar file written by torch.save."
        ) from None
    if isinstance(obj, dict) and _is_tensor_dict(obj.get("model_state_dict")):
        kept = {k: v for k, v in obj.items() if k != "model" and not isinstance(v, _Inert)}
        return kept
    raise CheckpointError(
        f"{path}: a pickled checkpoint without a usable 'model_state_dict' of tensors; it was not "
        "loaded (nothing in it was executed). Re-save the weights with torch.save(model.state_dict(), file)."
    )


def _strip(key: str) -> str:
    # The original tool wrapped torchvision's model as self.fcn; DDP adds module.
    for prefix in ("module.", "fcn.", "_orig_mod."):
        while key.startswith(prefix):
            key = key[len(prefix):]
    return key


def load_weights(model: nn.Module, state: dict[str, torch.Tensor], source: str, log=print) -> None:
    """Load what fits; heads of another class count are left freshly initialised, with a note."""
    own = model.state_dict()
    state = {_strip(k): v for k, v in state.items()}
    usable = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    if not usable:
        raise CheckpointError(
            f"{source}: none of its weights fit this model ({type(model).__name__}); it was trained with "
            "another architecture. Set 'model' (or backbone/fcn) to the one it was trained with."
        )
    reshaped = sorted({k.rsplit(".", 2)[0] for k, v in state.items() if k in own and own[k].shape != v.shape})
    missing = [k for k in own if k not in usable and not k.endswith("num_batches_tracked")]
    model.load_state_dict(usable, strict=False)
    if reshaped:
        log(f"note: {source}: {', '.join(reshaped)} had another number of classes; re-initialised.")
    others = [k for k in missing if k.rsplit(".", 2)[0] not in reshaped]
    if others:
        groups = sorted({k.split(".")[0] for k in others})
        log(f"note: {source}: no weights for {len(others)} tensor(s) in {', '.join(groups)}; those start fresh.")
