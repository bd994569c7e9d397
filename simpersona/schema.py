"""Canonical raw tables: events, products, collections, and the quarantine table.

Every importer and the synthetic generator write these tables into the lake; ingestion
validates them and writes the warehouse copies. `docs/data-model.md` documents each field.
"""

from __future__ import annotations

from typing import Final

import polars as pl

EVENT_TYPES: Final[tuple[str, ...]] = (
    "page_view",
    "collection_view",
    "product_view",
    "search",
    "add_to_cart",
    "remove_from_cart",
    "checkout_started",
    "checkout_completed",
)

TS_DTYPE = pl.Datetime("us", "UTC")

EVENTS_SCHEMA: Final[dict[str, pl.DataType]] = {
    "event_id": pl.String(),
    "shop_id": pl.String(),
    "buyer_id": pl.String(),
    "session_id": pl.String(),  # nullable: filled by 30-min inactivity sessionization
    "ts": TS_DTYPE,
    "event_type": pl.String(),
    "product_id": pl.String(),
    "collection_id": pl.String(),
    "search_query": pl.String(),
    "quantity": pl.Int64(),
    "price": pl.Float64(),
    "order_value": pl.Float64(),
    "currency": pl.String(),
    "url": pl.String(),
}

PRODUCTS_SCHEMA: Final[dict[str, pl.DataType]] = {
    "shop_id": pl.String(),
    "product_id": pl.String(),
    "title": pl.String(),
    "description": pl.String(),
    "price": pl.Float64(),
    "collection_ids": pl.List(pl.String()),
}

COLLECTIONS_SCHEMA: Final[dict[str, pl.DataType]] = {
    "shop_id": pl.String(),
    "collection_id": pl.String(),
    "title": pl.String(),
}

# Fields that must be present on every row of each table.
EVENTS_REQUIRED: Final[tuple[str, ...]] = ("event_id", "shop_id", "buyer_id", "ts", "event_type")
PRODUCTS_REQUIRED: Final[tuple[str, ...]] = ("shop_id", "product_id", "title")
COLLECTIONS_REQUIRED: Final[tuple[str, ...]] = ("shop_id", "collection_id", "title")

# Fields an event type cannot do without. add_to_cart / remove_from_cart may lack a product:
# pixel-style logs often do not say what was carted, and dropping those rows would bias the
# funnel rates the buyer vectors are built from.
EVENT_TYPE_REQUIRED: Final[dict[str, tuple[str, ...]]] = {
    "product_view": ("product_id",),
    "collection_view": ("collection_id",),
    "search": ("search_query",),
}

QUARANTINE_SCHEMA: Final[dict[str, pl.DataType]] = {
    "table": pl.String(),  # events | products | collections
    "shop_id": pl.String(),
    "date": pl.String(),  # partition date (YYYY-MM-DD) for events, "" for catalog tables
    "source_file": pl.String(),
    "source_row": pl.Int64(),  # 1-based data row in the source file (header not counted)
    "field": pl.String(),
    "reason": pl.String(),
    "raw": pl.String(),  # the rejected row as JSON, so nothing is lost
}

# Optional provenance columns an importer may add to lake files, so that ingestion can name
# the original source file and row (not the lake copy) when it quarantines a row.
PROVENANCE_SCHEMA: Final[dict[str, pl.DataType]] = {
    "source_file": pl.String(),
    "source_row": pl.Int64(),
}

SCHEMAS: Final[dict[str, dict[str, pl.DataType]]] = {
    "events": EVENTS_SCHEMA,
    "products": PRODUCTS_SCHEMA,
    "collections": COLLECTIONS_SCHEMA,
}


def empty_frame(table: str) -> pl.DataFrame:
    """An empty frame with the canonical schema of `table`."""
    return pl.DataFrame(schema=SCHEMAS.get(table, QUARANTINE_SCHEMA))


def conform(df: pl.DataFrame, table: str, keep_provenance: bool = True) -> pl.DataFrame:
    """Select the canonical columns of `table` in order, adding missing ones as nulls and
    casting the rest (strictly: a value that does not cast is a bug in the writer).
    Provenance columns are kept when present and `keep_provenance` is set."""
    schema = dict(SCHEMAS[table])
    if keep_provenance:
        schema.update({k: v for k, v in PROVENANCE_SCHEMA.items() if k in df.columns})
    cols = []
    for name, dtype in schema.items():
        if name in df.columns:
            cols.append(pl.col(name).cast(dtype))
        else:
            cols.append(pl.lit(None, dtype=dtype).alias(name))
    return df.select(cols)


def sanitize_shop_id(shop_id: str) -> str:
    """A shop id safe as a Dagster partition key and a hive folder name.

    Commas break re-backfills in the Dagster UI (dagster#32183) and '/', '=' break hive paths.
    """
    out = []
    for ch in shop_id.strip():
        out.append(ch if ch.isalnum() or ch in "-_." else "-")
    key = "".join(out).strip("-.")
    if not key:
        raise ValueError(f"shop id {shop_id!r} has no usable characters")
    return key
