"""30-minute inactivity sessionization for events without a session id."""

from __future__ import annotations

import numpy as np
import polars as pl

SESSION_GAP_MINUTES = 30
_PER_MINUTE = {"ns": 60_000_000_000, "us": 60_000_000, "ms": 60_000}


def sessionize(events: pl.DataFrame, gap_minutes: int = SESSION_GAP_MINUTES) -> pl.DataFrame:
    """Fill null `session_id`s: a buyer's events in one shop form one session until a gap of
    more than `gap_minutes`. Existing session ids are kept.

    The id is derived from (buyer, session start), so the same session gets the same id
    whichever partition computes it. Returns the rows in their original order.
    """
    if events.is_empty() or events["session_id"].null_count() == 0:
        return events
    missing = events["session_id"].is_null()
    todo = events.filter(missing).select("shop_id", "buyer_id", "ts")
    groups = _exact_groups(todo, ["shop_id", "buyer_id"])
    ts = todo["ts"]
    gap = gap_units(ts.dtype, gap_minutes)
    if groups is None or ts.null_count() or gap is None:
        return _sessionize_polars(events, gap_minutes)
    session, first = inactivity_sessions(groups, ts.to_physical().to_numpy(), gap)
    ids = session_ids(todo["buyer_id"].gather(first), ts.gather(first)).gather(session)
    # Put the new ids into the null slots, rows keeping their order. Not Series.scatter: on
    # String columns it corrupts the result (polars 1.x; docs/pitfalls), so each row gathers
    # the id of its rank among the missing rows instead.
    rank = np.maximum(np.cumsum(missing.to_numpy()) - 1, 0)
    aligned = ids.gather(rank)
    filled = pl.select(
        pl.when(pl.lit(missing)).then(pl.lit(aligned)).otherwise(pl.lit(events["session_id"]))
    ).to_series()
    return events.with_columns(filled.alias("session_id"))


def gap_units(ts_dtype: pl.DataType, gap_minutes: int) -> int | None:
    """The session gap in the physical unit of a Datetime column (None for other types)."""
    if not isinstance(ts_dtype, pl.Datetime):
        return None
    return gap_minutes * _PER_MINUTE[ts_dtype.time_unit]


def inactivity_sessions(
    group: np.ndarray, ts: np.ndarray, gap: int
) -> tuple[np.ndarray, np.ndarray]:
    """Inactivity sessions of rows: those of one `group` (any integer id of a buyer–shop
    pair), taken in time order (ties in row order), form one session until the time to the
    previous row exceeds `gap`. `ts`: int64 timestamps, no nulls.

    Returns the session number of each row (dense, ordered by group then start) and the
    first row of each session (its start: the session's earliest row)."""
    n = len(ts)
    if n == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    order = np.lexsort((ts, group))  # stable: equal (group, ts) keep their row order
    g, t = group[order], ts[order]
    new = np.empty(n, dtype=bool)
    new[0] = True
    np.not_equal(g[1:], g[:-1], out=new[1:])
    new[1:] |= (t[1:] - t[:-1]) > gap
    session = np.empty(n, dtype=np.int64)
    session[order] = np.cumsum(new) - 1
    return session, order[new]


def session_ids(buyer_id: pl.Series, start: pl.Series) -> pl.Series:
    """The id of a sessionized session: "<buyer>-<start epoch ms>" (readable and stable
    across library versions); null when the buyer is null."""
    frame = pl.DataFrame({"buyer_id": buyer_id, "start": start})
    start_ms = pl.col("start").dt.epoch("ms").cast(pl.String)
    return frame.select(
        pl.concat_str([pl.col("buyer_id"), start_ms], separator="-").alias("session_id")
    ).to_series()


def _exact_groups(frame: pl.DataFrame, keys: list[str]) -> np.ndarray | None:
    """Integer id of each row's `keys` (not dense, not ordered), from a 64-bit hash, checked
    exactly: every row must equal the first row of its id (None otherwise; callers fall back
    to a string sort)."""
    import pandas as pd

    if frame.is_empty():
        return np.zeros(0, dtype=np.int64)
    h = np.zeros(frame.height, dtype=np.uint64)
    for i, k in enumerate(keys):
        h = (h * np.uint64(0x9E3779B97F4A7C15)) ^ frame[k].hash(seed=17 + i).to_numpy()
    codes, uniques = pd.factorize(h)
    first = np.full(len(uniques), frame.height, dtype=np.int64)
    np.minimum.at(first, codes, np.arange(frame.height))
    rep = pl.Series(first[codes])
    for k in keys:
        col = frame[k]
        if not col.eq_missing(col.gather(rep)).all():
            return None  # a hash collision merged two keys
    return codes.astype(np.int64, copy=False)


def _sessionize_polars(events: pl.DataFrame, gap_minutes: int) -> pl.DataFrame:
    """Reference implementation (string sort and window), for inputs the fast path does not
    take: null timestamps, non-Datetime ts, a hash collision."""
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
    start_ms = pl.col("__start").dt.epoch("ms").cast(pl.String)
    missing = missing.with_columns(
        pl.concat_str([pl.col("buyer_id"), start_ms], separator="-").alias("session_id")
    ).select(df.columns)
    return pl.concat([df.filter(pl.col("session_id").is_not_null()), missing]).sort(idx).drop(idx)
