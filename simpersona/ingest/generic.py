"""Generic importer: any user/item/event/timestamp CSV or Parquet through a YAML mapping.

The mapping (`mapping.GenericMapping`, docs/importers.md documents every key) names the
source column behind each canonical event field, maps source event type values to canonical
types, and says how to read timestamps and build the catalog (`generic_catalog`).
`--format rees46` is this importer with the bundled `mappings/rees46.yaml`.

Unmapped event type values go to the importer quarantine as `unknown_event_type` (values
mapped to `null` / `unmappable` as `unmappable_event_type`): the importer, not ingestion,
knows the source vocabulary, and the raw value stays in the quarantine row. A value that is
already a canonical type name maps to itself.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import polars as pl

from simpersona.ingest.csv_rows import blank_to_null, normalize_column, read_csv_rows, row_digest
from simpersona.ingest.errors import ImporterError, MappingError
from simpersona.ingest.generic_catalog import catalog_columns, catalog_counts, catalog_rows
from simpersona.ingest.mapping import MAPPABLE_FIELDS, GenericMapping
from simpersona.ingest.rejects import (
    INVALID_SHOP_ID,
    MISSING_SHOP_ID,
    UNKNOWN_EVENT_TYPE,
    UNMAPPABLE_EVENT_TYPE,
    UNPARSEABLE_TIMESTAMP,
    UNPARSEABLE_VALUE,
    concat_rejects,
    reject_rows,
    rejects_frame,
)
from simpersona.ingest.result import (
    ImportResult,
    ProgressFn,
    base_counts,
    collections_frame,
    empty_events,
    event_ids,
    events_frame,
    products_frame,
    value_counts,
)
from simpersona.ingest.sources import resolve_paths
from simpersona.schema import EVENT_TYPES, TS_DTYPE, sanitize_shop_id
from simpersona.timestamps import parse_timestamp

FORMAT = "generic"
NUMERIC_FIELDS: dict[str, pl.DataType] = {
    "quantity": pl.Int64(),
    "price": pl.Float64(),
    "order_value": pl.Float64(),
}


# ---- reading -------------------------------------------------------------------------------
def _read_source(
    path: Path, mapping: GenericMapping, shop_hint: str
) -> tuple[pl.DataFrame, list[str], list[dict], pl.Series | None]:
    """(string frame with provenance, raw column names, malformed rejects, native ts)."""
    if path.name.lower().endswith(".parquet"):
        try:
            df = pl.read_parquet(path)
        except Exception as e:
            raise ImporterError(f"cannot read Parquet file ({e})", file=path) from e
        raw_cols = list(df.columns)
        ts_col = _resolve(mapping.fields.get("ts", ""), raw_cols)
        native = None
        if ts_col and df.schema[ts_col].is_temporal():
            native = df[ts_col]
        strings = []
        for c, dt in df.schema.items():
            if dt.is_nested() or dt == pl.Object:
                strings.append(
                    pl.col(c).map_elements(
                        lambda v: json.dumps(v, default=str), return_dtype=pl.String
                    )
                )
            else:
                strings.append(pl.col(c).cast(pl.String))
        df = df.select(strings)
        digests = [row_digest(r) for r in df.iter_rows()]
        df = df.with_columns(
            pl.lit(path.name, pl.String).alias("source_file"),
            pl.int_range(1, df.height + 1, dtype=pl.Int64).alias("source_row"),
            pl.Series("_digest", digests, dtype=pl.String),
        )
        return df, raw_cols, [], native
    src = read_csv_rows(
        path,
        shop_id=shop_hint,
        default_columns=mapping.columns,
        known_columns=mapping.referenced_columns(),
        header=mapping.header,
        normalize=False,
        delimiter=mapping.delimiter,
    )
    return src.frame, src.columns, src.malformed, None


def _resolve(name: str, columns: Sequence[str]) -> str | None:
    """A mapping's column name in the file: exact, else case/style-insensitive."""
    if name in columns:
        return name
    norm = normalize_column(name)
    hits = [c for c in columns if normalize_column(c) == norm]
    return hits[0] if len(hits) == 1 else None


