"""Command line: a thin layer that parses arguments and calls the modules that do the work."""

from __future__ import annotations

import argparse
import sys
import traceback
from pathlib import Path

from segtrain import __version__
from segtrain.runtime import interrupt
from segtrain.config.load import describe_keys, load_config
from segtrain.data.download import DATASETS
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
  segtrain train ~/clouds --stop-after 500         # 500 iterations now, then save and exit 0
  segtrain train ~/clouds --resume                 # continue MODEL-<output_dir>/checkpoint.pth.tar
  segtrain train ~/clouds --resume --set max_iteration=8000   # extend a finished run
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


EPILOG_EVALUATE = """examples:
  segtrain evaluate ~/clouds --checkpoint ~/clouds/MODEL-fcn_resnet18/model_best.pth.tar
  segtrain evaluate ~/clouds --checkpoint MODEL-fcn_resnet18/model_best.pth.tar --split test --json test.json
  segtrain evaluate ~/clouds --checkpoint cloud-int8.onnx     # score the exact exported file that ships
"""

EPILOG_PREDICT = """examples:
  segtrain predict sky.jpg --checkpoint MODEL-fcn_resnet18/model_best.pth.tar --out masks
  segtrain predict ~/new_images --checkpoint model.onnx --out masks --overlay --tile 512
"""

EPILOG_EXPORT = """examples:
  segtrain export --checkpoint MODEL-fcn_resnet18/model_best.pth.tar --format onnx --out cloud.onnx
  segtrain export --checkpoint MODEL-fcn_resnet18/model_best.pth.tar --format torchscript --out cloud.pt
  segtrain export --checkpoint MODEL-fcn_resnet18/model_best.pth.tar --format torchscript --raw-input --out plugin.pt
  segtrain export --checkpoint MODEL-fcn_resnet18/model_best.pth.tar --format onnx --int8 --calibrate-on ~/clouds --out cloud-int8.onnx
"""


def _run_config(root: Path, config: Path | None, overrides: list[str], image_type: str):
    """The resolved config and the preset's class names (None when the folder has its own)."""
    from segtrain.config.presets import preset

    class_names, preset_defaults = preset(image_type)
    cfg_path = config
    if cfg_path is not None and not cfg_path.is_absolute() and not cfg_path.exists():
        cfg_path = root / cfg_path  # the original container looked config.list up in the data folder
    cfg = load_config(root, cfg_path, overrides, preset_defaults)
    if class_names is not None and (root / "class_names.list").is_file():
        class_names = None  # the folder's own list wins over the preset's
    return cfg, class_names


def _train_command(root: Path, config: Path | None, overrides: list[str], image_type: str,
                   resume: str | None = None, stop_after: int | None = None) -> int:
    with interrupt.graceful_stop():  # before any heavy set-up (torch import, reading the data)
        cfg, class_names = _run_config(root, config, overrides, image_type)
        if cfg["mode"] == "test":  # the original's test mode: predict (and evaluate) with pretrained_net
            from segtrain.use.testmode import run_test

            run_test(root, cfg)
            return 0
        from segtrain.training.loop import train

        train(root, cfg, class_names=class_names, resume=resume, stop_after=stop_after)
    return 0


def _evaluate_command(args) -> int:
    from segtrain.use.evaluate import evaluate, format_table, write_json

    checkpoint = args.checkpoint
    if not checkpoint.exists() and not checkpoint.is_absolute() and (args.root / checkpoint).exists():
        checkpoint = args.root / checkpoint
    numbers = evaluate(args.root, checkpoint, args.split, args.device)
    print(format_table(numbers))
    if args.json is not None:
        write_json(numbers, args.json)
        print(f"numbers written to {args.json}")
    return 0


def _predict_command(args) -> int:
    from segtrain.use.predict import predict

    predict(args.input, args.checkpoint, args.out, overlay_jpeg=args.overlay, tile=args.tile, overlap=args.overlap,
            recursive=args.recursive, batch_size=args.batch_size, device=args.device)
    return 0


def _export_command(args) -> int:
    from segtrain.use.export import export

    export(args.checkpoint, args.format, args.out, args.size, args.verify_on, raw_input=args.raw_input,
           int8=args.int8, calibrate_on=args.calibrate_on, max_iou_drop=args.max_iou_drop)
    return 0


COMMANDS = {"evaluate": _evaluate_command, "predict": _predict_command, "export": _export_command}


def _check_command(root: Path, config: Path | None, overrides: list[str], image_type: str) -> int:
    cfg, class_names = _run_config(root, config, overrides, image_type)
    from segtrain.data.check import check_folder

    check_folder(root, cfg, class_names)
    return 0


