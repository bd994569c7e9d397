"""Importer for the REES46 / Open CDP "eCommerce behavior data from multi category store" CSVs.

Columns: `event_time,event_type,product_id,category_id,category_code,brand,price,user_id,
user_session`. A file without a header is detected (its first line holds no column name)
and read with this column list. Rows with the wrong number of fields (the cut-off last line
of `2019-Oct_head.csv`) go to the importer quarantine as `malformed_row`.

Mapping: view -> product_view, cart -> add_to_cart, remove_from_cart -> remove_from_cart,
purchase -> checkout_completed (order_value = price, quantity 1); price on every event;
session_id = user_session; buyer_id = user_id. The catalog is built from the events: title
from brand and the last category level ("Samsung Smartphone"), description from the category
path, price = last seen price, collections = every level of category_code. docs/importers.md
lists what cannot be mapped and the measured counts.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import polars as pl

from simpersona.ingest.importers import (
    UNKNOWN_EVENT_TYPE,
    UNPARSEABLE_TIMESTAMP,
    UNPARSEABLE_VALUE,
    ImporterError,
    ImportResult,
    ProgressFn,
    base_counts,
    blank_to_null,
    catalog_price,
    collections_frame,
    empty_events,
    event_ids,
    events_frame,
    products_frame,
    read_csv_rows,
    reject_rows,
    rejects_frame,
    resolve_paths,
    value_counts,
)
from simpersona.ingest.urls import path_prefixes, readable, readable_path
from simpersona.schema import QUARANTINE_SCHEMA, sanitize_shop_id
from simpersona.timestamps import parse_timestamp

FORMAT = "rees46"
COLUMNS: tuple[str, ...] = (
    "event_time",
    "event_type",
    "product_id",
    "category_id",
    "category_code",
    "brand",
    "price",
    "user_id",
    "user_session",
)
REQUIRED_COLUMNS: tuple[str, ...] = ("event_time", "event_type", "product_id", "user_id")
EVENT_MAP: dict[str, str] = {
    "view": "product_view",
    "cart": "add_to_cart",
    "remove_from_cart": "remove_from_cart",
    "purchase": "checkout_completed",
}
ONE_UNIT_TYPES = ("add_to_cart", "remove_from_cart", "checkout_completed")


def product_title(product_id: str, brand: str | None, category_code: str | None) -> str:
    """`samsung` + `electronics.smartphone` -> `Samsung Smartphone`."""
    leaf = readable(category_code.split(".")[-1]) if category_code else ""
    if brand and leaf:
        return f"{readable(brand)} {leaf}"
    if brand:
        return f"{readable(brand)} Product"
    if leaf:
        return leaf
    return f"Product {product_id}"


def product_description(brand: str | None, category_code: str | None) -> str | None:
    """`Electronics > Smartphone. Brand: Samsung`."""
    parts = []
    if category_code:
        parts.append(readable_path(category_code))
    if brand:
        parts.append(f"Brand: {readable(brand)}")
    return ". ".join(parts) or None


def build_catalog(
    events: pl.DataFrame, shop: str
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Products and collections from rows carrying product_id, ts, price, brand and
    category_code (last seen values win)."""
    if events.is_empty():
        return [], []
    latest = (
        events.filter(pl.col("product_id").is_not_null())
        .sort(["ts", "source_file", "source_row"])
        .group_by("product_id")
        .agg(
            catalog_price(pl.col("price")).drop_nulls().last(),
            pl.col("_brand").drop_nulls().last(),
            pl.col("_category_code").drop_nulls().last(),
        )
        .sort("product_id")
    )
    products = []
    collections: set[str] = set()
    for pid, price, brand, code in latest.iter_rows():
        levels = path_prefixes(code) if code else []
        collections.update(levels)
        products.append(
            {
                "shop_id": shop,
                "product_id": pid,
                "title": product_title(pid, brand, code),
                "description": product_description(brand, code),
                "price": price,
                "collection_ids": levels,
            }
        )
    coll_rows = [
        {"shop_id": shop, "collection_id": c, "title": readable_path(c)}
        for c in sorted(collections)
    ]
    return products, coll_rows


