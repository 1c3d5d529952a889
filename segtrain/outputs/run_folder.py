"""ROOT/MODEL-<output_dir>: the folder a new run writes to, claimed so that no run shares it."""

from __future__ import annotations

from pathlib import Path

from segtrain.errors import OutputError


def output_folder(root: Path, name: str, log=print) -> Path:
    """ROOT/MODEL-<name>; an earlier run's folder is never reused: the next free number is taken.

    A folder is claimed by creating its visualization_viz without exist_ok, which only one process
    can do: of runs started at once on one ROOT, each gets a folder of its own.
    """
    base = root / f"MODEL-{name}"
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
        folder = root / f"MODEL-{name}-{k}"
    if folder != base:
        log(f"note: {base} holds an earlier run; this run writes to {folder} (nothing is overwritten; "
            "to continue that run instead, add --resume).")
    return folder
