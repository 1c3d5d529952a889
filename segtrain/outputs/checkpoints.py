"""Checkpoints: written atomically, read without running code from the file.

Everything is read by torch's own weights-only unpickler, which builds only tensors and plain
data and never resolves a global it does not know. Our own files need nothing more. The original
tool also pickled its whole model object (classes that may no longer exist); for such files every
class the pickle names outside torch's allow-list is mapped, by its exact name, to an inert stub:
it may be instantiated and given state (which it drops), but calling it, the way a `__reduce__`
payload runs a function, refuses the whole file. Only the `model_state_dict` of tensors is kept.
"""

from __future__ import annotations

import errno
import os
import pickle
import pickletools
import stat
import warnings
import zipfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from segtrain.version import __version__
from segtrain.outputs.atomic import atomic_open
from segtrain.errors import CheckpointError

# The version of the payload below (the files' names are the run folder's, run_folder.py).
FORMAT_VERSION = 1
ZIP_MAGIC = b"PK\x03\x04"
LEGACY_PICKLES = 5  # the legacy format: magic number, protocol, sys info, the object, storage keys
POINT_AT = "Point pretrained_net / --checkpoint at a .pth/.pth.tar file written by torch.save"


def training_payload(model: nn.Module, arch: str, cfg, class_names: list[str], colors: list[list[int]],
                     label_encoding: str, normalization: dict, state: dict) -> dict:
    """A run's checkpoint: the original tool's keys (model_state_dict, optim_state_dict, epoch,
    iteration, arch, best_mean_iu) plus what rebuilds the model without the data folder. Only
    tensors and built-ins, so `torch.load(weights_only=True)` reads it anywhere. `state` holds
    the loop's counters, schedule and optimizer, scheduler and resume state. Each fact is stored
    once: the input size, for one, is the config's image_size ("arch" is the original tool's name
    for the config's model, kept for its readers)."""
    return {
        "format_version": FORMAT_VERSION,
        "segtrain_version": __version__,
        "arch": arch,
        "model_state_dict": cpu_state(model),
        **state,
        "config": dict(cfg),  # the run's plan (config/plan.py)
        "class_names": list(class_names),
        "class_colors": [list(c) for c in colors],
        "label_encoding": label_encoding,
        "normalization": normalization,
    }


def cpu_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu() for k, v in model.state_dict().items()}


def save_atomic(obj: Any, path: Path) -> None:
    """Write to a temp file in the same folder, fsync, then rename: a crash leaves the old file."""
    with atomic_open(path) as f:
        torch.save(obj, f)


class _Refused(Exception):
    def __init__(self, name: str):
        super().__init__(name)
        self.name = name


class _StubMeta(type):
    def __call__(cls, *args, **kwargs):
        # REDUCE calls what the pickle names (os.system, exec, ...); no checkpoint needs that.
        raise _Refused(cls.global_name)


class _Stub(metaclass=_StubMeta):
    """Stands in for a class the pickle names; the unpickler creates it with __new__ (NEWOBJ)."""

    global_name = ""

    def __new__(cls, *args, **kwargs):
        return object.__new__(cls)

    def __setstate__(self, state):
        pass


def _stub(name: str) -> tuple[type, str]:
    return _StubMeta(f"Stub[{name}]", (_Stub,), {"global_name": name}), name


def _pickle_globals(stream) -> set[str]:
    """The names of the GLOBAL opcodes of the one pickle read from stream (read up to its STOP)."""
    return {arg.replace(" ", ".", 1) for op, arg, _ in pickletools.genops(stream) if op.name == "GLOBAL"}


def _unknown_globals(path: Path) -> set[str]:
    """The globals a checkpoint names that torch's weights-only unpickler does not allow."""
    if zipfile.is_zipfile(path):
        try:
            return set(torch.serialization.get_unsafe_globals_in_checkpoint(path))
        except Exception:
            return set()  # not readable as torch's zip format: the load that follows says so
    found: set[str] = set()
    with open(path, "rb") as f:
        for _ in range(LEGACY_PICKLES):
            try:
                found |= _pickle_globals(f)
            except Exception:
                break  # the raw storage bytes after the pickles, or a damaged file
    # The same allow-list get_unsafe_globals_in_checkpoint subtracts for the zip format.
    return found - set(torch._weights_only_unpickler._get_allowed_globals())


