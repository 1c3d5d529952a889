"""Peak memory of segtrain's model-file check on .pt2 files whose models/model.json is a bomb.

    python bench/model_file_bombs.py

Builds, from a fresh export of fcn_resnet18, copies whose model.json is (a) 45 MB of spaces stored,
(b) 1.5 GB of spaces deflated, (c) 100,000 nested '[', (d) empty lists filling the size cap; each is checked in a process of its own,
which reports its peak resident memory over what it held before the check.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

CHILD = """
import sys
import torch  # imported before the peak is reset: the check imports it, segtrain has by then
from pathlib import Path
from segtrain.use.model_file_check import UnsafeModelFile, check_pt2

def status(key):  # kB
    return int(next(line.split()[1] for line in open("/proc/self/status") if line.startswith(key)))

with open("/proc/self/clear_refs", "w") as f:
    f.write("5")  # resets the peak (VmHWM) to what is resident now: the imports' own peak is not the check's
before = status("VmRSS:")
try:
    check_pt2(Path(sys.argv[1]))
    outcome = "passed"
except UnsafeModelFile as e:
    outcome = f"refused: {e}"
print(f"peak {(status('VmHWM:') - before) / 1024:.0f} MiB over the {before / 1024:.0f} MiB resident before; {outcome[:150]}")
"""


def bomb(src: Path, dst: Path, chunks: int, chunk: bytes, compress: int) -> Path:
    with zipfile.ZipFile(src) as a, zipfile.ZipFile(dst, "w") as b:
        for item in a.infolist():
            if item.filename.endswith("/models/model.json"):
                info = zipfile.ZipInfo(item.filename)
                info.compress_type = compress
                with b.open(info, "w", force_zip64=True) as out:
                    for _ in range(chunks):
                        out.write(chunk)
            else:
                b.writestr(item, a.read(item))
    return dst


def main() -> None:
    from segtrain.use.derive_operators import write_exports
    from segtrain.use.model_file_check import MAX_JSON

    with tempfile.TemporaryDirectory() as folder:
        base = Path(folder)
        real = next(p for p in write_exports("fcn_resnet18", base) if p.name == "fcn_resnet18-raw.pt2")
        cases = {
            "45 MB of spaces, stored": bomb(real, base / "stored.pt2", 45, b" " * 2**20, zipfile.ZIP_STORED),
            "1.5 GB of spaces, deflated": bomb(real, base / "deflated.pt2", 1536, b" " * 2**20, zipfile.ZIP_DEFLATED),
            "100,000 nested [": bomb(real, base / "nested.pt2", 1, b"[" * 100_000, zipfile.ZIP_STORED),
            # the most objects per byte the size cap lets through: ~5.6 million empty lists
            "16 MiB of [[],[],...] (just under the cap)": bomb(
                real, base / "lists.pt2", 1, b"[" + b"[]," * ((MAX_JSON - 5) // 3) + b"[]]", zipfile.ZIP_STORED),
        }
        for what, path in cases.items():
            result = subprocess.run([sys.executable, "-c", CHILD, str(path)], capture_output=True, text=True)
            print(f"{what} ({path.stat().st_size / 2**20:.1f} MiB file): {result.stdout.strip() or result.stderr[-300:]}")


if __name__ == "__main__":
    main()
