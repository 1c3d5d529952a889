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


def _umask() -> int:
    """The process's umask now: Linux shows it in /proc/self/status; elsewhere the only way to read
    it is to set it (and set it back), which a thread creating a file meanwhile could see."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def file_mode() -> int:
    """mkstemp creates its file readable by the owner only; an output gets the mode any other new
    file would get now (read at each write, not at import: a caller may set its umask after that)."""
    return 0o666 & ~_umask()


def _underlying(error: BaseException) -> BaseException:
    """What made a write fail. torch.save turns whatever the file object's write raised (a full
    disk's OSError, a second signal's StopNow) into a RuntimeError of its own ("unexpected pos ..."),
    raised while handling it."""
    cause = error
    while cause is not None:
        if isinstance(cause, OSError) or not isinstance(cause, Exception):
            return cause
        cause = cause.__cause__ or cause.__context__
    return error


@contextlib.contextmanager
def atomic_path(path: Path, durable: bool = True):
    """A temporary path beside `path` for a writer that wants a file name (an exporter, a plotter);
    renamed over `path` when the block succeeds, removed when it fails. durable=False skips the
    fsync, for outputs that are cheap to redo (an fsync per predicted mask costs more than it saves)."""
    path = Path(path)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TEMP_SUFFIX, dir=path.parent)
        os.fchmod(fd, file_mode())
        os.close(fd)
    except OSError as e:
        raise OutputError.from_os(path, e) from None
    try:
        yield Path(tmp)
        if durable:
            fd = os.open(tmp, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        os.replace(tmp, path)
    except BaseException as e:
        if os.path.exists(tmp):
            os.unlink(tmp)
        cause = _underlying(e)
        if isinstance(cause, OSError):
            raise OutputError.from_os(path, cause) from None
        if cause is not e:
            raise cause from None
        raise


@contextlib.contextmanager
def atomic_open(path: Path, mode: str = "wb", durable: bool = True):
    """A file object to write `path` through atomic_path: text modes are UTF-8."""
    with atomic_path(path, durable) as tmp:
        with open(tmp, mode, **({} if "b" in mode else {"encoding": "utf-8", "newline": ""})) as f:
            yield f


def remove_stale_temps(folder: Path) -> int:
    """Temporary files of writes that a killed process never finished."""
    stale = [p for p in Path(folder).glob(f".*{TEMP_SUFFIX}") if p.is_file()]
    for p in stale:
        p.unlink()
    return len(stale)
