"""export: a checkpoint as an ONNX, TorchScript or torch.export (.pt2) file for edge nodes,
verified against the eager model before it is put in place.

By default the files take float32 NCHW normalised images and return logits. With raw_input the
preprocessing travels inside the file (`RawInput`): RGB 0..255 at any size in, logits at that
size out, for consumers that feed raw pixels (the Waggle cloud-cover plugin). Class names,
colours, normalisation, input size, the training config and "input_kind" (raw or normalized)
travel inside every file (ONNX metadata_props / a TorchScript or .pt2 extra file, both under the
key "segtrain", as JSON). With int8 the ONNX file is quantised (see segtrain.use.quantize).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import warnings
from pathlib import Path

import numpy as np
from PIL import Image
import torch
import torch.nn.functional as F
from torch import nn

from segtrain.data.folder import eval_input
from segtrain.errors import SegtrainError
from segtrain.data.images import IMAGE_SUFFIXES, read_image
from segtrain.use.exported import EXTRA_FILE, KINDS, METADATA_KEY, open_exported
from segtrain.paths import cannot_write, output_file
from segtrain.use.trained import TrainedModel, load_trained
from segtrain.data.transforms import eval_transform

MIN_AGREEMENT = 0.999
FORMATS = KINDS
SUFFIXES = {"onnx": ".onnx", "torchscript": ".pt", "pt2": ".pt2"}
VERIFY_IMAGES = 4


class ExportError(SegtrainError):
    pass


class LogitsOnly(nn.Module):
    """torchvision's segmentation models return {"out": ..., "aux": ...}; edge code wants a tensor."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.model(image)["out"]


class RawInput(nn.Module):
    """The eager pipeline's preprocessing and resizing around the model: RGB NCHW in 0..255 (float,
    or uint8 for TorchScript) at any size in, logits (N, C, H, W) at the input's size out.

    Resizing is torchvision's antialiased bilinear, rounded to whole grey levels as the eager path
    does when it resizes the uint8 image, then /255, minus mean, over std (folded into one step).
    """

    def __init__(self, model: nn.Module, image_size: list[int] | None, mean: list[float], std: list[float]):
        super().__init__()
        self.model = LogitsOnly(model)
        self.image_size = list(image_size) if image_size is not None else []  # [] = native size
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1) * 255)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1) * 255)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        height, width = image.shape[-2], image.shape[-1]
        x = image.float()
        if len(self.image_size) == 2:
            x = F.interpolate(x, size=self.image_size, mode="bilinear", align_corners=False, antialias=True)
            x = x.round().clamp(0, 255)
        logits = self.model((x - self.mean) / self.std)
        return F.interpolate(logits, size=[height, width], mode="bilinear", align_corners=False)


def _spatial_dims(metadata: dict):
    """Raw-input files resize inside, so they take small images too; normalised ones need 32 px for the backbone."""
    low = 2 if metadata["input_kind"] == "raw" else 32
    return torch.export.Dim("height", min=low, max=8192), torch.export.Dim("width", min=low, max=8192)


