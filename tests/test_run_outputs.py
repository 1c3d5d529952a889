"""Progress display, curves.png, report.html and TensorBoard: what people look at during and after a run."""

import base64
import io
import os
import pty
import re
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest
import torch
from PIL import Image

from conftest import run_cli, tiny_config
from segtrain.cli import main
from segtrain.outputs.curves import LogFileError, read_log
from segtrain.outputs.progress import ProgressReporter
from segtrain.data.synthetic import write_sky_folder

CHROMIUM = Path("/usr/bin/chromium")

# The sample log.csv printed in the original tool's README, verbatim.
ORIGINAL_LOG = """epoch,iteration,train/loss,train/acc,train/acc_cls,train/mean_iu,train/fwavacc,valid/loss,valid/acc,valid/acc_cls,valid/mean_iu,valid/fwavacc,elapsed_time
0,0,,,,,,249565.46875,0.2775708506944444,0.5,0.1387854253472222,0.07704557715523756,19.109297
0,0,249565.46875,0.0,0.0,0.0,0.0,,,,,,19.882988
0,1,249565.46875,0.6447888888888889,0.5,0.32239444444444443,0.41575271123456786,,,,,,20.023459
0,2,249482.25,1.0,1.0,1.0,1.0,,,,,,20.166056
0,3,249534.78125,0.30164722222222223,0.5,0.15082361111111112,0.09099104667438272,,,,,,20.306398
0,4,249511.15625,0.72165,0.5,0.360825,0.5207787225,,,,,,20.449825
0,5,249447.375,1.0,1.0,1.0,1.0,,,,,,20.589101
0,6,249528.6875,0.5119666666666667,0.5,0.25598333333333334,0.2621098677777778,,,,,,20.73057
0,7,249434.390625,1.0,1.0,1.0,1.0,,,,,,20.870793
"""


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One tiny run (validations at 0, 2 and 4), shared by the tests that read its outputs."""
    root = write_sky_folder(tmp_path_factory.mktemp("run") / "data", n_train=8, n_valid=4, size=32,
                            config=tiny_config(max_iteration=4, interval_validate=2, max_visualizations=4))
    assert main(["train", str(root)]) == 0
    return root / "MODEL-tiny"


# ---- progress -------------------------------------------------------------------------------

class FakeTerminal(io.StringIO):
    def isatty(self):
        return True


def test_plain_progress_lines_every_log_interval():
    lines = []
    reporter = ProgressReporter(max_iteration=10, batch_size=4, log_interval=5, log=lines.append, stream=io.StringIO())
    for it in range(1, 11):
        reporter.iteration(it, epoch=it // 4, loss=1.0 / it, lr=0.01)
    reporter.validation(10, {"mean_iu": 0.5, "acc": 0.75, "loss": 0.3, "iu": [0.4, 0.6]}, ["sky", "cloud"], True)
    reporter.close()
    assert [line.split()[1] for line in lines[:3]] == ["1/10", "5/10", "10/10"]
    assert re.fullmatch(r"iter 5/10 epoch 1 loss 0\.2 lr 0\.01 \| [\d.]+ img/s \| ETA \d+:\d\d:\d\d", lines[1])
    assert lines[-1] == "valid @ 10: mean_iu 0.5000 acc 0.7500 loss 0.3 | IoU sky 0.400 cloud 0.600  (new best)"


def test_terminal_gets_a_live_bar_and_validation_lines_above_it():
    term, logged = FakeTerminal(), []
    reporter = ProgressReporter(max_iteration=8, batch_size=2, log_interval=100, log=logged.append, stream=term)
    for it in range(1, 9):
        reporter.iteration(it, epoch=0, loss=0.25, lr=0.005)
        if it == 4:
            reporter.validation(4, {"mean_iu": 0.7, "acc": 0.8, "loss": 0.2, "iu": [0.6, 0.8]}, ["a", "b"], False)
    reporter.close()
    text = term.getvalue()
    assert logged == []  # all output went to the terminal, through the bar
    assert "\r" in text and "8/8" in text and "loss 0.25 lr 0.005" in text and "img/s" in text
    assert "valid @ 4: mean_iu 0.7000" in text and "(new best)" not in text


def test_training_under_a_real_terminal_shows_the_bar(tmp_path):
    root = write_sky_folder(tmp_path / "d", n_train=8, n_valid=2, size=32,
                            config=tiny_config(max_iteration=3, interval_validate=3))
    controller, terminal = pty.openpty()
    env = {**os.environ, "OMP_NUM_THREADS": "2", "COLUMNS": "120"}
    proc = subprocess.Popen([sys.executable, "-m", "segtrain", "train", str(root)], stdout=terminal,
                            stderr=subprocess.STDOUT, env=env)
    os.close(terminal)
    chunks = []
    while True:
        try:
            chunk = os.read(controller, 4096)
        except OSError:  # the child closed the terminal
            break
        if not chunk:
            break
        chunks.append(chunk)
    assert proc.wait(timeout=300) == 0
    os.close(controller)
    text = b"".join(chunks).decode(errors="replace")
    assert re.search(r"\r(?!\n)", text) and "3/3" in text and "img/s" in text  # redrawn in place
    assert "(new best)" in text
    assert not re.search(r"^iter \d+/3", text, re.M)  # the plain lines are for logs, not terminals


def test_piped_output_has_plain_lines_without_carriage_returns(tmp_path):
    root = write_sky_folder(tmp_path / "d", n_train=8, n_valid=2, size=32,
                            config=tiny_config(max_iteration=2, interval_validate=2, log_interval=1))
    result = run_cli("train", root)
    assert result.returncode == 0, result.stderr
    assert "\r" not in result.stdout
    assert re.search(r"^iter 2/2 epoch 0 loss \S+ lr \S+ \| [\d.]+ img/s \| ETA 0:00:00$", result.stdout, re.M)
    assert re.search(r"^valid @ 0: mean_iu [\d.]+ acc [\d.]+ loss \S+ \| IoU sky [\d.]+ cloud [\d.]+  \(new best\)$",
                     result.stdout, re.M)


# ---- curves ---------------------------------------------------------------------------------

def test_original_tools_log_reads_and_plots(tmp_path):
    log = tmp_path / "log.csv"
    log.write_text(ORIGINAL_LOG)
    series = read_log(log)
    assert series["valid"]["iteration"].tolist() == [0.0]
    assert series["train"]["iteration"].tolist() == [0.0, 1, 2, 3, 4, 5, 6, 7]
    assert series["train"]["loss"][2] == 249482.25
    assert main(["plot", str(log), "--out", str(tmp_path / "old.png")]) == 0
    with Image.open(tmp_path / "old.png") as img:
        assert img.format == "PNG" and img.width > 800 and img.height > 200
    assert main(["plot", str(log)]) == 0
    assert (tmp_path / "curves.png").is_file()


def test_plot_errors_are_one_line_messages(tmp_path):
    (tmp_path / "bad.csv").write_text("a,b\n1,2\n")
    with pytest.raises(LogFileError, match="not a training log"):
        read_log(tmp_path / "bad.csv")
    result = run_cli("plot", tmp_path / "missing.csv")
    assert result.returncode == 1 and result.stderr.startswith("error:") and "Traceback" not in result.stderr


def test_training_draws_curves_at_each_validation(trained):
    with Image.open(trained / "curves.png") as img:
        assert img.format == "PNG"
    series = read_log(trained / "log.csv")
    assert series["valid"]["iteration"].tolist() == [0.0, 2.0, 4.0]


# ---- report ---------------------------------------------------------------------------------

class ReportParser(HTMLParser):
    def __init__(self):
        super().__init__()
        self.sections, self.images, self.tables, self.text = [], {}, {}, []
        self._table = None
        self._row = None
        self._cell = None
        self._section = None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "section":
            self._section = attrs.get("id")
            self.sections.append(self._section)
        elif tag == "img":
            self.images[self._section] = attrs["src"]
        elif tag == "table":
            self._table = attrs.get("class")
            self.tables[self._table] = []
        elif tag == "tr" and self._table:
            self._row = []
            self.tables[self._table].append(self._row)
        elif tag in ("td", "th") and self._row is not None:
            self._cell = []

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self._row.append(" ".join("".join(self._cell).split()))
            self._cell = None
        elif tag == "table":
            self._table = None

    def handle_data(self, data):
        self.text.append(data)
        if self._cell is not None:
            self._cell.append(data + " ")


def _image_from_data_uri(uri):
    header, payload = uri.split(",", 1)
    assert header in ("data:image/png;base64", "data:image/jpeg;base64")
    return Image.open(io.BytesIO(base64.b64decode(payload)))


def test_report_is_one_self_contained_file_with_every_part(trained):
    html = (trained / "report.html").read_text()
    parser = ReportParser()
    parser.feed(html)
    assert parser.sections == ["best", "curves", "visualization", "recheck", "dataset", "config"]
    assert not re.search(r"""(src|href)=["'](?!data:)""", html)  # nothing outside the file
    with _image_from_data_uri(parser.images["curves"]) as curves, Image.open(trained / "curves.png") as on_disk:
        assert curves.size == on_disk.size
    with _image_from_data_uri(parser.images["visualization"]) as tile, \
            Image.open(trained / "visualization_viz" / "iter000000000004.jpg") as latest:
        assert tile.size == latest.size

    best = torch.load(trained / "model_best.pth.tar", weights_only=True)
    metrics = best["valid_metrics"]
    text = " ".join(parser.text)
    assert f"At iteration {best['iteration']}" in text
    per_class = parser.tables["per-class"]
    assert per_class[0] == ["class", "pixel share", "IoU", "recall", "precision", "F1"]
    for k, name in enumerate(["sky", "cloud"]):
        row = per_class[k + 1]
        assert row[0] == name
        for col, key in ((2, "iu"), (3, "recall"), (4, "precision"), (5, "f1")):
            value = metrics[key][k]
            assert row[col] == ("–" if value != value else f"{value:.4f}")
    confusion = parser.tables["confusion"]
    assert confusion[0] == ["truth \\ prediction", "sky", "cloud"]
    counts = [[int(cell.split()[0].replace(",", "")) for cell in row[1:]] for row in confusion[1:]]
    assert counts == metrics["confusion_matrix"]

    dataset = dict(parser.tables["dataset"])
    assert dataset["training images"] == "8" and dataset["validation images"] == "4"
    assert dataset["label encoding"] == "binary masks: 0 -> sky, 255 -> cloud"
    shares = parser.tables["class-shares"]
    pixels = [int(row[2].replace(",", "")) for row in shares[1:]]
    assert pixels == [sum(row) for row in metrics["confusion_matrix"]] and sum(pixels) == 4 * 32 * 32
    assert "max_iteration: 4" in text and 'model: "fcn_resnet18"' in text


