"""How every asset ends: its figures logged to an MLflow run tagged with the Dagster run,
asset and partition, and returned as the materialization's metadata (the UI's figures).

    return record(context, mlflow, figures, tags={"shop": shop}, rows=df.height, path=path)
"""

from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import dagster as dg

from dagster_project.resources import MLflowResource
from simpersona.tracking import TrackedRun


def record(
    context: dg.AssetExecutionContext,
    mlflow: MLflowResource,
    figures: Mapping[str, Any],
    *,
    tags: Mapping[str, Any] | None = None,
    params: Mapping[str, Any] | None = None,
    metrics: Mapping[str, Any] | None = None,
    artifacts: Iterable[tuple[str | Path, str | None]] = (),
    log: Callable[[TrackedRun], None] | None = None,
    metadata: Mapping[str, Any] | None = None,
    rows: int | None = None,
    path: str | Path | None = None,
) -> dg.MaterializeResult:
    """Log one MLflow run for this materialization and return its metadata.

    `figures` are logged as metrics (unless `metrics` says otherwise) and shown as metadata;
    `params` and `artifacts` (path, folder in the run) go to MLflow only; `log` may log more
    to the open run (metric histories); `metadata` adds UI-only entries; `rows` and `path`
    become Dagster's row count and a path entry; the MLflow run id closes the list."""
    with mlflow.run_for(context, dict(tags or {})) as run:
        if params:
            run.log_params(params)
        run.log_metrics(figures if metrics is None else metrics)
        for file, folder in artifacts:
            run.log_artifact(file, folder)
        if log is not None:
            log(run)
    entries: dict[str, Any] = {**figures, **(metadata or {})}
    if rows is not None:
        entries["dagster/row_count"] = rows
    if path is not None:
        entries["path"] = dg.MetadataValue.path(str(path))
    entries["mlflow_run_id"] = run.run_id
    return dg.MaterializeResult(metadata=entries)
