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
