"""`segtrain plugin`: a checkpoint in, a complete Waggle plugin folder out.

The folder holds the raw-input export of the model (ONNX by default, TorchScript for images that
already have torch), model/model.json (what the app needs to know, and the file's SHA-256), the
app (app/, copied from segtrain/edge_app file for file), Dockerfile, requirements.txt,
sage.yaml, ecr-meta/ and a README. It is written beside --out and renamed into place whole, so
a failure leaves nothing half written, and an existing folder is never overwritten.
"""

from __future__ import annotations

import json
import re
import shutil
import string
import tempfile
from pathlib import Path

from segtrain.version import __version__
from segtrain.data.classes import void_class
from segtrain.errors import ConfigError
from segtrain.outputs.checkpoints import read_checkpoint
from segtrain.paths import cannot_write, output_folder
from segtrain.edge_app.model import METADATA_NAME, sha256_of
from segtrain.plugin.science import science_description

APP = Path(__file__).resolve().parent.parent / "edge_app"
TEMPLATES = Path(__file__).resolve().parent / "templates"
RUNTIMES = {  # runtime: (export format, model file, base image, its own requirements)
    "onnx": ("onnx", "model.onnx", "waggle/plugin-base:1.1.1-base", ["onnxruntime==1.19.2"]),
    "torchscript": ("torchscript", "model.pt", "waggle/plugin-base:1.1.1-ml-torch1.9", []),
}
# Pinned to versions with wheels for the base image's Python 3.8 (Ubuntu 20.04) on amd64 and arm64,
# which install on newer Pythons too. pywaggle's Camera needs OpenCV and ffmpeg-python.
REQUIREMENTS = ["pywaggle==0.56.3", "pywagglemsg==0.4.0", "pika==1.3.2", "numpy==1.24.4", "Pillow==10.4.0",
                "opencv-python-headless==4.10.0.84", "ffmpeg-python==0.2.0", "future==1.0.0"]
APP_ARGUMENTS = [("stream", "string"), ("interval", "float"), ("sampling-interval", "int"), ("run-once", "bool")]
GPU_NOTES = {
    "onnx": "\nThe app runs the model on the GPU where the installed onnxruntime has CUDA: on an x86_64 GPU node put "
            "`onnxruntime-gpu` for `onnxruntime` in requirements.txt; elsewhere it runs on the CPU.\n",
    "torchscript": "\nThe TorchScript model runs on the CPU with the base image's torch (1.11 or newer).\n",
}


class PluginError(ConfigError):
    pass


def topic_names(class_names: list[str], void: int | None) -> list[str | None]:
    """env.coverage.<class> per class (None for the void class): Waggle names are [a-z0-9_] parts."""
    topics = [None if k == void else "env.coverage." + re.sub(r"[^a-z0-9_]+", "_", name.lower()).strip("_")
              for k, name in enumerate(class_names)]
    named = [t for t in topics if t is not None]
    clash = next((t for t in named if named.count(t) > 1 or t == "env.coverage."), None)
    if clash is not None:
        raise PluginError(f"class names {', '.join(class_names)}: two give the same Waggle name ({clash!r}) or one "
                          "gives none; Waggle names take a-z, 0-9 and _. Train with distinct class names.")
    return topics


def app_name(name: str | None, checkpoint: Path) -> str:
    """The Edge Code Repository's app name: lower case letters, digits and dashes."""
    default = f"{checkpoint.resolve().parent.parent.name}-coverage"
    text = re.sub(r"[^a-z0-9]+", "-", (name or default).lower()).strip("-")
    if not text:
        raise PluginError(f"--name {name!r}: give an app name with letters or digits (e.g. --name cloud-cover).")
    return text


def _yaml(value) -> str:
    return json.dumps(value)  # a JSON string is a YAML double-quoted scalar


def sage_yaml(name: str, version: str, description: str, keywords: list[str]) -> str:
    lines = [f"name: {_yaml(name)}", f"description: {_yaml(description)}", f"version: {_yaml(version)}",
             'authors: ""', 'license: ""', 'homepage: ""', f"keywords: {_yaml(', '.join(keywords))}",
             "source:", "  architectures:", '    - "linux/amd64"', '    - "linux/arm64"',
             '  url: ""  # the git repository this folder is pushed to', '  branch: "main"', "inputs:"]
    lines += [f"  - id: {_yaml(arg)}\n    type: {_yaml(kind)}" for arg, kind in APP_ARGUMENTS]
    return "\n".join(lines) + "\n"


