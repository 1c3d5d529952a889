"""What every benchmark shares: a scratch copy of a data folder, timing statistics, peak memory
and a markdown table. Benchmarks run both sides in one process, alternating, and report medians
and ratios, because absolute times on a shared machine are noisy while ratios hold."""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

from segtrain.runtime import cpu_threads

cpu_threads.choose_at_start()  # before torch loads, as a segtrain command's start does
import torch  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
RESULTS = REPO / "bench" / "results"
# The environment for a process that must decide for itself (a bare loop in an untouched
# environment, a fresh `segtrain` run, the anchor): without what segtrain, imported above, set
# for this benchmark's own process.
UNTOUCHED = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "OMP_NUM_THREADS")}


def untouched_env(checkout: Path = REPO) -> dict[str, str]:
    """UNTOUCHED, with the segtrain of `checkout` first on the import path."""
    return {**UNTOUCHED, "PYTHONPATH": str(checkout) + os.pathsep + UNTOUCHED.get("PYTHONPATH", "")}


def parser(doc: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=doc.strip().splitlines()[0])
    p.add_argument("--quick", action="store_true", help="a shorter run (under 5 minutes on 2 CPU cores)")
    p.add_argument("--out", type=Path, default=None, help="also write the table and raw figures here (.md + .json)")
    return p


def scratch_root(source: Path, keep: Path | None = None) -> Path:
    """A writable folder whose train/, valid/ and lists link to a read-only data folder, so the
    trainer can write MODEL-* next to them without touching the shared data."""
    root = Path(tempfile.mkdtemp(prefix="segtrain-bench-", dir=keep))
    for entry in source.iterdir():
        if entry.name in ("train", "valid", "images", "labels") or entry.suffix == ".list":
            (root / entry.name).symlink_to(entry.resolve())
    return root


def data_folder(name: str) -> Path:
    folder = SHARED_DATA / name
    if not (folder / "train").is_dir():
        sys.exit(f"{folder}: data set not found; this benchmark needs ../shared/data/{name} (see its README).")
    return folder


def median(values) -> float:
    return statistics.median(values) if values else float("nan")


def peak_rss_mb() -> float:
    """This process's peak resident memory (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def machine() -> str:
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return (f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
            f"{torch.get_num_threads()} threads, load average {load:.1f}, {time.strftime('%Y-%m-%d %H:%M')}")


def table(headers: list[str], rows: list[list]) -> str:
    def cell(v):
        return f"{v:.3g}" if isinstance(v, float) else str(v)
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def report(title: str, text: str, raw: dict, out: Path | None) -> None:
    block = f"## {title}\n\n{machine()}\n\n{text}\n"
    print(block, flush=True)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        # Appended, not with_suffix: a name such as "...-1.5min-r2" would lose everything after its dot.
        base = out.with_suffix("") if out.suffix in (".md", ".json") else out
        base.parent.joinpath(base.name + ".md").write_text(block)
        base.parent.joinpath(base.name + ".json").write_text(json.dumps(raw, indent=1, default=str))
