"""Hostile and odd files given as a checkpoint: nothing in them runs, nothing hangs, and every
command answers with one line (exit 1, no traceback)."""

from __future__ import annotations

import io
import os
import pickle
import zipfile
from pathlib import Path

import pytest
import torch

from conftest import run_cli, tiny_config, write_config
from segtrain.checkpoint import read_checkpoint
from segtrain.cli import main
from segtrain.errors import CheckpointError
from segtrain.synthetic import write_sky_folder

MARKER = "pwned"


def _str(text: str) -> bytes:
    data = text.encode()
    return pickle.BINUNICODE + len(data).to_bytes(4, "little") + data


def _call(code: str) -> bytes:
    """Opcodes that call the callable on top of the stack with `code`; the result stays below the
    checkpoint's own object, which is what the unpickler returns."""
    return _str(code) + pickle.TUPLE1 + pickle.REDUCE


def _touch(marker: Path) -> str:
    return f"import os; os.system('touch {marker}')"


# Prefixes put in front of a real checkpoint's pickle: the file still loads as that checkpoint
# if the reader lets them run.
def dotted_global_protocol4(marker):
    # torch._utils._rebuild_tensor.__builtins__.get("exec"): a dotted name walks to exec
    return (pickle.PROTO + b"\x04" + pickle.GLOBAL + b"torch._utils\n_rebuild_tensor.__builtins__.get\n"
            + _str("exec") + pickle.TUPLE1 + pickle.REDUCE + _call(_touch(marker)))


def dotted_stack_global(marker):
    return (pickle.PROTO + b"\x04" + _str("torch._utils") + _str("_rebuild_tensor.__builtins__.get")
            + pickle.STACK_GLOBAL + _str("eval") + pickle.TUPLE1 + pickle.REDUCE
            + _call(f"__import__('os').system('touch {marker}')"))


def stack_global_os_system(marker):
    return pickle.PROTO + b"\x04" + _str("os") + _str("system") + pickle.STACK_GLOBAL + _call(f"touch {marker}")


def builtins_exec(marker):
    return pickle.GLOBAL + b"builtins\nexec\n" + _call(_touch(marker))


def builtins_eval(marker):
    return pickle.GLOBAL + b"builtins\neval\n" + _call(f"__import__('os').system('touch {marker}')")


PREFIXES = [dotted_global_protocol4, dotted_stack_global, stack_global_os_system, builtins_exec, builtins_eval]


def _weights():
    return {"model_state_dict": {"w": torch.ones(3)}, "iteration": 5}


def zip_with_prefix(path: Path, prefix: bytes) -> Path:
    """A real torch.save zip checkpoint whose data.pkl starts with `prefix`."""
    buf = io.BytesIO()
    torch.save(_weights(), buf)
    with zipfile.ZipFile(buf) as src, zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as out:
        for item in src.infolist():
            data = src.read(item)
            out.writestr(item, prefix + data if item.filename.endswith("/data.pkl") else data)
    return path


def legacy_with_prefix(path: Path, prefix: bytes) -> Path:
    """A real checkpoint in torch's legacy (non-zip) format whose object pickle starts with `prefix`."""
    buf = io.BytesIO()
    torch.save(_weights(), buf, _use_new_zipfile_serialization=False)
    buf.seek(0)
    for _ in range(3):  # magic number, protocol version, sys info; then the object's pickle
        pickle.load(buf)
    data = buf.getvalue()
    path.write_bytes(data[:buf.tell()] + prefix + data[buf.tell():])
    return path


class Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def saved(path: Path, obj, **kwargs) -> Path:
    torch.save(obj, path, **kwargs)
    return path


# Whole files whose own objects carry the payload (torch.save pickles Evil as a call of os.system).
SAVED = {
    "reduce next to weights, zip": lambda p, m: saved(p, {**_weights(), "payload": Evil(m)}),
    "reduce inside model_state_dict, zip": lambda p, m: saved(p, {"model_state_dict": {"w": torch.ones(3), "x": Evil(m)}}),
    "reduce inside model_state_dict, legacy": lambda p, m: saved(
        p, {"model_state_dict": {"w": torch.ones(3), "x": Evil(m)}}, _use_new_zipfile_serialization=False),
    "reduce, protocol 4, zip": lambda p, m: saved(p, {**_weights(), "payload": Evil(m)}, pickle_protocol=4),
    "reduce, protocol 4, legacy": lambda p, m: saved(p, {**_weights(), "payload": Evil(m)}, pickle_protocol=4,
                                                      _use_new_zipfile_serialization=False),
}
HOSTILE = {
    **{f"{f.__name__}, zip": (lambda p, m, f=f: zip_with_prefix(p, f(m))) for f in PREFIXES},
    **{f"{f.__name__}, legacy": (lambda p, m, f=f: legacy_with_prefix(p, f(m))) for f in PREFIXES},
    **SAVED,
}


def test_the_prefixed_files_are_real_checkpoints(tmp_path):
    """Without a payload the crafted files load: a refusal below is the payload's, not a broken file's."""
    harmless = pickle.NONE
    for write in (zip_with_prefix, legacy_with_prefix):
        ckpt = read_checkpoint(write(tmp_path / "c.pth", harmless))
        assert ckpt["iteration"] == 5 and torch.equal(ckpt["model_state_dict"]["w"], torch.ones(3))


