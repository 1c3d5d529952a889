"""Model files are programs: predict and evaluate load only what `segtrain export` writes.

Each hostile file is a copy of a real tiny export (fcn_resnet18, 64 px) with one change. Where it is
cheap, a test first shows that torch's loader alone runs the payload (so the refusal below is of a
live attack); then the real command refuses the file in exactly one line, and the marker the
payload would create never appears."""

from __future__ import annotations

import copy
import json
import re
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import run_cli, tiny_config
from segtrain.cli import main
from segtrain.data.synthetic import write_sky_folder
from segtrain.use.derive_operators import file_contents, write_exports
from segtrain.use.model_file_check import MAX_EXPANDED, MAX_JSON, UnsafeModelFile, allowed, check_pt2
from test_hostile_files import MARKER, Evil, _torch_saved

PT2, SCRIPT = "fcn_resnet18-raw.pt2", "fcn_resnet18-normalized.pt"


@pytest.fixture(scope="module")
def made(tmp_path_factory) -> Path:
    """segtrain's TorchScript and .pt2 exports of fcn_resnet18 (raw and normalised) and a data folder."""
    base = tmp_path_factory.mktemp("exports")
    write_exports("fcn_resnet18", base)
    write_sky_folder(base / "data", n_train=4, n_valid=2, size=32, config=tiny_config(max_iteration=1))
    return base


def test_registry_exports_emit_only_what_model_operators_json_lists(made):
    """A representative subset of the zoo (one model, all four kinds: exporting all 17 models takes
    minutes, see segtrain/use/derive_operators.py, which writes the list from the whole registry)."""
    for name in ("fcn_resnet18-normalized.pt", "fcn_resnet18-raw.pt", "fcn_resnet18-normalized.pt2", PT2):
        for key, values in file_contents(made / name).items():
            missing = sorted(values - allowed()[key])
            assert not missing, f"{name} holds {missing} ({key}); run python -m segtrain.use.derive_operators"


# ---- building hostile copies -------------------------------------------------------------------

def _copy(src: Path, dst: Path, change=lambda name, data: data, first=()) -> Path:
    """A copy of the archive src with change(name, data) applied to each member, after the
    (name, data) members in `first` (so a name may appear twice)."""
    with zipfile.ZipFile(src) as a, zipfile.ZipFile(dst, "w", zipfile.ZIP_STORED) as b:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # zipfile's "Duplicate name" is the point
            for name, data in first:
                b.writestr(name, data)
            for item in a.infolist():
                b.writestr(item.filename, change(item.filename, a.read(item)))
    return dst


# The exporter's wrapper classes' code. A process that scripted them before (other tests, a notebook
# exporting twice) has TorchScript mangle the name: code/__torch__/segtrain/use/export/___torch_mangle_N.py.
EXPORT_CODE = re.compile(r".*/code/__torch__/segtrain/use/export(/___torch_mangle_[0-9]+)?\.py")
SEGTRAIN_JSON = re.compile(r".*/extra/segtrain\.json")


def _member(path: Path, pattern: re.Pattern = EXPORT_CODE) -> str:
    return next(n for n in zipfile.ZipFile(path).namelist() if pattern.fullmatch(n))


def _edit_program(src, dst, edit) -> Path:
    """The .pt2 copy with edit(model.json as a dict) applied."""
    def change(name, data):
        if not name.endswith("/models/model.json"):
            return data
        program = json.loads(data)
        edit(program)
        return json.dumps(program).encode()
    return _copy(src, dst, change)


def guards_code(src, dst, marker):
    return _edit_program(src, dst, lambda p: p.update(
        guards_code=[f"__import__('os').system('touch {marker}') == 0 or True"]))


def from_file_node(src, dst, marker):
    """A first node aten.from_file(marker, shared=True): it creates (or overwrites) any file."""
    def edit(program):
        graph = program["graph_module"]["graph"]
        meta = copy.deepcopy(next(iter(graph["tensor_values"].values())))
        meta.update(dtype=1, sizes=[{"as_int": 4}], strides=[{"as_int": 1}], requires_grad=False)
        graph["tensor_values"]["evil"] = meta
        graph["nodes"].insert(0, {
            "target": "torch.ops.aten.from_file.default", "name": "evil", "metadata": {},
            "is_hop_single_tensor_return": None, "outputs": [{"as_tensor": {"name": "evil"}}],
            "inputs": [{"name": "filename", "arg": {"as_string": str(marker)}, "kind": 1},
                       {"name": "shared", "arg": {"as_bool": True}, "kind": 1},
                       {"name": "size", "arg": {"as_int": 4}, "kind": 1},
                       {"name": "dtype", "arg": {"as_scalar_type": 1}, "kind": 2}]})
    return _edit_program(src, dst, edit)


