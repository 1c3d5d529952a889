"""Where a path the user gave points (the two rules, in one place), and whether an output can go there
(one guard for every command that writes: `refuse_replacing`).

A path inside config.list (pretrained_net, and the config file of the original container form)
is relative to the data folder ROOT, as in the original tool. A path typed on the command line
(--config, --checkpoint, --resume) is relative to the current folder, as in any command; when
nothing is there, it is looked up under ROOT too, as the original container did.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path

from segtrain.errors import OutputError
from segtrain.run_folder import BEST_NAME, CHECKPOINT_NAME, LOG_NAME


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


# What no output may replace: a run's checkpoints and log (run_folder.py names them), a
# data folder's lists, any checkpoint. Checked on the name as given and on the file it resolves to.
RUN_FILES = (CHECKPOINT_NAME, BEST_NAME, LOG_NAME)
DATA_LISTS = ("class_names.list", "class_colors.list", "config.list")
CHECKPOINT_SUFFIXES = (".pth", ".pth.tar")
# A data folder's images and masks (data/folder.py: the files right in images/ beside labels/)
# and its unlabeled images (data/unlabeled.py: at any depth in unlabeled/ beside train/ or
# images/): a file written there would replace a sample or join the data set.
PAIRED_FOLDERS = {"images": "labels", "labels": "images"}
UNLABELED_FOLDER = "unlabeled"
ANOTHER_PATH = "Choose another path for {option}: a new file, apart from the run's and the data's own files."


def _identity(path: Path) -> tuple[int, int] | None:
    """(device, inode) of the file `path` leads to (through symlinks), so hard links and
    symlinks to one file compare equal; None when nothing is there."""
    try:
        status = os.stat(path)
    except (OSError, ValueError):
        return None
    return status.st_dev, status.st_ino


def data_folder_holding(folder: Path) -> Path | None:
    """The data set's folder (images/, labels/ or unlabeled/) whose samples a file written in
    `folder` would be among, after resolving symlinks; None when there is none."""
    real = Path(os.path.realpath(folder))
    other = PAIRED_FOLDERS.get(real.name)
    if other is not None and (real.parent / other).is_dir():
        return real
    for above in (real, *real.parents):
        if above.name == UNLABELED_FOLDER and any((above.parent / d).is_dir() for d in ("train", "images")):
            return above
    return None


def _kept_file(path: Path) -> str | None:
    """What `path` is when it is a file that no output may replace (the name as given or resolved)."""
    if not os.path.isfile(path):
        return None
    for name in (path.name, Path(os.path.realpath(path)).name):
        if name in RUN_FILES:
            return "a training run's " + ("log" if name == LOG_NAME else "checkpoint")
        if name in DATA_LISTS:
            return f"a data folder's {name}"
        if name.endswith(CHECKPOINT_SUFFIXES):
            return "a checkpoint"
    return None


def refuse_replacing(outputs: Iterable[Path], reads: Mapping[Path, str], option: str) -> None:
    """The one guard of every command that writes, called before any work: refuse outputs that
    are a file the command reads (`reads`: path -> what it is, e.g. "input image"; compared as
    files, so a symlink or hard link to an input counts), a run's checkpoint or log, a data
    folder's lists or a checkpoint, or that lie in a data folder's images, masks or unlabeled images."""
    read_ids = {}
    for path, what in reads.items():
        identity = _identity(path)
        if identity is not None:
            read_ids.setdefault(identity, (path, what))
    folders_seen: set[Path] = set()
    for out in map(Path, outputs):
        read = read_ids.get(_identity(out))
        if read is not None:
            raise OutputError(f"{option} {out}: would overwrite {read[1]} {read[0]}, which this command reads. "
                              + ANOTHER_PATH.format(option=option))
        kept = _kept_file(out)
        if kept is not None:
            raise OutputError(f"{option} {out}: is {kept}; writing there would replace it. "
                              + ANOTHER_PATH.format(option=option))
        if out.parent not in folders_seen:
            folders_seen.add(out.parent)
            _refuse_data_folder(out.parent, option, out)


def _refuse_data_folder(folder: Path, option: str, given: Path) -> None:
    data = data_folder_holding(folder)
    if data is not None:
        raise OutputError(f"{option} {given}: lies in {data}, a folder of the data set's images or masks; what is "
                          f"written there would replace or join them. Choose a path outside it for {option}.")


def output_file(path: Path, option: str, reads: Mapping[Path, str] | None = None) -> Path:
    """Refuse, before any work, a path for an output file that is a folder, lies below a file, or
    that `refuse_replacing` refuses (reads: the files the command reads)."""
    path = Path(path)
    if path.is_dir():
        raise OutputError(f"{option} {path}: is a folder; give the path of a file to write.")
    above = _file_above(path)
    if above is not None:
        raise OutputError(f"{option} {path}: {above} is a file, not a folder; choose a path in a folder.")
    refuse_replacing([path], reads or {}, option)
    return path


def output_folder(path: Path, option: str) -> Path:
    """Refuse, before any work, a path for an output folder that is a file, lies below one, or
    is (or lies in) a data folder's images, masks or unlabeled images."""
    path = Path(path)
    if os.path.lexists(path) and not path.is_dir():
        raise OutputError(f"{option} {path}: is a file, not a folder; give a folder (created when missing).")
    above = _file_above(path)
    if above is not None:
        raise OutputError(f"{option} {path}: {above} is a file, not a folder; choose a path in a folder.")
    _refuse_data_folder(path, option, path)
    return path
