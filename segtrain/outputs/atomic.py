"""Writing a file so that a crash at any moment leaves either the old file or the new one.

The content goes to a temporary file in the same folder, is fsynced, then renamed over the
target (a rename within one file system is atomic). A process killed outright leaves at most a
stray temporary file, which `remove_stale_temps` clears when the run is resumed.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

from segtrain.errors import OutputError

TEMP_SUFFIX = ".tmp"


@contextlib.contextmanager
def atomic_open(path: Path, mode: str = "wb"):
    path = Path(path)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TEMP_SUFFIX, dir=path.parent)
    except OSError as e:
        raise OutputError.from_os(path, e) from None
    try:
        with os.fdopen(fd, mode, **({} if "b" in mode else {"encoding": "utf-8", "newline": ""})) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(e, OSError):
            raise OutputError.from_os(path, e) from None
        raise


def remove_stale_temps(folder: Path) -> int:
    """Temporary files of writes that a killed process never finished."""
    stale = [p for p in Path(folder).glob(f".*{TEMP_SUFFIX}") if p.is_file()]
    for p in stale:
        p.unlink()
    return len(stale)
