"""What the stages' asset checks share: a partition's row count from its Parquet footer and
the `row_count` check of a shop-partitioned warehouse table.

Checks run in the same run as the asset they check (its partition) and fail with severity
ERROR, so a bad partition shows red in the UI's asset and run views. `row_count` is
blocking: an empty partition stops the run before the assets downstream of it are computed
from nothing.
"""

import dagster as dg
import polars as pl

from dagster_project.partitions import shop_partitions
from dagster_project.resources import WarehouseResource

ERROR = dg.AssetCheckSeverity.ERROR


def parquet_rows(path) -> int | None:
    """Rows of a Parquet file from its footer, None when the file is missing."""
    if not path.exists():
        return None
    return int(pl.scan_parquet(path).select(pl.len()).collect().item())


def row_count_result(path, what: str) -> dg.AssetCheckResult:
    rows = parquet_rows(path)
    passed = bool(rows)
    why = f"{what} has {rows} rows" if rows is not None else f"{what} missing: {path}"
    return dg.AssetCheckResult(
        passed=passed,
        severity=ERROR,
        description=None if passed else why,
        metadata={"rows": rows if rows is not None else -1, "path": dg.MetadataValue.path(path)},
    )


def shop_row_count_check(asset: dg.AssetsDefinition) -> dg.AssetChecksDefinition:
    """row_count check of a shop-partitioned warehouse table named like its asset."""
    table = asset.key.to_user_string()

    @dg.asset_check(
        asset=asset,
        name="row_count",
        blocking=True,
        partitions_def=shop_partitions,
        description=f"The shop's {table} partition exists and has rows.",
    )
    def _check(
        context: dg.AssetCheckExecutionContext, warehouse: WarehouseResource
    ) -> dg.AssetCheckResult:
        shop = context.partition_key
        path = warehouse.warehouse().partition_path(table, shop)
        return row_count_result(path, f"{table} of shop {shop}")

    return _check
