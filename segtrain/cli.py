"""Command line: a thin layer that parses arguments and calls the modules that do the work."""

from __future__ import annotations

import argparse
import sys
import traceback
from pathlib import Path

from segtrain import __version__
from segtrain.config import describe_keys, load_config
from segtrain.download import DATASETS
from segtrain.errors import SegtrainError

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

EPILOG_TRAIN = """examples:
  segtrain train ~/clouds                          # ~/clouds/config.list if present, else defaults
  segtrain train ~/clouds --set lr=0.01 --set max_iteration=5000
  segtrain --config config.list --image_type waggle_cloud --data ~/clouds   # the original container's form

config.list keys (JSON object; all optional):
""" + describe_keys()


EPILOG_MAIN = """examples:
  segtrain download waggle_clouds ~/clouds   # the original example data, arranged, with a starter config
  segtrain init ~/my_images                  # write a starter config.list (and class_names.list) for a folder
  segtrain train ~/my_images                 # train; outputs in ~/my_images/MODEL-<output_dir>/
  segtrain plot ~/my_images/MODEL-fcn_resnet18/log.csv
  segtrain demo                              # a synthetic sky/cloud folder, trained in about a minute

run 'segtrain COMMAND --help' for each command's examples. The original container's form also works:
  segtrain --config config.list --image_type waggle_cloud [--data ROOT]"""

EPILOG_INIT = """examples:
  segtrain init ~/clouds          # prints what it found and what each written key means
  segtrain init ~/clouds && segtrain train ~/clouds

Writes ROOT/config.list and, when the masks reveal the classes, ROOT/class_names.list (and
class_colors.list for colour masks). Existing files are kept; init then prints what it would write."""

EPILOG_DOWNLOAD = """examples:
  segtrain download waggle_clouds ~/clouds && segtrain train ~/clouds
  segtrain download waggle_clouds ~/clouds --archive ~/Downloads/WaggleClouds.tar.gz   # offline

The data comes with terms of use, printed before the download."""

EPILOG_PLOT = """examples:
  segtrain plot ~/clouds/MODEL-fcn_resnet18/log.csv                 # writes curves.png next to the log
  segtrain plot old_run/log.csv --out old_run.png                    # also for the original tool's logs"""


def _train_command(root: Path, config: Path | None, overrides: list[str], image_type: str) -> int:
    from segtrain.presets import preset
    from segtrain.trainer import train

    class_names, preset_defaults = preset(image_type)
    cfg_path = config
    if cfg_path is not None and not cfg_path.is_absolute() and not cfg_path.exists():
        cfg_path = root / cfg_path  # the original container looked config.list up in the data folder
    cfg = load_config(root, cfg_path, overrides, preset_defaults)
    if class_names is not None and (root / "class_names.list").is_file():
        class_names = None  # the folder's own list wins over the preset's
    train(root, cfg, class_names=class_names)
    return 0


def default_data_root() -> Path:
    """The original README mounted data at /data, its code read /storage; else the current folder."""
    for candidate in (Path("/data"), Path("/storage")):
        if candidate.is_dir():
            return candidate
    return Path.cwd()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="segtrain",
        description="Train semantic segmentation models on your own folder of images and masks.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=EPILOG_MAIN,
    )
    parser.add_argument("--version", action="version", version=f"segtrain {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks for errors")
    sub = parser.add_subparsers(dest="command")

    p = sub.add_parser("train", help="train a model on a data folder", epilog=EPILOG_TRAIN,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("root", type=Path, help="data folder with train/ and class_names.list")
    p.add_argument("--config", type=Path, help="config file (default: ROOT/config.list when present)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key (value parsed as JSON where it parses); repeatable")
    p.add_argument("--image_type", "--image-type", default="auto", help="dataset preset: auto or waggle_cloud")

    p = sub.add_parser("init", help="inspect a data folder and write a starter config.list and class_names.list",
                       epilog=EPILOG_INIT, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("root", type=Path, help="data folder with train/images + train/labels (or images/ + labels/)")

    p = sub.add_parser("download", help="download an example dataset and arrange it for training",
                       epilog=EPILOG_DOWNLOAD, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("name", choices=sorted(DATASETS), help="dataset name")
    p.add_argument("dest", type=Path, help="folder to create the dataset in")
    p.add_argument("--url", help="download from this URL instead of the published one (a mirror)")
    p.add_argument("--archive", type=Path, help="use this already-downloaded archive instead of downloading")

    p = sub.add_parser("plot", help="draw curves.png (loss, mean IoU, accuracy) from a log.csv",
                       epilog=EPILOG_PLOT, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("log", type=Path, help="a log.csv written by segtrain or the original tool")
    p.add_argument("--out", type=Path, help="picture to write (default: curves.png next to the log)")

    p = sub.add_parser("demo", help="make a small synthetic sky/cloud folder and train on it (a few minutes on a CPU)",
                       epilog="example:\n  segtrain demo ./demo   # then open ./demo/MODEL-demo/",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out", type=Path, nargs="?", default=Path("demo"), help="folder to create (default: ./demo)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    return parser


def build_legacy_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="segtrain", description="The original container's form: train on the data folder.")
    parser.add_argument("--config", type=Path, default=Path("config.list"), help="relative paths are looked up in the data folder")
    parser.add_argument("--image_type", "--image-type", default="auto")
    parser.add_argument("--data", type=Path, default=None, help="data folder (default: /data, else /storage, else .)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--debug", action="store_true")
    return parser


def run(argv: list[str]) -> int:
    if argv and argv[0].startswith("-") and argv[0] not in ("-h", "--help", "--version", "--debug"):
        args = build_legacy_parser().parse_args(argv)
        root = args.data if args.data is not None else default_data_root()
        config = args.config if args.config.is_absolute() else root / args.config
        return _train_command(root, config, args.overrides, args.image_type)

    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    if args.command == "train":
        return _train_command(args.root, args.config, args.overrides, args.image_type)
    if args.command == "init":
        from segtrain.starter import plan, write_starter

        write_starter(plan(args.root))
        return 0
    if args.command == "download":
        from segtrain.download import download

        download(args.name, args.dest, url=args.url, archive=args.archive)
        return 0
    if args.command == "plot":
        from segtrain.curves import plot_log

        print(f"wrote {plot_log(args.log, args.out)}")
        return 0
    if args.command == "demo":
        from segtrain.synthetic import write_sky_folder

        if not (args.out / "class_names.list").is_file():
            write_sky_folder(args.out, config=DEMO_CONFIG)
            print(f"made a synthetic sky/cloud dataset in {args.out}")
        return _train_command(args.out, None, args.overrides, "auto")
    parser.error(f"unknown command {args.command}")
    return 2


def _user_message(error: BaseException) -> str:
    text = str(error)
    if "Original Traceback" in text:  # raised in a DataLoader worker: keep the original message
        last = text.strip().splitlines()[-1]
        text = last.split(": ", 1)[1] if ": " in last else last
    return text


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    try:
        return run(argv)
    except SegtrainError as e:
        if debug:
            traceback.print_exc()
        print(f"error: {_user_message(e)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted.", file=sys.stderr)
        return 130
