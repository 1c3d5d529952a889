"""Optional MLflow tracking: on when the config's `mlflow_tracking_uri` or MLFLOW_TRACKING_URI names
a tracking server or store (e.g. http://mlflow.lab:5000 or sqlite:///mlflow.db).

One MLflow run per run folder, named after it: the resolved config as parameters, every validation's
scores as metrics at its iteration, and at the end report.html, curves.png, log.csv and
model_best.pth.tar as artifacts. A resumed run continues its MLflow run (found by the folder's tag).
The experiment is MLflow's own choice: MLFLOW_EXPERIMENT_NAME, else "Default".

mlflow is not a dependency (pip install 'segtrain[mlflow]'). Tracking never stops training: a
missing package, an unreachable server or a refused request is one line, and the run goes on without
it. MLflow's HTTP client retries for minutes by default; here a request is retried once and waits at
most REQUEST_TIMEOUT seconds, unless the user set MLflow's own variables.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import time
from pathlib import Path

from segtrain.run_folder import BEST_NAME

INSTALL_HINT = "pip install 'segtrain[mlflow]'"
FOLDER_TAG = "segtrain.run_folder"
ARTIFACTS = ("report.html", "curves.png", "log.csv", BEST_NAME)
SCORES = ("loss", "acc", "acc_cls", "mean_iu", "fwavacc")
REQUEST_TIMEOUT = 10
# MLflow's own variables: a value the user set wins.
BOUNDS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1", "MLFLOW_HTTP_REQUEST_TIMEOUT": str(REQUEST_TIMEOUT)}


def tracking_uri(cfg: dict, environ=os.environ) -> str | None:
    """The config's key wins over MLFLOW_TRACKING_URI; None: no tracking."""
    return cfg["mlflow_tracking_uri"] or environ.get("MLFLOW_TRACKING_URI") or None


def metric_name(text: str) -> str:
    """MLflow accepts letters, digits, _ - . / : and spaces in a name."""
    return re.sub(r"[^\w.\- /:]", "_", text)


def param_value(value) -> str:
    return value if isinstance(value, str) else json.dumps(value)


@contextlib.contextmanager
def bounded_requests():
    added = {k: v for k, v in BOUNDS.items() if k not in os.environ}
    os.environ.update(added)
    try:
        yield
    finally:
        for key in added:
            os.environ.pop(key, None)


class MlflowLog:
    def __init__(self, uri: str, out_dir: Path, cfg: dict, class_names: list[str], resumed: bool, log=print):
        self.uri, self.out_dir, self.class_names, self.log = uri, Path(out_dir), class_names, log
        self.client = self.run_id = None
        self.finished = False
        try:
            from mlflow import MlflowClient
        except ImportError:
            log(f"note: MLflow tracking URI {uri} is set, but mlflow is not installed ({INSTALL_HINT}); "
                "training goes on without it.")
            return
        self._call("start a run", lambda: self._start(MlflowClient(uri), cfg, resumed))

    def _start(self, client, cfg: dict, resumed: bool) -> None:
        from mlflow.entities import Param

        name = os.environ.get("MLFLOW_EXPERIMENT_NAME") or "Default"
        experiment = client.get_experiment_by_name(name)
        experiment_id = experiment.experiment_id if experiment is not None else client.create_experiment(name)
        folder = str(self.out_dir.resolve())
        earlier = client.search_runs([experiment_id], filter_string=f"tags.`{FOLDER_TAG}` = '{folder}'",
                                     max_results=1) if resumed else []
        if earlier:
            self.run_id = earlier[0].info.run_id
            client.update_run(self.run_id, status="RUNNING")
            how = "continuing"
        else:
            self.run_id = client.create_run(experiment_id, run_name=self.out_dir.name, tags={FOLDER_TAG: folder}).info.run_id
            client.log_batch(self.run_id, params=[Param(key, param_value(value)) for key, value in sorted(cfg.items())])
            how = "logging"
        self.client = client
        self.log(f"mlflow: {how} run {self.out_dir.name} ({self.run_id}) in experiment {name!r} at {self.uri}")

    def _call(self, doing: str, action) -> None:
        """Run one request; the first failure is one line and ends tracking for this run."""
        try:
            with bounded_requests():
                action()
        except Exception as e:  # any failure of a side channel (network, store, server): training goes on
            first = (str(e).strip().splitlines() or [type(e).__name__])[0][:300]
            self.log(f"note: MLflow at {self.uri}: could not {doing} ({type(e).__name__}: {first}); "
                     "training goes on without tracking.")
            self.client = None

    def validation(self, iteration: int, result: dict) -> None:
        if self.client is None:
            return
        from mlflow.entities import Metric

        values = {f"valid/{score}": result[score] for score in SCORES}
        values.update({metric_name(f"valid_iou/{name}"): iou for name, iou in zip(self.class_names, result["iu"])})
        self._call("log the validation's scores", lambda: self.client.log_batch(
            self.run_id, metrics=[Metric(key, float(value), now_ms(), iteration) for key, value in values.items()]))

    def done(self) -> None:
        self.finished = True

    def close(self) -> None:
        """Upload the run's pictures, log and best model, and end the MLflow run (KILLED when it stopped early)."""
        if self.client is None:
            return
        for name in ARTIFACTS:
            if (self.out_dir / name).is_file() and self.client is not None:
                self._call(f"upload {name}", lambda: self.client.log_artifact(self.run_id, str(self.out_dir / name)))
        if self.client is not None:
            self._call("end the run", lambda: self.client.set_terminated(
                self.run_id, "FINISHED" if self.finished else "KILLED"))


def now_ms() -> int:
    return int(time.time() * 1000)
