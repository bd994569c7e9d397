"""One way to run a stage in-process: materialize a selection (one partition or none) with the
run config of the assets it selects, advance the stage's progress bar, and hand back what each
asset recorded. The stages (dagster_project/run/stages.py) are sequences of these runs."""

from collections.abc import Iterable, Mapping
from typing import Any

import dagster as dg

from dagster_project.definitions import all_assets
from dagster_project.resources import default_resources
from dagster_project.run.instance import run_tags

# In-process runs print nothing to the console: their callers report failures in one line
# (simpersona.errors) and warnings themselves; full logs stay in the instance (UI).
QUIET = {"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}}


def materialize(
    selection: Iterable[str],
    instance: dg.DagsterInstance | None,
    partition_key: str | None = None,
    resources: Mapping[str, Any] | None = None,
    run_config: Mapping[str, Any] | None = None,
) -> dg.ExecuteInProcessResult:
    """Materialize the assets named in `selection` (one partition, or none) in this process,
    raising on the first failure."""
    # dg.materialize loads the definitions with the defs-state storage of the current
    # context, which is whatever instance was entered last in this process; when that one
    # is gone, loading fails ("undefined DagsterInstance weakref"). Use this run's instance.
    # (Dagster's public way to set it, entering the instance, disposes of it on exit.)
    from dagster._core.storage.defs_state.base import set_defs_state_storage

    with set_defs_state_storage(instance.defs_state_storage if instance is not None else None):
        return dg.materialize(
            all_assets,
            selection=list(selection),
            partition_key=partition_key,
            instance=instance,
            run_config={**QUIET, **(run_config or {})},
            resources=dict(resources or default_resources()),
            raise_on_error=True,
            tags=run_tags(),
        )


def recorded(result: dg.ExecuteInProcessResult, asset: str) -> dict[str, Any]:
    """What `asset` recorded in this run: its materialization's metadata, as plain values."""
    md = result.asset_materializations_for_node(asset)[0].metadata
    return {k: getattr(v, "value", v) for k, v in md.items()}


class StageRuns:
    """A stage's in-process runs: each gets the ops of `run_config` that it selects (Dagster
    refuses config for ops a run does not select), and advances the stage's bar (it
    disappears when done, or at the first failure)."""

    def __init__(
        self,
        name: str,
        total: int,
        instance: dg.DagsterInstance,
        resources: Mapping[str, Any] | None = None,
        run_config: Mapping[str, Any] | None = None,
        progress: bool = False,
    ) -> None:
        from simpersona.progress import progress_bar

        self.instance, self.resources = instance, resources
        self.ops: dict[str, Any] = dict((run_config or {}).get("ops", {}))
        self._block: Any = progress_bar(total, name, unit="runs", enabled=progress, transient=True)
        self._bar = self._block.__enter__()

    def __enter__(self) -> "StageRuns":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def run(
        self,
        selection: Iterable[str],
        partition_key: str | None = None,
        ops: Mapping[str, Any] | None = None,
    ) -> dict[str, dict[str, Any]]:
        """Materialize `selection` (with `ops`, else the stage's config of the ops it selects);
        returns what each selected asset recorded, by asset name."""
        selection = list(selection)
        if ops is None:
            ops = {name: self.ops[name] for name in selection if name in self.ops}
        result = materialize(
            selection, self.instance, partition_key, self.resources, {"ops": dict(ops)}
        )
        self.advance()
        return {a: recorded(result, a) for a in selection}

    def advance(self, n: int = 1) -> None:
        self._bar.advance(n)

    def close(self) -> None:
        if self._block is not None:
            self._block.__exit__(None, None, None)
            self._block = None
