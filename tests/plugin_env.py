"""A Python environment like a Waggle node's for the plugin tests: a fresh venv (no system site
packages, so no torch and no segtrain) with the generated plugin's own requirements.txt installed
from PyPI, made once per test session; pip's cache makes later sessions fast."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

# pip's words when it cannot reach the package index at all
UNREACHABLE = ("NewConnectionError", "Max retries exceeded", "Temporary failure in name resolution",
               "Network is unreachable", "ConnectTimeoutError", "ProxyError")


def node_venv(folder: Path, requirements: Path) -> Path:
    """The venv's python; skips the calling test when PyPI cannot be reached."""
    subprocess.run([sys.executable, "-m", "venv", str(folder)], check=True, capture_output=True, timeout=120)
    python = folder / "bin" / "python"
    # --no-compile: byte-compiling sympy (onnxruntime's) and OpenCV's files took half the install time
    pip = subprocess.run([str(python), "-m", "pip", "install", "-q", "--no-compile", "--disable-pip-version-check", "-r",
                          str(requirements)], capture_output=True, text=True, timeout=900)
    if pip.returncode != 0:
        if any(marker in pip.stdout + pip.stderr for marker in UNREACHABLE):
            pytest.skip(f"PyPI unreachable: cannot install the plugin's requirements.txt ({pip.stderr.strip()[-200:]})")
        raise AssertionError(f"pip install -r {requirements} failed:\n{pip.stderr[-3000:]}")
    return python


def node_env(**extra) -> dict:
    """This process's environment without Python's, pywaggle's and Waggle's settings (PYTHONPATH would
    bring segtrain in)."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "WAGGLE_", "PYWAGGLE_"))}
    return {**clean, **extra}


def run_app(python: Path, plugin: Path, *args, log_dir: Path, env: dict | None = None, timeout: int = 120,
            **popen) -> subprocess.CompletedProcess:
    """`python -m app.main ARGS` in the plugin folder, as its README says, with pywaggle writing to log_dir."""
    return subprocess.run([str(python), "-m", "app.main", *map(str, args)], cwd=plugin,
                          env=node_env(PYWAGGLE_LOG_DIR=str(log_dir), **(env or {})),
                          capture_output=True, text=True, timeout=timeout, **popen)
