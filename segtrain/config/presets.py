"""--image_type presets: what a kind of dataset implies about its classes and masks."""

from __future__ import annotations

from segtrain.errors import ConfigError

# name -> (default class names, config defaults the preset implies; config.list still wins)
PRESETS: dict[str, tuple[list[str] | None, dict]] = {
    # Detect the mask encoding; classes from class_names.list.
    "auto": (None, {}),
    # The original container's cloud dataset: grey masks where a value above 175 is cloud (so JPEG
    # and anti-aliased masks work), 20% of train/ held out when there is no valid/.
    "waggle_cloud": (["sky", "cloud"], {"label_threshold": 175, "valid_fraction": 0.2}),
}


def preset(name: str) -> tuple[list[str] | None, dict]:
    if name not in PRESETS:
        raise ConfigError(f"--image_type {name!r} is not a known preset; choose one of {', '.join(PRESETS)}.")
    return PRESETS[name]