def duplicate_sample_inputs(src, dst, marker, name="model.pt"):
    """A pickle that runs a command under the sample inputs' name, before the real member."""
    prefix = zipfile.ZipFile(src).namelist()[0].split("/")[0]
    return _copy(src, dst, first=[(f"{prefix}/data/sample_inputs/{name}", _torch_saved(((Evil(marker),), {})))])


def case_duplicate_sample_inputs(src, dst, marker):
    return duplicate_sample_inputs(src, dst, marker, name="MODEL.pt")


def _forward_calls_from_file(code: bytes, marker) -> bytes:
    """LogitsOnly.forward's TorchScript source, also mapping `marker` shared (creating it)."""
    evil = f'    _evil = torch.sum(torch.from_file("{marker}", True, 4))\n    return torch.add(\\1, _evil)\n'
    edited, count = re.subn(rb"    return (.+)\n", evil.encode(), code, count=1)
    assert count == 1
    return edited


def script_from_file(src, dst, marker):
    return _copy(src, dst, lambda name, data: _forward_calls_from_file(data, marker)
                 if EXPORT_CODE.fullmatch(name) else data)


def script_duplicate_code(src, dst, marker):
    """The real code and an edited copy under one name, in the order that makes torch's reader
    (a binary search over the sorted names) find the edited one."""
    name = _member(src)
    real = zipfile.ZipFile(src).read(name)
    edited = _forward_calls_from_file(real, marker)
    _copy(src, dst, first=[(name, edited)])
    if torch._C.PyTorchFileReader(str(dst)).get_record(name.split("/", 1)[1]) != edited:
        _copy(src, dst, lambda n, data: edited if n == name else data, first=[(name, real)])
    return dst


def script_as_strided(src, dst, marker):
    """A view of the input's storage at strides the file chooses: memory-unsafe, never exported."""
    return _copy(src, dst, lambda name, data: re.sub(
        rb"    return (.+)\n", rb"    return torch.as_strided(\1, [1, 2, 8, 8], [1, 1, 1, 1])\n", data, count=1)
        if EXPORT_CODE.fullmatch(name) else data)


class WithSetstate(torch.nn.Module):
    """torch.jit.load runs a scripted __setstate__ while it unpickles the module."""

    def __init__(self, marker: str):
        super().__init__()
        self.w = torch.nn.Parameter(torch.ones(1))
        self.marker = marker

    def forward(self, x):
        return x * self.w

    @torch.jit.export
    def __getstate__(self):
        return (self.w, self.marker, self.training)

    @torch.jit.export
    def __setstate__(self, state: tuple[torch.Tensor, str, bool]):
        self.w = state[0] + torch.sum(torch.from_file(state[1], True, 4))
        self.marker = state[1]
        self.training = state[2]


def script_setstate(src, dst, marker):
    extra = {"segtrain.json": zipfile.ZipFile(src).read(_member(src, SEGTRAIN_JSON))}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.save(torch.jit.script(WithSetstate(str(marker))), str(dst), _extra_files=extra)
    return dst


def _run_pt2(path):
    torch.export.load(str(path)).module()(torch.rand(1, 3, 40, 40) * 255)


def _run_script(path):
    torch.jit.load(str(path))(torch.randn(1, 3, 64, 64))


# name: (base export, builder, what runs the payload through torch alone, words of the refusal)
HOSTILE = {
    "pt2 guards_code runs a command": (PT2, guards_code, _run_pt2, "guards_code"),
    "pt2 node aten.from_file writes a file": (PT2, from_file_node, _run_pt2, "torch.ops.aten.from_file.default"),
    "pt2 duplicate sample inputs, a pickle first": (PT2, duplicate_sample_inputs, torch.export.load, "appears twice"),
    "pt2 sample inputs twice, names differing in case": (PT2, case_duplicate_sample_inputs, None, "appears twice"),
    "torchscript forward calls from_file": (SCRIPT, script_from_file, _run_script, "aten::from_file"),
    "torchscript duplicate code, the edited one first": (SCRIPT, script_duplicate_code, _run_script, "appears twice"),
    "torchscript as_strided on the input's storage": (SCRIPT, script_as_strided, None, "aten::as_strided"),
    "torchscript __setstate__ runs at load": (SCRIPT, script_setstate, torch.jit.load, "__setstate__"),
}
LIVE = [case for case, (_, _, live, _) in HOSTILE.items() if live is not None]


