"""Command line: parses each command's flags and calls its function in the Python API (api.py, the
one place for the commands) through one table, then prints what a shell user reads.

Also the container's entry point: the original tool's form (`--config config.list --image_type
waggle_cloud`, data at /data) is recognised by its leading option.

Heavy modules (torch) are imported inside the API's functions, so `segtrain --help` is instant and
predicting with an ONNX file works on a node without PyTorch.
"""

from __future__ import annotations

import argparse
import json
import sys
import traceback
from pathlib import Path

from segtrain import api
from segtrain.config.load import describe_keys, parse_overrides
from segtrain.data.download import DATASETS
from segtrain.errors import ConfigError, SegtrainError, user_message
from segtrain.paths import from_command_line, from_root
from segtrain.runtime import cpu_threads, interrupt
from segtrain.runtime.clock import Clock
from segtrain.version import __version__

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
  segtrain plot ~/my_images/MODEL-lraspp_mobilenet_v3_large/log.csv
  segtrain plugin --checkpoint ~/my_images/MODEL-lraspp_mobilenet_v3_large/model_best.pth.tar --out my-plugin   # a Waggle edge app
  segtrain demo                              # a synthetic sky/cloud folder, trained in about 2 minutes on 2 CPU cores

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
  segtrain plot ~/clouds/MODEL-lraspp_mobilenet_v3_large/log.csv                 # writes curves.png next to the log
  segtrain plot old_run/log.csv --out old_run.png                    # also for the original tool's logs"""


EPILOG_EVALUATE = """examples:
  segtrain evaluate ~/clouds --checkpoint ~/clouds/MODEL-lraspp_mobilenet_v3_large/model_best.pth.tar
  segtrain evaluate ~/clouds --checkpoint MODEL-lraspp_mobilenet_v3_large/model_best.pth.tar --split test --json test.json
  segtrain evaluate ~/clouds --checkpoint cloud-int8.onnx     # score the exact exported file that ships
  segtrain evaluate ~/clouds --checkpoint MODEL-lraspp_mobilenet_v3_large/model_best.pth.tar --tta   # with flipped copies too
"""

EPILOG_AUDIT = """examples:
  segtrain audit ~/clouds --checkpoint ~/clouds/MODEL-lraspp_mobilenet_v3_large/model_best.pth.tar   # into MODEL-lraspp_mobilenet_v3_large/audit/
  segtrain audit ~/clouds --checkpoint MODEL-lraspp_mobilenet_v3_large/model_best.pth.tar --out recheck --top 50

audit.csv lists every training and validation pair, most doubtful first (highest loss of the mask
under the model); RANK_SPLIT_NAME.png shows image | mask | model for the top N.
"""

EPILOG_PREDICT = """examples:
  segtrain predict sky.jpg --checkpoint MODEL-lraspp_mobilenet_v3_large/model_best.pth.tar --out masks
  segtrain predict ~/new_images --checkpoint model.onnx --out masks --overlay --tile 512
  segtrain predict ~/new_images --checkpoint model.onnx --out masks --tta   # average with left-right flips
"""

EPILOG_EXPORT = """examples:
  segtrain export --checkpoint MODEL-lraspp_mobilenet_v3_large/model_best.pth.tar --format onnx --out cloud.onnx
  segtrain export --checkpoint MODEL-lraspp_mobilenet_v3_large/model_best.pth.tar --format torchscript --out cloud.pt
  segtrain export --checkpoint MODEL-lraspp_mobilenet_v3_large/model_best.pth.tar --format torchscript --raw-input --out plugin.pt
  segtrain export --checkpoint MODEL-lraspp_mobilenet_v3_large/model_best.pth.tar --format onnx --int8 --calibrate-on ~/clouds --out cloud-int8.onnx
"""

EPILOG_WEIGHTS = """examples:
  segtrain weights ~/weights                         # on a machine with internet: the models the recipe may choose
  segtrain weights ~/weights --model fcn_resnet50 --model unet --encoder resnet34
  # then, on the machine without internet:
  segtrain train ~/clouds --set weights_dir='"/path/to/weights"'     # or: export SEGTRAIN_WEIGHTS=/path/to/weights

The folder holds checkpoints/ (torchvision's files, as in torch.hub's folder) and huggingface/ (a
Hugging Face cache for segmentation_models_pytorch's encoders); copy it along whole."""

