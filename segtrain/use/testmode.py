"""mode "test" in config.list: the original tool's test mode, done properly. The checkpoint in
pretrained_net predicts every image of ROOT/test/images into ROOT/test/<output_dir>/, and when
ROOT/test/labels exists the predictions are also scored (table printed, metrics.json written)."""

from __future__ import annotations

from pathlib import Path

from segtrain.errors import ConfigError, DatasetError
from segtrain.paths import from_root
from segtrain.use.evaluate import evaluate, format_table, write_json
from segtrain.use.predict import predict


def run_test(root: Path, cfg: dict, log=print) -> dict | None:
    """Returns evaluate's numbers when there are test labels, else None."""
    root = Path(root)
    if not cfg["pretrained_net"]:
        raise ConfigError('config.list: mode "test" needs "pretrained_net", the checkpoint to test '
                          '(e.g. "MODEL-fcn_resnet18/model_best.pth.tar", relative to the data folder).')
    if cfg["output_dir"] in ("images", "labels"):
        raise ConfigError(f"config.list: output_dir {cfg['output_dir']!r} would write into ROOT/test/{cfg['output_dir']}; "
                          "choose another name.")
    checkpoint = from_root(cfg["pretrained_net"], root)
    images = root / "test" / "images"
    if not images.is_dir():
        raise DatasetError(f"{images}: folder not found. Mode \"test\" predicts the images in ROOT/test/images "
                           "(and scores them when ROOT/test/labels holds their masks).")
    out = root / "test" / cfg["output_dir"]
    predict(images, checkpoint, out, overlay_jpeg=True, device=cfg["device"], log=log)
    if not (root / "test" / "labels").is_dir():
        log(f"test: no {root / 'test' / 'labels'}, so the predictions are not scored.")
        return None
    numbers = evaluate(root, checkpoint, split=str(root / "test"), device=cfg["device"], log=log)
    log(format_table(numbers))
    write_json(numbers, out / "metrics.json")
    log(f"test: numbers in {out / 'metrics.json'}")
    return numbers
