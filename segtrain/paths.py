"""Where a path the user gave points: the two rules, in one place.

A path inside config.list (pretrained_net, and the config file of the original container form)
is relative to the data folder ROOT, as in the original tool. A path typed on the command line
(--config, --checkpoint, --resume) is relative to the current folder, as in any command; when
nothing is there, it is looked up under ROOT too, as the original container did.
"""

from __future__ import annotations

from pathlib import Path


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
