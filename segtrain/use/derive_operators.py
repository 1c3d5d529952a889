"""Writes model_operators.json: what segtrain's own TorchScript and .pt2 exports hold, for every
model of the registry (each with its default encoder), U-Net with one encoder of each other smp
family and every smp architecture with mobilenet_v2 (see combinations()), raw-input and normalised, fp32. The INT8 path is ONNX only. model_file_check refuses any
file holding more.

Run it after changing the registry, the exporter or torch (takes some minutes on 2 cores):

    python -m segtrain.use.derive_operators

tests/test_model_file_safety.py exports a few registry models and fails when one of them emits
anything the file lacks.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import torch

from segtrain.use.model_file_check import (OPERATORS_FILE, PT2_MEMBERS, Archive, allowed, check_pt2,
                                           check_script_module, check_torchscript, json_fields, pt2_json_members,
                                           script_operators)

SPEC_KEYS = ("in_spec", "out_spec")
# One encoder of each smp family the defaults (resnet34, mit_b0) leave out: families differ in their
# operators (Swish, concatenated dense blocks, ...), the members of one family in depth and width.
ENCODER_FAMILIES = ("resnext50_32x4d", "dpn68", "vgg11_bn", "se_resnet50", "densenet121", "inceptionv4",
                    "inceptionresnetv2", "efficientnet-b0", "mobilenet_v2", "xception", "mobileone_s0")


def fresh_model(name: str, size: int, encoder: str | None = None):
    """An untrained registry model as export sees it (a TrainedModel), at image size `size`."""
    from segtrain.config.load import resolve
    from segtrain.data.classes import voc_colormap
    from segtrain.data.transforms import MEAN, STD
    from segtrain.models.registry import build_model
    from segtrain.use.trained import TrainedModel

    torch.manual_seed(0)
    config = resolve({"model": name, "image_size": size, "batch_size": 2, "pretrained_backbone": False,
                      **({"encoder": encoder} if encoder else {})})
    model = build_model(name, 2, encoder=config["encoder"]).eval()
    return TrainedModel(model, name, ["sky", "cloud"], voc_colormap(2), {"mean": list(MEAN), "std": list(STD)},
                        config, torch.device("cpu"), Path(name))


def export_size(name: str) -> int:
    from segtrain.models.registry import MODELS

    return max(64, MODELS[name].min_side)


def write_exports(name: str, folder: Path, encoder: str | None = None, size: int | None = None) -> list[Path]:
    """The TorchScript and .pt2 files segtrain's exporter writes for `name`, raw and normalised."""
    from segtrain.use.export import WRITERS, exported_module

    size = size or export_size(name)
    trained = fresh_model(name, size, encoder)
    paths = []
    for fmt, suffix in (("torchscript", ".pt"), ("pt2", ".pt2")):
        for raw_input in (False, True):
            stem = f"{name}{'-' + encoder if encoder else ''}{'' if size == export_size(name) else f'-{size}'}"
            path = folder / f"{stem}-{'raw' if raw_input else 'normalized'}{suffix}"
            module, example = exported_module(trained, [size, size], raw_input)
            WRITERS[fmt](module, example, path, trained.metadata(raw_input), log=lambda *a: None)
            paths.append(path)
    return paths


def file_contents(path: Path) -> dict[str, set]:
    """What one of segtrain's own exports holds, as model_operators.json lists it."""
    if path.suffix == ".pt":
        return {"torchscript_operators": script_operators(torch.jit.load(str(path), map_location="cpu"))}
    found = {"pt2_operators": set(), "pt2_specs": set(), "pt2_json_fields": set()}

    def note(field, value):
        key = field.rsplit(":", 1)[0].rsplit("/", 1)[-1]
        if key == "target":
            found["pt2_operators"].add(value)
        elif key in SPEC_KEYS:
            found["pt2_specs"].add(value)

    for record, tree in pt2_json_members(Archive(path, PT2_MEMBERS)).items():
        json_fields(tree, record, found["pt2_json_fields"], check=note)
    return found


def combinations() -> list[tuple[str, str | None, int]]:
    """(model, encoder or None for its default, image size) whose exports the list is derived from:
    every registry model; U-Net with each encoder family; every smp architecture with mobilenet_v2
    (the light edge encoder: a decoder's operators can depend on its encoder); PAN also below its
    128 px minimum, where the model pads its input (aten::rsub)."""
    from segtrain.models.registry import MODELS, SMP, names

    pairs = [(name, None) for name in MODELS] + [("unet", encoder) for encoder in ENCODER_FAMILIES]
    pairs += [(arch, "mobilenet_v2") for arch in names(SMP) if (arch, "mobilenet_v2") not in pairs]
    padded = [(name, encoder, 32) for name, encoder in pairs if MODELS[name].min_side and encoder in (None, "mobilenet_v2")]
    return [(name, encoder, export_size(name)) for name, encoder in pairs] + padded


def main() -> int:
    totals: dict[str, set] = {}
    models = combinations()
    with tempfile.TemporaryDirectory() as folder:
        files = []
        for name, encoder, size in models:
            print(f"exporting {name} {encoder or ''} at {size} px", flush=True)
            files += write_exports(name, Path(folder), encoder, size)
        for path in files:
            for key, values in file_contents(path).items():
                totals.setdefault(key, set()).update(values)
        OPERATORS_FILE.write_text(json.dumps({
            "written_by": "python -m segtrain.use.derive_operators",
            "torch": torch.__version__,
            "models": [f"{name} {encoder or 'default encoder'} {size} px" for name, encoder, size in models],
            **{key: sorted(values) for key, values in sorted(totals.items())},
        }, indent=1) + "\n")
        allowed.cache_clear()
        for path in files:  # every export segtrain makes passes the check that uses the list
            if path.suffix == ".pt":
                check_torchscript(path)
                check_script_module(torch.jit.load(str(path), map_location="cpu"))
            else:
                check_pt2(path)
    print(f"wrote {OPERATORS_FILE}: " + ", ".join(f"{len(v)} {k}" for k, v in sorted(totals.items())))
    return 0


if __name__ == "__main__":
    sys.exit(main())
