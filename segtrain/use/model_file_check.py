"""Is this TorchScript or .pt2 file safe to load? Only files holding what `segtrain export` writes are.

Loading runs code from a crafted file in many ways. torch.export.load unpickles sample inputs and
weights marked "use_pickle" (falling back to weights_only=False), evaluates shape expressions with
sympy.sympify (Python's eval), resolves node targets as any torch.* attribute, and exec's a guard
function built from `guards_code`, from placeholder values and range bounds, and from the input
treespec; FX pastes parameter names into the Python source it generates for the module.
torch.jit.load runs a scripted `__setstate__` while it unpickles the module. And once loaded,
either kind runs whatever operators its graph names: aten::from_file(shared=True) writes files.

So before anything is loaded this module reads the archive as data, with torch's own zip reader
(the bytes the loader will read), and refuses:
- archives whose member names repeat, also ignoring case (torch's reader matches names that way),
  compressed members that expand beyond MAX_EXPANDED or MAX_RATIO, JSON members over MAX_JSON;
- .pt2: members other than those torch.export.save writes; a JSON field at a place, or of a type,
  that no export of segtrain's registry holds (model_operators.json, see derive_operators.py);
  any guards_code; a node target outside the operators those exports emit; a shape expression
  that is not integer arithmetic; names other than dotted identifiers; an input or output treespec
  of another shape; pickled weights; sample inputs that torch.load(weights_only=True) refuses;
- TorchScript: `__setstate__` in its code, pickled globals other than its module classes and tensors.
After torch.jit.load (which then runs nothing of the file's), every method of every submodule,
inlined, may name only the operators segtrain's TorchScript exports emit: see check_script_module.
"""

from __future__ import annotations

import io
import json
import pickletools
import re
import warnings
import zipfile
from collections import Counter
from functools import lru_cache
from pathlib import Path

OPERATORS_FILE = Path(__file__).with_name("model_operators.json")
# Bytes of a JSON member the check parses (JSON expands into Python objects, up to ~20x): the largest
# model.json of segtrain's registry exports is 1.3 MB (SegFormer).
MAX_JSON = 16 * 2**20
# torch stores weights and .pt2 members uncompressed (a member is then no larger than the file) and
# deflates TorchScript's code about 5x; its zip reader inflates a member into a buffer of the size
# the member's header states, so capping that size and the ratio bounds what check and loader allocate.
MAX_EXPANDED = 64 * 2**20
MAX_RATIO = 50

PT2_MEMBERS = re.compile(r"models/model\.json|data/(weights|constants)/model_(weights|constants)_config\.json"
                         r"|data/weights/weight_[0-9]+|data/constants/tensor_[0-9]+|data/sample_inputs/model\.pt"
                         r"|extra/segtrain\.json|archive_format|archive_version|\.data/version|byteorder"
                         r"|\.data/serialization_id")
SCRIPT_MEMBERS = re.compile(r"code/__torch__/[A-Za-z0-9_/]+\.py(\.debug_pkl)?|(data|constants|traced_inputs)/[0-9]+"
                            r"|(data|constants|traced_inputs)\.pkl|extra/segtrain\.json|version|byteorder"
                            r"|\.data/serialization_id|\.data/version")
# What TorchScript pickles name: its module classes (defined in code/, checked below), tensors, dicts.
SCRIPT_GLOBALS = re.compile(r"__torch__\.[A-Za-z0-9_.]+ [A-Za-z0-9_]+|torch\._utils _rebuild_tensor_v2"
                            r"|torch [A-Za-z]+Storage|collections OrderedDict|torch\.jit\._pickle [a-z_]+")

# JSON objects keyed by names (of values, symbols, weights), not by schema fields.
NAME_MAPS = {"range_constraints", "tensor_values", "sym_int_values", "sym_bool_values", "sym_float_values",
             "custom_obj_values", "treespec_namedtuple_fields", "config"}
NAME = re.compile(r"[A-Za-z0-9_.+-]{0,300}")  # no quote, backslash or line break: safe in generated code
TEXT = re.compile(r"[\x20-\x7e\n]{0,100000}")  # stack traces: shown in comments of generated code, never run
TEXT_FIELDS = {"stack_trace", "nn_module_stack", "torch_fn", "source_fn_stack"}

SYMPY_FUNCTIONS = ("Add", "Mul", "FloorDiv", "CleanDiv", "IntTrueDiv", "Mod", "PythonMod", "Max", "Min",
                   "Eq", "Ne", "Lt", "Le", "Gt", "Ge", "StrictLessThan", "LessThan", "StrictGreaterThan",
                   "GreaterThan", "Equality", "Unequality", "And", "Or", "Not")