def read_rees46(
    paths: Sequence[str | os.PathLike[str]],
    shop_id: str = "rees46",
    *,
    progress: ProgressFn | None = None,
) -> ImportResult:
    """Read REES46 CSV files (with or without header) into canonical tables and rejects."""
    shop = sanitize_shop_id(shop_id)
    files = resolve_paths(paths)
    frames = []
    malformed: list[dict[str, Any]] = []
    for path in files:
        src = read_csv_rows(path, shop_id=shop, default_columns=COLUMNS, known_columns=COLUMNS)
        missing = [c for c in REQUIRED_COLUMNS if c not in src.columns]
        if missing:
            raise ImporterError(
                f"required column missing (header: {', '.join(src.columns)})",
                file=path,
                field=missing[0],
            )
        frames.append(src.frame)
        malformed += src.malformed
        if progress:
            progress(path)
    schema = dict.fromkeys(COLUMNS, pl.String) | {
        "source_file": pl.String,
        "source_row": pl.Int64,
        "_digest": pl.String,
    }
    df = pl.concat(
        [
            pl.DataFrame(schema=schema),
            *[f.select([c for c in schema if c in f.columns]) for f in frames],
        ],
        how="diagonal_relaxed",
    )
    raw_cols = list(COLUMNS)
    source = value_counts(df["event_type"].str.strip_chars()) if df.height else {}
    if malformed:
        source["(malformed)"] = len(malformed)

    df = df.with_columns(
        parse_timestamp(pl.col("event_time")).alias("ts"),
        pl.col("event_type")
        .str.strip_chars()
        .str.to_lowercase()
        .replace_strict(EVENT_MAP, default=None)
        .alias("_type"),
        blank_to_null(pl.col("price")).str.strip_chars().alias("_price_raw"),
    ).with_columns(pl.col("_price_raw").cast(pl.Float64, strict=False).alias("price"))
    unknown = pl.col("_type").is_null()
    bad_ts = pl.col("ts").is_null()
    bad_price = pl.col("_price_raw").is_not_null() & pl.col("price").is_null()
    rejects = [
        rejects_frame(malformed),
        reject_rows(
            df.filter(unknown), raw_cols, UNKNOWN_EVENT_TYPE, "event_type", shop, pl.col("ts")
        ),
        reject_rows(
            df.filter(~unknown & bad_ts), raw_cols, UNPARSEABLE_TIMESTAMP, "event_time", shop
        ),
        reject_rows(
            df.filter(~unknown & ~bad_ts & bad_price),
            raw_cols,
            UNPARSEABLE_VALUE,
            "price",
            shop,
            pl.col("ts"),
        ),
    ]
    ok = df.filter(~unknown & ~bad_ts & ~bad_price)
    et = pl.col("_type")
    ok = ok.with_columns(
        pl.lit(shop).alias("shop_id"),
        blank_to_null(pl.col("user_id")).str.strip_chars().alias("buyer_id"),
        blank_to_null(pl.col("user_session")).str.strip_chars().alias("session_id"),
        et.alias("event_type"),
        blank_to_null(pl.col("product_id")).str.strip_chars().alias("product_id"),
        pl.when(et.is_in(list(ONE_UNIT_TYPES))).then(pl.lit(1, pl.Int64)).alias("quantity"),
        pl.when(et == "checkout_completed").then(pl.col("price")).alias("order_value"),
        blank_to_null(pl.col("brand")).str.strip_chars().str.to_lowercase().alias("_brand"),
        blank_to_null(pl.col("category_code")).str.strip_chars().alias("_category_code"),
    )
    ok = ok.with_columns(
        pl.Series("event_id", event_ids(FORMAT, [shop] * ok.height, ok["_digest"].to_list()))
    )
    events = events_frame(ok) if ok.height else empty_events()
    products, collections = build_catalog(ok, shop)
    rejects_df = pl.concat([r.select(list(QUARANTINE_SCHEMA)) for r in rejects]).sort(
        ["source_file", "source_row"], maintain_order=True
    )
    counts = base_counts(source, events, rejects_df)
    counts["catalog"] = {
        "products": len(products),
        "collections": len(collections),
        "products_without_category_code": sum(1 for p in products if not p["collection_ids"]),
    }
    return ImportResult(
        format=FORMAT,
        events=events,
        products=products_frame(products),
        collections=collections_frame(collections),
        rejects=rejects_df,
        counts=counts,
        files=list(files),
    )
