"""Generic importer: any user/item/event/timestamp CSV or Parquet through a YAML mapping.

A mapping names the source column behind each canonical event field, maps source event
type values to canonical types, and says how to read timestamps and build the catalog.
`examples/mappings/rees46.yaml` imports the REES46 files; `examples/mappings/
user-item-event.yaml` is an annotated template. docs/importers.md documents every key.

Unmapped event type values go to the importer quarantine as `unknown_event_type` (values
mapped to `null` / `unmappable` as `unmappable_event_type`): the importer, not ingestion,
knows the source vocabulary, and the raw value stays in the quarantine row. A value that is
already a canonical type name maps to itself.
"""

from __future__ import annotations

import json
import math
import os
import zoneinfo
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl
import yaml

from simpersona.ingest.importers import (
    UNKNOWN_EVENT_TYPE,
    UNMAPPABLE_EVENT_TYPE,
    UNPARSEABLE_TIMESTAMP,
    UNPARSEABLE_VALUE,
    ImporterError,
    ImportResult,
    MappingError,
    ProgressFn,
    base_counts,
    blank_to_null,
    catalog_price,
    collections_frame,
    empty_events,
    event_ids,
    events_frame,
    normalize_column,
    products_frame,
    read_csv_rows,
    reject_rows,
    rejects_frame,
    resolve_paths,
    row_digest,
    value_counts,
)
from simpersona.ingest.urls import path_prefixes, readable, readable_path
from simpersona.schema import (
    EVENT_TYPES,
    EVENTS_SCHEMA,
    QUARANTINE_SCHEMA,
    TS_DTYPE,
    sanitize_shop_id,
)
from simpersona.timestamps import parse_timestamp

FORMAT = "generic"
MISSING_SHOP_ID = "missing_shop_id"
INVALID_SHOP_ID = "invalid_shop_id"
UNMAPPABLE_VALUES = (None, "unmappable")

# Canonical event fields a mapping may fill (shop_id has its own keys).
MAPPABLE_FIELDS: tuple[str, ...] = tuple(f for f in EVENTS_SCHEMA if f != "shop_id")
REQUIRED_FIELDS: tuple[str, ...] = ("ts", "event_type", "buyer_id")
NUMERIC_FIELDS: dict[str, pl.DataType] = {
    "quantity": pl.Int64(),
    "price": pl.Float64(),
    "order_value": pl.Float64(),
}
TOP_KEYS = {
    "name",
    "description",
    "shop_id",
    "shop_id_column",
    "header",
    "columns",
    "delimiter",
    "fields",
    "constants",
    "timestamp_format",
    "timezone",
    "event_types",
    "by_event_type",
    "catalog",
}
CATALOG_KEYS = {"title", "description", "price", "collection", "collection_separator", "readable"}


@dataclass(frozen=True)
class CatalogMapping:
    """How to build products/collections: `title`/`description` are columns (several are
    joined with spaces), `price` a column (default: last seen event price), `collection` a
    column whose values, split at `collection_separator`, give every level as a collection;
    `readable` turns `electronics.smartphone` / `sewing_machine` into Title Case words."""

    title: tuple[str, ...] = ()
    description: tuple[str, ...] = ()
    price: str | None = None
    collection: str | None = None
    collection_separator: str | None = None
    readable: bool = False