EXPRESSION_TOKEN = re.compile(
    r"\s+|[(),]"
    r"|Symbol\('[a-z]+[0-9]*'(?:, (?:positive|integer|nonnegative|real|finite)=(?:True|False))*\)"
    r"|Integer\(-?[0-9]{1,19}\)"
    r"|(?:" + "|".join(SYMPY_FUNCTIONS) + r")(?=\()"
    r"|true|false|True|False|oo|-oo")
MAX_EXPRESSION = 10_000  # characters: segtrain's own exports stay under 1,000


class UnsafeModelFile(Exception):
    """What in the file is refused; the caller turns it into the user's one-line error."""


@lru_cache(maxsize=1)
def allowed() -> dict[str, frozenset]:
    """What segtrain's exports of its registry models hold (written by derive_operators.py)."""
    data = json.loads(OPERATORS_FILE.read_text())
    return {key: frozenset(value) for key, value in data.items() if isinstance(value, list)}


def _first_line(error: Exception) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0][:160]


class Archive:
    """A torch zip archive read through torch's own reader, refused unless Python's zipfile sees the
    same members, each name once (ignoring case), each in the exporter's layout, none a bomb."""

    def __init__(self, path: Path, members: re.Pattern):
        import torch

        try:
            with zipfile.ZipFile(path) as listing:
                infos = listing.infolist()
            self.reader = torch._C.PyTorchFileReader(str(path))
            records = self.reader.get_all_records()
        except Exception as e:  # zipfile's and torch's errors for files that are no (valid) archive
            raise UnsafeModelFile(f"not a readable model archive ({_first_line(e)})") from None
        prefix = infos[0].filename.split("/", 1)[0] + "/" if infos else ""
        seen = Counter(info.filename.lower() for info in infos)
        twice = next((info.filename for info in infos if seen[info.filename.lower()] > 1), None)
        if twice is not None:
            raise UnsafeModelFile(f"member {twice!r} appears twice (torch matches names ignoring case), so the "
                                  "check and the loader could read different bytes")
        if sorted(records) != sorted(info.filename[len(prefix):] for info in infos):
            raise UnsafeModelFile("torch's zip reader and Python's see different members")
        for info in infos:
            if info.compress_type != zipfile.ZIP_STORED and (
                    info.file_size > MAX_EXPANDED or info.file_size > MAX_RATIO * max(info.compress_size, 1)):
                raise UnsafeModelFile(f"member {info.filename!r} expands from {info.compress_size:,} to "
                                      f"{info.file_size:,} bytes, over the limits for a compressed member "
                                      f"({MAX_EXPANDED // 2**20} MiB, {MAX_RATIO}x; torch compresses only "
                                      "TorchScript code, about 5x)")
            if not members.fullmatch(info.filename[len(prefix):]):
                raise UnsafeModelFile(f"member {info.filename!r} is not part of what segtrain export writes")
        self.records = records

    def read(self, record: str) -> bytes:
        return self.reader.get_record(record)

    def json(self, record: str):
        size = self.reader.get_record_size(record)
        if size > MAX_JSON:
            raise UnsafeModelFile(f"{record} is {size / 2**20:.0f} MiB, over the {MAX_JSON // 2**20} MiB limit for "
                                  "a JSON member (segtrain's own exports stay under 2 MiB)")
        try:
            return json.loads(self.read(record))
        except (ValueError, RecursionError) as e:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
            raise UnsafeModelFile(f"{record} is not valid JSON ({_first_line(e)})") from None


def _safe_expression(text: str) -> bool:
    if len(text) > MAX_EXPRESSION:
        return False
    at = 0
    while at < len(text):
        token = EXPRESSION_TOKEN.match(text, at)
        if token is None or token.end() == at:
            return False
        at = token.end()
    return True


def json_fields(node, path: str, found: set | None = None, check=None) -> set:
    """Every "path:type" of a JSON tree, name-keyed objects' keys written as *. With `check`, each is
    refused unless allowed before its children are read (so depth is bounded by the allowed paths)."""
    found = set() if found is None else found
    kind = type(node).__name__ if node is not None else "null"
    field = f"{path}:{kind}"
    if check is not None:
        check(field, node)
    found.add(field)
    if isinstance(node, dict):
        names = path.rsplit("/", 1)[-1] in NAME_MAPS
        for key, value in node.items():
            json_fields(value, f"{path}/{'*' if names else key}", found, check)
    elif isinstance(node, list):
        for value in node:
            json_fields(value, f"{path}[]", found, check)
    return found


