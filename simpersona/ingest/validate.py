"""Row-level validation of raw canonical tables.

Every rule is a vectorised Polars expression; a row that breaks one or more rules is
rejected with the first reason in the order below and keeps its whole content (as JSON)
in the quarantine table, so nothing is lost.

Events, in order: missing required field, wrong shop, unparseable timestamp, implausible
timestamp, timestamp outside the partition's day, unknown event type, missing type-specific
field, unparseable number, non-finite price/order value, negative price/order value,
implausible price/order value, negative quantity, implausible quantity, product not in
catalog, duplicate event_id (the first occurrence in file/row order is kept). The bounds of
the "implausible" rules are `PlausibilityBounds` (docs/data-model.md lists them).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import polars as pl

from simpersona.schema import (
    COLLECTIONS_REQUIRED,
    EVENT_TYPE_REQUIRED,
    EVENT_TYPES,
    EVENTS_REQUIRED,
    EVENTS_SCHEMA,
    PRODUCTS_REQUIRED,
    QUARANTINE_SCHEMA,
    SCHEMAS,
    TS_DTYPE,
)
from simpersona.timestamps import parse_timestamp

FILE_COL = "__file"
ROW_COL = "__row"


class ValidationError(ValueError):
    """A raw file that cannot be validated at all (unreadable, wrong shape)."""


@dataclass(frozen=True)
class Rule:
    reason: str
    field: str
    broken: pl.Expr  # True where the row breaks the rule


@dataclass(frozen=True)
class PlausibilityBounds:
    """What a real clickstream row can hold; a row beyond a bound is quarantined with its
    reason instead of reaching the warehouse (or, at import, making a partition)."""

    earliest: dt.date = dt.date(1995, 1, 1)
    """No web shop logged events before this day (`implausible_timestamp`)."""
    future_days: int = 2
    """Events may lie at most this many days after now: clocks drift, time zones differ."""
    max_quantity: int = 100_000
    """Units on one event line (`implausible_quantity`)."""
    max_amount: float = 1e9
    """A unit price or order value (`implausible_value`), in the row's currency."""

    def latest(self) -> dt.datetime:
        return dt.datetime.now(dt.UTC) + dt.timedelta(days=self.future_days)

    def timestamp_broken(self, ts: pl.Expr) -> pl.Expr:
        """True where `ts` (UTC datetime) lies outside [earliest, now + future_days]."""
        lo = dt.datetime.combine(self.earliest, dt.time(), tzinfo=dt.UTC)
        return (ts < pl.lit(lo)) | (ts > pl.lit(self.latest()))


DEFAULT_BOUNDS = PlausibilityBounds()


def amount_rules(field: str, bounds: PlausibilityBounds) -> list[Rule]:
    """Non-finite, negative and implausible checks of a price-like column, in that order."""
    c = pl.col(field)
    return [
        Rule("non_finite_value", field, c.is_not_null() & ~c.is_finite()),
        Rule("negative_price", field, c < 0),
        Rule("implausible_value", field, c > bounds.max_amount),
    ]


def _blank(name: str) -> pl.Expr:
    c = pl.col(name)
    return c.is_null() | (c.cast(pl.String).str.strip_chars() == "")


def _typed(raw: pl.DataFrame, table: str) -> tuple[pl.DataFrame, list[Rule]]:
    """Cast raw columns (strings from CSV or typed Parquet) to the canonical dtypes.

    Returns the typed frame (columns `name`) and parse rules comparing raw and parsed values.
    """
    schema = SCHEMAS[table]
    exprs: list[pl.Expr] = []
    rules: list[Rule] = []
    for name, dtype in schema.items():
        if name not in raw.columns:
            exprs.append(pl.lit(None, dtype=dtype).alias(name))
            continue
        src = raw.schema[name]
        col = pl.col(name)
        if dtype == TS_DTYPE:
            if src == pl.String:
                typed = parse_timestamp(col)
                rules.append(Rule("unparseable_timestamp", name, ~_blank(name) & typed.is_null()))
            elif isinstance(src, pl.Datetime):
                typed = (
                    col.dt.replace_time_zone("UTC")
                    if src.time_zone is None
                    else col.dt.convert_time_zone("UTC")
                ).dt.cast_time_unit("us")
            else:
                raise ValidationError(f"column {name!r} has type {src}, expected a timestamp")
        elif dtype == pl.String():
            typed = pl.when(_blank(name)).then(None).otherwise(col.cast(pl.String))
        elif isinstance(dtype, pl.List):
            if src == pl.String:
                # CSV: '|'-separated ids
                typed = (
                    pl.when(_blank(name))
                    .then(None)
                    .otherwise(col.str.split("|"))
                    .list.eval(pl.element().str.strip_chars())
                )
            else:
                typed = col.cast(dtype)
        else:  # numbers
            typed = col.cast(dtype, strict=False)
            if src == pl.String:
                typed = (
                    pl.when(_blank(name))
                    .then(None)
                    .otherwise(col.str.strip_chars().cast(dtype, strict=False))
                )
            rules.append(Rule("unparseable_number", name, ~_blank(name) & typed.is_null()))
        exprs.append(typed.alias(name))
    keep = [c for c in (FILE_COL, ROW_COL) if c in raw.columns]
    extra = [c for c in ("source_file", "source_row") if c in raw.columns]
    typed_df = raw.select(
        [pl.col(c) for c in keep]
        + [pl.col(c).cast(pl.String if c == "source_file" else pl.Int64) for c in extra]
        + [e for e in exprs]
    )
    # parse rules must see raw values: evaluate them on the raw frame now
    flags = raw.select([r.broken.alias(f"__rule{i}") for i, r in enumerate(rules)])
    typed_df = typed_df.hstack(flags)
    rules = [Rule(r.reason, r.field, pl.col(f"__rule{i}")) for i, r in enumerate(rules)]
    return typed_df, rules