@dataclass(frozen=True)
class GenericMapping:
    """A parsed, validated mapping file (see docs/importers.md for the YAML keys)."""

    fields: dict[str, str]
    constants: dict[str, Any] = field(default_factory=dict)
    event_types: dict[str, str | None] = field(default_factory=dict)
    by_event_type: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    shop_id: str | None = None
    shop_id_column: str | None = None
    timestamp_format: str | None = None
    timezone: str = "UTC"
    header: bool | None = None
    columns: tuple[str, ...] | None = None
    delimiter: str = ","
    catalog: CatalogMapping | None = field(default_factory=CatalogMapping)
    source: str = "<mapping>"

    # ---- loading ---------------------------------------------------------------------------
    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> GenericMapping:
        path = Path(path)
        if not path.is_file():
            raise MappingError("mapping file not found", file=path)
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise MappingError(f"cannot read mapping file ({e})", file=path) from e
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            line = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
            problem = getattr(e, "problem", None) or str(e)
            raise MappingError(f"not valid YAML{line}: {problem}", file=path) from e
        return cls.from_dict(data, source=str(path))

    @classmethod
    def from_dict(cls, data: Any, source: str = "<mapping>") -> GenericMapping:
        def fail(msg: str, key: str | None = None) -> MappingError:
            return MappingError(msg, file=source, field=key)

        if not isinstance(data, dict):
            raise fail("the mapping must be a YAML mapping (key: value lines)")
        unknown = sorted(set(map(str, data)) - TOP_KEYS)
        if unknown:
            raise fail(f"unknown key; known keys: {', '.join(sorted(TOP_KEYS))}", unknown[0])

        fields = _str_dict(data.get("fields"), "fields", fail)
        for k, v in fields.items():
            if k == "shop_id":
                raise fail("use the top-level shop_id or shop_id_column keys", "fields.shop_id")
            if k not in MAPPABLE_FIELDS:
                raise fail(
                    f"not a canonical event field; choose from {', '.join(MAPPABLE_FIELDS)}",
                    f"fields.{k}",
                )
            if not isinstance(v, str) or not v.strip():
                raise fail("must name a source column", f"fields.{k}")
        constants = _constants(data.get("constants"), "constants", fail)
        for k in constants:
            if k in fields:
                raise fail("a field cannot be both a column and a constant", f"constants.{k}")
        for k in REQUIRED_FIELDS:
            if k not in fields and not (k in constants and k != "ts"):
                raise fail("required: name the source column", f"fields.{k}")

        event_types: dict[str, str | None] = {}
        raw_types = data.get("event_types") or {}
        if not isinstance(raw_types, dict):
            raise fail("must map source values to canonical event types", "event_types")
        for k, v in raw_types.items():
            if isinstance(k, bool) or k is None:
                raise fail("quote this key (YAML reads it as true/false/null)", f"event_types.{k}")
            if v not in UNMAPPABLE_VALUES and v not in EVENT_TYPES:
                raise fail(
                    f"{v!r} is not a canonical event type ({', '.join(EVENT_TYPES)}) "
                    "nor null/unmappable",
                    f"event_types.{k}",
                )
            event_types[str(k)] = None if v in UNMAPPABLE_VALUES else v

        by_type: dict[str, dict[str, dict[str, Any]]] = {}
        raw_by = data.get("by_event_type") or {}
        if not isinstance(raw_by, dict):
            raise fail("must map canonical event types to fields/constants", "by_event_type")
        for t, spec in raw_by.items():
            key = f"by_event_type.{t}"
            if t not in EVENT_TYPES:
                raise fail(f"not a canonical event type ({', '.join(EVENT_TYPES)})", key)
            if not isinstance(spec, dict) or set(spec) - {"fields", "constants"}:
                raise fail("takes only 'fields' and 'constants'", key)
            f2 = _str_dict(spec.get("fields"), f"{key}.fields", fail)
            for k, v in f2.items():
                if k not in MAPPABLE_FIELDS or k in ("event_type", "ts", "event_id"):
                    raise fail("not a field that can depend on the event type", f"{key}.fields.{k}")
                if not isinstance(v, str) or not v.strip():
                    raise fail("must name a source column", f"{key}.fields.{k}")
            c2 = _constants(spec.get("constants"), f"{key}.constants", fail)
            for k in c2:
                if k in ("event_type", "ts", "event_id"):
                    raise fail(
                        "not a field that can depend on the event type", f"{key}.constants.{k}"
                    )
            by_type[t] = {"fields": f2, "constants": c2}

        shop_id = data.get("shop_id")
        shop_col = data.get("shop_id_column")
        if shop_id is not None:
            if not isinstance(shop_id, str | int):
                raise fail("must be a string", "shop_id")
            try:
                shop_id = sanitize_shop_id(str(shop_id))
            except ValueError as e:
                raise fail(str(e), "shop_id") from e
        if shop_col is not None and (not isinstance(shop_col, str) or not shop_col.strip()):
            raise fail("must name a source column", "shop_id_column")

        ts_fmt = data.get("timestamp_format")
        if ts_fmt is not None and (not isinstance(ts_fmt, str) or not ts_fmt.strip()):
            raise fail("must be a strftime format or epoch_s/epoch_ms/epoch_us", "timestamp_format")
        tz = data.get("timezone", "UTC")
        try:
            zoneinfo.ZoneInfo(str(tz))
        except (zoneinfo.ZoneInfoNotFoundError, ValueError) as e:
            raise fail(f"unknown time zone {tz!r}", "timezone") from e

        header = data.get("header", "auto")
        if header not in (True, False, "auto"):
            raise fail("must be true, false or auto", "header")
        columns = data.get("columns")
        if columns is not None and (
            not isinstance(columns, list) or not all(isinstance(c, str) and c for c in columns)
        ):
            raise fail("must be a list of column names", "columns")
        if header is False and not columns:
            raise fail("header: false needs the column names in 'columns'", "columns")
        delimiter = data.get("delimiter", ",")
        if not isinstance(delimiter, str) or len(delimiter) != 1:
            raise fail("must be a single character", "delimiter")

        catalog = _catalog(data.get("catalog", {}), fail)
        return cls(
            fields={k: v.strip() for k, v in fields.items()},
            constants=constants,
            event_types=event_types,
            by_event_type=by_type,
            shop_id=shop_id,
            shop_id_column=shop_col.strip() if shop_col else None,
            timestamp_format=ts_fmt,
            timezone=str(tz),
            header=None if header == "auto" else header,
            columns=tuple(columns) if columns else None,
            delimiter=delimiter,
            catalog=catalog,
            source=source,
        )

    # ---- helpers ---------------------------------------------------------------------------
    def referenced_columns(self) -> list[str]:
        """Every source column the mapping names (with the mapping key naming it)."""
        return [c for _, c in self.column_refs()]

    def column_refs(self) -> list[tuple[str, str]]:
        refs = [(f"fields.{k}", v) for k, v in self.fields.items()]
        for t, spec in self.by_event_type.items():
            refs += [(f"by_event_type.{t}.fields.{k}", v) for k, v in spec["fields"].items()]
        if self.shop_id_column:
            refs.append(("shop_id_column", self.shop_id_column))
        if self.catalog:
            refs += [("catalog.title", c) for c in self.catalog.title]
            refs += [("catalog.description", c) for c in self.catalog.description]
            if self.catalog.price:
                refs.append(("catalog.price", self.catalog.price))
            if self.catalog.collection:
                refs.append(("catalog.collection", self.catalog.collection))
        return refs


