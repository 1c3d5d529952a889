"""The issue-30 targets: the app `segtrain plugin` writes, run as a node runs it, on swimseg valid/.

1. Cloud cover: the app's published env.coverage.cloud per image against `segtrain predict`'s
   summary.csv on the plugin's own model file (equal, to 1e-6), and the mean absolute error of
   each against the masks, beside `segtrain predict` with the checkpoint itself.
2. Speed: the app's own "frame to publish" time (its log line: model, fractions, publish) on
   frames at the model's input size, against a bare ONNX Runtime session.run of the same file
   on the same inputs, in the same environment; rounds alternate. The app's peak memory.

The app runs in a venv with only the plugin's requirements.txt (made here, or --node-python).

    .venv/bin/python bench/plugin_app.py --checkpoint ROOT/MODEL-lraspp_mobilenet_v3_large/model_best.pth.tar
"""

from __future__ import annotations

from common import SHARED_DATA, median, parser, report, table  # first: segtrain sets up OpenMP before torch loads
import csv
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

from segtrain.data.labels import IGNORE, detect_decoder, read_mask
from segtrain.plugin.build import make_plugin
from segtrain.use.predict import predict

BARE = """
import sys, time, statistics
from pathlib import Path
import numpy as np, onnxruntime as ort
from PIL import Image
providers = [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in ort.get_available_providers()]
session = ort.InferenceSession(sys.argv[1], providers=providers)
name = session.get_inputs()[0].name
times = []
for path in sorted(Path(sys.argv[2]).glob("*.png")):
    batch = np.ascontiguousarray(np.asarray(Image.open(path).convert("RGB")).transpose(2, 0, 1)[None], dtype=np.float32)
    start = time.perf_counter()
    session.run(None, {name: batch})
    times.append(time.perf_counter() - start)
print(statistics.median(times) * 1000)
"""


def quiet(*args, **kwargs) -> None:
    pass


def node_python(plugin: Path, scratch: Path) -> Path:
    venv = scratch / "node-venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--no-compile", "-r",
                    str(plugin / "requirements.txt")], check=True)
    return venv / "bin" / "python"


def node_env(log_dir: Path) -> dict:
    return {**{k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "WAGGLE_"))},
            "PYWAGGLE_LOG_DIR": str(log_dir)}


def run_app(python: Path, plugin: Path, images: Path, log_dir: Path) -> tuple[list[dict], list[float], float]:
    """(published messages, frame-to-publish times in ms, peak resident memory in MB)."""
    result = subprocess.run([str(python), "-m", "app.main", "-stream", str(images)], cwd=plugin,
                            env=node_env(log_dir), capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(f"the app failed:\n{result.stderr[-2000:]}")
    text = result.stderr
    times = [float(t) for t in re.findall(r"\(([\d.]+) ms frame to publish\)", text)]
    messages = [json.loads(line) for line in (log_dir / "data.ndjson").read_text().splitlines()]
    return messages, times, float(re.search(r"peak memory (\d+) MB", text).group(1))  # the app's own VmHWM


def cloud_by_image(summary: Path) -> dict[str, float]:
    with open(summary) as f:
        return {row["image"]: float(row["cloud_fraction"]) for row in csv.DictReader(f)}


def true_cloud(labels: Path, names: list[str]) -> dict[str, float]:
    paths = sorted(labels.iterdir())
    decoder = detect_decoder(paths, names)
    out = {}
    for path in paths:
        mask = decoder.decode(read_mask(path), path)
        counted = mask != IGNORE
        out[path.stem] = float((mask[counted] == names.index("cloud")).sum() / counted.sum())
    return out


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--checkpoint", type=Path, required=True, help="a swimseg run's model_best.pth.tar")
    p.add_argument("--data", type=Path, default=SHARED_DATA / "swimseg")
    p.add_argument("--node-python", type=Path, help="a venv's python with the plugin's requirements (default: made here)")
    p.add_argument("--rounds", type=int, default=3, help="timing rounds, app and bare alternating")
    a = p.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="segtrain-plugin-bench-"))
    plugin = make_plugin(a.checkpoint, scratch / "plugin", verify_on=a.data / "valid" / "images", log=quiet)
    python = a.node_python or node_python(plugin, scratch)
    meta = json.loads((plugin / "model" / "model.json").read_text())
    images = a.data / "valid" / "images"

    messages, _, _ = run_app(python, plugin, images, scratch / "log")
    app = {m["meta"]["image"]: m["value"] for m in messages if m["name"] == "env.coverage.cloud"}
    predict(images, plugin / "model" / "model.onnx", scratch / "predict-onnx", batch_size=1, log=quiet)
    predict(images, a.checkpoint, scratch / "predict-ckpt", log=quiet)
    onnx, ckpt = cloud_by_image(scratch / "predict-onnx" / "summary.csv"), cloud_by_image(scratch / "predict-ckpt" / "summary.csv")
    truth = true_cloud(a.data / "valid" / "labels", meta["class_names"])
    names = sorted(app)
    assert sorted(onnx) == names == sorted(ckpt) and len(names) == len(truth)
    stem = {name: Path(name).stem for name in names}
    diff = max(abs(app[n] - onnx[n]) for n in names)

    def mae(values):
        return float(np.mean([abs(values[n] - truth[stem[n]]) for n in names]))

    # speed: frames at the model's input size
    size = meta["image_size"]
    small = scratch / "frames"
    small.mkdir()
    for path in sorted(images.iterdir()):
        Image.open(path).convert("RGB").resize((size[1], size[0]), Image.Resampling.BILINEAR).save(small / f"{path.stem}.png")
    app_ms, bare_ms, peak = [], [], []
    for k in range(a.rounds):
        bare = subprocess.run([str(python), "-c", BARE, str(plugin / "model" / "model.onnx"), str(small)],
                              capture_output=True, text=True, env=node_env(scratch), check=True)
        bare_ms.append(float(bare.stdout))
        _, times, rss = run_app(python, plugin, small, scratch / f"timing{k}")
        app_ms.append(median(times))
        peak.append(rss)
    ratio = median(app_ms) / median(bare_ms)
    rows = [["app (published env.coverage.cloud)", len(names), mae(app)],
            ["segtrain predict, plugin's model.onnx", len(names), mae(onnx)],
            ["segtrain predict, the checkpoint", len(names), mae(ckpt)]]
    text = (table(["cloud cover on swimseg valid/", "images", "MAE vs masks"], rows)
            + f"\n\nlargest |app - predict(model.onnx)| per image: {diff:.2g}\n\n"
            + table(["at the model input " + "x".join(map(str, size)), "median ms per image", "rounds"],
                    [["app: frame to publish", median(app_ms), a.rounds],
                     ["bare onnxruntime session.run", median(bare_ms), a.rounds]])
            + f"\n\napp / bare: {ratio:.2f}x; app peak resident memory {max(peak):.0f} MB "
            f"({meta['arch']}, onnxruntime in the plugin's venv)")
    report("The Waggle app segtrain plugin writes (bench/plugin_app.py)", text,
           {"max_abs_difference": diff, "mae": {r[0]: r[2] for r in rows}, "app_ms": app_ms, "bare_ms": bare_ms,
            "ratio": ratio, "peak_rss_mb": peak}, a.out)


if __name__ == "__main__":
    main()
