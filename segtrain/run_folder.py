"""ROOT/MODEL-<output_dir>: the folder a run writes to (the one rule for its name, its "-N" when an
earlier run holds the name, and finding a run's folder again), claimed so that no new run shares it
and held so that no second process trains in it (a `--resume` while the first run still trains)."""

from __future__ import annotations

import fcntl
import glob
import os
import shlex
from collections.abc import Iterable
from pathlib import Path

from segtrain.errors import OutputError

CHECKPOINT_NAME = "checkpoint.pth.tar"  # the latest state, for --resume
BEST_NAME = "model_best.pth.tar"  # the weights of the best validation so far
LOG_NAME = "log.csv"
COMMAND_SHOWN = 160  # characters of the holder's command line a refusal shows
RUN_FOLDER_PREFIX = "MODEL-"
# The room config checks an output_dir against keeps for the "-N" of a name an earlier run holds.
CLASH_SUFFIX_ROOM = len("-999999")


class FolderBusy(OutputError):
    pass


def run_folder(root: Path, output_dir: str) -> Path:
    """ROOT/MODEL-<output_dir>: where a run named output_dir writes, and where --resume looks first."""
    return Path(root) / f"{RUN_FOLDER_PREFIX}{output_dir}"


def longest_output_dir(name_max: int) -> int:
    """Bytes an output_dir may take where file names hold `name_max` bytes, its prefix and "-N" included."""
    return name_max - len(RUN_FOLDER_PREFIX) - CLASH_SUFFIX_ROOM


def clash_folder(base: Path, number: int) -> Path:
    """The folder of the `number`th run named like `base` (MODEL-x-2, MODEL-x-3, ...)."""
    return base.with_name(f"{base.name}-{number}")


def later_runs(base: Path) -> list[Path]:
    """The clash folders beside `base` (base-2, base-3, ...) that hold a run's checkpoint, in the
    order they were taken. A folder for another output_dir that merely starts alike (MODEL-x-big) is none."""
    numbered = []
    for folder in base.parent.glob(f"{glob.escape(base.name)}-*"):
        number = folder.name[len(base.name) + 1:]
        if number.isdigit() and folder == clash_folder(base, int(number)) and (folder / CHECKPOINT_NAME).is_file():
            numbered.append((int(number), folder))
    return [folder for _, folder in sorted(numbered)]


def latest_run_folder(root: Path, output_dirs: Iterable[str]) -> Path | None:
    """Of the runs named by `output_dirs`, the folder whose checkpoint was written last; None when
    none holds one."""
    folders = [run_folder(root, name) for name in output_dirs]
    started = [folder for folder in folders if (folder / CHECKPOINT_NAME).is_file()]
    return max(started, key=lambda folder: (folder / CHECKPOINT_NAME).stat().st_mtime, default=None)


def claim_run_folder(root: Path, output_dir: str, log=print) -> Path:
    """A new run's folder: ROOT/MODEL-<output_dir>; an earlier run's folder is never reused: the
    next free number is taken.

    A folder is claimed by creating its visualization_viz without exist_ok, which only one process
    can do: of runs started at once on one ROOT, each gets a folder of its own.
    """
    base = run_folder(root, output_dir)
    folder, k = base, 1
    while True:
        if folder.exists() and not folder.is_dir():
            raise OutputError(f"{folder}: is a file, so the outputs cannot go there. Move it away, "
                              "or set \"output_dir\" to another name.")
        try:
            if not folder.exists() or not any(folder.iterdir()):
                (folder / "visualization_viz").mkdir(parents=True)
                break
        except FileExistsError:
            pass  # another run claimed it first
        except OSError as e:
            raise OutputError(f"{folder}: cannot create the output folder ({e.strerror}). Check permissions and free "
                              "space, or set \"output_dir\" to another name.") from None
        k += 1
        folder = clash_folder(base, k)
    if folder != base:
        log(f"note: {base} holds an earlier run; this run writes to {folder} (nothing is overwritten; "
            "to continue that run instead, add --resume).")
    return folder


# File descriptors of the folders this process holds. A forked child (a DataLoader worker) closes
# its copies at once: the kernel releases a lock when the last descriptor of it closes, so a worker
# that outlives a killed run by a few seconds would otherwise keep its folder held.
_held: set[int] = set()


def _close_held_in_child() -> None:
    for fd in _held:
        os.close(fd)
    _held.clear()


os.register_at_fork(after_in_child=_close_held_in_child)


class FolderLock:
    """The kernel's lock (flock) on the run's folder itself, so nothing is written to hold it.
    A process that ends in any way, kill -9 included, lets go of it with its descriptors."""

    def __init__(self, folder: Path, fd: int | None):
        self.folder, self._fd = folder, fd  # None: the file system has no locks

    def release(self) -> None:
        if self._fd is not None and self._fd in _held:
            _held.discard(self._fd)
            os.close(self._fd)


def hold(folder: Path, log=print) -> FolderLock:
    """Hold `folder` for this run; FolderBusy (naming the process) when another run holds it."""
    folder = Path(folder)
    try:
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    except OSError as e:
        raise OutputError(f"{folder}: cannot open the run's folder ({e.strerror}). Check that it exists "
                          "and is readable.") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = describe_holder(folder)
        os.close(fd)
        raise FolderBusy(f"{folder}: another segtrain run{holder} is training in this folder; two runs in one folder "
                         "would overwrite each other's checkpoints and log. Wait for it to end, or stop it (its "
                         "checkpoint is kept), then continue with --resume. Nothing was changed.") from None
    except OSError as e:  # a file system without locks (some network shares): train as before locks existed
        os.close(fd)
        log(f"note: {folder}: cannot lock the run's folder ({e.strerror}), so a second run started in it would "
            "not be refused; start one run at a time there.")
        return FolderLock(folder, None)
    _held.add(fd)
    return FolderLock(folder, fd)


def describe_holder(folder: Path) -> str:
    """" (pid N: its command)" for the process holding `folder`'s lock, as the kernel lists it
    (/proc/locks on Linux); "" when that cannot be seen (another system, another pid namespace)."""
    pid = locking_pid(os.stat(folder))
    if pid is None:
        return ""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            argv = [a.decode("utf-8", "replace") for a in f.read(4 * COMMAND_SHOWN).split(b"\0") if a]
    except OSError:
        return f" (pid {pid})"
    command = "".join(c if c.isprintable() else "?" for c in shlex.join(argv))
    command = command if len(command) <= COMMAND_SHOWN else command[:COMMAND_SHOWN] + "..."
    return f" (pid {pid}: {command})" if command else f" (pid {pid})"


def locking_pid(status: os.stat_result) -> int | None:
    """The pid of the flock holder of the file with this stat in /proc/locks ("1: FLOCK ADVISORY
    WRITE PID MAJ:MIN:INODE 0 EOF"), matched by inode and device."""
    try:
        with open("/proc/locks", encoding="ascii", errors="replace") as f:
            lines = f.read(1 << 20).splitlines()
    except OSError:
        return None
    for line in lines:
        fields = line.split()
        if len(fields) < 6 or fields[1] != "FLOCK":  # a waiter's line reads "N: -> FLOCK ..."
            continue
        try:
            major, minor, inode = fields[5].split(":")
            if (int(inode) == status.st_ino and int(major, 16) == os.major(status.st_dev)
                    and int(minor, 16) == os.minor(status.st_dev)):
                pid = int(fields[4])
                return pid if pid > 0 else None
        except ValueError:
            continue
    return None