EPILOG_PLUGIN = """examples:
  segtrain plugin --checkpoint ~/clouds/MODEL-lraspp_mobilenet_v3_large/model_best.pth.tar --out cloud-plugin
  segtrain plugin --checkpoint MODEL-lraspp_mobilenet_v3_large/model_best.pth.tar --out cloud-plugin --name cloud-cover --version 1.0.0
  cd cloud-plugin && PYWAGGLE_LOG_DIR=test-run python3 -m app.main -stream ~/clouds/valid/images -sampling-interval 1

The folder holds the model (raw-input ONNX), the app (pywaggle; publishes env.coverage.<class>),
Dockerfile, requirements.txt, sage.yaml, ecr-meta/ and a README: build it with pluginctl build .
"""

EPILOG_CHECK = "example:\n  segtrain check ~/clouds   # counts, sizes, label encoding, pixel share per class, problems"

EPILOG_DEMO = "example:\n  segtrain demo ./demo   # then open ./demo/MODEL-demo/"


def _positive_int(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of iterations >= 1, got {text!r}")
    return int(text)


def _config_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("root", type=Path, help="data folder with train/ and class_names.list")
    p.add_argument("--config", type=Path, help="config file (default: ROOT/config.list when present)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key (value parsed as JSON where it parses); repeatable")
    p.add_argument("--image_type", "--image-type", default="auto", help="dataset preset: auto or waggle_cloud")


def _resume_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--resume", nargs="?", const="", default=None, metavar="CKPT",
                   help="continue a run from its checkpoint (default: ROOT/MODEL-<output_dir>/checkpoint.pth.tar), "
                   "in the same folder, appending to its log.csv")
    p.add_argument("--stop-after", "--stop_after", type=_positive_int, default=None, metavar="K",
                   help="train K iterations in this invocation, save a checkpoint and exit 0 (continue with --resume)")


def _train_arguments(p: argparse.ArgumentParser) -> None:
    _config_arguments(p)
    _resume_arguments(p)
    p.add_argument("--device", help="'auto', 'cpu', 'cuda' or 'cuda:N' (the same as --set device=...)")


def _with_device(overrides: list[str], device: str | None) -> list[str]:
    return overrides if device is None else [*overrides, f"device={json.dumps(device)}"]


def _evaluate_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("root", type=Path, help="data folder (as for train)")
    p.add_argument("--checkpoint", type=Path, required=True,
                   help="model_best.pth.tar or checkpoint.pth.tar of a run, or any file segtrain export wrote")
    p.add_argument("--split", default="valid",
                   help="'valid' (default: the images validation used), 'train', or a folder with images/ and labels/")
    p.add_argument("--json", type=Path, help="also write the numbers to this JSON file")
    p.add_argument("--tta", action="store_true",
                   help="test-time augmentation: also run each image flipped left-right and average the logits (2x time)")
    p.add_argument("--device", default="auto", help="'auto', 'cpu', 'cuda' or 'cuda:N'")


def _audit_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("root", type=Path, help="data folder (as for train): its training and validation pairs are ranked")
    p.add_argument("--checkpoint", type=Path, required=True,
                   help="model_best.pth.tar or checkpoint.pth.tar of a run, or any file segtrain export wrote")
    p.add_argument("--out", type=Path, help="folder for audit.csv and the pictures (default: audit/ beside the checkpoint)")
    p.add_argument("--top", type=int, default=20, help="pictures for this many of the most doubtful pairs (default 20)")
    p.add_argument("--device", default="auto", help="'auto', 'cpu', 'cuda' or 'cuda:N'")


def _predict_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("input", type=Path, help="an image or a folder of images")
    p.add_argument("--checkpoint", type=Path, required=True,
                   help="a segtrain checkpoint, or any file segtrain export wrote (.onnx, .pt, .pt2)")
    p.add_argument("--out", type=Path, required=True, help="output folder: NAME.png masks and summary.csv")
    p.add_argument("--overlay", action="store_true", help="also write NAME_overlay.jpg, the classes over the image")
    p.add_argument("--tile", type=int, help="sliding-window inference with tiles of this many pixels (model input)")
    p.add_argument("--overlap", type=int, help="tile overlap in pixels (default: a quarter of --tile)")
    p.add_argument("--recursive", action="store_true", help="also predict images in subfolders")
    p.add_argument("--batch-size", type=int, help="images per batch (default: the training batch size)")
    p.add_argument("--tta", action="store_true",
                   help="test-time augmentation: also run each image flipped left-right and average the logits (2x time)")
    p.add_argument("--device", default="auto", help="'auto', 'cpu', 'cuda' or 'cuda:N' (checkpoints only)")


