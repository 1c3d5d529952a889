"""segtrain audit: planted bad masks come first, the files land only in the chosen folder, and
bad input is a one-line error that writes nothing."""

import csv
import json
import shutil

import numpy as np
import pytest
from PIL import Image

from conftest import run_cli, tiny_config, write_config
from segtrain.cli import main
from segtrain.data.synthetic import write_sky_folder
from segtrain.outputs.visualize import GAP, LINE
from test_run_outputs import ReportParser, _image_from_data_uri

CKPT = "MODEL-tiny/model_best.pth.tar"
PLANTED = ["train/images/sky0003.png", "train/images/sky0008.png"]


def tree(folder):
    return {str(p.relative_to(folder)): (p.read_bytes() if p.is_file() else None) for p in sorted(folder.rglob("*"))}


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    """A tiny model trained on 12 clean training pairs, then 2 of those masks swapped (sky marked
    cloud and back), as a labelling mistake found after training. Planted after, not before: on
    12 images a model memorises its 2 wrong masks within a few epochs. A U-Net (full-resolution
    skips) with AdamW learns the synthetic skies to ~0.7 valid mean IoU in 20 iterations;
    fcn_resnet18 at 32 px stays near 0.4."""
    root = write_sky_folder(tmp_path_factory.mktemp("audit") / "data", n_train=12, n_valid=4, size=32)
    cfg = tiny_config(model="unet", encoder="resnet18", max_iteration=20, interval_validate=20, augment=False)
    del cfg["lr"]  # the default recipe's AdamW
    write_config(root, **cfg)
    assert main(["train", str(root)]) == 0
    for image in PLANTED:
        label = root / image.replace("images", "labels")
        Image.fromarray(255 - np.asarray(Image.open(label))).save(label)
    return root


def read_rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_planted_bad_masks_rank_first_with_pictures(planted, tmp_path):
    out = tmp_path / "recheck"
    before = tree(planted)
    result = run_cli("audit", planted, "--checkpoint", planted / CKPT, "--out", out, "--top", 3, timeout=120)
    assert result.returncode == 0, result.stderr
    rows = read_rows(out / "audit.csv")
    assert list(rows[0]) == ["rank", "split", "image", "mask", "loss", "mean_iu", "disagree_share"]
    assert [r["rank"] for r in rows] == [str(k) for k in range(1, 17)]
    assert sorted(r["split"] for r in rows) == ["train"] * 12 + ["valid"] * 4
    # 2 planted among 16: a random order puts both first once in 120 tries.
    assert sorted(r["image"] for r in rows[:2]) == PLANTED
    assert all(r["mask"] == r["image"].replace("images", "labels") for r in rows)
    losses = [float(r["loss"]) for r in rows]
    assert losses == sorted(losses, reverse=True)
    assert all(float(r["disagree_share"]) > 0.5 and float(r["mean_iu"]) < 0.5 for r in rows[:2])
    assert np.median([float(r["disagree_share"]) for r in rows[2:]]) < 0.2

    pictures = sorted(p.name for p in out.glob("*.png"))
    assert pictures == [f"{k:03d}_{rows[k - 1]['split']}_{rows[k - 1]['image'].split('/')[-1][:-4]}.png"
                        for k in (1, 2, 3)]
    # image | mask | model, each at the 32 px image's size, under their titles and above the legend
    with Image.open(out / pictures[0]) as picture:
        assert picture.size == (3 * 32 + 2 * GAP, LINE + 32 + LINE + 2)
        assert np.asarray(picture)[LINE:LINE + 32].std() > 0 and np.asarray(picture)[:LINE].min() < 128  # titles drawn
    assert sorted(p.name for p in out.iterdir()) == sorted(pictures + ["audit.csv"])
    assert tree(planted) == before  # nothing written beside the data or the run
    assert "16 pair(s) scored" in result.stdout and str(out) in result.stdout


def test_default_folder_is_beside_the_checkpoint(planted, tmp_path):
    root = shutil.copytree(planted, tmp_path / "data")  # a copy, so the shared run stays as it was
    shutil.rmtree(root / "MODEL-tiny" / "audit")  # the one training wrote at its end
    assert main(["audit", str(root), "--checkpoint", CKPT, "--top", "0"]) == 0
    audit = root / "MODEL-tiny" / "audit"
    assert sorted(p.name for p in audit.iterdir()) == ["audit.csv"]
    assert len(read_rows(audit / "audit.csv")) == 16


def test_report_after_training_shows_the_audit_of_the_best_weights(planted):
    parser = ReportParser()
    parser.feed((planted / "MODEL-tiny" / "report.html").read_text())
    assert parser.sections.index("recheck") == parser.sections.index("visualization") + 1
    table = parser.tables["recheck"]
    assert table[0][:4] == ["rank", "split", "image", "loss"] and len(table) == 1 + 10
    # the ranking `segtrain audit` of the best weights gives (of the masks as they were), written
    # where the command writes it
    audit = planted / "MODEL-tiny" / "audit"
    rows = read_rows(audit / "audit.csv")
    assert [row[:3] for row in table[1:]] == [[r["rank"], r["split"], r["image"]] for r in rows[:10]]
    assert [row[3] for row in table[1:]] == [f"{float(r['loss']):.3f}" for r in rows[:10]]
    assert len(rows) == 16 and len(list(audit.glob("*.png"))) == 10
    with _image_from_data_uri(parser.images["recheck"]) as picture:  # the last row's image | mask | model
        assert picture.size == (3 * 32 + 2 * GAP, LINE + 32 + LINE + 2)


def test_bad_input_is_one_line_and_writes_nothing(planted, tmp_path, capsys):
    before = tree(planted)
    out = tmp_path / "out"
    assert main(["audit", str(planted), "--checkpoint", str(tmp_path / "missing.pth.tar"), "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "missing.pth.tar" in err and err.count("\n") == 1
    labels = planted / "train" / "labels"
    assert main(["audit", str(planted), "--checkpoint", str(planted / CKPT), "--out", str(labels)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: --out ") and "images or masks" in err and err.count("\n") == 1
    (tmp_path / "file").write_text("x")
    assert main(["audit", str(planted), "--checkpoint", str(planted / CKPT), "--out", str(tmp_path / "file")]) == 1
    assert "is a file, not a folder" in capsys.readouterr().err
    assert not out.exists() and tree(planted) == before


def test_benchmark_script_runs_end_to_end(tmp_path):
    """bench/audit.py on a small synthetic folder, 2 iterations: corrupts 5% of the masks of a copy,
    trains, audits and writes its table (the numbers mean nothing at 2 iterations)."""
    from test_bench_smoke import run_bench

    source = write_sky_folder(tmp_path / "sky", n_train=40, n_valid=4, size=32)
    before = tree(source)
    result = run_bench("audit.py", "--data", source, "--iterations", 2, "--out", tmp_path / "audit")
    assert result.returncode == 0, result.stderr
    assert "| all | 2 |" in result.stdout and "in the top 10% (4 of 40)" in result.stdout
    raw = json.loads((tmp_path / "audit.json").read_text())
    assert len(raw["corrupted"]) == 2 and set(raw["ranks"].values()) <= set(range(1, 41))
    assert tree(source) == before  # the corruption happened in a copy