def _quarantine(
    raw: pl.DataFrame, reasons: pl.DataFrame, table: str, shop_id: str, date: str
) -> pl.DataFrame:
    """Quarantine rows: provenance, reason and the raw row as JSON."""
    if reasons.is_empty():
        return pl.DataFrame(schema=QUARANTINE_SCHEMA)
    rejected = raw.join(reasons, on=ROW_COL, how="inner").sort(ROW_COL)
    payload_cols = [
        c for c in rejected.columns if not c.startswith("__") and c not in ("reason", "field")
    ]
    # scalars as text (so "NaN", "inf" and 20-digit numbers survive as written); lists and
    # structs (a Parquet catalog's collection_ids) stay JSON arrays/objects
    payload = rejected.select(payload_cols).with_columns(
        [pl.col(c).cast(pl.String) for c in payload_cols if not rejected.schema[c].is_nested()]
    )
    has_src = "source_file" in rejected.columns and "source_row" in rejected.columns
    src_file = (
        pl.coalesce(pl.col("source_file").cast(pl.String), pl.col(FILE_COL))
        if has_src
        else pl.col(FILE_COL)
    )
    src_row = (
        pl.coalesce(pl.col("source_row").cast(pl.Int64), pl.col("__filerow"))
        if has_src
        else pl.col("__filerow")
    )
    out = rejected.with_columns(
        pl.Series("raw", payload.write_ndjson().splitlines() if payload.height else [], pl.String)
    ).select(
        pl.lit(table).alias("table"),
        pl.lit(shop_id).alias("shop_id"),
        pl.lit(date).alias("date"),
        src_file.alias("source_file"),
        src_row.alias("source_row"),
        pl.col("field"),
        pl.col("reason"),
        pl.col("raw"),
    )
    return out.cast(pl.Schema(QUARANTINE_SCHEMA))


def _first_reason(df: pl.DataFrame, rules: list[Rule]) -> pl.DataFrame:
    """Per rejected row: (__row, reason, field) of the first broken rule."""
    if not rules:
        return pl.DataFrame(schema={ROW_COL: pl.Int64, "reason": pl.String, "field": pl.String})
    reason = pl.lit(None, dtype=pl.String)
    field = pl.lit(None, dtype=pl.String)
    for r in reversed(rules):
        broken = r.broken.fill_null(False)
        reason = pl.when(broken).then(pl.lit(r.reason)).otherwise(reason)
        field = pl.when(broken).then(pl.lit(r.field)).otherwise(field)
    return df.select(
        pl.col(ROW_COL).cast(pl.Int64), reason.alias("reason"), field.alias("field")
    ).filter(pl.col("reason").is_not_null())


def _with_ids(raw: pl.DataFrame) -> pl.DataFrame:
    """Give every raw row a global __row id and a per-file 1-based __filerow."""
    if FILE_COL not in raw.columns:
        raw = raw.with_columns(pl.lit("<memory>").alias(FILE_COL))
    if "__filerow" not in raw.columns:
        raw = raw.with_columns(
            (pl.int_range(pl.len()).over(FILE_COL) + 1).cast(pl.Int64).alias("__filerow")
        )
    return raw.with_row_index(ROW_COL).with_columns(pl.col(ROW_COL).cast(pl.Int64))


@dataclass
class Validated:
    valid: pl.DataFrame  # canonical columns (+ provenance when present)
    rejects: pl.DataFrame  # QUARANTINE_SCHEMA
    rows_read: int

    @property
    def reject_counts(self) -> dict[str, int]:
        if self.rejects.is_empty():
            return {}
        counts = self.rejects.group_by("reason").len().sort("len", descending=True)
        return dict(zip(counts["reason"].to_list(), counts["len"].to_list(), strict=True))


