"""The project's Dagster instance for in-process runs (the CLI, the demo, tests): where it
lives, the tags that tie a run to its process, and the dynamic partitions of a lake."""

import os
import socket
from pathlib import Path

import dagster as dg

from dagster_project.partitions import DAYS, SHOPS
from simpersona.lake import Lake
from simpersona.processes import process_alive

# The instance's settings when this project creates it: storage under its folder (Dagster's
# defaults) and no usage statistics (nothing here may call out; edit the file to opt in).
DAGSTER_YAML = """\
# Created by simpersona: storage under this folder (Dagster's defaults).
telemetry:
  enabled: false
"""


def dagster_instance(home: str | os.PathLike[str] | None = None) -> dg.DagsterInstance:
    """The project's Dagster instance: $DAGSTER_HOME, else `data/dagster_home` (created).
    Runs of this machine that a killed process left STARTED are marked failed first."""
    if home is None and os.environ.get("DAGSTER_HOME"):
        instance = dg.DagsterInstance.get()
    else:
        path = Path(home or os.environ.get("SIMPERSONA_DATA_DIR", "data")) / "dagster_home"
        if home is not None:
            path = Path(home)
        path = path.resolve()
        path.mkdir(parents=True, exist_ok=True)
        # an empty dagster.yaml: the defaults (storage under this folder), said once, here,
        # instead of Dagster's notice on every command
        config = path / "dagster.yaml"
        if not config.exists():
            config.write_text(DAGSTER_YAML)
        os.environ["DAGSTER_HOME"] = str(path)
        instance = dg.DagsterInstance.get()
    fail_interrupted_runs(instance)
    return instance


# In-process runs carry the process that runs them, so that the next command can tell a
# run whose process was killed (it stays STARTED for ever) from one still going.
PID_TAG, HOST_TAG = "simpersona/pid", "simpersona/host"
_OPEN = [dg.DagsterRunStatus.STARTED, dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.NOT_STARTED]


def run_tags() -> dict[str, str]:
    return {PID_TAG: str(os.getpid()), HOST_TAG: socket.gethostname()}


def fail_interrupted_runs(instance: dg.DagsterInstance) -> list[str]:
    """Mark failed the open runs this machine started in-process whose process is gone;
    returns their run ids. Runs of the daemon or of other machines are left to Dagster."""
    failed = []
    for run in instance.get_runs(filters=dg.RunsFilter(statuses=_OPEN)):
        pid, host = run.tags.get(PID_TAG), run.tags.get(HOST_TAG)
        if not pid or host != socket.gethostname() or process_alive(int(pid)):
            continue
        instance.report_run_failed(
            run, f"interrupted: the process that ran it (pid {pid}) is gone (killed?)"
        )
        failed.append(run.run_id)
    return failed


def register_partitions(instance: dg.DagsterInstance, lake: Lake) -> tuple[list[str], list[str]]:
    """Add the lake's shops and days as dynamic partitions; returns the newly added ones."""
    shops, days = lake.shops(), sorted({d for s in lake.shops() for d in lake.dates(s)})
    new_shops = sorted(set(shops) - set(instance.get_dynamic_partitions(SHOPS)))
    new_days = sorted(set(days) - set(instance.get_dynamic_partitions(DAYS)))
    if new_shops:
        instance.add_dynamic_partitions(SHOPS, new_shops)
    if new_days:
        instance.add_dynamic_partitions(DAYS, new_days)
    return new_shops, new_days