def test_report_escapes_class_names(tmp_path):
    from segtrain.outputs.report import ReportData, Validation, build_report

    result = {"mean_iu": 0.5, "acc": 0.5, "acc_cls": 0.5, "fwavacc": 0.5, "loss": 1.0, "iu": [0.5, 0.5],
              "recall": [0.5, 0.5], "precision": [0.5, 0.5], "f1": [0.5, 0.5], "pixels": [2, 2],
              "confusion_matrix": [[1, 1], [1, 1]]}
    html = build_report(ReportData("run", {"model": "m"}, ["<b>sky</b>", "cloud & co"], [[0, 0, 0], [9, 9, 9]],
                                   {"folder": "/x"}, 2, 4, Validation(2, result), Validation(2, result)))
    assert "<b>sky</b>" not in html and "&lt;b&gt;sky&lt;/b&gt;" in html and "cloud &amp; co" in html
    assert "in progress (iteration 2 of 4)" in html


@pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian's chromium is not installed")
def test_report_renders_in_headless_chromium(trained, tmp_path):
    shot = tmp_path / "report.png"
    subprocess.run([str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                    "--disable-background-networking", "--disable-component-update", "--disable-sync",
                    f"--user-data-dir={tmp_path / 'profile'}", f"--screenshot={shot}", "--window-size=1200,2000",
                    (trained / "report.html").as_uri()], capture_output=True, timeout=120, check=True)
    with Image.open(shot) as img:
        assert img.size == (1200, 2000)
        colours = img.convert("RGB").getcolors(maxcolors=1 << 20)
    assert colours is not None and len(colours) > 500  # text, tables and pictures, not a blank page


