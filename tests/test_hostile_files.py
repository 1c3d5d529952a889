"""Hostile and odd files given as a checkpoint or as a dataset archive: nothing in them runs or
lands outside where the user pointed, nothing hangs, and every command answers with one line
(exit 1, no traceback)."""

from __future__ import annotations

import io
import json
import os
import pickle
import tarfile
import zipfile
from pathlib import Path

import pytest
import torch

from conftest import run_cli, tiny_config, write_config
from segtrain.outputs.checkpoints import read_checkpoint
from segtrain.cli import main
from segtrain.errors import CheckpointError
from segtrain.data.synthetic import write_sky_folder
from test_starting import _archive, serve

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


# ---- hostile archives for `segtrain download` ---------------------------------------------------

def _member(tar: tarfile.TarFile, name: str, kind=tarfile.REGTYPE, data: bytes = b"pwned", link: str = "") -> None:
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.size = kind, link, len(data) if kind == tarfile.REGTYPE else 0
    tar.addfile(info, io.BytesIO(data) if kind == tarfile.REGTYPE else None)


def _tar(path: Path, members) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        _member(tar, "WaggleClouds/README.txt", data=b"terms")
        for member in members:
            _member(tar, *member)
    return path


# DEST is tmp/dest and the archive is unpacked in DEST/download/extracted: three levels below tmp.
ESCAPES = {
    "absolute path": lambda out: [(str(out / "marker"),)],
    "../ escape": lambda out: [("../../../outside/marker",)],
    "absolute symlink, then a file through it": lambda out: [("link", tarfile.SYMTYPE, b"", str(out)), ("link/marker",)],
    "relative symlink out, then a file through it": lambda out: [("link", tarfile.SYMTYPE, b"", "../../../outside"),
                                                                 ("link/marker",)],
    "hardlink to an outside file, then a write to it": lambda out: [("hl", tarfile.LNKTYPE, b"", str(out / "kept")),
                                                                    ("hl",)],
    "fifo": lambda out: [("WaggleClouds/pipe", tarfile.FIFOTYPE)],
    "character device": lambda out: [("WaggleClouds/null", tarfile.CHRTYPE)],
}


def _zip(path: Path, names) -> Path:
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("WaggleClouds/README.txt", "terms")
        for name in names:
            z.writestr(zipfile.ZipInfo(name), "pwned")
    return path


def _outside(tmp_path: Path) -> Path:
    out = tmp_path / "outside"
    out.mkdir()
    (out / "kept").write_text("original")
    return out


