"""Fetch a published example dataset and arrange it into segtrain's folder (the data side of
`segtrain download`, api.download, which then writes its starter config).

The archive is fetched with torchvision's `download_url`, as the original README told its users to,
and extracted here: members that would land outside the extraction folder (absolute paths, `..`,
links pointing out) or that are device files refuse the archive. Its inner layout is not documented, so `arrange` looks for image and label
folders at any depth: an images/ + labels/ pair under a train/, valid/ (val/) or test/ folder goes
to that split, a single pair elsewhere becomes train/ (validation is then held out of it).
"""

from __future__ import annotations

import os
import shutil
import socket
import stat
import tarfile
import urllib.error
import urllib.request
import zipfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from segtrain.errors import SegtrainError
from segtrain.paths import output_folder
from segtrain.data.extract_limits import ExtractBudget, ExtractLimits, TooLarge, decompressed as _decompressed

CONNECT_TIMEOUT_S = 15
READ_TIMEOUT_S = 120  # a stalled transfer fails instead of hanging forever
IMAGE_DIRS = {"images", "image", "imgs", "img"}
LABEL_DIRS = {"labels", "label", "masks", "mask", "gt", "groundtruth", "annotations"}
SPLIT_DIRS = {"train": "train", "training": "train", "valid": "valid", "val": "valid", "validation": "valid",
              "test": "test", "testing": "test"}


class DownloadError(SegtrainError):
    pass


@dataclass(frozen=True)
class RemoteDataset:
    url: str
    class_names: list[str]
    terms: str
    preset: str  # the --image_type this data was made for; its rule is the fallback for its masks


DATASETS = {
    "waggle_clouds": RemoteDataset(
        url="https://web.lcrc.anl.gov/public/waggle/datasets/WaggleClouds.tar.gz",
        class_names=["sky", "cloud"],
        terms="Terms of use set by the Waggle team: use this data for research only. Do not distribute, share, "
              "publish or release it to anyone, and make no copies of it for use outside your research.",
        preset="waggle_cloud",
    ),
}


def _reachable(url: str) -> None:
    """Fail at once, with a clear message, when the server cannot be reached (e.g. offline)."""
    request = urllib.request.Request(url, method="HEAD", headers={"User-Agent": "segtrain"})
    try:
        with urllib.request.urlopen(request, timeout=CONNECT_TIMEOUT_S):
            pass
    except urllib.error.HTTPError as e:
        raise DownloadError(f"{url}: the server answered {e.code} {e.reason}. Check the URL (--url).") from None
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        raise DownloadError(
            f"{url}: cannot reach the server ({reason}). This needs internet access; on an offline machine "
            "download the file elsewhere and pass it with --archive FILE."
        ) from None


@contextmanager
def _socket_timeout(seconds: float):
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(seconds)
    try:
        yield
    finally:
        socket.setdefaulttimeout(previous)


def fetch(url: str, download_dir: Path, extract_dir: Path, log=print) -> None:
    from torchvision.datasets.utils import download_url

    archive = download_dir / Path(url.split("?")[0]).name
    if not archive.is_file():
        _reachable(url)
        log(f"downloading {url} to {download_dir}")
    else:
        log(f"using the archive downloaded earlier: {archive}")
    try:
        with _socket_timeout(READ_TIMEOUT_S):
            download_url(url, str(download_dir), archive.name)
        extract(archive, extract_dir)
    except Exception as e:
        archive.unlink(missing_ok=True)  # a partial or refused file would pass for the archive next time
        if isinstance(e, DownloadError):
            raise
        raise DownloadError(f"{url}: download or extraction failed ({e}). Run the command again.") from None


def _confined(member: tarfile.TarInfo, dest: str) -> tarfile.TarInfo:
    # The data filter strips a leading "/" (and extracts the member inside); refuse it instead.
    if member.name.startswith("/"):
        raise tarfile.AbsolutePathError(member)
    return tarfile.data_filter(member, dest)


def _unsafe_zip_member(info: zipfile.ZipInfo) -> str | None:
    name = info.filename.replace("\\", "/")
    if name.startswith("/") or ":" in name.split("/")[0]:
        return "has an absolute path"
    if ".." in PurePosixPath(name).parts:
        return "leads out of the folder with '..'"
    if stat.S_ISLNK(info.external_attr >> 16):
        return "is a symbolic link"
    return None


def _extract_tar(archive: Path, into: Path, budget: ExtractBudget) -> None:
    # Stream mode reads the archive once, front to back, through the counting reader; each member
    # is extracted as it is reached, so a bomb is stopped at the limit, not after the headers of all.
    with open(archive, "rb") as raw, _decompressed(raw) as stream, \
            tarfile.open(fileobj=budget.counting(stream), mode="r|") as tar:
        tar.extractall(into, members=budget.tar_members(tar), filter=_confined)


def _extract_zip(archive: Path, into: Path, budget: ExtractBudget) -> None:
    with zipfile.ZipFile(archive) as z:
        infos = z.infolist()
        unsafe = [(info.filename, why) for info in infos if (why := _unsafe_zip_member(info))]
        if unsafe:
            raise _Refused(f"{unsafe[0][0]!r} {unsafe[0][1]}")
        budget.count_members(len(infos))
        for info in infos:
            budget.start_member(info.filename, info.file_size)
            target = into / info.filename.replace("\\", "/")
            if info.is_dir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            with z.open(info) as source, open(target, "wb") as out:
                shutil.copyfileobj(budget.counting(source), out)


class _Refused(Exception):
    pass


