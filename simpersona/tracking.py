"""MLflow tracking: one MLflow run per materialization, tagged with where it came from.

A thin layer over `MlflowClient` (explicit run ids, no global "active run"), so parallel
processes and threads can log safely. dagster-mlflow's resource makes several API calls at
every init (dagster#22633); this makes one lookup per experiment per process.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DEFAULT_TRACKING_URI = "sqlite:///data/mlflow.db"
DEFAULT_ARTIFACT_ROOT = "data/mlartifacts"
DEFAULT_EXPERIMENT = "simpersona"


def _flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(_flatten(v, f"{key}."))
        else:
            out[key] = v
    return out


@dataclass
class TrackedRun:
    """A handle on one MLflow run; log as you go, closed by `Tracker.run`."""

    client: Any
    run_id: str
    logged_metrics: dict[str, float] = field(default_factory=dict)

    def log_params(self, params: Mapping[str, Any]) -> None:
        from mlflow.entities import Param

        flat = _flatten(params)
        items = [Param(k, str(v)[:6000]) for k, v in flat.items()]
        for i in range(0, len(items), 100):
            self.client.log_batch(self.run_id, params=items[i : i + 100])

    def log_metrics(self, metrics: Mapping[str, Any], step: int = 0) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = []
        for k, v in _flatten(metrics).items():
            if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
                continue
            items.append(Metric(k, float(v), now, step))
            self.logged_metrics[k] = float(v)
        for i in range(0, len(items), 500):
            self.client.log_batch(self.run_id, metrics=items[i : i + 500])

    def log_artifact(self, path: str | os.PathLike[str], artifact_path: str | None = None) -> None:
        self.client.log_artifact(self.run_id, str(path), artifact_path)

    def log_text(self, text: str, artifact_file: str) -> None:
        self.client.log_text(self.run_id, text, artifact_file)

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        for k, v in tags.items():
            self.client.set_tag(self.run_id, k, str(v))


class Tracker:
    """Creates MLflow runs in one experiment of one tracking server (sqlite by default)."""

    def __init__(
        self,
        tracking_uri: str = DEFAULT_TRACKING_URI,
        artifact_root: str = DEFAULT_ARTIFACT_ROOT,
        experiment: str = DEFAULT_EXPERIMENT,
    ) -> None:
        self.tracking_uri = tracking_uri
        self.artifact_root = artifact_root
        self.experiment = experiment
        self._experiment_id: str | None = None
        self._client = None

    @property
    def client(self):
        if self._client is None:
            from mlflow.tracking import MlflowClient

            if self.tracking_uri.startswith("sqlite:///"):
                db = Path(self.tracking_uri.removeprefix("sqlite:///"))
                db.parent.mkdir(parents=True, exist_ok=True)
            self._client = MlflowClient(tracking_uri=self.tracking_uri)
        return self._client

    @property
    def experiment_id(self) -> str:
        if self._experiment_id is None:
            exp = self.client.get_experiment_by_name(self.experiment)
            if exp is None:
                location = self.artifact_root
                if "://" not in location:
                    Path(location).mkdir(parents=True, exist_ok=True)
                    location = Path(location).resolve().as_uri()
                try:
                    self._experiment_id = self.client.create_experiment(
                        self.experiment, artifact_location=location
                    )
                except Exception:  # created meanwhile by a parallel process
                    exp = self.client.get_experiment_by_name(self.experiment)
                    if exp is None:
                        raise
                    self._experiment_id = exp.experiment_id
            else:
                self._experiment_id = exp.experiment_id
        return self._experiment_id

    @contextmanager
    def run(self, run_name: str, tags: Mapping[str, Any] | None = None) -> Iterator[TrackedRun]:
        """A new MLflow run, FINISHED on success and FAILED on an exception."""
        run = self.client.create_run(
            self.experiment_id,
            run_name=run_name,
            tags={k: str(v) for k, v in (tags or {}).items()},
        )
        handle = TrackedRun(self.client, run.info.run_id)
        try:
            yield handle
        except BaseException:
            self.client.set_terminated(handle.run_id, status="FAILED")
            raise
        self.client.set_terminated(handle.run_id, status="FINISHED")

    def find_runs(self, filter_string: str = "") -> list[Any]:
        return self.client.search_runs([self.experiment_id], filter_string=filter_string)
