"""The README and docs/ are part of the product: short where they must be, generated where they can
be, and the commands they show run."""

import re
import shlex
from pathlib import Path

import pytest

from conftest import run_cli
from segtrain.cli import build_container_parser, build_parser
from segtrain.config.reference import markdown
from segtrain.data.synthetic import write_sky_folder

REPO = Path(__file__).resolve().parent.parent
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
# A train command shown in the docs runs as shown, then shortened to a few iterations on tiny images:
# the suite has minutes, the docs' runs take five.
SHORT_RUN = ["--set", "time_budget=null", "--set", "max_iteration=2", "--set", "interval_validate=2",
             "--set", "image_size=32", "--set", "batch_size=2", "--set", "n_workers=0"]


def code_blocks(path: Path) -> list[str]:
    return re.findall(r"^```(?:bash|sh)\n(.*?)^```", path.read_text(), flags=re.S | re.M)


def shown_commands(path: Path) -> list[list[str]]:
    """Each `segtrain ...` line of the file's shell blocks (comments dropped), split as bash would."""
    commands = []
    for block in code_blocks(path):
        for line in block.replace("\\\n", " ").splitlines():
            words = shlex.split(line, comments=True) if line.strip() else []
            while words and re.fullmatch(r"[A-Z_]+=.*", words[0]):  # VAR=value before the command
                words = words[1:]
            if words and words[0] == "segtrain":
                commands.append(words[1:])
    return commands


def test_readme_is_short_and_starts_with_the_two_commands_ci_runs():
    text = (REPO / "README.md").read_text()
    assert len(text.splitlines()) <= 150
    first = code_blocks(REPO / "README.md")[0].splitlines()
    assert len(first) == 2 and first[0].endswith(".venv/bin/segtrain demo")
    assert first[1].replace("pip install ", "pip install -q ") in (REPO / ".ci" / "run").read_text()


def test_the_configuration_reference_is_the_code_s_key_table():
    """Regenerate with: python -m segtrain.config.reference > docs/configuration.md"""
    assert (REPO / "docs" / "configuration.md").read_text() == markdown()


def test_every_link_between_the_docs_resolves():
    for path in DOCS:
        for target in re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", path.read_text()):
            assert (path.parent / target).exists(), f"{path.name}: {target}"


@pytest.mark.parametrize("path", DOCS, ids=lambda p: p.name)
def test_every_command_shown_parses_as_segtrain_reads_it(path):
    for words in shown_commands(path):
        words = [w if not w.startswith("~") else "/tmp/x" + w[1:] for w in words]
        parser = build_container_parser() if words and words[0].startswith("-") else build_parser()
        try:
            parser.parse_args(words)
        except SystemExit as e:
            pytest.fail(f"{path.name}: `segtrain {' '.join(words)}` does not parse ({e})")


def test_the_readme_walk_runs_as_shown(tmp_path):
    """init, train, evaluate, predict, export, plugin: the README's commands in order, in a home
    folder whose ~/clouds is a small sky/cloud folder."""
    home = tmp_path / "home"
    write_sky_folder(home / "clouds", n_train=6, n_valid=3, size=48)
    for name in ("config.list", "class_names.list"):  # what init writes
        (home / "clouds" / name).unlink(missing_ok=True)
    ran = []
    for words in shown_commands(REPO / "README.md"):
        words = [str(home) + w[1:] if w.startswith("~") else w for w in words]
        if words[0] == "weights":  # fetches from the internet: tests/test_weights.py covers it offline
            continue
        if words[0] == "train":
            words += SHORT_RUN
        result = run_cli(*words, cwd=home, timeout=600)
        assert result.returncode == 0, f"segtrain {' '.join(words)}\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}"
        ran.append(words[0])
    assert {"init", "train", "evaluate", "predict", "export", "plugin"} <= set(ran)
    assert (home / "cloud-masks" / "summary.csv").is_file() and (home / "cloud.onnx").is_file()
