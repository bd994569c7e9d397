"""Plausibility at import: prices a catalogue may take from event rows, and events whose
time is implausible, moved to the importer quarantine before they make a partition."""

from __future__ import annotations

import datetime as dt

import polars as pl

from simpersona.ingest.rejects import IMPLAUSIBLE_TIMESTAMP, concat_rejects, reject_rows
from simpersona.ingest.result import ImportResult, base_counts
from simpersona.ingest.validate import DEFAULT_BOUNDS, PlausibilityBounds

# An event further than this from the import's median time is implausible: a 1970 or 2099
# clock in a log of 2025 would otherwise make a partition of its own (docs/importers.md).
DEFAULT_WINDOW_DAYS = 366


def catalog_price(expr: pl.Expr, bounds: PlausibilityBounds = DEFAULT_BOUNDS) -> pl.Expr:
    """`expr` where it can be a catalogue price (finite, not negative, within bounds), else
    null. Prices taken from event rows pass through this: one bad order line must not price
    a product, or ingestion rejects the product and with it every event that names it."""
    return pl.when(expr.is_finite() & (expr >= 0) & (expr <= bounds.max_amount)).then(expr)


def screen_timestamps(
    result: ImportResult,
    window_days: int = DEFAULT_WINDOW_DAYS,
    bounds: PlausibilityBounds = DEFAULT_BOUNDS,
) -> ImportResult:
    """Move events whose time is implausible into the importer quarantine
    (`implausible_timestamp`): before `bounds.earliest`, after now + `bounds.future_days`, or
    more than `window_days` from the import's median event time. Counts follow."""
    ev = result.events
    if ev.is_empty():
        return result
    median = ev["ts"].median()
    broken = bounds.timestamp_broken(pl.col("ts"))
    if median is not None and window_days > 0:
        span = dt.timedelta(days=window_days)
        broken = broken | ((pl.col("ts") - pl.lit(median)).abs() > pl.lit(span))
    bad = ev.filter(broken)
    if bad.is_empty():
        return result
    cols = [c for c in ev.columns if c not in ("source_file", "source_row")]
    moved = bad.with_columns(pl.col(c).cast(pl.String) for c in cols).pipe(
        reject_rows, cols, IMPLAUSIBLE_TIMESTAMP, "ts", pl.col("shop_id")
    )
    result.events = ev.filter(~broken)
    result.rejects = concat_rejects([result.rejects, moved])
    fresh = base_counts(result.counts.get("source", {}), result.events, result.rejects)
    result.counts.update({k: fresh[k] for k in ("events", "rejected", "totals", "pass_through")})
    return result