def _positive_int(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of iterations >= 1, got {text!r}")
    return int(text)


def _add_resume_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--resume", nargs="?", const="", default=None, metavar="CKPT",
                        help="continue a run from its checkpoint (default: ROOT/MODEL-<output_dir>/checkpoint.pth.tar), "
                        "in the same folder, appending to its log.csv")
    parser.add_argument("--stop-after", "--stop_after", type=_positive_int, default=None, metavar="K",
                        help="train K iterations in this invocation, save a checkpoint and exit 0 (continue with --resume)")


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
    _add_resume_options(p)

    p = sub.add_parser("check", help="check a data folder and its config without training; print a dataset report",
                       epilog="example:\n  segtrain check ~/clouds   # counts, sizes, label encoding, pixel share per class, problems",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("root", type=Path, help="data folder with train/ and class_names.list")
    p.add_argument("--config", type=Path, help="config file (default: ROOT/config.list when present)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--image_type", "--image-type", default="auto", help="dataset preset: auto or waggle_cloud")

    p = sub.add_parser("evaluate", help="score a trained model on labelled images", epilog=EPILOG_EVALUATE,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("root", type=Path, help="data folder (as for train)")
    p.add_argument("--checkpoint", type=Path, required=True,
                   help="model_best.pth.tar or checkpoint.pth.tar of a run, or any file segtrain export wrote")
    p.add_argument("--split", default="valid",
                   help="'valid' (default: the images validation used), 'train', or a folder with images/ and labels/")
    p.add_argument("--json", type=Path, help="also write the numbers to this JSON file")
    p.add_argument("--device", default="auto", help="'auto', 'cpu', 'cuda' or 'cuda:N'")

    p = sub.add_parser("predict", help="write class masks (and overlays, class fractions) for images",
                       epilog=EPILOG_PREDICT, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("input", type=Path, help="an image or a folder of images")
    p.add_argument("--checkpoint", type=Path, required=True, help="a segtrain checkpoint, or any file segtrain export wrote (.onnx, .pt, .pt2)")
    p.add_argument("--out", type=Path, required=True, help="output folder: NAME.png masks and summary.csv")
    p.add_argument("--overlay", action="store_true", help="also write NAME_overlay.jpg, the classes over the image")
    p.add_argument("--tile", type=int, help="sliding-window inference with tiles of this many pixels (model input)")
    p.add_argument("--overlap", type=int, help="tile overlap in pixels (default: a quarter of --tile)")
    p.add_argument("--recursive", action="store_true", help="also predict images in subfolders")
    p.add_argument("--batch-size", type=int, help="images per batch (default: the training batch size)")
    p.add_argument("--device", default="auto", help="'auto', 'cpu', 'cuda' or 'cuda:N' (checkpoints only)")

    p = sub.add_parser("export", help="export a checkpoint to ONNX, TorchScript or torch.export for edge devices",
                       epilog=EPILOG_EXPORT, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", type=Path, required=True, help="model_best.pth.tar or checkpoint.pth.tar of a run")
    p.add_argument("--format", required=True, choices=["onnx", "torchscript", "pt2"])
    p.add_argument("--out", type=Path, required=True, help="file to write (.onnx, .pt or .pt2)")
    p.add_argument("--size", type=int, nargs=2, metavar=("H", "W"),
                   help="example input size (default: the training image_size)")
    p.add_argument("--verify-on", type=Path, help="images (file or folder) to verify on besides random inputs "
                   "(default: synthetic sky images)")
    p.add_argument("--raw-input", action="store_true", help="the file takes RGB 0..255 at any size and resizes and "
                   "normalises inside (what the Waggle cloud-cover plugin feeds)")
    p.add_argument("--int8", action="store_true", help="ONNX only: static INT8 quantisation for CPUs (needs --calibrate-on)")
    p.add_argument("--calibrate-on", type=Path, metavar="ROOT",
                   help="data folder the model was trained on: INT8 calibrates on its training images and is "
                   "measured on its validation split")
    p.add_argument("--max-iou-drop", type=float, default=0.01,
                   help="refuse the INT8 file when mean IoU on the validation split drops by more (default 0.01)")

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
    _add_resume_options(parser)
    return parser


def run(argv: list[str]) -> int:
    if argv and argv[0].startswith("-") and argv[0] not in ("-h", "--help", "--version", "--debug"):
        args = build_legacy_parser().parse_args(argv)
        root = args.data if args.data is not None else default_data_root()
        config = args.config if args.config.is_absolute() else root / args.config
        return _train_command(root, config, args.overrides, args.image_type, args.resume, args.stop_after)

    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    if args.command == "train":
        return _train_command(args.root, args.config, args.overrides, args.image_type, args.resume, args.stop_after)
    if args.command in COMMANDS:
        return COMMANDS[args.command](args)
    if args.command == "check":
        return _check_command(args.root, args.config, args.overrides, args.image_type)
    if args.command == "init":
        from segtrain.data.starter import plan, write_starter

        write_starter(plan(args.root))
        return 0
    if args.command == "download":
        from segtrain.data.download import download

        download(args.name, args.dest, url=args.url, archive=args.archive)
        return 0
    if args.command == "plot":
        from segtrain.outputs.curves import plot_log

        print(f"wrote {plot_log(args.log, args.out)}")
        return 0
    if args.command == "demo":
        from segtrain.data.synthetic import write_sky_folder

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
    except interrupt.StopNow as e:
        print(f"{e} The last checkpoint saved is intact; continue with --resume.", file=sys.stderr)
        return e.exit_code
    except interrupt.Stopped as e:
        print(e, file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("interrupted.", file=sys.stderr)
        return 130
