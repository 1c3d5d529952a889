"""segtrain: train semantic segmentation models on your own folder of images and masks."""

from segtrain.runtime.cpu_threads import choose_before_torch_loads

# How PyTorch's CPU threads wait is read once, when torch loads, so it is decided here, first
# (runtime/cpu_threads.py: PyTorch's defaults on idle cores, sleeping threads on busy ones).
CPU_THREADS = choose_before_torch_loads()

__version__ = "0.1.0"
