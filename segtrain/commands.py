"""What each command does with its arguments: the one place that joins config, data, training
and the use of a trained model. cli.py parses the command line and calls one of these.

Heavy modules (torch) are imported inside each command, so `segtrain --help` is instant and
predicting with an ONNX file works on a node without PyTorch.
"""

from __future__ import annotations

from pathlib import Path

from segtrain.config.load import MISSING_CONFIG_HINT, run_config
from segtrain.errors import ConfigError
from segtrain.paths import from_command_line, from_root
from segtrain.runtime import interrupt

# The demo trains a small FCN at 64 px on synthetic skies: it learns them in about a minute on
# two cores, where the default recipe (made for real photos, see config/recipe.py) needs longer.
DEMO_CONFIG = {
    "model": "fcn_resnet18",
    "image_size": 64,
    "batch_size": 8,
    "max_iteration": 150,
    "interval_validate": 50,
    "lr": 0.02,
    "pretrained_backbone": False,
    "n_workers": 0,
    "log_interval": 10,
    "output_dir": "demo",
}


def train(root: Path, config: Path | None, overrides: list[str], image_type: str = "auto",
          resume: str | None = None, stop_after: int | None = None, missing_hint: str = MISSING_CONFIG_HINT) -> None:
    """Train on ROOT, or with config "mode": "test" run the original tool's test mode."""
    with interrupt.graceful_stop():  # before any heavy set-up (torch import, reading the data)
        cfg, class_names = run_config(root, config, overrides, image_type, missing_hint)
        if cfg["mode"] == "test":  # the original's test mode: predict (and evaluate) with pretrained_net
            from segtrain.use.testmode import run_test

            run_test(root, cfg)
            return
        from segtrain.training.loop import train as train_loop

        train_loop(root, cfg, class_names=class_names, resume=resume, stop_after=stop_after)


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
    """Judge the folder with the config train would use: fitted to it by train's own fit_to_folder."""
    from segtrain.data.check import check_folder
    from segtrain.runtime.device import select_device
    from segtrain.training.setup import fit_to_folder

    cfg, class_names = run_config(root, config, overrides, image_type)
    fit = fit_to_folder(root, cfg, class_names, select_device(cfg["device"]).type, None)
    check_folder(fit.spec, cfg)


def evaluate(root: Path, checkpoint: Path, split: str, device: str, json_path: Path | None,
             tta: bool = False) -> None:
    from segtrain.paths import output_file
    from segtrain.use.evaluate import evaluate as evaluate_model, format_table, write_json

    checkpoint = from_command_line(checkpoint, root)
    if json_path is not None:  # before the evaluation, which may take long; the data's files are guarded as such
        output_file(json_path, "--json", {checkpoint: "the model file"})
    numbers = evaluate_model(root, checkpoint, split, device, tta=tta)
    print(format_table(numbers))
    if json_path is not None:
        write_json(numbers, json_path)
        print(f"numbers written to {json_path}")


def audit(root: Path, checkpoint: Path, out: Path | None, top: int, device: str) -> None:
    from segtrain.use.audit import audit as audit_labels

    audit_labels(root, from_command_line(checkpoint, root), out, top, device)


def plot(log: Path, out: Path | None) -> None:
    from segtrain.outputs.curves import plot_log

    print(f"wrote {plot_log(log, out)}")


def init(root: Path) -> None:
    from segtrain.data.starter import plan, write_starter

    write_starter(plan(root))


def demo(out: Path, overrides: list[str]) -> None:
    """Make the demo folder (a new or empty one: the demo writes images, masks and a config.list),
    or train again in one made before."""
    from segtrain.data.synthetic import write_sky_folder
    from segtrain.paths import output_folder

    output_folder(out, "demo")
    if not (out / "class_names.list").is_file():
        if out.is_dir() and any(out.iterdir()):
            raise ConfigError(f"demo {out}: holds files but no demo (no class_names.list); the demo would write its "
                              "images and config.list among them. Give a new or empty folder (default: ./demo).")
        write_sky_folder(out, config=DEMO_CONFIG)
        print(f"made a synthetic sky/cloud dataset in {out}")
    train(out, None, overrides)
