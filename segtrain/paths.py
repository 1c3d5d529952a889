"""Where a path the user gave points (the two rules, in one place), and whether an output can go there.

A path inside config.list (pretrained_net, and the config file of the original container form)
is relative to the data folder ROOT, as in the original tool. A path typed on the command line
(--config, --checkpoint, --resume) is relative to the current folder, as in any command; when
nothing is there, it is looked up under ROOT too, as the original container did.
"""

from __future__ import annotations

import os
from pathlib import Path

from segtrain.errors import OutputError


def from_root(given: str | Path, root: Path) -> Path:
    """A path from config.list: relative paths are under ROOT."""
    path = Path(given)
    return path if path.is_absolute() else Path(root) / path


def from_command_line(given: str | Path, root: Path) -> Path:
    """A path typed on the command line: as typed when it exists there, else under ROOT when
    something is there, else as typed (so an error names what the user typed)."""
    path = Path(given)
    if path.is_absolute() or path.exists():
        return path
    under_root = Path(root) / path
    return under_root if under_root.exists() else path


def cannot_write(path: Path, error: OSError) -> OutputError:
    return OutputError(f"{path}: cannot write ({error.strerror or error}). Remove or rename what is in the way, "
                       "choose another output path, or free disk space or make its folder writable.")


def _file_above(path: Path) -> Path | None:
    """The nearest existing path above `path` when it is a file, not a folder (nothing can be created below it)."""
    for parent in path.parents:
        if os.path.lexists(parent):
            return None if parent.is_dir() else parent
    return None


def output_file(path: Path, option: str) -> Path:
    """Refuse, before any work, a path for an output file that is a folder or lies below a file."""
    path = Path(path)
    if path.is_dir():
        raise OutputError(f"{option} {path}: is a folder; give the path of a file to write.")
    above = _file_above(path)
    if above is not None:
        raise OutputError(f"{option} {path}: {above} is a file, not a folder; choose a path in a folder.")
    return path


def output_folder(path: Path, option: str) -> Path:
    """Refuse, before any work, a path for an output folder that is a file or lies below one."""
    path = Path(path)
    if os.path.lexists(path) and not path.is_dir():
        raise OutputError(f"{option} {path}: is a file, not a folder; give a folder (created when missing).")
    above = _file_above(path)
    if above is not None:
        raise OutputError(f"{option} {path}: {above} is a file, not a folder; choose a path in a folder.")
    return path
