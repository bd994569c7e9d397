"""Run the pipeline in-process against a persistent Dagster instance (the CLI and the demo
use this; the web UI and daemon use the same definitions).

- `instance`: the project's Dagster instance, run tags, dynamic partitions;
- `steps`: one in-process run of a selection, and a stage's runs with their progress bar;
- `stages`: each stage's runs (`run_ingestion` … `run_simulation`);
- `figures`: what each stage hands back, and its summary keys;
- `console`: the personas stage on the console;
- `demo`: `simpersona demo`.
"""

from dagster_project.run.console import print_personas, recovery_line
from dagster_project.run.demo import (
    DEMO_GROUNDING_REAL_BASE,
    DEMO_SIMULATION,
    DEMO_SIMULATION_REAL_BASE,
    DEMO_STORE_WALKS,
    DEMO_TRACES_REAL_BASE,
    run_demo,
    seed_hash_key,
)
from dagster_project.run.figures import (
    PERSONA_SUMMARY_KEYS,
    FeaturesRun,
    GroundingRun,
    IngestionFailed,
    IngestRun,
    PersonasRun,
    SimulationRun,
    TracesRun,
)
from dagster_project.run.instance import (
    dagster_instance,
    fail_interrupted_runs,
    register_partitions,
    run_tags,
)
from dagster_project.run.stages import (
    run_features,
    run_grounding,
    run_ingestion,
    run_personas,
    run_simulation,
    run_traces,
)
from dagster_project.run.steps import QUIET, StageRuns, materialize, recorded

__all__ = [
    "DEMO_GROUNDING_REAL_BASE",
    "DEMO_SIMULATION",
    "DEMO_SIMULATION_REAL_BASE",
    "DEMO_STORE_WALKS",
    "DEMO_TRACES_REAL_BASE",
    "PERSONA_SUMMARY_KEYS",
    "QUIET",
    "FeaturesRun",
    "GroundingRun",
    "IngestRun",
    "IngestionFailed",
    "PersonasRun",
    "SimulationRun",
    "StageRuns",
    "TracesRun",
    "dagster_instance",
    "fail_interrupted_runs",
    "materialize",
    "print_personas",
    "recorded",
    "recovery_line",
    "register_partitions",
    "run_demo",
    "run_features",
    "run_grounding",
    "run_ingestion",
    "run_personas",
    "run_simulation",
    "run_tags",
    "run_traces",
    "seed_hash_key",
]