def read_generic(
    paths: Sequence[str | os.PathLike[str]],
    mapping: GenericMapping | str | os.PathLike[str],
    shop_id: str | None = None,
    *,
    progress: ProgressFn | None = None,
    format_name: str = FORMAT,
) -> ImportResult:
    """Read CSV/Parquet files through a mapping into canonical tables and rejects.
    `shop_id` (the --shop option) overrides the mapping's shop_id and shop_id_column.
    `format_name` names the result and prefixes the event ids (`rees46` for the format
    that is this importer with a bundled mapping)."""
    if not isinstance(mapping, GenericMapping):
        mapping = GenericMapping.load(mapping)
    shop_const = sanitize_shop_id(shop_id) if shop_id is not None else mapping.shop_id
    if shop_const is None and not mapping.shop_id_column:
        raise MappingError(
            "no shop: set shop_id or shop_id_column in the mapping, or pass --shop",
            file=mapping.source,
            field="shop_id",
        )
    files = resolve_paths(paths)
    mapped: list[pl.DataFrame] = []
    rejects: list[pl.DataFrame] = []
    source: dict[str, int] = {}
    for path in files:
        ev, rj, src_counts = _map_file(path, mapping, shop_const, format_name)
        mapped.append(ev)
        rejects.append(rj)
        for k, v in src_counts.items():
            source[k] = source.get(k, 0) + v
        if progress:
            progress(path)
    ok = pl.concat(mapped, how="diagonal_relaxed") if mapped else pl.DataFrame()
    events = events_frame(ok) if ok.height else empty_events()
    products, collections = catalog_rows(ok, mapping.catalog) if ok.height else ([], [])
    rejects_df = concat_rejects(rejects)
    counts = base_counts(source, events, rejects_df)
    if mapping.catalog is not None:
        counts["catalog"] = catalog_counts(products, collections, mapping.catalog)
    return ImportResult(
        format=format_name,
        events=events,
        products=products_frame(products),
        collections=collections_frame(collections),
        rejects=rejects_df,
        counts=counts,
        files=list(files),
    )