def _starts_as_legacy(path: Path) -> bool:
    """torch's legacy format starts with a pickle of its magic number (at any pickle protocol)."""
    with open(path, "rb") as f:
        try:
            return any(op.name == "LONG1" and arg == torch.serialization.MAGIC_NUMBER
                       for op, arg, _ in pickletools.genops(f))
        except Exception:
            return False


def _is_tensor_dict(obj) -> bool:
    return isinstance(obj, dict) and len(obj) > 0 and all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()
    )


def read_checkpoint(path: Path) -> dict[str, Any]:
    """The file's top-level dict. Plain state_dicts come back as {"model_state_dict": ...}."""
    path = Path(path)
    _check_regular_file(path)
    try:
        obj = _load(path)
    except Exception as safe_error:  # not loadable as it is: maybe the original tool's pickled model
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


def _check_regular_file(path: Path) -> None:
    """Only a regular file is opened: a FIFO would block the open, /dev/zero never ends."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        if path.is_symlink():
            raise CheckpointError(f"{path}: a symbolic link to {os.readlink(path)}, which does not exist. "
                                  f"{POINT_AT}.") from None
        raise CheckpointError(f"{path}: checkpoint not found (nothing at {os.path.abspath(path)}). Check the path.") from None
    except OSError as e:
        what = "a symbolic link loop (the link leads back to itself)" if e.errno == errno.ELOOP else f"cannot be read ({e.strerror})"
        raise CheckpointError(f"{path}: {what}. {POINT_AT}.") from None
    if stat.S_ISDIR(mode):
        raise CheckpointError(f"{path}: is a folder, not a checkpoint. Point pretrained_net / --checkpoint at a file "
                              f"in it, e.g. {path / 'model_best.pth.tar'}.")
    if not stat.S_ISREG(mode):
        kind = ("a FIFO (named pipe)" if stat.S_ISFIFO(mode) else "a character device" if stat.S_ISCHR(mode)
                else "a block device" if stat.S_ISBLK(mode) else "a socket" if stat.S_ISSOCK(mode) else "not a file")
        raise CheckpointError(f"{path}: is {kind}, not a regular file. {POINT_AT}.")


def _load(path: Path) -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # e.g. "pickle protocol 4": the refusal, if any, says what matters
        return torch.load(path, map_location="cpu", weights_only=True)


def _read_legacy(path: Path, safe_error: Exception) -> dict[str, Any]:
    stubs = [_stub(name) for name in sorted(_unknown_globals(path))]
    if not stubs:
        raise _unreadable(path, safe_error)
    try:
        with torch.serialization.safe_globals(stubs):
            obj = _load(path)
    except Exception as e:
        raise _unreadable(path, e, [name for _, name in stubs]) from None
    if isinstance(obj, dict) and _is_tensor_dict(obj.get("model_state_dict")):
        return {k: v for k, v in obj.items() if k != "model" and not isinstance(v, _Stub)}
    raise CheckpointError(
        f"{path}: a pickled checkpoint without a usable 'model_state_dict' of tensors; it was not "
        "loaded (nothing in it was executed). Re-save the weights with torch.save(model.state_dict(), file)."
    )


def _unreadable(path: Path, error: Exception, named: list[str] = ()) -> CheckpointError:
    if isinstance(error, OSError):
        return CheckpointError(f"{path}: cannot be read ({error.strerror or error}). {POINT_AT}.")
    with open(path, "rb") as f:
        is_zip = f.read(len(ZIP_MAGIC)) == ZIP_MAGIC
    if isinstance(error, _Refused):
        why = f"its pickle calls {error.name}, which no checkpoint needs"
    elif not is_zip and not _starts_as_legacy(path):
        return CheckpointError(f"{path}: not a PyTorch checkpoint ({type(error).__name__}). {POINT_AT}.")
    elif is_zip and not zipfile.is_zipfile(path) or isinstance(error, EOFError):
        why = "the file is truncated (it ends early)"
    elif isinstance(error, pickle.UnpicklingError):
        why = "its pickle holds objects other than tensors and plain data" + (
            f" (it names {', '.join(named[:3])})" if named else "")
    else:
        why = f"the file is damaged ({type(error).__name__}: {str(error).splitlines()[0][:100]})"
    return CheckpointError(f"{path}: refused, {why}; it was not loaded and nothing in it was executed. "
                           "Copy the file again, or use a checkpoint written by torch.save from a source you trust.")


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
