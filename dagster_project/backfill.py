"""Per-store backfills from the command line (`simpersona backfill`): an asset backfill on
the Dagster instance ($DAGSTER_HOME), the same kind the UI's "Materialize… → backfill" and
GraphQL's `launchPartitionBackfill` create. The daemon (`make ui`, `dagster dev` or
`dagster-daemon run`) executes it in dependency order and the UI shows its progress.

What a shop's backfill covers: its catalog, its events of every day in [from, to] with raw
files, and its per-shop chain (shop_refresh_job's assets; the ones after the feature
transform and the codebook only once those are fitted).
"""

import datetime as dt
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

import dagster as dg
from dagster._core.definitions.assets.graph.asset_graph_subset import AssetGraphSubset
from dagster._core.definitions.events import AssetKeyPartitionKey
from dagster._core.execution.backfill import PartitionBackfill
from dagster._core.utils import make_new_backfill_id

from dagster_project.defs.refresh.sensors import NEEDS_FIT
from dagster_project.partitions import shop_day_key
from dagster_project.selections import SHOP_REFRESH_ASSETS
from simpersona.lake import Lake


@dataclass
class BackfillPlan:
    shops: list[str]
    days: dict[str, list[str]] = field(default_factory=dict)  # shop -> days with raw files
    assets: list[str] = field(default_factory=list)  # per-shop assets after ingestion

    def targets(self) -> set[AssetKeyPartitionKey]:
        out = set()
        for shop in self.shops:
            out.add(AssetKeyPartitionKey(dg.AssetKey("catalog"), shop))
            for day in self.days.get(shop, []):
                out.add(
                    AssetKeyPartitionKey(dg.AssetKey("raw_events"), str(shop_day_key(shop, day)))
                )
            out |= {AssetKeyPartitionKey(dg.AssetKey(a), shop) for a in self.assets}
        return out


def plan_backfill(
    instance: dg.DagsterInstance,
    lake: Lake,
    shops: Iterable[str],
    date_from: dt.date | None = None,
    date_to: dt.date | None = None,
    ingest_only: bool = False,
) -> BackfillPlan:
    """Which partitions a backfill of `shops` over [date_from, date_to] covers; registers
    shops and days of the lake the instance does not know yet. Unknown shops fail with the
    lake's folder named."""
    from dagster_project.run import register_partitions

    shops = sorted(set(shops))
    missing = [s for s in shops if s not in lake.shops()]
    if missing:
        raise ValueError(f"no shop folder for {missing} in the lake at {lake.root}")
    register_partitions(instance, lake)
    lo, hi = (date_from or dt.date.min).isoformat(), (date_to or dt.date.max).isoformat()
    plan = BackfillPlan(shops=shops)
    for shop in shops:
        plan.days[shop] = [d for d in lake.dates(shop) if lo <= d <= hi]
    if not ingest_only:
        fitted = {
            n
            for n in set(NEEDS_FIT.values())
            if instance.get_latest_materialization_event(dg.AssetKey(n)) is not None
        }
        plan.assets = [
            a for a in SHOP_REFRESH_ASSETS if a not in NEEDS_FIT or NEEDS_FIT[a] in fitted
        ]
    return plan


def launch_backfill(
    instance: dg.DagsterInstance, plan: BackfillPlan, title: str | None = None
) -> str:
    """Store the asset backfill on the instance (the daemon runs it); returns its id."""
    from dagster_project.definitions import defs

    subset = AssetGraphSubset.from_asset_partition_set(plan.targets(), defs.resolve_asset_graph())
    backfill = PartitionBackfill.from_asset_graph_subset(
        backfill_id=make_new_backfill_id(),
        backfill_timestamp=time.time(),
        tags={"simpersona/trigger": "cli-backfill", "simpersona/shops": ",".join(plan.shops)},
        dynamic_partitions_store=instance,
        asset_graph_subset=subset,
        title=title or f"backfill of {', '.join(plan.shops)}",
        description=None,
        run_config=None,
    )
    instance.add_backfill(backfill)
    return backfill.backfill_id