def _onnx(module: nn.Module, example: torch.Tensor, path: Path, metadata: dict, log, fixed_size: bool = False) -> bool:
    """Writes path; returns whether height and width are dynamic (batch always is)."""
    import onnx

    batch = torch.export.Dim("batch", min=1, max=1024)
    height, width = _spatial_dims(metadata)
    dynamic = not fixed_size
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporter's notes on its own internals mean nothing to a user
        try:
            if fixed_size:
                raise ValueError("fixed size asked for")
            program = torch.onnx.export(module, (example,), dynamo=True, verbose=False, input_names=["image"],
                                        output_names=["logits"], dynamic_shapes={"image": {0: batch, 2: height, 3: width}})
        except Exception as e:  # some architectures need a fixed size; keep the batch dynamic
            if not fixed_size:
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
    """Traced, not scripted: edge nodes run torch 1.x, and a scripted file carries every branch of
    F.interpolate, including operators torch 1.x lacks (torch 1.13 refuses it: "Unknown builtin op:
    aten::_upsample_lanczos2d_aa"), while a trace holds only the operators that run, all in torch
    1.11. Batch, size and (raw input) dtype stay dynamic; verification runs a second size."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TorchScript's deprecation notice; it remains the file edge nodes can load
        compiled = torch.jit.trace(module, example, check_trace=False)
        torch.jit.save(compiled, str(path), _extra_files={EXTRA_FILE: json.dumps(metadata)})
    return True


def _pt2(module: nn.Module, example: torch.Tensor, path: Path, metadata: dict, log) -> bool:
    """torch.export's program, any batch and size where the model allows, else the example's size."""
    batch = torch.export.Dim("batch", min=1, max=1024)
    height, width = _spatial_dims(metadata)
    dynamic = True
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            program = torch.export.export(module, (example,), dynamic_shapes=({0: batch, 2: height, 3: width},))
        except Exception as e:
            log(f"note: this model cannot take any input size in torch.export ({type(e).__name__}); exporting for "
                f"{example.shape[2]}x{example.shape[3]} inputs only.")
            dynamic = False
            program = torch.export.export(module, (example,), dynamic_shapes=({0: batch},))
        torch.export.save(program, str(path), extra_files={EXTRA_FILE: json.dumps(metadata)})
    return dynamic


WRITERS = {"onnx": _onnx, "torchscript": _torchscript, "pt2": _pt2}


def exported_module(trained: TrainedModel, size: list[int], raw_input: bool) -> tuple[nn.Module, torch.Tensor]:
    """The module an export writes (logits out, preprocessing inside with raw_input) and its example batch."""
    if raw_input:
        module = RawInput(trained.model, trained.image_size, **trained.normalization).eval()
    else:
        module = LogitsOnly(trained.model).eval()
    # batch 2: torch.export would fix a batch dimension of 1
    return module, (torch.randint(0, 256, (2, 3, *size)).float() if raw_input else torch.randn(2, 3, *size))


def verification_inputs(trained: TrainedModel, size: list[int], dynamic: bool, verify_on: Path | None,
                        raw_input: bool):
    """(what, batch) pairs: random noise, real images (VERIFY_IMAGES from verify_on, else the
    synthetic sky generator's), and with dynamic H/W a second, odd size. Raw-input batches hold
    whole grey levels 0..255, one image per batch at its own size (resized when the file is fixed-size)."""
    generator = torch.Generator().manual_seed(0)

    def noise(*shape):
        if raw_input:
            return torch.randint(0, 256, shape, generator=generator).float()
        return torch.randn(*shape, generator=generator)

    inputs = [("random", noise(2, 3, *size))]
    if verify_on is not None:
        paths = verify_images(verify_on)
        images, what = [read_image(p) for p in paths], f"{len(paths)} image(s) of {verify_on}"
    else:
        from segtrain.data.synthetic import sky_sample

        rng = np.random.default_rng(0)
        images, what = [sky_sample(rng, max(size) * 5 // 4)[0] for _ in range(VERIFY_IMAGES)], "synthetic sky images"
    if raw_input:
        if not dynamic:
            images = [np.asarray(Image.fromarray(image).resize((size[1], size[0]), Image.Resampling.BILINEAR))
                      for image in images]
        inputs += [(f"{what} #{k + 1}", torch.from_numpy(image.transpose(2, 0, 1).copy()).float()[None])
                   for k, image in enumerate(images)]
    else:
        transform = eval_transform(size)
        inputs.append((what, torch.stack([eval_input(image, transform) for image in images])))
    if dynamic:
        odd = [s * 3 // 4 + 5 if s * 3 // 4 + 5 >= 32 else s + 5 for s in size]  # not below the 32 px minimum
        inputs.append((f"random {odd[0]}x{odd[1]}", noise(1, 3, *odd)))
    return inputs


def verify_images(verify_on: Path) -> list[Path]:
    """The images of --verify-on that verification reads: the file, or the first VERIFY_IMAGES of the folder's."""
    paths = [Path(verify_on)] if Path(verify_on).is_file() else sorted(
        p for p in Path(verify_on).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not paths:
        raise ExportError(f"--verify-on {verify_on}: no images found; give an image or a folder of images.")
    return paths[:VERIFY_IMAGES]


def pipeline_logits(model: nn.Module, batch: torch.Tensor, trained: TrainedModel) -> np.ndarray:
    """What predict does with a checkpoint for raw images: each resized as uint8 by torchvision,
    normalised, run, and the logits resized back."""
    transform = eval_transform(trained.image_size)
    out = []
    with torch.inference_mode():
        for image in batch:
            pixels = image.round().clamp(0, 255).to(torch.uint8).permute(1, 2, 0).numpy()
            logits = model(eval_input(pixels, transform)[None])
            out.append(F.interpolate(logits, size=tuple(image.shape[-2:]), mode="bilinear", align_corners=False))
    return torch.cat(out).numpy()


def verify(fmt: str, path: Path, module: nn.Module, inputs, log, pipeline=None) -> dict:
    """Max logit difference and argmax agreement of the exported file against the eager module it
    was made from. For raw input, `pipeline` (the checkpoint's own preprocessing) is compared too,
    for information: torchvision resizes uint8 images in fixed point, the file in float, so single
    pixels differ by one grey level and near-tied logits may flip."""
    _, run = open_exported(path, fmt)
    worst, same, total, same_pipeline = 0.0, 0, 0, 0
    for what, batch in inputs:
        with torch.inference_mode():
            eager = module(batch).numpy()
        exported = run(batch.numpy())
        if exported.shape != eager.shape:
            raise ExportError(f"{path}: exported model gives shape {exported.shape} on {what}, eager {eager.shape}.")
        diff = float(np.abs(exported - eager).max())
        agree = exported.argmax(1) == eager.argmax(1)
        note = ""
        if pipeline is not None:
            with_pipeline = int((exported.argmax(1) == pipeline(batch).argmax(1)).sum())
            same_pipeline += with_pipeline
            note = f"; with the checkpoint's preprocessing {with_pipeline / agree.size:.4%}"
        log(f"verify {fmt} on {what} {tuple(batch.shape)}: max |logit difference| {diff:.3g}, "
            f"argmax agreement {agree.mean():.4%}{note}")
        worst, same, total = max(worst, diff), same + int(agree.sum()), total + agree.size
    result = {"max_abs_logit_difference": worst, "argmax_agreement": same / total}
    if pipeline is not None:
        result["argmax_agreement_with_checkpoint_preprocessing"] = same_pipeline / total
    return result


def _check_request(checkpoint: Path, fmt: str, out: Path, verify_on: Path | None, int8: bool,
                   calibrate_on: Path | None) -> Path:
    """Refuse, before any work, what cannot be exported: returns the output path. The output
    replaces none of what export reads (the checkpoint, the images it verifies on; --calibrate-on's
    images and masks are a data folder's, which no output may replace)."""
    if fmt not in FORMATS:
        raise ExportError(f"--format {fmt!r}: choose one of {', '.join(FORMATS)}.")
    reads = {Path(checkpoint): "the checkpoint"}
    if verify_on is not None:
        reads.update({path: "the --verify-on image" for path in verify_images(verify_on)})
    out = output_file(out, "--out", reads)
    if int8 and (fmt != "onnx" or calibrate_on is None):
        raise ExportError("--int8: INT8 export is ONNX Runtime's static quantisation; use it with --format onnx "
                          "and --calibrate-on ROOT (the training data folder, for calibration and validation).")
    if int8 and not Path(calibrate_on).is_dir():
        raise ExportError(f"--calibrate-on {calibrate_on}: not a folder; give the data folder the model was trained on.")
    return out


def export(checkpoint: Path, fmt: str, out: Path, size: list[int] | None = None, verify_on: Path | None = None,
           raw_input: bool = False, int8: bool = False, calibrate_on: Path | None = None,
           max_iou_drop: float = 0.01, log=print) -> dict:
    """Export, verify, then rename into place: a failed export leaves no file (and an old one intact)."""
    out = _check_request(checkpoint, fmt, out, verify_on, int8, calibrate_on)
    trained = load_trained(checkpoint, "cpu", log)
    # Exported graphs take plain NCHW tensors (torch.export cannot trace channels_last weights into
    # ONNX); the runtime that loads the file chooses its own layout.
    trained.model.to(memory_format=torch.contiguous_format)
    size = list(size) if size else trained.image_size
    if size is None:
        raise ExportError(f"{checkpoint}: the model was trained at native image size, so the export needs an "
                          "example input size: add --size H W (e.g. --size 512 512).")
    if min(size) < 32:
        raise ExportError(f"--size {size[0]} {size[1]}: height and width must be at least 32.")
    eager = LogitsOnly(trained.model).eval()
    module, example = exported_module(trained, size, raw_input)
    if out.suffix.lower() != SUFFIXES[fmt]:
        log(f"note: {out.name}: predict and evaluate recognise {fmt} files by the suffix {SUFFIXES[fmt]}.")
    try:  # a folder beside the output: the writers may add files (ONNX external data), renamed once verified
        out.parent.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    except OSError as e:
        raise cannot_write(out, e) from None
    try:
        tmp = work / f"model{SUFFIXES[fmt]}"
        write = WRITERS[fmt]
        dynamic = write(module, example, tmp, trained.metadata(raw_input), log)
        inputs = verification_inputs(trained, size, dynamic, verify_on, raw_input)
        pipeline = (lambda batch: pipeline_logits(eager, batch, trained)) if raw_input else None
        result = verify(fmt, tmp, module, inputs, log, pipeline)
        if result["argmax_agreement"] < MIN_AGREEMENT and dynamic and fmt == "onnx":
            # A graph can take any size yet be exact only at the example's (PSPNet's adaptive pooling
            # is exported with the example's kernel): export it for that size, and verify again.
            log(f"note: this model's ONNX graph is exact only at {size[0]}x{size[1]}; exporting for that size only.")
            dynamic = write(module, example, tmp, trained.metadata(raw_input), log, fixed_size=True)
            inputs = verification_inputs(trained, size, dynamic, verify_on, raw_input)
            result = verify(fmt, tmp, module, inputs, log, pipeline)
        if result["argmax_agreement"] < MIN_AGREEMENT:
            raise ExportError(
                f"{out}: the exported model agrees with PyTorch on only {result['argmax_agreement']:.3%} of pixels "
                f"(needed {MIN_AGREEMENT:.1%}); nothing was written. Report this with the checkpoint's arch ({trained.arch})."
            )
        if int8:
            from segtrain.use.quantize import quantize_checked

            tmp, numbers = quantize_checked(tmp, work, Path(calibrate_on), max_iou_drop, out, log)
            result.update(numbers)
        os.replace(tmp, out)
    except OSError as e:  # writing the file (a full disk) or renaming it into place
        raise cannot_write(out, e) from None
    finally:
        shutil.rmtree(work, ignore_errors=True)
    shape = "any batch and size" if dynamic else f"any batch, {size[0]}x{size[1]}"
    what = "raw RGB 0..255" if raw_input else "normalised"
    log(f"export: {out} ({fmt}{' int8' if int8 else ''}, {trained.arch}, classes {', '.join(trained.class_names)}; "
        f"input {what}, {shape})")
    return {**result, "dynamic_size": dynamic, "path": str(out)}
