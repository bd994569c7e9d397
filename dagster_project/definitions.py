"""The SimPersona code location: each stage's definitions (dagster_project/defs/<stage>/)
merged, with the resources and executor they share."""

import dagster as dg

from dagster_project.defs.evaluation import definitions as evaluation
from dagster_project.defs.features import definitions as features
from dagster_project.defs.grounding import definitions as grounding
from dagster_project.defs.ingest import definitions as ingest
from dagster_project.defs.personas import definitions as personas
from dagster_project.defs.refresh import definitions as refresh
from dagster_project.defs.run import definitions as run
from dagster_project.defs.simulation import definitions as simulation
from dagster_project.defs.traces import definitions as traces
from dagster_project.resources import default_resources

# Each stage's Definitions (one module-level Definitions object is allowed per code location).
STAGES = tuple(
    m.defs
    for m in (ingest, features, personas, traces, grounding, simulation, evaluation, refresh, run)
)
# Every asset and check, for in-process runs (dagster_project/run/, tests): dg.materialize
# takes the definitions, not a Definitions object.
all_assets = [a for stage in STAGES for a in stage.assets or ()]
all_checks = [c for stage in STAGES for c in stage.asset_checks or ()]

defs = dg.Definitions.merge(
    *STAGES,
    dg.Definitions(
        # One process per run: parallelism comes from runs (one per partition); per-step
        # processes would each spend ~10 s importing torch and this code location.
        executor=dg.in_process_executor,
        resources=default_resources(),
    ),
)
