"""MLflow tracking (outputs/mlflow_log.py) against real stores: MLflow's SQLite store, and once a
local `mlflow server` on 127.0.0.1. Everything is read back through MLflow's own client."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

import segtrain
from conftest import tiny_config
from segtrain.config.load import resolve
from segtrain.data.synthetic import write_sky_folder

mlflow = pytest.importorskip("mlflow", reason="mlflow is not installed (pip install '.[mlflow]', or '.[test]' as CI does)")
from mlflow import MlflowClient  # noqa: E402

# LR-ASPP: a 13 MB model_best.pth.tar to upload (fcn_resnet18's is ~90 MB)
CONFIG = tiny_config(model="lraspp_mobilenet_v3_large", max_iteration=4, interval_validate=2, batch_size=4)
EXPERIMENT = "segtrain-tests"
ARTIFACTS = {"report.html", "curves.png", "log.csv", "model_best.pth.tar"}
SERVER_START_SECONDS = 120


def sky_folder(tmp_path: Path) -> Path:
    return write_sky_folder(tmp_path / "data", n_train=8, n_valid=4, size=32, config=CONFIG)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def assert_logged(uri: str, run: segtrain.Run, tmp_path: Path) -> None:
    """The store holds one run named after the folder, with the resolved config, every validation's
    scores at its iteration (as log.csv has them) and the artifacts, byte for byte."""
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name(EXPERIMENT)
    (logged,) = client.search_runs([experiment.experiment_id])
    assert logged.info.run_name == run.folder.name and logged.info.status == "FINISHED"
    params = logged.data.params
    assert (params["model"], params["max_iteration"], params["image_size"]) == ("lraspp_mobilenet_v3_large", "4", "[32, 32]")
    for score in ("mean_iu", "loss", "acc", "acc_cls", "fwavacc"):
        history = client.get_metric_history(logged.info.run_id, f"valid/{score}")
        assert sorted((m.step, m.value) for m in history) == [(row.iteration, getattr(row, score))
                                                              for row in run.validations]
    assert sorted(m.step for m in client.get_metric_history(logged.info.run_id, "valid_iou/cloud")) == [0, 2, 4]
    assert {a.path for a in client.list_artifacts(logged.info.run_id)} == ARTIFACTS
    for name in ("log.csv", "model_best.pth.tar"):
        local = client.download_artifacts(logged.info.run_id, name, str(tmp_path))
        assert Path(local).read_bytes() == (run.folder / name).read_bytes()


def test_a_run_and_its_resumption_are_one_mlflow_run_in_a_sqlite_store(tmp_path, monkeypatch):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    MlflowClient(uri).create_experiment(EXPERIMENT, artifact_location=(tmp_path / "artifacts").as_uri())
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", EXPERIMENT)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    root, lines = sky_folder(tmp_path), []
    first = segtrain.train(root, {"mlflow_tracking_uri": uri}, stop_after=2, log=lines.append)
    assert first.final.iteration == 0
    run = segtrain.train(root, {"mlflow_tracking_uri": uri}, resume=True, log=lines.append)
    assert [line.split(" (")[0] for line in lines if line.startswith("mlflow:")] == \
        ["mlflow: logging run MODEL-tiny", "mlflow: continuing run MODEL-tiny"]
    assert_logged(uri, run, tmp_path / "download")


@contextlib.contextmanager
def mlflow_server(tmp_path: Path):
    port = free_port()
    uri = f"http://127.0.0.1:{port}"
    with open(tmp_path / "server.log", "wb") as log:
        server = subprocess.Popen(
            [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
             "--backend-store-uri", f"sqlite:///{tmp_path / 'server.db'}",
             "--artifacts-destination", str(tmp_path / "server-artifacts")],
            stdout=subprocess.DEVNULL, stderr=log, start_new_session=True)
    try:
        deadline = time.monotonic() + SERVER_START_SECONDS
        while True:
            try:
                with urllib.request.urlopen(f"{uri}/health", timeout=5) as answer:
                    if answer.status == 200:
                        break
            except OSError:
                pass
            assert server.poll() is None, (tmp_path / "server.log").read_text()[-2000:]
            assert time.monotonic() < deadline, f"mlflow server did not answer in {SERVER_START_SECONDS} s"
            time.sleep(0.5)
        yield uri
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def test_a_run_logs_to_a_local_mlflow_server_named_by_the_environment(tmp_path, monkeypatch):
    with mlflow_server(tmp_path) as uri:
        MlflowClient(uri).create_experiment(EXPERIMENT)
        monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
        monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", EXPERIMENT)
        run = segtrain.train(sky_folder(tmp_path), log=lambda *a: None)
        assert_logged(uri, run, tmp_path / "download")


def test_an_unreachable_server_is_one_line_and_training_goes_on(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{free_port()}")  # nothing listens there
    lines: list[str] = []
    run = segtrain.train(sky_folder(tmp_path), {"max_iteration": 2}, log=lines.append)
    assert run.final.iteration == 2 and run.best_checkpoint.is_file()
    notes = [line for line in lines if "MLflow" in line or "mlflow" in line]
    assert len(notes) == 1 and notes[0].endswith("training goes on without tracking.") and "\n" not in notes[0]


def test_a_tracking_uri_that_is_not_text_is_refused_in_one_line():
    with pytest.raises(segtrain.SegtrainError, match="key 'mlflow_tracking_uri' must be a tracking URI"):
        resolve({"mlflow_tracking_uri": 5})
