"""Where code runs: devices, torchrun processes, stop signals, data-loading workers."""