def _export_arguments(p: argparse.ArgumentParser) -> None:
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


def _plugin_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", type=Path, required=True, help="model_best.pth.tar or checkpoint.pth.tar of a run")
    p.add_argument("--out", type=Path, required=True, help="plugin folder to create (must not exist, or be empty)")
    p.add_argument("--name", help="the app's name in the Edge Code Repository (default: DATA-FOLDER-coverage)")
    p.add_argument("--version", dest="app_version", default="0.1.0", help="the app's version (default 0.1.0)")
    p.add_argument("--runtime", default="onnx", choices=["onnx", "torchscript"],
                   help="onnx (default: ONNX Runtime, GPU where present) or torchscript (for base images with torch)")
    p.add_argument("--verify-on", type=Path, help="images to verify the export on besides random inputs")


def _download_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", choices=sorted(DATASETS), help="dataset name")
    p.add_argument("dest", type=Path, help="folder to create the dataset in")
    p.add_argument("--url", help="download from this URL instead of the published one (a mirror)")
    p.add_argument("--archive", type=Path, help="use this already-downloaded archive instead of downloading")


def _weights_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("out", type=Path, help="folder to fill (created when missing; kept files are checked, not fetched again)")
    p.add_argument("--model", action="append", default=[], metavar="NAME",
                   help="a registered model (repeatable); default: the models the recipe may choose")
    p.add_argument("--encoder", help="encoder of the smp models named (default: each one's default)")


def _plot_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("log", type=Path, help="a log.csv written by segtrain or the original tool")
    p.add_argument("--out", type=Path, help="picture to write (default: curves.png next to the log)")


def _demo_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("out", type=Path, nargs="?", default=Path("demo"), help="folder to create (default: ./demo)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")


def _train(a: argparse.Namespace) -> None:
    """Train on ROOT, or with config "mode": "test" run the original tool's test mode. The clock
    starts here, first: a time_budget is the wall time of the whole command (runtime/clock.py)."""
    clock = Clock()
    api.train(a.root, parse_overrides(_with_device(a.overrides, a.device)), config=a.config, resume=a.resume,
              stop_after=a.stop_after, image_type=a.image_type, clock=clock)


def default_data_root() -> Path:
    """The original README mounted data at /data, its code read /storage; else the current folder."""
    for candidate in (Path("/data"), Path("/storage")):
        if candidate.is_dir():
            return candidate
    return Path.cwd()


def _train_in_container(a: argparse.Namespace) -> None:
    """The original container's form: no ROOT argument, data at /data, a config always read.
    Its advice names its own flags."""
    clock = Clock()
    root = a.data if a.data is not None else default_data_root()
    where = ("given by --data" if a.data is not None
             else "here the current folder, as no /data or /storage is mounted: mount your data at /data or pass --data")
    if not root.is_dir():
        raise ConfigError(f"--data {root}: data folder not found. Pass --data with the folder that holds "
                          "train/ and config.list.")
    hint = f" in the data folder ({where}), or pass --config with the path of your config file"
    api.train(root, parse_overrides(a.overrides), config=from_root(a.config, root), resume=a.resume,
              stop_after=a.stop_after, image_type=a.image_type, missing_hint=hint, clock=clock)


def _evaluate(a: argparse.Namespace) -> None:
    from segtrain.use.evaluate import format_table

    numbers = api.evaluate(from_command_line(a.checkpoint, a.root), a.root, split=a.split, device=a.device, tta=a.tta,
                           json_path=a.json)
    print(format_table(numbers))
    if a.json is not None:
        print(f"numbers written to {a.json}")


def _weights(a: argparse.Namespace) -> None:
    from segtrain.models.weights import ENVIRONMENT

    for name, path in api.fetch_weights(a.out, a.model, encoder=a.encoder).items():
        print(f"{name}: {path} ({path.stat().st_size / 2**20:.0f} MB)")
    print(f"Bring {a.out} along and set \"weights_dir\" in config.list (or {ENVIRONMENT}) to its path there.")