def _refused_download(tmp_path: Path, capsys, archive: Path, out: Path) -> str:
    capsys.readouterr()
    assert main(["download", "waggle_clouds", str(tmp_path / "dest"), "--archive", str(archive)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"error: {archive}: refused")
    assert sorted(p.name for p in out.iterdir()) == ["kept"] and (out / "kept").read_text() == "original"
    assert not (tmp_path / "dest" / "download" / "extracted").exists()
    return err


@pytest.mark.parametrize("case", list(ESCAPES))
def test_download_refuses_a_tar_member_that_escapes_dest(tmp_path, capsys, case):
    out = _outside(tmp_path)
    err = _refused_download(tmp_path, capsys, _tar(tmp_path / "evil.tar.gz", ESCAPES[case](out)), out)
    assert ("link" if "link" in case else "pipe" if case == "fifo" else "null" if "device" in case else "marker") in err


@pytest.mark.parametrize("name", ["/{out}/marker", "../../../outside/marker", "WaggleClouds/../../../../outside/marker"])
def test_download_refuses_a_zip_member_that_escapes_dest(tmp_path, capsys, name):
    out = _outside(tmp_path)
    name = name.format(out=str(out).lstrip("/"))
    err = _refused_download(tmp_path, capsys, _zip(tmp_path / "evil.zip", [name]), out)
    assert repr(name) in err
    assert not list((tmp_path / "dest").rglob("marker"))


def test_download_from_a_url_refuses_a_hostile_archive_too(tmp_path):
    out = _outside(tmp_path)
    served = tmp_path / "served"
    served.mkdir()
    _tar(served / "WaggleClouds.tar.gz", ESCAPES["../ escape"](out))
    with serve(served) as url:
        result = run_cli("download", "waggle_clouds", tmp_path / "dest", "--url", f"{url}/WaggleClouds.tar.gz", timeout=120)
    lines = [line for line in result.stderr.splitlines() if line.strip() and "%|" not in line]  # not the progress bar
    assert result.returncode == 1 and len(lines) == 1 and "Traceback" not in result.stderr
    assert "refused" in lines[0] and "../../../outside/marker" in lines[0]
    assert sorted(p.name for p in out.iterdir()) == ["kept"]
    assert not (tmp_path / "dest" / "download" / "WaggleClouds.tar.gz").exists()  # refetched next time


def test_download_of_a_benign_zip_archive_is_arranged(tmp_path):
    _archive(tmp_path, {"WaggleClouds/data/train": 4})
    with zipfile.ZipFile(tmp_path / "clouds.zip", "w") as z:
        for path in sorted((tmp_path / "src").rglob("*")):
            z.write(path, path.relative_to(tmp_path / "src"))
    assert main(["download", "waggle_clouds", str(tmp_path / "dest"), "--archive", str(tmp_path / "clouds.zip")]) == 0
    assert len(list((tmp_path / "dest" / "train" / "images").iterdir())) == 4


# ---- hostile .pt2 files (torch.export.load runs code from them unless segtrain refuses first) --

def _rewrite_zip(src: Path, dst: Path, change) -> Path:
    """A copy of the zip archive `src` with change(name, data) -> data applied to every member."""
    with zipfile.ZipFile(src) as a, zipfile.ZipFile(dst, "w", zipfile.ZIP_STORED) as b:
        for item in a.infolist():
            b.writestr(item, change(item.filename, a.read(item)))
    return dst


def _torch_saved(obj) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def _pickled_sample_inputs(src, dst, marker):
    return _rewrite_zip(src, dst, lambda name, data: _torch_saved(((Evil(marker),), {}))
                        if name.endswith("/data/sample_inputs/model.pt") else data)


def _pickled_weight(src, dst, marker):
    def change(name, data):
        if name.endswith("/data/weights/model_weights_config.json"):
            config = json.loads(data)
            first = next(iter(config["config"].values()))
            first["use_pickle"] = True
            return json.dumps(config).encode()
        return _torch_saved(Evil(marker)) if name.endswith("/data/weights/weight_0") else data
    return _rewrite_zip(src, dst, change)


def _evaluated_shape_expression(src, dst, marker):
    def change(name, data):
        if name.endswith("/models/model.json"):
            text = data.decode()
            first = text.index('"expr_str": "') + len('"expr_str": "')
            return (text[:first] + f"__import__('os').system('touch {marker}') or " + text[first:]).encode()
        return data
    return _rewrite_zip(src, dst, change)


PT2 = {"sample inputs unpickle an object": _pickled_sample_inputs, "a weight stored as a pickle": _pickled_weight,
       "a shape expression that runs Python": _evaluated_shape_expression}


@pytest.fixture(scope="module")
def pt2_export(tmp_path_factory):
    """A real .pt2 export with dynamic height and width (so its graph holds shape expressions)."""
    from conftest import save_fresh_checkpoint
    from segtrain.use.export import export

    base = tmp_path_factory.mktemp("pt2")
    ckpt = save_fresh_checkpoint(base / "c.pth.tar", "lraspp_mobilenet_v3_large")
    export(ckpt, "pt2", base / "m.pt2", raw_input=True, log=lambda *a: None)
    return base / "m.pt2"


@pytest.mark.parametrize("case", list(PT2))
def test_the_crafted_pt2_files_run_code_in_torch_export_load(pt2_export, tmp_path, case):
    """What segtrain refuses below is a real attack: torch.export.load alone runs the payload."""
    import warnings
    marker = tmp_path / MARKER
    path = PT2[case](pt2_export, tmp_path / "m.pt2", marker)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            torch.export.load(str(path))
        except Exception:
            pass  # the payload has run by the time the load fails, if it fails
    assert marker.exists()


@pytest.mark.parametrize("command", ["predict", "evaluate"])
@pytest.mark.parametrize("case", list(PT2))
def test_hostile_pt2_is_refused_in_one_line_and_runs_nothing(pt2_export, folder, tmp_path, capsys, case, command):
    marker = tmp_path / MARKER
    path = PT2[case](pt2_export, tmp_path / "m.pt2", marker)
    capsys.readouterr()
    assert main(_commands(folder, path, tmp_path)[command]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"error: {path}: refused, it holds more than segtrain export writes")
    assert not marker.exists() and not (tmp_path / "out").exists()


def test_a_pt2_graph_that_names_a_python_function_is_refused(pt2_export, tmp_path):
    from segtrain.use.model_file_check import UnsafeModelFile, check_pt2
    check_pt2(pt2_export)  # segtrain's own export passes
    path = _rewrite_zip(pt2_export, tmp_path / "m.pt2", lambda name, data: data.replace(
        b'"torch.ops.aten.conv2d.default"', b'"torch.os.system"', 1) if name.endswith("/models/model.json") else data)
    with pytest.raises(UnsafeModelFile, match="calls 'torch.os.system', an operator segtrain's exports never emit"):
        check_pt2(path)


@pytest.mark.parametrize("prefix", PREFIXES, ids=[f.__name__ for f in PREFIXES])
def test_hostile_torchscript_pickle_is_refused_before_its_own_unpickler(pt2_export, folder, tmp_path, capsys, prefix):
    """A payload before the archive's data.pkl names globals TorchScript never pickles: refused
    before torch.jit.load (whose own unpickler knows only its types), in one line."""
    from segtrain.use.export import export

    marker = tmp_path / MARKER
    export(pt2_export.parent / "c.pth.tar", "torchscript", tmp_path / "good.pt", log=lambda *a: None)
    path = _rewrite_zip(tmp_path / "good.pt", tmp_path / "m.pt",
                        lambda name, data: prefix(marker) + data if name.endswith("/data.pkl") else data)
    capsys.readouterr()
    assert main(_commands(folder, path, tmp_path)["predict"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"error: {path}: refused, it holds more than segtrain export")
    assert not marker.exists()