def _str_dict(value: Any, key: str, fail) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise fail("must be a mapping of field: column", key)
    return {str(k): v for k, v in value.items()}


def _constants(value: Any, key: str, fail) -> dict[str, Any]:
    out = _str_dict(value, key, fail)
    for k, v in out.items():
        if k not in MAPPABLE_FIELDS or k == "ts":
            raise fail("not a canonical event field that can be constant", f"{key}.{k}")
        if k in NUMERIC_FIELDS:
            ok = isinstance(v, int | float) and not isinstance(v, bool)
            if k == "quantity":
                ok = ok and float(v).is_integer()
            if not ok or (isinstance(v, float) and not math.isfinite(v)):
                raise fail("must be a number", f"{key}.{k}")
        elif not isinstance(v, str | int) or isinstance(v, bool):
            raise fail("must be a string", f"{key}.{k}")
        elif k == "event_type":
            out[k] = str(v)
    return out


def _catalog(value: Any, fail) -> CatalogMapping | None:
    if value is False:
        return None
    if value is None or value == {}:
        return CatalogMapping()
    if not isinstance(value, dict):
        raise fail("must be a mapping (or false to write no catalog)", "catalog")
    unknown = sorted(set(map(str, value)) - CATALOG_KEYS)
    if unknown:
        raise fail(
            f"unknown key; known: {', '.join(sorted(CATALOG_KEYS))}", f"catalog.{unknown[0]}"
        )

    def cols(k: str) -> tuple[str, ...]:
        v = value.get(k)
        if v is None:
            return ()
        if isinstance(v, str) and v.strip():
            return (v.strip(),)
        if isinstance(v, list) and v and all(isinstance(c, str) and c.strip() for c in v):
            return tuple(c.strip() for c in v)
        raise fail("must name a column or a list of columns", f"catalog.{k}")

    def col(k: str) -> str | None:
        v = value.get(k)
        if v is None:
            return None
        if isinstance(v, str) and v.strip():
            return v.strip()
        raise fail("must name a source column", f"catalog.{k}")

    sep = value.get("collection_separator")
    if sep is not None and (not isinstance(sep, str) or not sep):
        raise fail("must be a non-empty string", "catalog.collection_separator")
    rd = value.get("readable", False)
    if not isinstance(rd, bool):
        raise fail("must be true or false", "catalog.readable")
    return CatalogMapping(
        title=cols("title"),
        description=cols("description"),
        price=col("price"),
        collection=col("collection"),
        collection_separator=sep,
        readable=rd,
    )


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
) -> ImportResult:
    """Read CSV/Parquet files through a mapping into canonical tables and rejects.
    `shop_id` (the --shop option) overrides the mapping's shop_id and shop_id_column."""
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
        ev, rj, src_counts = _map_file(path, mapping, shop_const)
        mapped.append(ev)
        rejects.append(rj)
        for k, v in src_counts.items():
            source[k] = source.get(k, 0) + v
        if progress:
            progress(path)
    ok = pl.concat(mapped, how="diagonal_relaxed") if mapped else pl.DataFrame()
    events = events_frame(ok) if ok.height else empty_events()
    products, collections = _catalog_rows(ok, mapping) if ok.height else ([], [])
    rejects_df = (
        pl.concat([r.select(list(QUARANTINE_SCHEMA)) for r in rejects])
        if rejects
        else rejects_frame([])
    )
    rejects_df = rejects_df.sort(["source_file", "source_row"], maintain_order=True)
    counts = base_counts(source, events, rejects_df)
    return ImportResult(
        format=FORMAT,
        events=events,
        products=products_frame(products),
        collections=collections_frame(collections),
        rejects=rejects_df,
        counts=counts,
        files=list(files),
    )


