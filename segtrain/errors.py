"""Errors meant for people: each says what is wrong, where, and how to fix it.

The CLI prints these as one line and exits non-zero; anything else is a bug and keeps its traceback.
"""


class SegtrainError(Exception):
    """A problem with the user's input or environment, not with segtrain itself."""


class ConfigError(SegtrainError):
    pass


class DatasetError(SegtrainError):
    pass


class CheckpointError(SegtrainError):
    pass


class OutputError(SegtrainError):
    """An output that cannot be written: full disk, read-only or blocked folder."""

    @classmethod
    def from_os(cls, path, error: OSError) -> "OutputError":
        return cls(
            f"{path}: cannot write ({error.strerror or error}). Free disk space, or make the output "
            "folder writable; what was written there before is intact."
        )


def user_message(error: BaseException) -> str:
    """The one line to print for an error; one raised in a DataLoader worker arrives wrapped in
    torch's report of the worker's traceback, whose last line holds the original message."""
    text = str(error)
    if "Original Traceback" in text:
        last = text.strip().splitlines()[-1]
        text = last.split(": ", 1)[1] if ": " in last else last
    return text
