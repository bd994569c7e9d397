"""The importer quarantine: why a source row was not imported, as QUARANTINE_SCHEMA rows.

Ingestion has its own list for what it rejects; these are the reasons an importer
quarantines a row for (docs/importers.md, "Where every source row goes").
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import polars as pl

from simpersona.schema import QUARANTINE_SCHEMA

MALFORMED_ROW = "malformed_row"
UNPARSEABLE_TIMESTAMP = "unparseable_timestamp"
UNKNOWN_EVENT_TYPE = "unknown_event_type"
UNMAPPABLE_EVENT_TYPE = "unmappable_event_type"
UNPARSEABLE_VALUE = "unparseable_value"
MISSING_SHOP_ID = "missing_shop_id"
INVALID_SHOP_ID = "invalid_shop_id"
IMPLAUSIBLE_TIMESTAMP = "implausible_timestamp"


def reject(
    shop_id: str | None,
    source_file: str,
    source_row: int | None,
    field_name: str,
    reason: str,
    raw: str,
    date: str = "",
) -> dict[str, Any]:
    """One quarantine row as a dict (`raw`: the source row as JSON)."""
    return {
        "table": "events",
        "shop_id": shop_id or "",
        "date": date,
        "source_file": source_file,
        "source_row": source_row,
        "field": field_name,
        "reason": reason,
        "raw": raw,
    }


def rejects_frame(rows: Sequence[dict[str, Any]]) -> pl.DataFrame:
    return pl.DataFrame(list(rows), schema=QUARANTINE_SCHEMA)


def reject_rows(
    df: pl.DataFrame,
    raw_columns: Sequence[str],
    reason: str,
    field_name: str | pl.Expr,
    shop: str | pl.Expr,
    ts: pl.Expr | None = None,
) -> pl.DataFrame:
    """QUARANTINE rows for every row of `df`; `raw` is the source row as a JSON object."""
    if df.is_empty():
        return pl.DataFrame(schema=QUARANTINE_SCHEMA)
    shop_e = pl.lit(shop, pl.String) if isinstance(shop, str) else shop.cast(pl.String)
    field_e = pl.lit(field_name, pl.String) if isinstance(field_name, str) else field_name
    date_e = ts.dt.strftime("%Y-%m-%d").fill_null("") if ts is not None else pl.lit("", pl.String)
    cols = [c for c in raw_columns if c in df.columns]
    raw = pl.struct([pl.col(c) for c in cols]).struct.json_encode() if cols else pl.lit("{}")
    return df.select(
        pl.lit("events", pl.String).alias("table"),
        shop_e.fill_null("").alias("shop_id"),
        date_e.alias("date"),
        pl.col("source_file").cast(pl.String),
        pl.col("source_row").cast(pl.Int64),
        field_e.cast(pl.String).alias("field"),
        pl.lit(reason, pl.String).alias("reason"),
        raw.alias("raw"),
    )


def concat_rejects(frames: Sequence[pl.DataFrame]) -> pl.DataFrame:
    """Quarantine frames as one, in source file and row order."""
    if not frames:
        return rejects_frame([])
    return pl.concat([f.select(list(QUARANTINE_SCHEMA)) for f in frames]).sort(
        ["source_file", "source_row"], maintain_order=True
    )