def validate_events(
    raw: pl.DataFrame,
    shop_id: str,
    date: str | None,
    product_ids: pl.Series | None,
    bounds: PlausibilityBounds = DEFAULT_BOUNDS,
) -> Validated:
    """Validate raw event rows of one (shop, day) partition.

    `raw` holds the canonical columns as strings (CSV) or typed values (Parquet), plus
    optional `__file` and provenance columns. `product_ids` is the shop's catalog (None
    skips the catalog rule, e.g. for a shop without a catalog yet is NOT allowed by
    ingestion; tests use it).
    """
    raw = _with_ids(raw)
    typed, parse_rules = _typed(raw, "events")
    rules: list[Rule] = [Rule("missing_field", f, _blank(f)) for f in EVENTS_REQUIRED]
    # _blank on the typed frame: ts null there means missing OR unparseable; keep the
    # unparseable rule first for those by checking the raw value below.
    raw_ts_blank = raw.select(
        _blank("ts").alias("__ts_blank")
        if "ts" in raw.columns
        else pl.lit(True).alias("__ts_blank")
    )
    typed = typed.hstack(raw_ts_blank)
    rules = [
        r if r.field != "ts" else Rule("missing_field", "ts", pl.col("__ts_blank")) for r in rules
    ]
    rules.append(Rule("wrong_shop", "shop_id", pl.col("shop_id") != pl.lit(shop_id)))
    rules += [r for r in parse_rules if r.field == "ts"]
    rules.append(Rule("implausible_timestamp", "ts", bounds.timestamp_broken(pl.col("ts"))))
    if date is not None:
        rules.append(
            Rule(
                "timestamp_outside_partition",
                "ts",
                pl.col("ts").dt.date().cast(pl.String) != pl.lit(date),
            )
        )
    rules.append(Rule("unknown_event_type", "event_type", ~pl.col("event_type").is_in(EVENT_TYPES)))
    for etype, fields in EVENT_TYPE_REQUIRED.items():
        for f in fields:
            rules.append(
                Rule("missing_field", f, (pl.col("event_type") == etype) & pl.col(f).is_null())
            )
    rules += [r for r in parse_rules if r.field != "ts"]
    rules += amount_rules("price", bounds) + amount_rules("order_value", bounds)
    rules.append(Rule("negative_quantity", "quantity", pl.col("quantity") < 0))
    rules.append(Rule("implausible_quantity", "quantity", pl.col("quantity") > bounds.max_quantity))
    if product_ids is not None:
        rules.append(
            Rule(
                "product_not_in_catalog",
                "product_id",
                pl.col("product_id").is_not_null()
                & ~pl.col("product_id").is_in(product_ids.cast(pl.String).implode()),
            )
        )
    first = _first_reason(typed, rules)
    # duplicates among rows that passed everything else: keep the first occurrence
    ok = typed.join(first.select(ROW_COL), on=ROW_COL, how="anti").sort(ROW_COL)
    dup = ok.filter(
        pl.col("event_id").is_duplicated() & (pl.int_range(pl.len()).over("event_id") > 0)
    )
    dups = dup.select(
        pl.col(ROW_COL),
        pl.lit("duplicate_event_id").alias("reason"),
        pl.lit("event_id").alias("field"),
    )
    reasons = pl.concat([first, dups])
    valid = ok.join(dups.select(ROW_COL), on=ROW_COL, how="anti")
    out_cols = list(EVENTS_SCHEMA) + [
        c for c in ("source_file", "source_row") if c in valid.columns
    ]
    return Validated(
        valid=valid.select(out_cols),
        rejects=_quarantine(raw, reasons, "events", shop_id, date or ""),
        rows_read=raw.height,
    )


def validate_catalog(
    raw: pl.DataFrame, table: str, shop_id: str, bounds: PlausibilityBounds = DEFAULT_BOUNDS
) -> Validated:
    """Validate raw products or collections of one shop (first occurrence of an id wins)."""
    if table not in ("products", "collections"):
        raise ValueError(f"unknown catalog table {table!r}")
    raw = _with_ids(raw)
    typed, parse_rules = _typed(raw, table)
    required = PRODUCTS_REQUIRED if table == "products" else COLLECTIONS_REQUIRED
    id_col = "product_id" if table == "products" else "collection_id"
    rules = [Rule("missing_field", f, _blank(f)) for f in required]
    rules.append(Rule("wrong_shop", "shop_id", pl.col("shop_id") != pl.lit(shop_id)))
    rules += parse_rules
    if table == "products":
        rules += amount_rules("price", bounds)
    first = _first_reason(typed, rules)
    ok = typed.join(first.select(ROW_COL), on=ROW_COL, how="anti").sort(ROW_COL)
    dup = ok.filter(pl.int_range(pl.len()).over(id_col) > 0)
    dups = dup.select(
        pl.col(ROW_COL),
        pl.lit(f"duplicate_{id_col}").alias("reason"),
        pl.lit(id_col).alias("field"),
    )
    valid = ok.join(dups.select(ROW_COL), on=ROW_COL, how="anti")
    return Validated(
        valid=valid.select(list(SCHEMAS[table])),
        rejects=_quarantine(raw, pl.concat([first, dups]), table, shop_id, ""),
        rows_read=raw.height,
    )
