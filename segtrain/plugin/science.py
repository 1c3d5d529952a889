"""ecr-meta/ecr-science-description.md: what the app measures and how its model was made, from
the run itself (the checkpoint's config, classes and validation numbers, log.csv beside it), so
the Edge Code Repository page says what was really trained.
"""

from __future__ import annotations

import numpy as np

from segtrain.outputs.curves import LogFileError, read_log
from segtrain.use.trained import TrainedModel

SCORES = ("iu", "precision", "recall", "f1")


def _training_lines(trained: TrainedModel, run: dict) -> list[str]:
    cfg, checkpoint = trained.config, trained.source
    lines = [f"- Data: the folder `{checkpoint.resolve().parent.parent.name}`; labels read as "
             f"{run.get('label_encoding', 'not recorded')}.",
             f"- Model: `{trained.arch}`" + (f" (encoder `{cfg['encoder']}`)" if cfg["encoder"] else "")
             + f", {len(trained.class_names)} classes: {', '.join(trained.class_names)}.",
             f"- Input: the whole frame, resized to {'x'.join(map(str, cfg['image_size'])) if cfg['image_size'] else 'its native size'} "
             "inside the model (RGB 0..255 in; the mask comes back at the frame's size).",
             f"- Training: segtrain {run.get('segtrain_version', '?')}, {run.get('iteration', '?')} iterations "
             f"({run.get('elapsed_time', float('nan')) / 60:.1f} min), "
             f"batch {cfg['batch_size']}, {cfg['optimizer']} at lr {cfg['lr']:g} ({cfg['lr_schedule']} schedule), "
             f"loss {cfg['loss']}, augmentation {'on' if cfg['augment'] else 'off'}, "
             f"ImageNet-pretrained backbone: {({True: 'yes', False: 'no'}).get(cfg['pretrained_backbone'], 'where available')}."]
    log = checkpoint.parent / "log.csv"
    try:
        valid = read_log(log)["valid"]
    except LogFileError:
        return lines
    if len(valid["iteration"]):
        best = int(np.nanargmax(valid["mean_iu"]))
        lines.append(f"- log.csv: {len(valid['iteration'])} validations; best mean IoU {valid['mean_iu'][best]:.4f} "
                     f"at iteration {int(valid['iteration'][best])}.")
    return lines


def _scores_table(class_names: list[str], run: dict, void: int | None) -> list[str]:
    metrics = run.get("valid_metrics")
    if not metrics:
        return ["No validation numbers are stored in this checkpoint."]
    rows = ["| class | IoU | precision | recall | F1 |", "| --- | --- | --- | --- | --- |"]
    for k, name in enumerate(class_names):
        cells = " | ".join(f"{metrics[score][k]:.4f}" if score in metrics else "-" for score in SCORES)
        rows.append(f"| {name}{' (void, not published)' if k == void else ''} | {cells} |")
    return [f"On the run's validation images (iteration {run.get('iteration', '?')}): mean IoU {metrics['mean_iu']:.4f}, "
            f"pixel accuracy {metrics['acc']:.4f}.", ""] + rows


def science_description(title: str, trained: TrainedModel, run: dict, topics: list[str | None], void: int | None,
                        export_check: dict) -> str:
    """run: the checkpoint's own entries (validation numbers, iterations, time), where it has them."""
    published = [f"`{topic}`" for topic in topics if topic is not None]
    void_text = (f" Pixels of the void class `{trained.class_names[void]}` are outside every fraction's "
                 "denominator and are not published." if void is not None else "")
    return "\n".join([
        f"# {title}", "",
        "## Science", "",
        "For each camera frame the app segments every pixel into one of the model's classes and publishes, "
        f"per class, the fraction of the frame it covers: {', '.join(published)}.{void_text} "
        "Every Nth frame (`-sampling-interval`) it also uploads the frame, its mask and an overlay, so the "
        "measurements can be checked by eye.", "",
        "## AI@Edge", "",
        *_training_lines(trained, run), "",
        *_scores_table(trained.class_names, run, void), "",
        "The model runs as segtrain's raw-input export (pre-processing inside the file), checked against the "
        f"trained PyTorch model: argmax agreement {export_check['argmax_agreement']:.4%}, largest logit difference "
        f"{export_check['max_abs_logit_difference']:.3g}. The app's fractions equal `segtrain predict`'s on the same "
        "model file and images.", "",
        "## Using the code", "",
        "Output: " + ", ".join(published) + " (value: fraction 0..1; meta: model, model_sha256, segtrain_version, "
        "image; timestamp: when the frame was taken), and `upload` of `<frame>.jpg`, `<frame>_mask.png` and "
        "`<frame>_overlay.jpg` every `-sampling-interval`'th frame.", "",
        "Input: `-stream` (camera name, stream URL, video file or folder of images), `-interval` seconds between "
        "inferences, `-sampling-interval` N, `-run-once`.", "",
        "Written by `segtrain plugin`.", "",
    ])
