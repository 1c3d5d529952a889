"""`segtrain download`: fetch a published example dataset and arrange it into segtrain's folder.

The archive is fetched with torchvision's `download_and_extract_archive`, as the original README
told its users to. Its inner layout is not documented, so `arrange` looks for image and label
folders at any depth: an images/ + labels/ pair under a train/, valid/ (val/) or test/ folder goes
to that split, a single pair elsewhere becomes train/ (validation is then held out of it).
"""

from __future__ import annotations

import shutil
import socket
import urllib.error
import urllib.request
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from segtrain.errors import SegtrainError
from segtrain.config.presets import PRESETS

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
    from torchvision.datasets.utils import download_and_extract_archive

    archive = download_dir / Path(url.split("?")[0]).name
    if not archive.is_file():
        _reachable(url)
        log(f"downloading {url} to {download_dir}")
    else:
        log(f"using the archive downloaded earlier: {archive}")
    try:
        with _socket_timeout(READ_TIMEOUT_S):
            download_and_extract_archive(url, str(download_dir), str(extract_dir))
    except Exception as e:
        archive.unlink(missing_ok=True)  # a partial file would pass for the archive next time
        raise DownloadError(f"{url}: download or extraction failed ({e}). Run the command again.") from None


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


def download(name: str, dest: Path, url: str | None = None, archive: Path | None = None, log=print) -> Path:
    from segtrain.data import starter

    if name not in DATASETS:
        raise DownloadError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}.")
    dataset = DATASETS[name]
    dest = Path(dest)
    taken = [d for d in ("train", "valid", "images") if (dest / d).exists()]
    if taken:
        held = ", ".join(d + "/" for d in taken)
        raise DownloadError(f"{dest}: already holds {held}; nothing was changed. Choose a new folder.")
    log(dataset.terms)
    work = dest / "download"
    extracted = work / "extracted"
    if extracted.exists():
        shutil.rmtree(extracted)  # a half-arranged earlier attempt: start the arrangement afresh
    work.mkdir(parents=True, exist_ok=True)
    if archive is not None:
        from torchvision.datasets.utils import extract_archive

        if not Path(archive).is_file():
            raise DownloadError(f"{archive}: archive not found. Check the --archive path.")
        try:
            extract_archive(str(archive), str(extracted))
        except Exception as e:
            raise DownloadError(f"{archive}: cannot extract ({e}). Pass the .tar.gz file as downloaded.") from None
    else:
        fetch(url or dataset.url, work, extracted, log)
    arrange(extracted, dest, log)
    if not any(p.is_file() for p in extracted.rglob("*")):
        shutil.rmtree(extracted)
    else:
        log(f"other files of the archive stay in {extracted}")
    fallback = PRESETS[dataset.preset][1]
    starter.write_starter(starter.plan(dest, dataset.class_names, {"label_threshold": fallback["label_threshold"]}),
                          dataset.class_names, log)
    if any(work.iterdir()):
        log(f"the downloaded archive stays in {work} (delete it to save space).")
    else:
        work.rmdir()
    return dest
