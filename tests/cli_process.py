"""`python -m segtrain ARGS` in a new process, without paying torch's import for each command.

A test suite that runs the real command ~60 times spent ~2-3 s of each starting Python and
importing torch and torchvision (torchvision alone pulls in torch._dynamo). Here a multiprocessing
fork server imports them once; each command is a fresh process forked from it, with the command
line, environment, working directory, umask and stdout/stderr files of its own, run the way
segtrain/__main__.py runs it, so exit codes, one-line errors, exit-time handlers and timeouts are
the real command's. The server never computes, so no OpenMP thread pool exists to be forked.
"""

from __future__ import annotations

import atexit
import multiprocessing
import os
import runpy
import subprocess
import sys
import tempfile
import traceback
from pathlib import Path

# Each command finds torch loaded here, so it keeps the OpenMP wait policy that the server's environment
# gave libgomp (conftest.py sets GOMP_SPINCOUNT) and says so; the choice a real command makes before
# torch loads is tested in processes of its own (test_cpu_threads.py).
PRELOAD = ["segtrain", "torch", "torchvision", "segmentation_models_pytorch", "segtrain.cli"]
_context = None


def _server():
    global _context
    if _context is None:
        _context = multiprocessing.get_context("forkserver")
        _context.set_forkserver_preload(PRELOAD)
    return _context


def _command(argv: list[str], cwd: str | None, env: dict, umask: int, out_path: str, err_path: str) -> None:
    """In the forked child: become `python -m segtrain ARGV` and exit with its code."""
    os.umask(umask)
    os.environ.clear()
    os.environ.update(env)
    if cwd is not None:
        os.chdir(cwd)
    sys.path[0:0] = [os.getcwd()]  # what `python -m` puts first
    for fd, path in ((1, out_path), (2, err_path)):
        target = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.dup2(target, fd)
        os.close(target)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    sys.stdin = open(0, closefd=False)
    sys.stdout = open(1, "w", buffering=1, encoding="utf-8", errors="backslashreplace", closefd=False)
    sys.stderr = open(2, "w", buffering=1, encoding="utf-8", errors="backslashreplace", closefd=False)
    sys.argv = [str(Path(__import__("segtrain").__file__).with_name("__main__.py")), *argv]
    code = 0
    try:
        runpy.run_module("segtrain", run_name="__main__", alter_sys=True)
    except SystemExit as e:
        if e.code is None or isinstance(e.code, int):
            code = e.code or 0
        else:
            print(e.code, file=sys.stderr)
            code = 1
    except BaseException:
        traceback.print_exc()
        code = 1
    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def run_segtrain(argv: list[str], cwd=None, env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    """Like subprocess.run([python, -m, segtrain, *argv], capture_output=True, text=True, ...)."""
    umask = os.umask(0o077)  # read it: a subprocess inherits the caller's umask, this child the server's
    os.umask(umask)
    with tempfile.TemporaryDirectory(prefix="segtrain-cli-") as scratch:
        out, err = os.path.join(scratch, "stdout"), os.path.join(scratch, "stderr")
        process = _server().Process(target=_command, args=(argv, None if cwd is None else str(cwd),
                                                           dict(os.environ if env is None else env), umask, out, err))
        process.start()
        process.join(timeout)
        if process.is_alive():
            process.kill()
            process.join()
            raise subprocess.TimeoutExpired([sys.executable, "-m", "segtrain", *argv], timeout)

        def read(path):
            with open(path, encoding="utf-8", errors="backslashreplace") as f:
                return f.read()
        return subprocess.CompletedProcess([sys.executable, "-m", "segtrain", *argv], process.exitcode,
                                           read(out), read(err))