# ---- TensorBoard ----------------------------------------------------------------------------

def _tb_root(tmp_path):
    return write_sky_folder(tmp_path / "d", n_train=8, n_valid=2, size=32,
                            config=tiny_config(max_iteration=2, interval_validate=2, tensorboard=True))


def test_tensorboard_key_works_without_the_package(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import fails as if not installed
    root = _tb_root(tmp_path)
    assert main(["train", str(root)]) == 0
    out = capsys.readouterr().out
    assert "the tensorboard package is not installed (pip install tensorboard); training goes on" in out
    assert (root / "MODEL-tiny" / "model_best.pth.tar").is_file()
    assert not (root / "MODEL-tiny" / "tensorboard").exists()


def test_tensorboard_logs_scalars_and_images(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    root = _tb_root(tmp_path)
    assert main(["train", str(root)]) == 0
    events = EventAccumulator(str(root / "MODEL-tiny" / "tensorboard"), size_guidance={"images": 0}).Reload()
    tags = events.Tags()
    assert {"train/loss", "train/lr", "valid/mean_iu", "valid_iou/sky", "valid_iou/cloud"} <= set(tags["scalars"])
    assert [e.step for e in events.Scalars("train/loss")] == [0, 1]
    assert [e.step for e in events.Scalars("valid/mean_iu")] == [0, 2]
    assert tags["images"] == ["validation samples"]
    log = read_log(root / "MODEL-tiny" / "log.csv")
    assert [e.value for e in events.Scalars("valid/mean_iu")] == pytest.approx(log["valid"]["mean_iu"].tolist())