def _build(made, tmp_path, case):
    base, build, _, _ = HOSTILE[case]
    marker = tmp_path / MARKER
    return build(made / base, tmp_path / f"m{Path(base).suffix}", marker), marker


@pytest.mark.parametrize("case", LIVE)
def test_the_payload_is_live_through_torch_alone(made, tmp_path, case):
    path, marker = _build(made, tmp_path, case)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            HOSTILE[case][2](path)
        except Exception:
            pass  # the payload has run by the time a load fails, if it fails
    assert marker.exists()


def test_the_as_strided_file_runs_through_torch_alone(made, tmp_path):
    """It creates no file: what only segtrain's check stops is that it loads and runs."""
    _run_script(_build(made, tmp_path, "torchscript as_strided on the input's storage")[0])


def _one_line_refusal(made, tmp_path, capfd, path, command="predict", real=False) -> str:
    """The command's whole output, which must be one error line (real: in a process of its own, as a
    user runs it; else in this process, every byte written to stdout and stderr captured)."""
    args = {"predict": ["predict", made / "data" / "valid" / "images", "--checkpoint", path, "--out", tmp_path / "out"],
            "evaluate": ["evaluate", made / "data", "--checkpoint", path]}[command]
    if real:
        result = run_cli(*args, timeout=120)
        code, out, err = result.returncode, result.stdout, result.stderr
    else:
        capfd.readouterr()
        code = main(list(map(str, args)))
        out, err = capfd.readouterr()
    assert code == 1 and out == "", out + err
    assert err.count("\n") == 1 and err.startswith(f"error: {path}"), err  # names the file first
    assert not (tmp_path / "out").exists()
    return err


@pytest.mark.parametrize("case", list(HOSTILE))
def test_predict_refuses_the_hostile_file_in_one_line_and_runs_nothing(made, tmp_path, capfd, case):
    path, marker = _build(made, tmp_path, case)
    err = _one_line_refusal(made, tmp_path, capfd, path)
    assert "refused, it holds more than segtrain export writes" in err and HOSTILE[case][3] in err
    assert not marker.exists()


@pytest.mark.parametrize("case", ["pt2 guards_code runs a command", "torchscript forward calls from_file"])
def test_the_real_evaluate_command_refuses_it_too(made, tmp_path, case):
    path, marker = _build(made, tmp_path, case)
    assert "refused" in _one_line_refusal(made, tmp_path, None, path, "evaluate", real=True)
    assert not marker.exists()


def test_an_overwritten_file_keeps_its_bytes(made, tmp_path, capfd):
    """from_file(shared=True) on an existing file would map it and write through; refused first."""
    target = tmp_path / "precious.bin"
    target.write_bytes(b"keep me!")
    for case in ("pt2 node aten.from_file writes a file", "torchscript forward calls from_file"):
        base, build, _, _ = HOSTILE[case]
        path = build(made / base, tmp_path / f"w{Path(base).suffix}", target)
        _one_line_refusal(made, tmp_path, capfd, path)
        assert target.read_bytes() == b"keep me!"


def test_segtrains_own_exports_pass_the_check_and_predict(made, tmp_path):
    for name in (PT2, SCRIPT):
        assert main(["predict", str(made / "data" / "valid" / "images"), "--checkpoint", str(made / name),
                     "--out", str(tmp_path / name)]) == 0
        assert len(list((tmp_path / name).glob("*.png"))) >= 2


# ---- malformed files: one line, whatever is wrong ----------------------------------------------

def _replace(member: str, data: bytes):
    return lambda src, dst: _copy(src, dst, lambda name, old: data if name.endswith(member) else old)