def _map_file(
    path: Path, mapping: GenericMapping, shop_const: str | None
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
    # shop
    if shop_const is not None:
        df = df.with_columns(
            pl.lit(shop_const, pl.String).alias("shop_id"), pl.lit(False).alias("_bad_shop")
        )
    else:
        shop_src = blank_to_null(src(mapping.shop_id_column)).str.strip_chars()
        values = df.select(shop_src.unique().drop_nulls()).to_series().to_list()
        safe = {}
        for v in values:
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
        shop_field = col[mapping.shop_id_column]
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
            if name in spec["fields"] or name in spec["constants"]:
                e2, o2 = _field_expr(name, spec["fields"], spec["constants"], src)
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
    # catalog helper columns
    cat = mapping.catalog
    if cat is not None:
        if cat.title:
            out.append(_joined([src(c) for c in cat.title]).alias("_cat_title"))
        if cat.description:
            out.append(_joined([src(c) for c in cat.description]).alias("_cat_desc"))
        if cat.price:
            out.append(
                catalog_price(
                    blank_to_null(src(cat.price)).str.strip_chars().cast(pl.Float64, strict=False)
                ).alias("_cat_price")
            )
        if cat.collection:
            out.append(blank_to_null(src(cat.collection)).str.strip_chars().alias("_cat_coll"))
    ev = df.select(*out, pl.col("_digest"))
    if "event_id" not in values:
        ev = ev.with_columns(
            pl.Series(
                "event_id",
                event_ids(FORMAT, ev["shop_id"].to_list(), ev["_digest"].to_list()),
                dtype=pl.String,
            )
        )
    return ev, pl.concat([r.select(list(QUARANTINE_SCHEMA)) for r in rejects]), src_counts


def _field_expr(name, fields, constants, src) -> tuple[pl.Expr | None, pl.Expr | None]:
    if name in fields:
        return src(fields[name]).cast(pl.String), pl.lit(fields[name], pl.String)
    if name in constants:
        return pl.lit(str(constants[name]), pl.String), pl.lit(f"constants.{name}", pl.String)
    return None, None


def _joined(exprs: list[pl.Expr]) -> pl.Expr:
    parts = [blank_to_null(e).str.strip_chars() for e in exprs]
    joined = pl.concat_str(parts, separator=" ", ignore_nulls=True)
    return blank_to_null(joined)


def _catalog_rows(ok: pl.DataFrame, mapping: GenericMapping) -> tuple[list[dict], list[dict]]:
    cat = mapping.catalog
    if cat is None or ("product_id" not in ok.columns and "collection_id" not in ok.columns):
        return [], []
    sep = cat.collection_separator

    def nice(text: str | None) -> str | None:
        if text is None or not cat.readable:
            return text
        return readable(text)

    def coll_title(c: str) -> str:
        if not cat.readable:
            return c
        return readable_path(c, sep) if sep else readable(c)

    products: list[dict] = []
    coll_ids: set[str] = set()
    if "product_id" in ok.columns:
        aggs = [
            catalog_price(pl.col("price")).drop_nulls().last().alias("_ev_price")
            if "price" in ok.columns
            else pl.lit(None, pl.Float64).alias("_ev_price")
        ]
        for c in ("_cat_title", "_cat_desc", "_cat_price", "_cat_coll"):
            aggs.append(pl.col(c).drop_nulls().last() if c in ok.columns else pl.lit(None).alias(c))
        latest = (
            ok.filter(pl.col("product_id").is_not_null())
            .sort(["shop_id", "ts", "source_file", "source_row"])
            .group_by(["shop_id", "product_id"])
            .agg(aggs)
            .sort(["shop_id", "product_id"])
        )
        for shop, pid, ev_price, title, desc, price, coll in latest.iter_rows():
            levels = (path_prefixes(coll, sep) if sep else [coll]) if coll else []
            coll_ids.update((shop, c) for c in levels)
            if desc and cat.readable and sep and desc == coll:
                desc_text = readable_path(desc, sep)
            else:
                desc_text = nice(desc)
            products.append(
                {
                    "shop_id": shop,
                    "product_id": pid,
                    "title": nice(title) or pid,
                    "description": desc_text,
                    "price": price if price is not None else ev_price,
                    "collection_ids": levels,
                }
            )
    if "collection_id" in ok.columns:
        for shop, c in (
            ok.filter(pl.col("collection_id").is_not_null())
            .select("shop_id", "collection_id")
            .unique()
            .iter_rows()
        ):
            coll_ids.add((shop, c))
    collections = [
        {"shop_id": s, "collection_id": c, "title": coll_title(c)} for s, c in sorted(coll_ids)
    ]
    return products, collections
