"""What each command does with its parsed arguments: calls the Python API (api.py) and prints what
a shell user reads. cli.py parses the command line and calls one of these.

Heavy modules (torch) are imported inside the API's functions, so `segtrain --help` is instant and
predicting with an ONNX file works on a node without PyTorch.
"""

from __future__ import annotations

from pathlib import Path

from segtrain import api
from segtrain.config.load import MISSING_CONFIG_HINT, parse_overrides
from segtrain.errors import ConfigError
from segtrain.paths import from_command_line, from_root
from segtrain.runtime.clock import Clock


def train(root: Path, config: Path | None, overrides: list[str], image_type: str = "auto",
          resume: str | None = None, stop_after: int | None = None, missing_hint: str = MISSING_CONFIG_HINT,
          clock: Clock | None = None) -> None:
    """Train on ROOT, or with config "mode": "test" run the original tool's test mode. The clock
    starts here, first: a time_budget is the wall time of the whole command (runtime/clock.py)."""
    clock = clock if clock is not None else Clock()
    api.train(root, parse_overrides(overrides), config=config, resume=resume, stop_after=stop_after,
              image_type=image_type, missing_hint=missing_hint, clock=clock)


def default_data_root() -> Path:
    """The original README mounted data at /data, its code read /storage; else the current folder."""
    for candidate in (Path("/data"), Path("/storage")):
        if candidate.is_dir():
            return candidate
    return Path.cwd()


def train_in_container(data: Path | None, config: Path, overrides: list[str], image_type: str,
                       resume: str | None, stop_after: int | None) -> None:
    """The original container's form: no ROOT argument, data at /data, a config always read.
    Its advice names its own flags."""
    root = data if data is not None else default_data_root()
    where = ("given by --data" if data is not None
             else "here the current folder, as no /data or /storage is mounted: mount your data at /data or pass --data")
    if not root.is_dir():
        raise ConfigError(f"--data {root}: data folder not found. Pass --data with the folder that holds "
                          "train/ and config.list.")
    hint = f" in the data folder ({where}), or pass --config with the path of your config file"
    train(root, from_root(config, root), overrides, image_type, resume, stop_after, hint)


def check(root: Path, config: Path | None, overrides: list[str], image_type: str) -> None:
    api.check(root, parse_overrides(overrides), config=config, image_type=image_type)


def evaluate(root: Path, checkpoint: Path, split: str, device: str, json_path: Path | None,
             tta: bool = False) -> None:
    from segtrain.paths import output_file
    from segtrain.use.evaluate import format_table, write_json

    checkpoint = from_command_line(checkpoint, root)
    if json_path is not None:  # before the evaluation, which may take long; the data's files are guarded as such
        output_file(json_path, "--json", {checkpoint: "the model file"})
    numbers = api.evaluate(checkpoint, root, split=split, device=device, tta=tta)
    print(format_table(numbers))
    if json_path is not None:
        write_json(numbers, json_path)
        print(f"numbers written to {json_path}")


def audit(root: Path, checkpoint: Path, out: Path | None, top: int, device: str) -> None:
    api.audit(root, from_command_line(checkpoint, root), out=out, top=top, device=device)


def predict(source: Path, checkpoint: Path, out: Path, overlay: bool, tile: int | None, overlap: int | None,
            recursive: bool, batch_size: int | None, device: str, tta: bool) -> None:
    api.predict(source, checkpoint, out, overlay=overlay, tile=tile, overlap=overlap, recursive=recursive,
                batch_size=batch_size, device=device, tta=tta)


def export(checkpoint: Path, fmt: str, out: Path, size: list[int] | None, verify_on: Path | None, raw_input: bool,
           int8: bool, calibrate_on: Path | None, max_iou_drop: float) -> None:
    api.export(checkpoint, out, format=fmt, size=size, verify_on=verify_on, raw_input=raw_input, int8=int8,
               calibrate_on=calibrate_on, max_iou_drop=max_iou_drop)


def download(name: str, dest: Path, url: str | None, archive: Path | None) -> None:
    api.download(name, dest, url=url, archive=archive)


def plot(log: Path, out: Path | None) -> None:
    print(f"wrote {api.plot(log, out)}")


def plugin(checkpoint: Path, out: Path, name: str | None, version: str, runtime: str, verify_on: Path | None) -> None:
    api.plugin(checkpoint, out, name=name, version=version, runtime=runtime, verify_on=verify_on)


def weights(out: Path, models: list[str], encoder: str | None) -> None:
    from segtrain.models.weights import ENVIRONMENT

    for name, path in api.fetch_weights(out, models, encoder=encoder).items():
        print(f"{name}: {path} ({path.stat().st_size / 2**20:.0f} MB)")
    print(f"Bring {out} along and set \"weights_dir\" in config.list (or {ENVIRONMENT}) to its path there.")


def init(root: Path) -> None:
    api.init(root)


def demo(out: Path, overrides: list[str]) -> None:
    api.demo(out, parse_overrides(overrides))