def _deflate_member(member: str, size: int):
    """member replaced by `size` bytes of spaces, deflated (about 1000x)."""
    def build(src, dst):
        with zipfile.ZipFile(src) as a, zipfile.ZipFile(dst, "w") as b:
            for item in a.infolist():
                if item.filename.endswith(member):
                    info = zipfile.ZipInfo(item.filename)
                    info.compress_type = zipfile.ZIP_DEFLATED
                    with b.open(info, "w") as out:
                        for _ in range(size // 2**20):
                            out.write(b" " * 2**20)
                else:
                    b.writestr(item, a.read(item))
        return dst
    return build


def _truncated_weight(src, dst):
    return _copy(src, dst, lambda name, data: data[:10] if name.endswith("/data/weights/weight_0") else data)


MALFORMED = {
    "model.json nested 100,000 deep": (PT2, _replace("/models/model.json", b"[" * 100_000), "not valid JSON"),
    "model.json not JSON": (PT2, _replace("/models/model.json", b'{"graph_module": '), "not valid JSON"),
    "model.json a list": (PT2, _replace("/models/model.json", b"[]"), "holds models/model.json as list"),
    "weights config a list": (PT2, _replace("/model_weights_config.json", b"[1]"), "as list"),
    "model.json a deflated bomb": (PT2, _deflate_member("/models/model.json", 2 * MAX_EXPANDED), "over the limits for a compressed member"),
    # the metadata is read by use/model_facts.py through config/user_json.py, as config.list is
    "segtrain.json not JSON, pt2": (PT2, _replace("/extra/segtrain.json", b"{"), "not valid JSON"),
    "segtrain.json nested, torchscript": (SCRIPT, _replace("/extra/segtrain.json", b"[" * 100_000),
                                          "nested more than 20 levels"),
    "segtrain.json a list, torchscript": (SCRIPT, _replace("/extra/segtrain.json", b"[1, 2]"),
                                          "must be a JSON object, got list"),
    "a weight cut short (passes the check, torch cannot load it)": (PT2, _truncated_weight, "cannot load this pt2 file"),
}


@pytest.mark.parametrize("case", list(MALFORMED))
def test_malformed_files_end_in_one_line(made, tmp_path, capfd, case):
    """The file torch cannot load goes through the real command: torch.export.load logs dozens of
    lines there unless segtrain silences them."""
    base, build, words = MALFORMED[case]
    path = build(made / base, tmp_path / f"m{Path(base).suffix}")
    assert words in _one_line_refusal(made, tmp_path, capfd, path, real="cannot load" in words)


def test_a_stored_json_member_over_the_limit_is_refused_before_it_is_read(made, tmp_path):
    path = _replace("/models/model.json", b" " * (MAX_JSON + 1))(made / PT2, tmp_path / "m.pt2")
    with pytest.raises(UnsafeModelFile, match=f"over the {MAX_JSON // 2**20} MiB limit for a JSON member"):
        check_pt2(path)


# ---- ONNX ---------------------------------------------------------------------------------------

def _onnx_with_external_weight(made, folder: Path, location: str) -> Path:
    """One convolution with segtrain's metadata, its weight in the file `location` names (relative to
    folder/models/, where the model goes). Exporting a registry model to ONNX takes 20 s."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    from onnx.external_data_helper import set_external_data

    (folder / "models").mkdir(exist_ok=True)
    weight = numpy_helper.from_array(np.ones((2, 3, 1, 1), dtype=np.float32), "w")
    (folder / "models" / location).write_bytes(weight.raw_data)
    set_external_data(weight, location=location)
    weight.ClearField("raw_data")
    graph = helper.make_graph([helper.make_node("Conv", ["image", "w"], ["logits"])], "g",
                              [helper.make_tensor_value_info("image", TensorProto.FLOAT, [None, 3, None, None])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [None, 2, None, None])],
                              [weight])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    helper.set_model_props(model, {"segtrain": zipfile.ZipFile(made / PT2).read(
        _member(made / PT2, SEGTRAIN_JSON)).decode()})
    onnx.save(model, str(folder / "models" / "m.onnx"))
    return folder / "models" / "m.onnx"


@pytest.mark.parametrize("location", ["{tmp}/secret.bin", "../secret.bin"])
def test_onnx_external_data_outside_the_model_folder_is_refused(made, tmp_path, capfd, location):
    path = _onnx_with_external_weight(made, tmp_path, location.format(tmp=tmp_path))
    err = _one_line_refusal(made, tmp_path, capfd, path)
    assert "cannot load this onnx file" in err and "External data path validation failed" in err


def test_onnx_external_data_beside_the_model_loads(made, tmp_path):
    from segtrain.use.exported import open_exported

    _, run = open_exported(_onnx_with_external_weight(made, tmp_path, "w.bin"))
    assert run(np.ones((1, 3, 4, 4), dtype=np.float32)).shape == (1, 2, 4, 4)
