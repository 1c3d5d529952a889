"""export: a checkpoint as an ONNX or TorchScript file for edge nodes, verified against the eager
model before it is put in place.

Both files take float32 NCHW normalised images and return logits; class names, colours,
normalisation and input size travel inside them (ONNX metadata_props / a TorchScript extra
file, both under the key "segtrain", as JSON).
"""

from __future__ import annotations

import json
import os
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from segtrain.data.folder import eval_input
from segtrain.errors import SegtrainError
from segtrain.data.images import IMAGE_SUFFIXES, read_image
from segtrain.use.onnx_predictor import METADATA_KEY
from segtrain.paths import cannot_write, output_file
from segtrain.use.trained import TrainedModel, load_trained
from segtrain.data.transforms import eval_transform

MIN_AGREEMENT = 0.999
FORMATS = ("onnx", "torchscript")
VERIFY_IMAGES = 4
TORCHSCRIPT_EXTRA = f"{METADATA_KEY}.json"


class ExportError(SegtrainError):
    pass


class LogitsOnly(nn.Module):
    """torchvision's segmentation models return {"out": ..., "aux": ...}; edge code wants a tensor."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.model(image)["out"]


def _onnx(module: nn.Module, example: torch.Tensor, path: Path, metadata: dict, log) -> bool:
    """Writes path; returns whether height and width are dynamic (batch always is)."""
    import onnx

    batch = torch.export.Dim("batch", min=1, max=1024)
    height, width = torch.export.Dim("height", min=32, max=8192), torch.export.Dim("width", min=32, max=8192)
    dynamic = True
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporter's notes on its own internals mean nothing to a user
        try:
            program = torch.onnx.export(module, (example,), dynamo=True, verbose=False, input_names=["image"],
                                        output_names=["logits"], dynamic_shapes={"image": {0: batch, 2: height, 3: width}})
        except Exception as e:  # some architectures need a fixed size; keep the batch dynamic
            log(f"note: this model cannot take any input size in ONNX ({type(e).__name__}); exporting for "
                f"{example.shape[2]}x{example.shape[3]} inputs only.")
            dynamic = False
            program = torch.onnx.export(module, (example,), dynamo=True, verbose=False, input_names=["image"],
                                        output_names=["logits"], dynamic_shapes={"image": {0: batch}})
    proto = program.model_proto
    if dynamic and not all(d.dim_param for d in proto.graph.input[0].type.tensor_type.shape.dim[2:]):
        # The exporter may fix the size without failing (smp's SegFormer): say so, verify at that size.
        log(f"note: this model's ONNX graph takes {example.shape[2]}x{example.shape[3]} inputs only.")
        dynamic = False
    entry = proto.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, json.dumps(metadata)
    onnx.save(proto, str(path))
    return dynamic


def _torchscript(module: nn.Module, example: torch.Tensor, path: Path, metadata: dict, log) -> bool:
    """Scripted (any input size) where the model allows, else traced at the example's size."""
    dynamic = True
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TorchScript's deprecation notice; it remains the file edge nodes can load
        try:
            compiled = torch.jit.script(module)
        except Exception as e:
            log(f"note: scripting failed ({type(e).__name__}); tracing at {example.shape[2]}x{example.shape[3]}.")
            compiled = torch.jit.trace(module, example)
            dynamic = False
        torch.jit.save(compiled, str(path), _extra_files={TORCHSCRIPT_EXTRA: json.dumps(metadata)})
    return dynamic


