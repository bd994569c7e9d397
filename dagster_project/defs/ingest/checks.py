"""Checks of ingestion, on each shop-day of `raw_events`:

- `row_count`: the partition's Parquet file exists and has rows (blocking).
- `reject_share`: the quarantined rows of the partition (from the quarantine table) over all
  its rows stay at or below a threshold (run config, default 2 %), an early warning below
  ingestion's hard limit (IngestSettings, 5 %).
"""

import dagster as dg
from pydantic import Field

from dagster_project.defs.checks_common import ERROR, parquet_rows, row_count_result
from dagster_project.defs.ingest.assets import raw_events
from dagster_project.partitions import shop_day_partitions
from dagster_project.resources import WarehouseResource


def _shop_date(context: dg.AssetCheckExecutionContext) -> tuple[str, str]:
    key = shop_day_partitions.get_partition_key_from_str(str(context.partition_key))
    return key.keys_by_dimension["shop"], key.keys_by_dimension["date"]


@dg.asset_check(
    asset=raw_events,
    name="row_count",
    blocking=True,
    partitions_def=shop_day_partitions,
    description="The shop-day's validated events exist and have rows.",
)
def raw_events_row_count(
    context: dg.AssetCheckExecutionContext, warehouse: WarehouseResource
) -> dg.AssetCheckResult:
    shop, date = _shop_date(context)
    path = warehouse.warehouse().partition_path("raw_events", shop, date)
    return row_count_result(path, f"raw_events of shop {shop} on {date}")


class RejectShareConfig(dg.Config):
    max_reject_share: float = Field(
        default=0.02,
        description="Fail the check when more than this share of a shop-day's rows is in "
        "quarantine (ingestion itself fails above IngestSettings.max_reject_share).",
    )


@dg.asset_check(
    asset=raw_events,
    name="reject_share",
    partitions_def=shop_day_partitions,
    description="Quarantined rows over all rows of the shop-day, at most max_reject_share.",
)
def raw_events_reject_share(
    context: dg.AssetCheckExecutionContext,
    config: RejectShareConfig,
    warehouse: WarehouseResource,
) -> dg.AssetCheckResult:
    shop, date = _shop_date(context)
    wh = warehouse.warehouse()
    valid = parquet_rows(wh.partition_path("raw_events", shop, date)) or 0
    rejected = parquet_rows(wh.quarantine_path("events", shop, date)) or 0
    total = valid + rejected
    share = rejected / total if total else 0.0
    passed = share <= config.max_reject_share
    return dg.AssetCheckResult(
        passed=passed,
        severity=ERROR,
        description=None
        if passed
        else f"{rejected} of {total} rows of shop {shop} on {date} rejected "
        f"({share:.2%} > {config.max_reject_share:.2%}); see `simpersona quarantine`",
        metadata={
            "rows_valid": valid,
            "rows_rejected": rejected,
            "reject_share": round(share, 6),
            "max_reject_share": config.max_reject_share,
        },
    )


checks = [raw_events_row_count, raw_events_reject_share]