@pytest.mark.parametrize("case", list(HOSTILE))
def test_hostile_pickle_is_refused_and_runs_nothing(tmp_path, case):
    marker = tmp_path / MARKER
    path = HOSTILE[case](tmp_path / "model_best.pth.tar", marker)
    with pytest.raises(CheckpointError) as refusal:
        read_checkpoint(path)
    message = str(refusal.value)
    assert not marker.exists()
    assert "\n" not in message and message.startswith(f"{path}: refused")
    assert "nothing in it was executed" in message


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """A tiny data folder, and a checkpoint whose pickle reaches exec through a dotted global."""
    base = tmp_path_factory.mktemp("hostile")
    root = write_sky_folder(base / "data", n_train=4, n_valid=2, size=32, config=tiny_config(max_iteration=1))
    zip_with_prefix(root / "evil.pth.tar", dotted_global_protocol4(base / MARKER))
    return root


def _commands(root: Path, ckpt: Path, tmp: Path) -> dict[str, list[str]]:
    return {
        "evaluate": ["evaluate", str(root), "--checkpoint", str(ckpt)],
        "predict": ["predict", str(root / "valid" / "images"), "--checkpoint", str(ckpt), "--out", str(tmp / "out")],
        "export": ["export", "--checkpoint", str(ckpt), "--format", "torchscript", "--out", str(tmp / "m.pt")],
        "train --resume": ["train", str(root), "--resume", str(ckpt)],
        "train with pretrained_net": ["train", str(root), "--set", f"pretrained_net={ckpt}"],
    }


@pytest.mark.parametrize("command", ["evaluate", "predict", "export", "train --resume", "train with pretrained_net"])
def test_every_command_refuses_the_hostile_checkpoint_in_one_line(folder, tmp_path, capsys, command):
    capsys.readouterr()
    assert main(_commands(folder, folder / "evil.pth.tar", tmp_path)[command]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"error: {folder / 'evil.pth.tar'}: refused")
    assert not (folder.parent / MARKER).exists()
    assert not list(folder.glob("MODEL-*"))


def test_check_and_the_real_command_refuse_it_too(folder, tmp_path):
    write_config(tmp_path, **tiny_config(pretrained_net=str(folder / "evil.pth.tar")))
    result = run_cli("check", folder, "--config", tmp_path / "config.list", timeout=120)
    assert result.returncode == 1 and "Traceback" not in result.stderr + result.stdout
    assert f"{folder / 'evil.pth.tar'}: refused" in result.stdout + result.stderr
    result = run_cli("evaluate", folder, "--checkpoint", folder / "evil.pth.tar", timeout=120)
    assert result.returncode == 1 and result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert not (folder.parent / MARKER).exists()


# ---- not a checkpoint file at all -------------------------------------------------------------

def _fifo(path: Path) -> Path:
    os.mkfifo(path)
    return path


def _loop(path: Path) -> Path:
    path.symlink_to(path.name)
    return path


def _truncated_zip(path: Path) -> Path:
    data = saved(path, _weights()).read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def _truncated_legacy(path: Path) -> Path:
    data = saved(path, _weights(), _use_new_zipfile_serialization=False).read_bytes()
    path.write_bytes(data[:60])
    return path


ODD = {
    "directory": (lambda p: (p.mkdir(), p)[1], "is a folder, not a checkpoint"),
    "fifo": (_fifo, "is a FIFO (named pipe), not a regular file"),
    "/dev/zero": (lambda p: Path("/dev/zero"), "is a character device, not a regular file"),
    "symlink loop": (_loop, "a symbolic link loop"),
    "dangling symlink": (lambda p: (p.symlink_to("gone.pth"), p)[1], "a symbolic link to gone.pth, which does not exist"),
    "truncated zip": (_truncated_zip, "refused, the file is truncated"),
    "truncated legacy": (_truncated_legacy, "refused, the file is truncated"),
    "empty": (lambda p: (p.touch(), p)[1], "not a PyTorch checkpoint"),
}


@pytest.mark.parametrize("case", list(ODD))
def test_odd_checkpoint_paths_get_a_precise_line(tmp_path, case):
    make, words = ODD[case]
    path = make(tmp_path / "model_best.pth.tar")
    with pytest.raises(CheckpointError) as refusal:
        read_checkpoint(path)
    assert str(refusal.value).startswith(f"{path}: ") and words in str(refusal.value)
    assert "\n" not in str(refusal.value)


@pytest.mark.parametrize("case", ["fifo", "/dev/zero", "symlink loop"])
def test_pretrained_net_that_would_block_fails_at_once(folder, tmp_path, case):
    path = ODD[case][0](tmp_path / "net.pth")
    write_config(tmp_path, **tiny_config(pretrained_net=str(path)))
    result = run_cli("train", folder, "--config", tmp_path / "config.list", timeout=60)
    assert result.returncode == 1 and result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert ODD[case][1] in result.stderr
