"""The run folder's one rule (run_folder.py) on a real file system: the "-N" of a name an
earlier run holds, --resume finding a run's folder, and the longest output_dir that still fits."""

import errno
import os

import pytest

from segtrain.config.recipe import FIT_KEY
from segtrain.models.registry import recipe_choices
from segtrain.errors import CheckpointError
from segtrain.run_folder import (CHECKPOINT_NAME, claim_run_folder, clash_folder, latest_run_folder,
                                         later_runs, longest_output_dir, run_folder)
from segtrain.training.resume import checkpoint_to_resume


def a_run(folder, mtime=None):
    """A folder holding a run's checkpoint (the rule looks at the file's presence and age only)."""
    folder.mkdir(parents=True)
    (folder / CHECKPOINT_NAME).write_bytes(b"saved")
    if mtime is not None:
        os.utime(folder / CHECKPOINT_NAME, (mtime, mtime))
    return folder


def test_a_new_run_takes_the_next_free_number_and_says_so(tmp_path):
    a_run(tmp_path / "MODEL-x")
    a_run(tmp_path / "MODEL-x-2")
    (tmp_path / "MODEL-x-3").mkdir()  # empty: left by nothing that ran, so it is taken
    notes = []
    folder = claim_run_folder(tmp_path, "x", notes.append)
    assert folder == tmp_path / "MODEL-x-3" and (folder / "visualization_viz").is_dir()
    assert notes == [f"note: {tmp_path / 'MODEL-x'} holds an earlier run; this run writes to {folder} "
                     "(nothing is overwritten; to continue that run instead, add --resume)."]
    assert (tmp_path / "MODEL-x" / CHECKPOINT_NAME).read_bytes() == b"saved"
    assert claim_run_folder(tmp_path, "y", notes.append) == run_folder(tmp_path, "y") and len(notes) == 1


def test_later_runs_are_the_numbered_folders_with_a_checkpoint_in_number_order(tmp_path):
    base = run_folder(tmp_path, "x")
    for number in (10, 2, 3):
        a_run(clash_folder(base, number))
    a_run(tmp_path / "MODEL-x-big")  # another output_dir ("x-big"), not a later run of "x"
    a_run(tmp_path / "MODEL-x-02")  # "-02" is no number the rule gives
    (tmp_path / "MODEL-x-4").mkdir()  # no checkpoint: nothing to resume
    assert [f.name for f in later_runs(base)] == ["MODEL-x-2", "MODEL-x-3", "MODEL-x-10"]


def test_resume_without_a_checkpoint_names_the_latest_numbered_run(tmp_path):
    base = run_folder(tmp_path, "x")
    base.mkdir()
    for number in (2, 10):
        a_run(clash_folder(base, number))
    with pytest.raises(CheckpointError) as refused:
        checkpoint_to_resume(tmp_path, {"output_dir": "x"}, "")
    assert str(refused.value) == (
        f"{base / CHECKPOINT_NAME}: no checkpoint to resume from. Runs with a checkpoint here: MODEL-x-2, MODEL-x-10; "
        f"pass --resume {tmp_path / 'MODEL-x-10' / CHECKPOINT_NAME}. Or start a new run without --resume.")


def test_resume_continues_the_named_run_and_mentions_the_later_ones(tmp_path):
    base = a_run(run_folder(tmp_path, "x"))
    a_run(clash_folder(base, 2))
    notes = []
    assert checkpoint_to_resume(tmp_path, {"output_dir": "x"}, "", notes.append) == base / CHECKPOINT_NAME
    assert notes == [f"note: resuming MODEL-x; MODEL-x-2 also exist (pass --resume MODEL-x-2/{CHECKPOINT_NAME} for those)."]


def test_resume_of_a_recipe_named_run_finds_the_model_the_recipe_chose(tmp_path):
    # A run with output_dir left open is named after the model the recipe chose; the folder with the
    # newest checkpoint is that run's, whatever the recipe would choose now.
    older, newer = recipe_choices()
    a_run(run_folder(tmp_path, older), mtime=1_000_000)
    a_run(run_folder(tmp_path, newer), mtime=2_000_000)
    cfg = {"output_dir": older, FIT_KEY: ["model", "output_dir"]}
    assert latest_run_folder(tmp_path, recipe_choices()) == run_folder(tmp_path, newer)
    assert checkpoint_to_resume(tmp_path, cfg, "", lambda *a: None) == run_folder(tmp_path, newer) / CHECKPOINT_NAME
    assert latest_run_folder(tmp_path / "empty", recipe_choices()) is None


def test_a_typed_resume_path_follows_the_command_line_rule(tmp_path, monkeypatch):
    root, here = tmp_path / "root", tmp_path / "here"
    a_run(run_folder(root, "x"))
    here.mkdir()
    monkeypatch.chdir(here)
    typed = f"MODEL-x/{CHECKPOINT_NAME}"
    assert checkpoint_to_resume(root, {"output_dir": "x"}, typed) == root / typed  # found under ROOT
    a_run(here / "MODEL-x")
    assert checkpoint_to_resume(root, {"output_dir": "x"}, typed).resolve() == here / typed  # here wins
    assert str(checkpoint_to_resume(root, {"output_dir": "x"}, "nowhere.pth.tar")) == "nowhere.pth.tar"  # as typed


def test_the_longest_output_dir_fits_with_every_clash_number_and_one_byte_more_does_not(tmp_path):
    name_max = os.pathconf(tmp_path, "PC_NAME_MAX")
    longest = "x" * longest_output_dir(name_max)
    base = claim_run_folder(tmp_path, longest, lambda *a: None)
    clash_folder(base, 999_999).mkdir()
    with pytest.raises(OSError) as too_long:
        clash_folder(run_folder(tmp_path, longest + "x"), 999_999).mkdir()
    assert too_long.value.errno == errno.ENAMETOOLONG
