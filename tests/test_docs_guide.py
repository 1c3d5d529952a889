"""Every shell line that docs/*.md shows runs, page by page, in order, as one session of a user.

A page is walked in a sandbox home folder (HOME) holding what the user brings: tiny sky folders
(`~/clouds`, also the page's `ROOT`, as `segtrain download` arranges it; `~/my_images` as a user's own
folder), a few new images to predict. Each line runs with the installed `segtrain` (the real command,
forked from a process that imported torch: cli_process.py), `torchrun` or bash; `cd` and `export`
change the session as they would in a shell. Trainings are shortened as the README walk's are
(SHORT_RUN) and iteration counts the page gives are scaled down (SCALED), so a page costs seconds.
Lines that need what this machine lacks are skipped by NOT_RUN only, and the page marks each of
them with the same reason in its comment.
"""

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cli_process import run_segtrain
from segtrain.api import init
from segtrain.data.synthetic import sky_sample, write_sky_folder
from test_docs import REPO, SHORT_RUN, code_blocks

PAGES = sorted((REPO / "docs").glob("*.md"))
# The start of each line not run, and the reason; the page's comment on that line must say the reason.
NOT_RUN = {
    "segtrain download waggle_clouds": "needs internet",  # tests/test_starting.py: from a local server
    "segtrain weights": "needs internet",  # tests/test_weights.py: weight files the tests write
    "docker ": "needs Docker",  # tests/test_starting.py: the entrypoint without Docker
    "torchrun --nproc_per_node=4": "needs 4 GPUs",
    "torchrun --nnodes=2": "needs two machines",
    ".venv/bin/python bench/": "minutes each",  # tests/test_bench_smoke.py runs each one's --smoke form
}
# An iteration count shown -> the count the walk runs (SHORT_RUN trains 2 iterations).
SCALED = {"--stop-after 500": "--stop-after 1", "max_iteration=8000": "max_iteration=3"}
ROOT_PLACEHOLDER = "ROOT"  # the pages' name for the data folder: the walk's ~/clouds
SIZE = 32  # the images' side: SHORT_RUN trains at 32 px, the smallest input the backbones take
# One thread per training: the commands fork from a server that loaded torch (cli_process.py), so
# none can choose sleeping threads on a busy machine, where two spinning threads ran a 32 px model
# many times slower than one; at 32 px a second thread gains nothing on idle cores.
WALK_RUN = ["--set", "threads=1"]


def shown_lines(path: Path) -> list[tuple[str, str]]:
    """(command, comment) per line of the page's shell blocks, continuation lines joined; the comment
    is the line's own and the block's leading comment lines (which speak for every line under them)."""
    lines = []
    for block in code_blocks(path):
        header, started = [], False
        for line in block.replace("\\\n", " ").splitlines():
            if line.lstrip().startswith("#"):
                header += [] if started else [line.strip()]
                continue
            command, _, comment = line.partition(" #")
            if command.strip():
                started = True
                lines.append((command.strip(), " ".join([*header, comment.strip()])))
    return lines


def not_run_reason(command: str) -> str | None:
    return next((reason for start, reason in NOT_RUN.items() if command.startswith(start)), None)


def sandbox(home: Path) -> Path:
    """What a user of the page has before its first line: returns ~/clouds (ROOT)."""
    clouds = write_sky_folder(home / "clouds", n_train=4, n_valid=2, size=SIZE)
    write_sky_folder(home / "extra", n_train=2, n_valid=0, size=SIZE, seed=1)
    (home / "extra" / "train").rename(clouds / "test")  # labelled test images, for --split test
    init(clouds, log=lambda *args: None)  # the starter config.list that `segtrain download` writes, as init does
    own = write_sky_folder(home / "my_images", n_train=4, n_valid=2, size=SIZE, seed=2)
    (own / "class_names.list").unlink()  # a user's own folder: init writes it
    shutil.copytree(clouds / "valid" / "images", home / "new_images")
    Image.fromarray(sky_sample(np.random.default_rng(3), 2 * SIZE)[0]).save(home / "big.jpg")
    (home / "weights").mkdir()  # what `segtrain weights` (not run: needs internet) would have filled
    return clouds


