"""Asset checks: they run in the same run as the asset they check (its partition) and fail
with severity ERROR, so a bad partition shows red in the UI's asset and run views.

- `row_count` on every per-shop output and on each shop-day of `raw_events`: the partition's
  Parquet file exists and has rows. Blocking: an empty partition stops the run before the
  assets downstream of it are computed from nothing.
- `reject_share` on each shop-day of `raw_events`: the quarantined rows of the partition
  (from the quarantine table) over all its rows stay at or below a threshold (run config,
  default 2 %), an early warning below ingestion's hard limit (IngestSettings, 5 %).
- `codebook_usage` on `persona_codebook`: used codes and perplexity of the trained codebook
  above floors (run config), the symptom of a collapsed VQ-VAE.
"""

import json

import dagster as dg
import polars as pl
from pydantic import Field

from dagster_project.assets.features import buyer_features, buyer_vectors, enriched_sessions
from dagster_project.assets.ingest import raw_events
from dagster_project.assets.personas import (
    CODEBOOK,
    persona_assignments,
    persona_codebook,
    store_token_distribution,
)
from dagster_project.partitions import shop_day_partitions, shop_partitions
from dagster_project.resources import ArtifactsResource, WarehouseResource

ERROR = dg.AssetCheckSeverity.ERROR


def _rows(path) -> int | None:
    """Rows of a Parquet file from its footer, None when the file is missing."""
    if not path.exists():
        return None
    return int(pl.scan_parquet(path).select(pl.len()).collect().item())


def _row_count_result(path, what: str) -> dg.AssetCheckResult:
    rows = _rows(path)
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
        return _row_count_result(path, f"{table} of shop {shop}")

    return _check


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
    return _row_count_result(path, f"raw_events of shop {shop} on {date}")


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
    valid = _rows(wh.partition_path("raw_events", shop, date)) or 0
    rejected = _rows(wh.quarantine_path("events", shop, date)) or 0
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


class CodebookUsageConfig(dg.Config):
    min_used_codes: int = Field(default=8, description="Fewest codes in use at the end.")
    min_perplexity: float = Field(default=4.0, description="Lowest final code perplexity.")


@dg.asset_check(
    asset=persona_codebook,
    name="codebook_usage",
    description="Used codes and perplexity of the trained codebook above floors (collapse).",
)
def codebook_usage(
    config: CodebookUsageConfig, artifacts: ArtifactsResource
) -> dg.AssetCheckResult:
    from simpersona.artifacts import current_folder, pointer_path

    folder = current_folder(artifacts.root, CODEBOOK)
    if folder is None:
        return dg.AssetCheckResult(
            passed=False,
            severity=ERROR,
            description=f"no current codebook ({pointer_path(artifacts.root, CODEBOOK)})",
        )
    final = json.loads((folder / "meta.json").read_text())["final"]
    used = int(final.get("used_codes", 0))
    perplexity = float(final.get("perplexity", 0.0))
    low = []
    if used < config.min_used_codes:
        low.append(f"used codes {used} < {config.min_used_codes}")
    if perplexity < config.min_perplexity:
        low.append(f"perplexity {perplexity:.2f} < {config.min_perplexity}")
    return dg.AssetCheckResult(
        passed=not low,
        severity=ERROR,
        description="; ".join(low) or None,
        metadata={
            "codebook_version": folder.name,
            "used_codes": used,
            "perplexity": round(perplexity, 3),
            "min_used_codes": config.min_used_codes,
            "min_perplexity": config.min_perplexity,
        },
    )


all_checks = [
    raw_events_row_count,
    raw_events_reject_share,
    *(
        shop_row_count_check(a)
        for a in (
            enriched_sessions,
            buyer_features,
            buyer_vectors,
            persona_assignments,
            store_token_distribution,
        )
    ),
    codebook_usage,
]