def _map_file(
    path: Path, mapping: GenericMapping, shop_const: str | None, format_name: str
) -> tuple[pl.DataFrame, pl.DataFrame, dict[str, int]]:
    df, raw_cols, malformed, native_ts = _read_source(path, mapping, shop_const or "")
    # Resolve every column the mapping names against this file's columns.
    col: dict[str, str] = {}
    for key, name in mapping.column_refs():
        if shop_const is not None and key == "shop_id_column":
            continue
        hit = _resolve(name, raw_cols)
        if hit is None:
            raise ImporterError(
                f"column {name!r} named by {key} in {mapping.source} is not in the file "
                f"(columns: {', '.join(raw_cols)})",
                file=path,
                field=name,
            )
        col[name] = hit

    def src(name: str) -> pl.Expr:
        return pl.col(col[name])

    rejects = [rejects_frame(malformed)]
    # event type
    if "event_type" in mapping.fields:
        type_col = col[mapping.fields["event_type"]]
        raw_type = pl.col(type_col).str.strip_chars()
    else:
        type_col = "event_type"
        raw_type = pl.lit(str(mapping.constants["event_type"]), pl.String)
    known = {t: t for t in EVENT_TYPES} | {
        k: v for k, v in mapping.event_types.items() if v is not None
    }
    unmappable_values = [k for k, v in mapping.event_types.items() if v is None]
    df = df.with_columns(
        raw_type.alias("_raw_type"),
        raw_type.replace_strict(known, default=None, return_dtype=pl.String).alias("event_type"),
    )
    src_counts = value_counts(df["_raw_type"]) if df.height else {}
    if malformed:
        src_counts["(malformed)"] = len(malformed)
    # timestamp
    ts_name = mapping.fields["ts"]
    if native_ts is not None:
        ts = native_ts
        if ts.dtype == pl.Date:
            ts = ts.cast(pl.Datetime("us"))
        if getattr(ts.dtype, "time_zone", None) is None:
            ts = ts.dt.replace_time_zone(
                mapping.timezone, ambiguous="earliest", non_existent="null"
            )
        df = df.with_columns(ts.dt.convert_time_zone("UTC").cast(TS_DTYPE).alias("ts"))
    else:
        df = df.with_columns(
            parse_timestamp(src(ts_name), mapping.timestamp_format, mapping.timezone).alias("ts")
        )
    # shop: a constant, else the mapping's shop_id_column (read_generic refuses a mapping
    # with neither, so the column is set whenever there is no constant)
    shop_column = mapping.shop_id_column or ""
    if shop_const is not None:
        df = df.with_columns(
            pl.lit(shop_const, pl.String).alias("shop_id"), pl.lit(False).alias("_bad_shop")
        )
    else:
        shop_src = blank_to_null(src(shop_column)).str.strip_chars()
        raw_shops = df.select(shop_src.unique().drop_nulls()).to_series().to_list()
        safe: dict[str, str | None] = {}
        for v in raw_shops:
            try:
                safe[v] = sanitize_shop_id(v)
            except ValueError:
                safe[v] = None
        df = df.with_columns(
            shop_src.alias("_shop_raw"),
            shop_src.replace_strict(safe, default=None, return_dtype=pl.String).alias("shop_id"),
        ).with_columns(
            (pl.col("_shop_raw").is_not_null() & pl.col("shop_id").is_null()).alias("_bad_shop")
        )

    shop_e = pl.col("shop_id")
    unmappable = pl.col("_raw_type").is_in(unmappable_values)
    unknown = pl.col("event_type").is_null() & ~unmappable
    bad_ts = pl.col("ts").is_null()
    no_shop = pl.col("shop_id").is_null() & ~pl.col("_bad_shop")
    bad_shop = pl.col("_bad_shop")
    type_field = type_col if "event_type" in mapping.fields else "event_type"
    rejects += [
        reject_rows(
            df.filter(unmappable), raw_cols, UNMAPPABLE_EVENT_TYPE, type_field, shop_e, pl.col("ts")
        ),
        reject_rows(
            df.filter(unknown), raw_cols, UNKNOWN_EVENT_TYPE, type_field, shop_e, pl.col("ts")
        ),
    ]
    rest = ~unmappable & ~unknown
    rejects.append(
        reject_rows(df.filter(rest & bad_ts), raw_cols, UNPARSEABLE_TIMESTAMP, col[ts_name], shop_e)
    )
    rest = rest & ~bad_ts
    if shop_const is None:
        shop_field = col[shop_column]
        rejects += [
            reject_rows(
                df.filter(rest & no_shop),
                raw_cols,
                MISSING_SHOP_ID,
                shop_field,
                shop_e,
                pl.col("ts"),
            ),
            reject_rows(
                df.filter(rest & bad_shop),
                raw_cols,
                INVALID_SHOP_ID,
                shop_field,
                pl.col("_shop_raw"),
                pl.col("ts"),
            ),
        ]
        rest = rest & ~no_shop & ~bad_shop
    df = df.filter(rest)

    # field values: base mapping, then per-event-type overrides
    et = pl.col("event_type")
    values: dict[str, pl.Expr] = {}
    origin: dict[str, pl.Expr] = {}  # source column name per row, for unparseable_value
    for name in MAPPABLE_FIELDS:
        if name in ("ts", "event_type"):
            continue
        expr, org = _field_expr(name, mapping.fields, mapping.constants, src)
        for t, spec in mapping.by_event_type.items():
            if name in spec.fields or name in spec.constants:
                e2, o2 = _field_expr(name, spec.fields, spec.constants, src)
                expr = (
                    pl.when(et == t).then(e2).otherwise(expr)
                    if expr is not None
                    else pl.when(et == t).then(e2)
                )
                org = (
                    pl.when(et == t).then(o2).otherwise(org)
                    if org is not None
                    else pl.when(et == t).then(o2)
                )
        if expr is not None:
            values[name] = expr
            origin[name] = org if org is not None else pl.lit("", pl.String)
    df = df.with_columns(
        [
            (blank_to_null(e).str.strip_chars() if n in NUMERIC_FIELDS else blank_to_null(e)).alias(
                f"_v_{n}"
            )
            for n, e in values.items()
        ]
    )
    # numbers
    bad_any = pl.lit(False)
    bad_field = pl.lit(None, pl.String)
    for n, dtype in NUMERIC_FIELDS.items():
        if n not in values:
            continue
        num = pl.col(f"_v_{n}").cast(pl.Float64, strict=False)
        bad = pl.col(f"_v_{n}").is_not_null() & (num.is_null() | ~num.is_finite())
        if dtype == pl.Int64():
            # a whole number an Int64 holds (9.3e18 does not: the cast would abort the import)
            bad = bad | (num.is_not_null() & ((num != num.round(0)) | (num.abs() >= 2.0**63)))
        df = df.with_columns(
            num.alias(f"_n_{n}"), bad.alias(f"_bad_{n}"), origin[n].alias(f"_o_{n}")
        )
        bad_field = (
            pl.when(bad_field.is_null() & pl.col(f"_bad_{n}"))
            .then(pl.col(f"_o_{n}"))
            .otherwise(bad_field)
        )
        bad_any = bad_any | pl.col(f"_bad_{n}")
    df = df.with_columns(bad_any.alias("_bad_num"), bad_field.alias("_bad_field"))
    rejects.append(
        reject_rows(
            df.filter(pl.col("_bad_num")),
            raw_cols,
            UNPARSEABLE_VALUE,
            pl.col("_bad_field"),
            shop_e,
            pl.col("ts"),
        )
    )
    df = df.filter(~pl.col("_bad_num"))

    out = [
        pl.col("shop_id"),
        pl.col("ts"),
        pl.col("event_type"),
        pl.col("source_file"),
        pl.col("source_row"),
    ]
    for n in values:
        if n in NUMERIC_FIELDS:
            out.append(pl.col(f"_n_{n}").cast(NUMERIC_FIELDS[n]).alias(n))
        else:
            out.append(pl.col(f"_v_{n}").alias(n))
    out += catalog_columns(mapping.catalog, src)
    ev = df.select(*out, pl.col("_digest"))
    if "event_id" not in values:
        ev = ev.with_columns(
            pl.Series(
                "event_id",
                event_ids(format_name, ev["shop_id"].to_list(), ev["_digest"].to_list()),
                dtype=pl.String,
            )
        )
    return ev, concat_rejects(rejects), src_counts


def _field_expr(name, fields, constants, src) -> tuple[pl.Expr | None, pl.Expr | None]:
    if name in fields:
        return src(fields[name]).cast(pl.String), pl.lit(fields[name], pl.String)
    if name in constants:
        return pl.lit(str(constants[name]), pl.String), pl.lit(f"constants.{name}", pl.String)
    return None, None