class Session:
    """A shell's state across the page's lines: working folder and environment."""

    def __init__(self, home: Path, root: Path):
        self.home, self.root, self.cwd = home, root, home
        self.env = {**os.environ, "HOME": str(home), "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "2",
                    "PYTHONPATH": str(REPO)}

    def expand(self, word: str) -> str:
        word = re.sub(rf"(?<![\w-]){ROOT_PLACEHOLDER}(?![\w-])", str(self.root), word)
        return re.sub(r"(^|=)~(?=/|$)", lambda m: m.group(1) + str(self.home), word)

    def run(self, line: str) -> list[str]:
        """Run one shown line (simple commands joined by &&); returns the segtrain commands it ran."""
        ran = []
        for shown in SCALED:
            line = line.replace(shown, SCALED[shown])
        for piece in line.split(" && "):
            words = [self.expand(w) for w in shlex.split(piece)]
            env = dict(self.env)
            while words and re.fullmatch(r"[A-Za-z_]+=.*", words[0]):  # VAR=value before the command
                key, _, value = words.pop(0).partition("=")
                env[key] = value
            result = self.simple_command(words, env)
            assert result.returncode == 0, f"`{piece}`\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
            if words[0] == "segtrain":
                ran.append(words[1])
                for flag in ("--out", "--json"):  # a file or folder the command says it writes is there
                    if flag in words:
                        assert (self.cwd / words[words.index(flag) + 1]).exists(), piece
        return ran

    def simple_command(self, words: list[str], env: dict) -> subprocess.CompletedProcess:
        if words[0] == "cd":
            self.cwd = (self.cwd / words[1]).resolve(strict=True)
            return subprocess.CompletedProcess(words, 0, "", "")
        if words[0] == "export":
            key, _, value = words[1].partition("=")
            self.env[key] = value
            return subprocess.CompletedProcess(words, 0, "", "")
        if words[0] == "segtrain":
            return run_segtrain(shortened(words[1:]), cwd=self.cwd, env=env, timeout=300)
        if words[0] == "torchrun":
            torchrun = str(Path(sys.executable).with_name("torchrun"))
            return subprocess.run([torchrun, *shortened(words[1:])], cwd=self.cwd, env=env, capture_output=True,
                                  text=True, timeout=300)
        return subprocess.run(["bash", "-c", shlex.join(words)], cwd=self.cwd, env=env, capture_output=True,
                              text=True, timeout=60)


def shortened(args: list[str]) -> list[str]:
    """A training command with SHORT_RUN and WALK_RUN after the shown --set (so the walk's settings
    win), but an iteration count the line gives (already SCALED) kept."""
    if args[0] != "train" and not args[0].startswith("-"):  # torchrun's and the original container's form train
        return args
    kept = {"max_iteration"} & {a.split("=")[0] for a in args}
    short = [word for key, value in zip(SHORT_RUN[::2], SHORT_RUN[1::2])
             if value.split("=")[0] not in kept for word in (key, value)]
    return args + short + WALK_RUN


def test_every_line_not_run_is_marked_so_on_its_page_and_listed_once():
    for path in PAGES:
        for command, comment in shown_lines(path):
            reason = not_run_reason(command)
            assert reason is None or reason in comment, f"{path.name}: `{command}` is not run ({reason}): say so"
    shown = [command for path in PAGES for command, _ in shown_lines(path)]
    assert all(any(command.startswith(start) for command in shown) for start in NOT_RUN)  # none outlives its line
    assert all(any(count in command for command in shown) for count in SCALED)


@pytest.mark.parametrize("path", [p for p in PAGES if shown_lines(p)], ids=lambda p: p.name)
def test_every_line_shown_runs_in_order(path, tmp_path):
    home = tmp_path / "home"
    session = Session(home, sandbox(home))
    ran = []
    for command, _ in shown_lines(path):
        if not_run_reason(command) is None:
            ran += session.run(command)
    assert ran, f"{path.name}: no segtrain command ran"


def test_the_guide_is_walked():
    assert {p.name for p in PAGES if shown_lines(p)} >= {"guide.md"}
