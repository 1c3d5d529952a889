"""Text files a person wrote (config.list, class_names.list, class_colors.list): read as UTF-8, or
refused in one line that says how to save them."""

from __future__ import annotations

from pathlib import Path

from segtrain.errors import ConfigError


def read_user_text(path: Path, error=ConfigError, max_bytes: int | None = None) -> str:
    """A text file a person wrote: UTF-8 (with or without a BOM), else one line saying how to save it.
    With max_bytes, a longer file is refused after reading that much of it."""
    with open(path, "rb") as f:
        data = f.read() if max_bytes is None else f.read(max_bytes + 1)
    if max_bytes is not None and len(data) > max_bytes:
        raise error(f"{path}: larger than {max_bytes:,} bytes, far more than such a file holds; "
                    "check that this is the right file.")
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise error(f"{path}: saved as UTF-16; save it as UTF-8 (most editors offer 'UTF-8' under Save As / Encoding).")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise error(f"{path}, line {line}: byte 0x{data[e.start]:02x} is not UTF-8 (saved as Latin-1 or another "
                    "legacy encoding?); save it as UTF-8 (most editors offer 'UTF-8' under Save As / Encoding).") from None
