"""Bounds on what unpacking a downloaded archive may write: total bytes, bytes per file, number of
files and expansion over the archive's own size. Bytes are counted as they are decompressed, not
taken from the headers (a header can lie; a tar's sparse member writes more than it stores, and is
refused), so a bomb is stopped at the limit, having written about that much.

The defaults hold the published WaggleClouds archive many times over: its images are 600 x 600
(the original README's log: a summed loss of 249,565 is 360,000 pixels x ln 2), JPEG and PNG, so
even 10,000 image/mask pairs unpack to about 1 GB, at an expansion near 1x (JPEG and PNG data do
not compress further). A zero-filled bomb expands about 1000x. Each limit can be raised through
an environment variable, named in the message that refuses an archive.
"""

from __future__ import annotations

import bz2
import gzip
import lzma
import os
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from segtrain.errors import ConfigError

GB = 1 << 30
# Below this many bytes the expansion ratio is not judged: a small archive of small text files
# (headers and padding) can expand 10-50x and writes nothing worth refusing.
RATIO_FREE_BYTES = 1 << 20
ENV = {  # field -> (environment variable, default)
    "total_gb": ("SEGTRAIN_EXTRACT_MAX_GB", 16.0),  # GB unpacked in all
    "file_gb": ("SEGTRAIN_EXTRACT_MAX_FILE_GB", 1.0),  # GB in one file
    "files": ("SEGTRAIN_EXTRACT_MAX_FILES", 200_000),  # files and folders
    "ratio": ("SEGTRAIN_EXTRACT_MAX_RATIO", 50.0),  # bytes unpacked per byte of the archive
}


class TooLarge(Exception):
    """The archive goes past a limit; the message says which, and how to raise it."""


@dataclass(frozen=True)
class ExtractLimits:
    total_gb: float = ENV["total_gb"][1]
    file_gb: float = ENV["file_gb"][1]
    files: int = ENV["files"][1]
    ratio: float = ENV["ratio"][1]

    @classmethod
    def from_environment(cls, environ=os.environ) -> "ExtractLimits":
        values = {}
        for field, (name, default) in ENV.items():
            text = environ.get(name)
            if text is None:
                continue
            try:
                values[field] = type(default)(text)
            except ValueError:
                values[field] = -1
            if not values[field] > 0:
                raise ConfigError(f"{name}={text!r}: must be a positive {type(default).__name__} "
                                  f"(a limit on unpacking archives; default {default}).")
        return cls(**values)


def _exceeded(field: str, limit, what: str) -> TooLarge:
    """what: the sentence up to the limit's value, which ends it."""
    name, default = ENV[field]
    return TooLarge(f"{what}{limit:g} (limit {name}, default {default:g}); if this archive is genuine, "
                    f"raise it, e.g. {name}={limit * 4:g}")


class ExtractBudget:
    """Counts what one archive's extraction reads out of it against the limits."""

    def __init__(self, limits: ExtractLimits, archive: Path):
        self.limits = limits
        self.archive_bytes = max(1, Path(archive).stat().st_size)
        self.total = self.in_member = self.members = 0
        self.member = ""

    def count_members(self, count: int) -> None:
        if count > self.limits.files:
            raise _exceeded("files", self.limits.files, "it holds more files and folders than ")

    def start_member(self, name: str, declared_bytes: int) -> None:
        self.members += 1
        self.count_members(self.members)
        self.member, self.in_member = name, 0
        self._check_member(declared_bytes)  # a header that already says too much refuses at once

    def take(self, count: int) -> None:
        self.total += count
        self.in_member += count
        self._check_member(self.in_member)
        if self.total > self.limits.total_gb * GB:
            raise _exceeded("total_gb", self.limits.total_gb, "it unpacks to more GB than ")
        if self.total > max(RATIO_FREE_BYTES, self.limits.ratio * self.archive_bytes):
            raise _exceeded("ratio", self.limits.ratio, f"it unpacks to over {self.total:,} bytes from "
                            f"{self.archive_bytes:,}, as a decompression bomb does: more times its size than ")

    def _check_member(self, count: int) -> None:
        if count > self.limits.file_gb * GB:
            raise _exceeded("file_gb", self.limits.file_gb, f"its file {self.member!r} unpacks to more GB than ")

    def counting(self, stream) -> "_Counting":
        return _Counting(stream, self)

    def tar_members(self, tar):
        """The members of a tar opened in stream mode, each counted before it is extracted."""
        for member in tar:
            if member.issparse():  # writes holes the archive does not store: its size is no bound
                raise TooLarge(f"{member.name!r} is a sparse file, which no dataset needs")
            self.start_member(member.name, member.size)
            yield member


class _Counting:
    """A reader that charges every byte it returns to the budget."""

    def __init__(self, stream, budget: ExtractBudget):
        self.stream, self.budget = stream, budget

    def read(self, size: int = -1) -> bytes:
        data = self.stream.read(size)
        self.budget.take(len(data))
        return data


MAGIC = ((b"\x1f\x8b", lambda raw: gzip.GzipFile(fileobj=raw, mode="rb")), (b"BZh", bz2.BZ2File),
         (b"\xfd7zXZ\x00", lzma.LZMAFile))


@contextmanager
def decompressed(raw):
    """The tar stream inside a raw archive file: gunzipped, bunzipped or unxz'd by its magic bytes."""
    head = raw.read(6)
    raw.seek(0)
    opener = next((opener for magic, opener in MAGIC if head.startswith(magic)), None)
    if opener is None:
        yield raw
        return
    with opener(raw) as stream:
        yield stream
