"""Ingest stage: validated catalog and events, with everything rejected kept in quarantine."""

import dagster as dg
import polars as pl

from dagster_project.partitions import shop_day_partitions, shop_partitions
from dagster_project.record import record
from dagster_project.resources import (
    BuyerHashResource,
    IngestSettings,
    LakeResource,
    MLflowResource,
    WarehouseResource,
)
from simpersona.ingest.ingest import ingest_catalog, ingest_events, prune_vanished_days
from simpersona.markdown import counts_to_markdown, frame_to_markdown

GROUP = "ingest"


@dg.asset(
    group_name=GROUP,
    partitions_def=shop_partitions,
    kinds={"polars", "parquet"},
    description="A shop's products and collections, validated; rejected rows in quarantine.",
)
def catalog(
    context: dg.AssetExecutionContext,
    lake: LakeResource,
    warehouse: WarehouseResource,
    ingest_settings: IngestSettings,
    mlflow: MLflowResource,
) -> dg.MaterializeResult:
    shop = context.partition_key
    wh, lk = warehouse.warehouse(), lake.lake()
    res = ingest_catalog(lk, wh, shop, ingest_settings.max_reject_share, ingest_settings.bounds())
    gone = prune_vanished_days(lk, wh, shop)
    if gone:
        context.log.warning(f"{shop}: days no longer in the lake removed: {', '.join(gone)}")
    figures = {
        "products": res.products,
        "collections": res.collections,
        "rows_read": res.rows_read,
        "rows_rejected": res.rows_rejected,
        "days_removed": len(gone),
    }
    preview = wh.read_partition("products", shop).head(10).drop("description")
    return record(
        context,
        mlflow,
        figures,
        tags={"shop": shop},
        params={"shop": shop, "max_reject_share": ingest_settings.max_reject_share},
        metadata={
            "rejects_by_reason": dg.MetadataValue.md(
                counts_to_markdown(res.rejects_by_reason, "reason")
            ),
            "preview": dg.MetadataValue.md(frame_to_markdown(preview)),
        },
        path=wh.partition_path("products", shop),
    )


@dg.asset(
    group_name=GROUP,
    partitions_def=shop_day_partitions,
    deps=[
        dg.AssetDep(
            catalog,
            partition_mapping=dg.MultiToSingleDimensionPartitionMapping(
                partition_dimension_name="shop"
            ),
        )
    ],
    kinds={"polars", "parquet", "duckdb"},
    description=(
        "One shop-day of canonical events: validated, sessionized, buyer ids de-identified. "
        "Rejected rows go to the quarantine table with file, row and reason."
    ),
)
def raw_events(
    context: dg.AssetExecutionContext,
    lake: LakeResource,
    warehouse: WarehouseResource,
    buyer_hash: BuyerHashResource,
    ingest_settings: IngestSettings,
    mlflow: MLflowResource,
) -> dg.MaterializeResult:
    key = context.partition_key.keys_by_dimension  # type: ignore[union-attr]
    shop, date = key["shop"], key["date"]
    wh, lk = warehouse.warehouse(), lake.lake()
    if not wh.has_partition("products", shop):
        context.log.warning(f"catalog of {shop} not materialized yet; ingesting it first")
        ingest_catalog(lk, wh, shop, ingest_settings.max_reject_share, ingest_settings.bounds())
    res = ingest_events(
        lk,
        wh,
        shop,
        date,
        buyer_hash.hash_key(),
        max_reject_share=ingest_settings.max_reject_share,
        session_gap_minutes=ingest_settings.session_gap_minutes,
        bounds=ingest_settings.bounds(),
    )
    figures = {
        "rows_read": res.rows_read,
        "rows_valid": res.rows_valid,
        "rows_rejected": res.rows_rejected,
        "buyers": res.buyers,
        "sessions_filled": res.sessions_filled,
    }
    preview = (
        pl.read_parquet(res.output_path)
        .head(10)
        .select("ts", "event_type", "buyer_id", "session_id", "product_id", "search_query")
    )
    return record(
        context,
        mlflow,
        figures,
        tags={"shop": shop, "date": date},
        params={"shop": shop, "date": date, "files": ",".join(res.files)},
        metrics={
            **figures,
            "reject_share": res.reject_share,
            **{f"events.{k}": v for k, v in res.events_by_type.items()},
            **{f"rejects.{k}": v for k, v in res.rejects_by_reason.items()},
        },
        metadata={
            "reject_share": dg.MetadataValue.float(round(res.reject_share, 6)),
            "rejects_by_reason": dg.MetadataValue.md(
                counts_to_markdown(res.rejects_by_reason, "reason")
            ),
            "rejects_by_file": dg.MetadataValue.md(counts_to_markdown(res.rejects_by_file, "file")),
            "events_by_type": dg.MetadataValue.md(
                counts_to_markdown(res.events_by_type, "event_type")
            ),
            "source_files": dg.MetadataValue.json(res.files),
            "preview": dg.MetadataValue.md(frame_to_markdown(preview)),
            "quarantine_path": dg.MetadataValue.path(res.quarantine_path),
        },
        rows=res.rows_valid,
        path=res.output_path,
    )


@dg.asset(
    group_name=GROUP,
    deps=[raw_events, catalog],
    kinds={"duckdb"},
    description=(
        "Every rejected row of every shop and day, with file, row, field and reason; "
        "refreshes the DuckDB views (raw_events, products, collections, quarantine)."
    ),
)
def quarantine(
    context: dg.AssetExecutionContext, warehouse: WarehouseResource, mlflow: MLflowResource
) -> dg.MaterializeResult:
    wh = warehouse.warehouse()
    views = wh.refresh_views()
    q = wh.read_quarantine()
    by = q.group_by(["table", "shop_id", "reason"]).len().sort("len", descending=True)
    return record(
        context,
        mlflow,
        {},
        metrics={"rows": q.height},
        log=lambda run: (
            run.log_text(by.write_csv(), "quarantine_by_reason.csv") if by.height else None
        ),
        metadata={
            "by_table_shop_reason": dg.MetadataValue.md(frame_to_markdown(by, 50)),
            "duckdb_views": dg.MetadataValue.json(views),
            "duckdb_path": dg.MetadataValue.path(str(wh.duckdb_path)),
        },
        rows=q.height,
    )
