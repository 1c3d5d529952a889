"""A .pt2 file is loaded only when it holds nothing but what `segtrain export --format pt2` writes.

torch.export.load runs code from a hostile archive in several ways: it unpickles the sample inputs
with weights_only=False when weights_only=True fails, unpickles weights and constants marked
"use_pickle" and custom or opaque objects, evaluates every shape expression with sympy.sympify
(Python's eval), and calls whatever torch.* or _operator.* attribute a graph node names (torch.os.system
included). So before it is called, this module reads the archive as data and refuses:
- a sample-inputs pickle that torch.load(weights_only=True) does not accept,
- any pickled weight or constant, any custom or opaque object, the legacy whole-dict files,
- a node target other than an ATen operator or plain integer arithmetic,
- a shape expression that is not integer arithmetic on sympy symbols (no Pow: it can take forever).
"""

from __future__ import annotations

import io
import json
import re
import warnings
import zipfile
from pathlib import Path

# What torch.export writes for integer shape arithmetic; a node naming anything else is refused.
OPERATORS = {"add", "sub", "mul", "floordiv", "truediv", "mod", "neg", "getitem", "eq", "ne", "lt", "le", "gt", "ge"}
ATEN_TARGET = re.compile(r"torch\.ops\.aten\.[A-Za-z0-9_]+\.[A-Za-z0-9_]+")
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


class UnsafePt2(Exception):
    """What in the archive is refused; the caller turns it into the user's one-line error."""


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


def _walk(node, found: list):
    """Every (key, value) of a JSON tree whose key is 'target' or 'expr_str'."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("target", "expr_str") and isinstance(value, str):
                found.append((key, value))
            else:
                _walk(value, found)
    elif isinstance(node, list):
        for value in node:
            _walk(value, found)
    return found


def _check_graph(text: bytes, member: str) -> None:
    for key, value in _walk(json.loads(text), []):
        if key == "target":
            arithmetic = value.startswith("_operator.") and value[len("_operator."):] in OPERATORS
            if not (ATEN_TARGET.fullmatch(value) or arithmetic):
                raise UnsafePt2(f"{member} calls {value[:80]!r}, which is no ATen operator")
        elif not _safe_expression(value):
            raise UnsafePt2(f"{member} holds a shape expression that is not integer arithmetic ({value[:60]!r}...)")


def _check_payloads(text: bytes, member: str) -> None:
    """weights or constants config: every entry a raw tensor, none pickled."""
    for name, entry in (json.loads(text).get("config") or {}).items():
        if not isinstance(entry, dict) or entry.get("use_pickle") or not str(entry.get("path_name", "")).startswith(
                ("weight_", "tensor_")):
            raise UnsafePt2(f"{member}: {name!r} is stored as a pickle or an object, not as a raw tensor")


def check_pt2(path: Path) -> None:
    """Raise UnsafePt2 unless `path` is a .pt2 archive that torch.export.load can read without running
    anything from it."""
    import torch

    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as e:
        raise UnsafePt2(f"not a .pt2 archive ({e})") from None
    with archive:
        names = archive.namelist()
        graphs = [n for n in names if re.fullmatch(r"[^/]+/models/[^/]+\.json", n)]
        if not graphs:
            raise UnsafePt2("no exported program in it (models/*.json)")
        for member in names:
            relative = member.split("/", 1)[-1]
            if re.fullmatch(r"data/(weights|constants)/[^/]+\.pt", relative):
                raise UnsafePt2(f"{member} is a pickled whole dictionary (torch's legacy .pt2 layout)")
            if re.fullmatch(r"data/(weights|constants)/[^/]+_config\.json", relative):
                _check_payloads(archive.read(member), member)
            elif re.fullmatch(r"data/sample_inputs/[^/]+\.pt", relative):
                try:
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore")  # torch's note on old pickle protocols: the error says it all
                        torch.load(io.BytesIO(archive.read(member)), weights_only=True)
                except Exception as e:
                    first = (str(e).strip().splitlines() or [type(e).__name__])[0]
                    raise UnsafePt2(f"{member} is a pickle that holds more than tensors ({first[:120]})") from None
        for member in graphs:
            _check_graph(archive.read(member), member)