# name: (help, epilog, adds its arguments, runs it with the parsed arguments)
COMMANDS = {
    "train": ("train a model on a data folder", EPILOG_TRAIN, _train_arguments, _train),
    "check": ("check a data folder and its config without training; print a dataset report", EPILOG_CHECK,
              _config_arguments,
              lambda a: api.check(a.root, parse_overrides(a.overrides), config=a.config, image_type=a.image_type)),
    "evaluate": ("score a trained model on labelled images", EPILOG_EVALUATE, _evaluate_arguments, _evaluate),
    "audit": ("rank the labelled pairs by how strongly a trained model disagrees with their masks", EPILOG_AUDIT,
              _audit_arguments,
              lambda a: api.audit(a.root, from_command_line(a.checkpoint, a.root), out=a.out, top=a.top, device=a.device)),
    "predict": ("write class masks (and overlays, class fractions) for images", EPILOG_PREDICT, _predict_arguments,
                lambda a: api.predict(a.input, a.checkpoint, a.out, overlay=a.overlay, tile=a.tile, overlap=a.overlap,
                                      recursive=a.recursive, batch_size=a.batch_size, device=a.device, tta=a.tta)),
    "export": ("export a checkpoint to ONNX, TorchScript or torch.export for edge devices", EPILOG_EXPORT, _export_arguments,
               lambda a: api.export(a.checkpoint, a.out, format=a.format, size=a.size, verify_on=a.verify_on,
                                    raw_input=a.raw_input, int8=a.int8, calibrate_on=a.calibrate_on,
                                    max_iou_drop=a.max_iou_drop)),
    "plugin": ("write a Waggle edge app folder (model, app, Dockerfile, sage.yaml) for a checkpoint", EPILOG_PLUGIN,
               _plugin_arguments,
               lambda a: api.plugin(a.checkpoint, a.out, name=a.name, version=a.app_version, runtime=a.runtime,
                                    verify_on=a.verify_on)),
    "init": ("inspect a data folder and write a starter config.list and class_names.list", EPILOG_INIT,
             lambda p: p.add_argument("root", type=Path, help="data folder with train/images + train/labels "
                                      "(or images/ + labels/)"),
             lambda a: api.init(a.root)),
    "download": ("download an example dataset and arrange it for training", EPILOG_DOWNLOAD, _download_arguments,
                 lambda a: api.download(a.name, a.dest, url=a.url, archive=a.archive)),
    "weights": ("fetch ImageNet backbone weights into a folder, for machines without internet", EPILOG_WEIGHTS,
                _weights_arguments, _weights),
    "plot": ("draw curves.png (loss, mean IoU, accuracy) from a log.csv", EPILOG_PLOT, _plot_arguments,
             lambda a: print(f"wrote {api.plot(a.log, a.out)}")),
    "demo": ("make a small synthetic sky/cloud folder and train on it (about 2 minutes on 2 CPU cores)", EPILOG_DEMO,
             _demo_arguments, lambda a: api.demo(a.out, parse_overrides(a.overrides))),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="segtrain", description="Train semantic segmentation models on your own folder of images and masks.",
        formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EPILOG_MAIN,
    )
    parser.add_argument("--version", action="version", version=f"segtrain {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks for errors")
    sub = parser.add_subparsers(dest="command")
    for name, (help_text, epilog, add_arguments, _) in COMMANDS.items():
        add_arguments(sub.add_parser(name, help=help_text, epilog=epilog,
                                     formatter_class=argparse.RawDescriptionHelpFormatter))
    return parser


def build_container_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="segtrain", description="The original container's form: train on the data folder.")
    parser.add_argument("--config", type=Path, default=Path("config.list"), help="relative paths are looked up in the data folder")
    parser.add_argument("--image_type", "--image-type", default="auto")
    parser.add_argument("--data", type=Path, default=None, help="data folder (default: /data, else /storage, else .)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--debug", action="store_true")
    _resume_arguments(parser)
    return parser


# Commands that run a model: how PyTorch's threads wait is chosen before they load torch
# (runtime/cpu_threads.py); the others (--help, init, plot, ...) start without looking at the machine.
COMPUTING = ("train", "evaluate", "audit", "predict", "export", "demo")


def run(argv: list[str]) -> int:
    if argv and argv[0].startswith("-") and argv[0] not in ("-h", "--help", "--version", "--debug"):
        a = build_container_parser().parse_args(argv)
        cpu_threads.choose_at_start()
        _train_in_container(a)
        return 0
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    if args.command in COMPUTING:
        cpu_threads.choose_at_start()
    COMMANDS[args.command][3](args)
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    try:
        return run(argv)
    except SegtrainError as e:
        if debug:
            traceback.print_exc()
        print(f"error: {user_message(e)}", file=sys.stderr)
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
