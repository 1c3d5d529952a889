"""INT8 ONNX for CPU edge nodes: ONNX Runtime static quantisation, calibrated on the training
images of the data folder, accepted only when mean IoU on that folder's validation split (the
checkpoint's own split) drops by no more than the user's limit. Both files are then timed on one
validation image, and export says when the INT8 one is not faster on this CPU.

Only convolutions are quantised (per output channel, QDQ format): they are nearly all of the
work, and leaving resizing, normalisation and the classifier's last resize in float keeps
raw-input files exact where it is cheap to be.
"""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path

import numpy as np

from segtrain.data.folder import inspect_root
from segtrain.data.images import read_image
from segtrain.errors import SegtrainError
from segtrain.use.evaluate import count
from segtrain.use.exported import METADATA_KEY, ExportedPredictor

CALIBRATION_IMAGES = 32  # ONNX Runtime's min-max calibration settles within a few dozen images
# Timing both files costs at most about this many seconds: enough alternating runs for a stable median
# on a small model, and a minimum of three on a large one.
SPEED_SECONDS = 4.0


class QuantizeError(SegtrainError):
    pass


class Calibration:
    """onnxruntime's CalibrationDataReader protocol: the file's own input for each image, one at a time."""

    def __init__(self, predictor: ExportedPredictor, images: list[Path], input_name: str):
        self.predictor, self.images, self.input_name = predictor, list(images), input_name

    def get_next(self):
        if not self.images:
            return None
        return {self.input_name: self.predictor.model_input(read_image(self.images.pop(0)))[None]}


def quantize(fp32: Path, int8: Path, calibration, work: Path) -> None:
    """fp32 ONNX -> int8 ONNX with the same metadata (plus "int8": true)."""
    import onnx
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    prepared = work / "prepared.onnx"
    # ONNX shape inference and folding, as onnxruntime recommends; its symbolic shape inference
    # (meant for transformers) gives up on LR-ASPP's dynamic-size pooling branch
    quant_pre_process(str(fp32), str(prepared), skip_symbolic_shape=True)
    quantize_static(str(prepared), str(int8), calibration, quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, op_types_to_quantize=["Conv"])
    source = {p.key: p.value for p in onnx.load(str(fp32), load_external_data=False).metadata_props}
    model = onnx.load(str(int8))
    del model.metadata_props[:]
    for key, value in source.items():
        entry = model.metadata_props.add()
        entry.key = key
        entry.value = json.dumps({**json.loads(value), "int8": True}) if key == METADATA_KEY else value
    onnx.save(model, str(int8))


def quantize_checked(fp32: Path, work: Path, root: Path, max_iou_drop: float, out: Path, log=print):
    """(int8 file in `work`, numbers) once its mean IoU on ROOT's validation split is within max_iou_drop
    of the fp32 file's; else QuantizeError and nothing is kept."""
    # Threads that sleep between runs, so that timing the two files in turn is fair (see onnx_session_options)
    reference = ExportedPredictor(fp32, kind="onnx", spinning=False)
    spec = inspect_root(root, {**reference.config, "batch_size": 1}, reference.class_names)
    if not spec.valid:
        raise QuantizeError(f"--calibrate-on {root}: no validation images to measure the INT8 model on; "
                            "give the data folder the model was trained on (train/ and valid/, or valid_fraction > 0).")
    picks = np.linspace(0, len(spec.train) - 1, min(CALIBRATION_IMAGES, len(spec.train))).round().astype(int)
    images = [spec.train[k].image for k in sorted(set(picks.tolist()))]
    log(f"int8: calibrating on {len(images)} training image(s) of {root}")
    import onnxruntime as ort

    input_name = ort.InferenceSession(str(fp32), providers=["CPUExecutionProvider"]).get_inputs()[0].name
    int8 = work / "model.int8.onnx"
    quantize(fp32, int8, Calibration(reference, images, input_name), work)
    before = count(reference, spec.valid, spec.decoder)["mean_iu"]
    quantized = ExportedPredictor(int8, kind="onnx", spinning=False)  # scored, then timed: one session for both
    after = count(quantized, spec.valid, spec.decoder)["mean_iu"]
    log(f"int8: mean IoU on {len(spec.valid)} validation image(s) ({spec.valid_source}): fp32 {before:.4f}, "
        f"int8 {after:.4f} (change {after - before:+.4f}; allowed drop {max_iou_drop})")
    if not before - after <= max_iou_drop:  # NaN (nothing to score) refuses too
        raise QuantizeError(
            f"{out}: INT8 quantisation drops mean IoU from {before:.4f} to {after:.4f} on the validation split of "
            f"{root}, more than --max-iou-drop {max_iou_drop}; nothing was written. Use the fp32 export, or "
            "allow a larger drop with --max-iou-drop.")
    example = reference.model_input(read_image(spec.valid[0].image))
    ms_fp32, ms_int8 = per_image_ms(reference, quantized, example)
    speed = ms_fp32 / ms_int8
    log(f"int8: {milliseconds(ms_int8)} ms an image against {milliseconds(ms_fp32)} ms for fp32 on this CPU ({speed:.2f}x the speed of fp32, "
        f"batch 1, input {example.shape[1]}x{example.shape[2]})")
    if speed < 1:
        # Models of depthwise convolutions (LR-ASPP's MobileNetV3) gain little from INT8 and pay for the
        # quantise/dequantise steps around the ops that stay in float; say so rather than ship it silently.
        log(f"note: here the INT8 file is slower than the fp32 one; for {reference.metadata.get('arch', 'this model')} "
            "it saves size (about 4x), not time. Ship the fp32 export unless INT8 measures faster on the edge device itself.")
    return int8, {"mean_iu_fp32": before, "mean_iu_int8": after, "calibration_images": len(images),
                  "ms_fp32": ms_fp32, "ms_int8": ms_int8, "speed_int8_vs_fp32": speed}


def milliseconds(ms: float) -> str:
    """Three significant digits, so a tiny model's 0.71 ms is not printed as 0.7 (a 7% rounding the
    printed ratio would disagree with), and no exponent for a large one's 1234 ms."""
    return f"{ms:.0f}" if ms >= 100 else f"{ms:.3g}"


def per_image_ms(fp32: ExportedPredictor, int8: ExportedPredictor, example: np.ndarray) -> tuple[float, float]:
    """Median milliseconds of one run of each file on `example` (the model's input for one image),
    alternating runs, so that a change of the machine's load falls on both alike."""
    batch = example[None]
    runs = (fp32.run, int8.run)
    for run in runs:  # the first run allocates and picks kernels
        run(batch)
    times: tuple[list[float], list[float]] = ([], [])
    deadline = time.perf_counter() + SPEED_SECONDS
    while len(times[0]) < 3 or (len(times[0]) < 20 and time.perf_counter() < deadline):
        for spent, run in zip(times, runs):
            start = time.perf_counter()
            run(batch)
            spent.append(time.perf_counter() - start)
    return 1000 * statistics.median(times[0]), 1000 * statistics.median(times[1])