def extract(archive: Path, into: Path, limits: ExtractLimits | None = None) -> None:
    """Unpack a tar (.tar.gz, .tgz, ...) or zip archive into `into`, confined to it and within
    `limits` (from the environment by default): a member with an absolute path or `..`, a link
    pointing outside, a device file or FIFO, or an archive that expands beyond a limit refuses the
    archive (and what was unpacked of it is removed)."""
    budget = ExtractBudget(limits or ExtractLimits.from_environment(), archive)
    try:
        if tarfile.is_tarfile(archive):
            if not hasattr(tarfile, "data_filter"):  # added in Python 3.10.12 / 3.11.4
                raise DownloadError(f"{archive}: this Python cannot extract archives safely (tarfile has no data "
                                    "filter). Update to Python 3.11.4 or newer, or extract the archive by hand.")
            _extract_tar(archive, into, budget)
        elif zipfile.is_zipfile(archive):
            _extract_zip(archive, into, budget)
        else:
            raise DownloadError(f"{archive}: not a tar or zip archive. Pass the .tar.gz file as downloaded.")
    except TooLarge as e:
        shutil.rmtree(into, ignore_errors=True)
        raise DownloadError(f"{archive}: refused, {e}; what was unpacked of it was removed.") from None
    except (tarfile.FilterError, _Refused) as e:
        shutil.rmtree(into, ignore_errors=True)
        raise DownloadError(f"{archive}: refused, {e}; nothing was written outside {into}. "
                            "This is not the published archive: download it again from the dataset's site.") from None
    except BaseException:
        shutil.rmtree(into, ignore_errors=True)  # a damaged archive (or Ctrl-C) leaves no half tree
        raise


def find_pairs_of_folders(tree: Path) -> list[tuple[Path, Path, Path]]:
    """(parent, images folder, labels folder) for every folder holding both kinds, at any depth."""
    found = []
    for parent in sorted([tree, *(p for p in tree.rglob("*") if p.is_dir())]):
        children = {c.name.lower(): c for c in parent.iterdir() if c.is_dir()}
        images = next((children[n] for n in sorted(children) if n in IMAGE_DIRS), None)
        labels = next((children[n] for n in sorted(children) if n in LABEL_DIRS), None)
        if images is not None and labels is not None:
            found.append((parent, images, labels))
    return found


def arrange(tree: Path, dest: Path, log=print) -> list[str]:
    """Move the archive's image/label folders into DEST/<split>/{images,labels}; returns the splits."""
    pairs = find_pairs_of_folders(tree)
    if not pairs:
        top = ", ".join(sorted(p.name for p in tree.iterdir())[:8]) or "nothing"
        raise DownloadError(
            f"{tree}: found no folder that holds both images/ and labels/ (the archive holds: {top}). "
            f"Arrange it by hand into {dest}/train/images and {dest}/train/labels."
        )
    splits: dict[str, tuple[Path, Path]] = {}
    for parent, images, labels in pairs:
        split = SPLIT_DIRS.get(parent.name.lower(), "train" if len(pairs) == 1 else None)
        if split is None or split in splits:
            listed = ", ".join(str(p.relative_to(tree)) for p, _, _ in pairs)
            raise DownloadError(
                f"{tree}: several image/label folders ({listed}) and no train/valid/test names to tell them apart. "
                f"Move them by hand into {dest}/train and {dest}/valid."
            )
        splits[split] = (images, labels)
    for split, (images, labels) in splits.items():
        (dest / split).mkdir(parents=True, exist_ok=True)
        shutil.move(str(images), str(dest / split / "images"))
        shutil.move(str(labels), str(dest / split / "labels"))
        log(f"{split}: {sum(1 for _ in (dest / split / 'images').iterdir())} images <- {images.relative_to(tree)}")
    return sorted(splits)


def fetch_dataset(name: str, dest: Path, url: str | None = None, archive: Path | None = None,
                  log=print) -> RemoteDataset:
    """The dataset `name` (from `url`, or an `archive` downloaded already) arranged into DEST/<split>/;
    returns its entry."""
    if name not in DATASETS:
        raise DownloadError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}.")
    dataset = DATASETS[name]
    dest = Path(dest)
    taken = [d for d in ("train", "valid", "images") if (dest / d).exists()]
    if taken:
        held = ", ".join(d + "/" for d in taken)
        raise DownloadError(f"{dest}: already holds {held}; nothing was changed. Choose a new folder.")
    output_folder(dest, "DEST")
    work = dest / "download"
    extracted = work / "extracted"
    if archive is not None and Path(os.path.realpath(archive)).is_relative_to(os.path.realpath(extracted)):
        raise DownloadError(f"--archive {archive}: lies in {extracted}, which the download clears before it extracts. "
                            "Move the archive out of that folder first.")
    log(dataset.terms)
    if extracted.exists():
        shutil.rmtree(extracted)  # a half-arranged earlier attempt: start the arrangement afresh
    work.mkdir(parents=True, exist_ok=True)
    if archive is not None:
        if not Path(archive).is_file():
            raise DownloadError(f"{archive}: archive not found. Check the --archive path.")
        try:
            extract(Path(archive), extracted)
        except DownloadError:
            raise
        except Exception as e:
            raise DownloadError(f"{archive}: cannot extract ({e}). Pass the .tar.gz file as downloaded.") from None
    else:
        fetch(url or dataset.url, work, extracted, log)
    arrange(extracted, dest, log)
    if not any(p.is_file() for p in extracted.rglob("*")):
        shutil.rmtree(extracted)
    else:
        log(f"other files of the archive stay in {extracted}")
    if any(work.iterdir()):
        log(f"the downloaded archive stays in {work} (delete it to save space).")
    else:
        work.rmdir()
    return dataset