def _runner(fmt: str, path: Path):
    if fmt == "onnx":
        import onnxruntime as ort

        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name
        return lambda x: session.run(None, {name: x.numpy()})[0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        loaded = torch.jit.load(str(path), map_location="cpu")
    return lambda x: loaded(x).detach().numpy()


def verification_inputs(trained: TrainedModel, size: list[int], dynamic: bool, verify_on: Path | None):
    """(what, batch) pairs: random noise, real images (VERIFY_IMAGES from verify_on, else the
    synthetic sky generator's), and with dynamic H/W a second, odd size."""
    generator = torch.Generator().manual_seed(0)
    inputs = [("random", torch.randn(2, 3, *size, generator=generator))]
    if verify_on is not None:
        paths = [verify_on] if Path(verify_on).is_file() else sorted(
            p for p in Path(verify_on).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        if not paths:
            raise ExportError(f"--verify-on {verify_on}: no images found; give an image or a folder of images.")
        images, what = [read_image(p) for p in paths[:VERIFY_IMAGES]], f"{min(len(paths), VERIFY_IMAGES)} image(s) of {verify_on}"
    else:
        from segtrain.data.synthetic import sky_sample

        rng = np.random.default_rng(0)
        images, what = [sky_sample(rng, max(size))[0] for _ in range(VERIFY_IMAGES)], "synthetic sky images"
    transform = eval_transform(size)
    inputs.append((what, torch.stack([eval_input(image, transform) for image in images])))
    if dynamic:
        odd = [s * 3 // 4 + 5 for s in size]
        inputs.append((f"random {odd[0]}x{odd[1]}", torch.randn(1, 3, *odd, generator=generator)))
    return inputs


def verify(fmt: str, path: Path, module: nn.Module, inputs, log) -> dict:
    """Max logit difference and argmax agreement of the exported file against the eager model."""
    run = _runner(fmt, path)
    worst, same, total = 0.0, 0, 0
    for what, batch in inputs:
        with torch.inference_mode():
            eager = module(batch).numpy()
        exported = run(batch)
        if exported.shape != eager.shape:
            raise ExportError(f"{path}: exported model gives shape {exported.shape} on {what}, eager {eager.shape}.")
        diff = float(np.abs(exported - eager).max())
        agree = exported.argmax(1) == eager.argmax(1)
        log(f"verify {fmt} on {what} {tuple(batch.shape)}: max |logit difference| {diff:.3g}, "
            f"argmax agreement {agree.mean():.4%}")
        worst, same, total = max(worst, diff), same + int(agree.sum()), total + agree.size
    return {"max_abs_logit_difference": worst, "argmax_agreement": same / total}


def export(checkpoint: Path, fmt: str, out: Path, size: list[int] | None = None, verify_on: Path | None = None,
           log=print) -> dict:
    """Export, verify, then rename into place: a failed export leaves no file (and an old one intact)."""
    if fmt not in FORMATS:
        raise ExportError(f"--format {fmt!r}: choose one of {', '.join(FORMATS)}.")
    out = output_file(out, "--out")
    trained = load_trained(checkpoint, "cpu", log)
    size = list(size) if size else trained.image_size
    if size is None:
        raise ExportError(f"{checkpoint}: the model was trained at native image size, so the export needs an "
                          "example input size: add --size H W (e.g. --size 512 512).")
    if min(size) < 32:
        raise ExportError(f"--size {size[0]} {size[1]}: height and width must be at least 32.")
    module = LogitsOnly(trained.model).eval()
    example = torch.randn(2, 3, *size)  # not 1: torch.export would fix a batch of 1 into some graphs (MAnet, SegFormer)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
    except OSError as e:
        raise cannot_write(out, e) from None
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        write = _onnx if fmt == "onnx" else _torchscript
        dynamic = write(module, example, tmp, trained.metadata(), log)
        result = verify(fmt, tmp, module, verification_inputs(trained, size, dynamic, verify_on), log)
        if result["argmax_agreement"] < MIN_AGREEMENT:
            raise ExportError(
                f"{out}: the exported model agrees with PyTorch on only {result['argmax_agreement']:.3%} of pixels "
                f"(needed {MIN_AGREEMENT:.1%}); nothing was written. Report this with the checkpoint's arch ({trained.arch})."
            )
        os.replace(tmp, out)
    except OSError as e:  # writing the file (a full disk) or renaming it into place
        raise cannot_write(out, e) from None
    finally:
        if tmp.exists():
            tmp.unlink()
    shape = "any batch and size" if dynamic else f"any batch, {size[0]}x{size[1]}"
    log(f"export: {out} ({fmt}, {trained.arch}, classes {', '.join(trained.class_names)}; input {shape})")
    return {**result, "dynamic_size": dynamic, "path": str(out)}
