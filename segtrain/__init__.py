"""segtrain: train semantic segmentation models on your own folder of images and masks."""

__version__ = "0.1.0"
