"""The version segtrain reports (in --version, checkpoints, exported files and report.html)."""

__version__ = "0.1.0"
