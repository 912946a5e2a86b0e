"""MLflow tracking for ``koemorph train``: one run per training, on a SQLite store by default.

Uses an explicit :class:`mlflow.tracking.MlflowClient` (no global "active run"), so several
trainings in one process (tests) never mix. MLflow 3 rejects the legacy ``./mlruns`` file store;
the default is ``sqlite:///<cwd>/mlflow.db`` and, for SQLite stores, the artifacts go into
``mlruns/`` beside the database file. Needs mlflow-skinny + sqlalchemy + alembic (+ pandas for tables).
Open the UI with ``pip install -e ".[ui]"`` then ``mlflow ui --backend-store-uri sqlite:///mlflow.db``.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

PARAM_MAX = 6000  # MLflow's limit on a param value (characters)


def resolve_uri(cli_uri: str | None, config_uri: str = "") -> str:
    """``--tracking-uri``, else ``train.tracking_uri``, else ``$MLFLOW_TRACKING_URI``, else ``sqlite:///<cwd>/mlflow.db``."""
    uri = cli_uri or config_uri or os.environ.get("MLFLOW_TRACKING_URI", "")
    return uri or f"sqlite:///{Path.cwd() / 'mlflow.db'}"


def _artifact_root(uri: str) -> str | None:
    """``<db folder>/mlruns`` for a SQLite file URI, else None (MLflow's default)."""
    if uri.startswith("sqlite:///") and ":memory:" not in uri:
        return (Path(uri[len("sqlite:///") :]).resolve().parent / "mlruns").as_uri()
    return None


class Tracker:
    """One MLflow run. ``run_id`` continues an existing run (resume); otherwise a new run is created."""

    def __init__(self, uri: str, experiment: str, run_id: str | None = None, run_name: str | None = None):
        from mlflow.tracking import MlflowClient

        self.uri = uri
        self.client = MlflowClient(tracking_uri=uri)
        if run_id:
            self.run_id = self.client.get_run(run_id).info.run_id
            self.client.update_run(self.run_id, status="RUNNING")
        else:
            exp = self.client.get_experiment_by_name(experiment)
            exp_id = (
                exp.experiment_id if exp else self.client.create_experiment(experiment, _artifact_root(uri))
            )
            self.run_id = self.client.create_run(exp_id, run_name=run_name).info.run_id

    def log_params(self, params: dict) -> None:
        """Log flat params (values as strings, cut to MLflow's 6000 characters), 100 per batch."""
        from mlflow.entities import Param

        items = [Param(k, str(v)[:PARAM_MAX]) for k, v in sorted(params.items())]
        for i in range(0, len(items), 100):
            self.client.log_batch(self.run_id, params=items[i : i + 100], synchronous=True)

    def set_tags(self, tags: dict) -> None:
        from mlflow.entities import RunTag

        self.client.log_batch(
            self.run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()], synchronous=True
        )

    def log_metrics(self, metrics: dict, step: int) -> None:
        """Log finite scalar metrics at ``step`` in one batch."""
        import math

        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [
            Metric(k, float(v), now, int(step))
            for k, v in metrics.items()
            if v is not None and math.isfinite(float(v))
        ]
        for i in range(0, len(items), 1000):
            self.client.log_batch(self.run_id, metrics=items[i : i + 1000], synchronous=True)

    def log_dict(self, data: dict, artifact_file: str) -> None:
        self.client.log_dict(self.run_id, data, artifact_file)

    def log_table(self, table, artifact_file: str) -> None:
        """A pandas DataFrame as an MLflow table (note: MLflow appends if ``artifact_file`` exists)."""
        self.client.log_table(self.run_id, table, artifact_file)

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        self.client.log_artifact(self.run_id, str(path), artifact_path)

    def end(self, status: str = "FINISHED") -> None:
        self.client.set_terminated(self.run_id, status)