def _fill(template: str, **values) -> str:
    return string.Template((TEMPLATES / template).read_text()).substitute(values)


def _write_folder(work: Path, checkpoint: Path, name: str, version: str, runtime: str, verify_on: Path | None,
                  log) -> None:
    from segtrain.use.export import export
    from segtrain.use.trained import load_trained

    fmt, model_file, base_image, runtime_requirements = RUNTIMES[runtime]
    trained = load_trained(checkpoint, "cpu", log)  # refuses what segtrain train did not write, in one line
    names, arch = trained.class_names, trained.arch
    void = void_class(names, trained.config, str(checkpoint))
    topics = topic_names(names, void)
    (work / "model").mkdir()
    check = export(checkpoint, fmt, work / "model" / model_file, verify_on=verify_on, raw_input=True, log=log)
    model_name = f"{name}-{arch}"
    metadata = {"format": "segtrain-plugin-v1", "model_file": model_file, "sha256": sha256_of(work / "model" / model_file),
                "runtime": runtime, "model_name": model_name, "arch": arch, "segtrain_version": __version__,
                "class_names": names, "class_colors": trained.class_colors, "void_class": void,
                "published": topics, "image_size": trained.image_size}
    (work / "model" / METADATA_NAME).write_text(json.dumps(metadata, indent=2) + "\n")
    shutil.copytree(APP, work / "app", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    published = [t for t in topics if t is not None]
    description = f"Per-class coverage ({', '.join(published)}) from camera frames, by a {arch} model trained with segtrain"
    (work / "requirements.txt").write_text("\n".join(REQUIREMENTS + runtime_requirements) + "\n")
    (work / "Dockerfile").write_text(_fill("Dockerfile", segtrain_version=__version__, base_image=base_image))
    (work / "sage.yaml").write_text(sage_yaml(name, version, description,
                                              ["image segmentation", "coverage", *names, arch, "segtrain"]))
    (work / "README.md").write_text(_fill(
        "README.md", name=name, description=description, segtrain_version=__version__, checkpoint=checkpoint,
        topics="`, `".join(published), model_file=model_file, base_image=base_image, gpu_note=GPU_NOTES[runtime]))
    (work / "ecr-meta").mkdir()
    (work / "ecr-meta" / "ecr-science-description.md").write_text(
        science_description(name, trained, read_checkpoint(checkpoint), topics, void, check))


def make_plugin(checkpoint: Path, out: Path, name: str | None = None, version: str = "0.1.0", runtime: str = "onnx",
                verify_on: Path | None = None, log=print) -> Path:
    """Write the plugin folder `out` (which must not exist, or be empty) for `checkpoint`."""
    checkpoint, out = Path(checkpoint), output_folder(out, "--out")
    if out.exists() and any(out.iterdir()):
        raise PluginError(f"--out {out}: the folder exists and is not empty; give a new folder (nothing is overwritten).")
    if runtime not in RUNTIMES:
        raise PluginError(f"--runtime {runtime!r}: choose one of {', '.join(RUNTIMES)}.")
    if not re.fullmatch(r"\d+\.\d+\.\d+", version):
        raise PluginError(f"--version {version!r}: the Edge Code Repository wants MAJOR.MINOR.PATCH, e.g. 0.1.0.")
    name = app_name(name, checkpoint)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    except OSError as e:
        raise cannot_write(out, e) from None
    try:
        _write_folder(work, checkpoint, name, version, runtime, verify_on, log)
        if out.exists():
            out.rmdir()
        work.rename(out)
    except OSError as e:
        raise cannot_write(out, e) from None
    finally:
        shutil.rmtree(work, ignore_errors=True)
    log(f"plugin: {out} ({name} {version}, {runtime}); test it: cd {out} && PYWAGGLE_LOG_DIR=test-run "
        "python3 -m app.main -stream IMAGES -sampling-interval 1 (see its README.md)")
    return out
