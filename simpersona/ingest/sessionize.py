"""30-minute inactivity sessionization for events without a session id."""

from __future__ import annotations

import polars as pl

SESSION_GAP_MINUTES = 30


def sessionize(events: pl.DataFrame, gap_minutes: int = SESSION_GAP_MINUTES) -> pl.DataFrame:
    """Fill null `session_id`s: a buyer's events in one shop form one session until a gap of
    more than `gap_minutes`. Existing session ids are kept.

    The id is derived from (buyer, session start), so the same session gets the same id
    whichever partition computes it. Returns the rows in their original order.
    """
    if events.is_empty() or events["session_id"].null_count() == 0:
        return events
    gap = pl.duration(minutes=gap_minutes)
    idx = "__row"
    df = events.with_row_index(idx)
    missing = df.filter(pl.col("session_id").is_null())
    missing = missing.sort(["shop_id", "buyer_id", "ts", idx]).with_columns(
        (
            (pl.col("ts") - pl.col("ts").shift(1).over(["shop_id", "buyer_id"]) > gap)
            | pl.col("ts").shift(1).over(["shop_id", "buyer_id"]).is_null()
        ).alias("__new")
    )
    missing = missing.with_columns(
        pl.when(pl.col("__new")).then(pl.col("ts")).otherwise(None).forward_fill().alias("__start")
    )
    # Readable and stable across library versions: "<buyer>-<start epoch ms>".
    start_ms = pl.col("__start").dt.epoch("ms").cast(pl.String)
    missing = missing.with_columns(
        pl.concat_str([pl.col("buyer_id"), start_ms], separator="-").alias("session_id")
    ).select(df.columns)
    return pl.concat([df.filter(pl.col("session_id").is_not_null()), missing]).sort(idx).drop(idx)