def _check_field(member: str, field: str, value) -> None:
    known = allowed()
    path = field.rsplit(":", 1)[0]
    key = path.rsplit("/", 1)[-1].rstrip("[]")
    if key == "guards_code" and value:
        raise UnsafeModelFile(f"{member} holds guards_code, Python code torch would run; segtrain export writes none")
    if field not in known["pt2_json_fields"]:
        raise UnsafeModelFile(f"{member} holds {path} as {field.rsplit(':', 1)[1]}, which no segtrain export holds")
    if not isinstance(value, str):
        return
    if key == "target":
        if value not in known["pt2_operators"]:
            raise UnsafeModelFile(f"{member} calls {value[:80]!r}, an operator segtrain's exports never emit")
    elif key == "expr_str":
        if not _safe_expression(value):
            raise UnsafeModelFile(f"{member} holds a shape expression that is not integer arithmetic ({value[:60]!r}...)")
    elif key in ("in_spec", "out_spec"):
        if value not in known["pt2_specs"]:
            raise UnsafeModelFile(f"{member}: its {key} is not the single tensor segtrain's exports take and return")
    elif not (TEXT if key in TEXT_FIELDS else NAME).fullmatch(value):
        raise UnsafeModelFile(f"{member}: {path} holds {value[:60]!r}, not a plain name")


def pt2_json_members(archive: Archive) -> dict[str, object]:
    """The JSON members of a .pt2 archive that torch interprets, parsed."""
    return {record: archive.json(record) for record in archive.records if record.endswith(".json")
            and not record.startswith("extra/")}


def check_pt2(path: Path) -> None:
    """Raise UnsafeModelFile unless `path` is a .pt2 archive holding only what segtrain export writes."""
    import torch

    archive = Archive(path, PT2_MEMBERS)
    if "models/model.json" not in archive.records:
        raise UnsafeModelFile("no exported program in it (models/model.json)")
    for record, tree in pt2_json_members(archive).items():
        json_fields(tree, record, check=lambda field, value, record=record: _check_field(record, field, value))
        if record.endswith("_config.json"):
            for name, entry in (tree.get("config") or {}).items():
                if entry.get("use_pickle") or f"data/{record.split('/')[1]}/{entry.get('path_name')}" not in archive.records:
                    raise UnsafeModelFile(f"{record}: {name!r} is stored as a pickle or in no member of the archive")
    for record in archive.records:
        if record.startswith("data/sample_inputs/"):
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # torch's note on old pickle protocols: the error says it all
                    torch.load(io.BytesIO(archive.read(record)), weights_only=True)
            except Exception as e:
                raise UnsafeModelFile(f"{record} is a pickle that holds more than tensors ({_first_line(e)})") from None


def check_torchscript(path: Path) -> None:
    """Raise UnsafeModelFile unless torch.jit.load can read `path` without running anything from it."""
    archive = Archive(path, SCRIPT_MEMBERS)
    for record in archive.records:
        if record.startswith("code/") and record.endswith(".py") and b"__setstate__" in archive.read(record):
            raise UnsafeModelFile(f"{record} defines __setstate__, which torch.jit.load runs; segtrain export writes none")
        if record.endswith("pkl"):  # data.pkl, constants.pkl, ..., and the code's .debug_pkl
            for op, arg in _pickle_ops(archive.read(record), record):
                if op.name == "GLOBAL" and (not SCRIPT_GLOBALS.fullmatch(arg) or ".classes." in arg):
                    raise UnsafeModelFile(f"{record} names {arg[:80]!r}, which segtrain export never pickles")
                if op.name in ("STACK_GLOBAL", "INST", "OBJ"):
                    raise UnsafeModelFile(f"{record} uses the pickle opcode {op.name}, which TorchScript never writes")


def _pickle_ops(data: bytes, record: str) -> list:
    try:
        return [(op, arg) for op, arg, _ in pickletools.genops(io.BytesIO(data))]
    except Exception as e:  # pickletools' errors for bytes that are no pickle
        raise UnsafeModelFile(f"{record} is not a pickle ({_first_line(e)})") from None


def script_operators(module) -> set[str]:
    """Every node kind of every method of `module` and its submodules, with calls inlined and
    nested blocks (if, loop) walked."""
    import torch

    kinds: set[str] = set()
    for _, submodule in module.named_modules():
        for name in submodule._c._method_names():
            graph = submodule._c._get_method(name).graph.copy()
            torch._C._jit_pass_inline(graph)
            blocks = [graph]
            while blocks:
                for node in blocks.pop().nodes():
                    kinds.add(node.kind())
                    blocks.extend(node.blocks())
    return kinds


def check_script_module(module) -> None:
    """Raise UnsafeModelFile if a loaded TorchScript module names an operator segtrain's TorchScript
    exports never emit; called before it runs."""
    unknown = sorted(script_operators(module) - allowed()["torchscript_operators"])
    if unknown:
        raise UnsafeModelFile(f"its code calls {', '.join(unknown[:3])}, which segtrain's exports never emit")
