"""The generic importer's catalog: products and collections built from the mapped events.

`catalog_columns` adds what the mapping's `catalog` names to every mapped event row;
`catalog_rows` then takes each product's last seen values (by time, then source order):
its title and description (columns joined, or the first template whose columns all have a
value), its price (the catalog price column, else the last plausible event price) and its
collection, every level of which becomes a collection.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import polars as pl

from simpersona.ingest.csv_rows import blank_to_null
from simpersona.ingest.mapping import CatalogMapping, template_parts
from simpersona.ingest.plausible import catalog_price
from simpersona.ingest.urls import path_prefixes, readable, readable_path

TITLE, DESCRIPTION, PRICE, COLLECTION = "_cat_title", "_cat_desc", "_cat_price", "_cat_coll"
Rows = list[dict[str, Any]]


def _column(i: int) -> str:
    return f"_cat_col_{i}"


def _joined(exprs: list[pl.Expr]) -> pl.Expr:
    parts = [blank_to_null(e).str.strip_chars() for e in exprs]
    return blank_to_null(pl.concat_str(parts, separator=" ", ignore_nulls=True))


def catalog_columns(cat: CatalogMapping | None, src: Callable[[str], pl.Expr]) -> list[pl.Expr]:
    """The per-event columns `catalog_rows` needs; `src(column)` is a source column."""
    if cat is None:
        return []
    out = []
    if cat.title:
        out.append(_joined([src(c) for c in cat.title]).alias(TITLE))
    if cat.description:
        out.append(_joined([src(c) for c in cat.description]).alias(DESCRIPTION))
    if cat.price:
        price = blank_to_null(src(cat.price)).str.strip_chars().cast(pl.Float64, strict=False)
        out.append(catalog_price(price).alias(PRICE))
    if cat.collection:
        out.append(blank_to_null(src(cat.collection)).str.strip_chars().alias(COLLECTION))
    for i, c in enumerate(cat.template_columns()):
        out.append(blank_to_null(src(c)).str.strip_chars().alias(_column(i)))
    return out


def render(templates: tuple[str, ...], values: dict[str, str | None], cat: CatalogMapping):
    """The first template whose columns all have a value, filled in; None if none has."""
    for template in templates:
        text = []
        for literal, column, part in template_parts(template):
            text.append(literal)
            if column is None:
                continue
            value = _part(values.get(column), part, cat)
            if not value:
                break
            text.append(value)
        else:
            return "".join(text)
    return None


def _part(value: str | None, part: str | None, cat: CatalogMapping) -> str | None:
    """`{column}`, `{column:last}` (its last level) or `{column:path}` (its levels joined
    with ` > `), levels split at `collection_separator`; readable words if `readable`."""
    if value is None:
        return None
    sep = cat.collection_separator
    levels = [lv.strip() for lv in value.split(sep)] if sep else [value]
    levels = [lv for lv in levels if lv]
    if part == "last":
        value = levels[-1] if levels else ""
    elif part == "path":
        if cat.readable:
            return readable_path(value, sep) if sep else readable(value)
        return " > ".join(levels)
    return readable(value) if cat.readable else value


def catalog_rows(ok: pl.DataFrame, cat: CatalogMapping | None) -> tuple[Rows, Rows]:
    """Products and collections (rows of PRODUCTS_SCHEMA / COLLECTIONS_SCHEMA) from the
    mapped events `ok` with their `catalog_columns`."""
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

    products: Rows = []
    coll_ids: set[tuple[str, str]] = set()
    if "product_id" in ok.columns:
        template_cols = cat.template_columns()
        helpers = [TITLE, DESCRIPTION, PRICE, COLLECTION]
        helpers += [_column(i) for i in range(len(template_cols))]
        aggs = [
            catalog_price(pl.col("price")).drop_nulls().last().alias("_ev_price")
            if "price" in ok.columns
            else pl.lit(None, pl.Float64).alias("_ev_price")
        ]
        for c in helpers:
            aggs.append(pl.col(c).drop_nulls().last() if c in ok.columns else pl.lit(None).alias(c))
        latest = (
            ok.filter(pl.col("product_id").is_not_null())
            .sort(["shop_id", "ts", "source_file", "source_row"])
            .group_by(["shop_id", "product_id"])
            .agg(aggs)
            .sort(["shop_id", "product_id"])
        )
        for row in latest.iter_rows(named=True):
            shop, pid, coll = row["shop_id"], row["product_id"], row[COLLECTION]
            values = {c: row[_column(i)] for i, c in enumerate(template_cols)}
            levels = (path_prefixes(coll, sep) if sep else [coll]) if coll else []
            coll_ids.update((shop, c) for c in levels)
            title = render(cat.title_format, values, cat) if cat.title_format else nice(row[TITLE])
            desc = row[DESCRIPTION]
            if cat.description_format:
                desc_text = render(cat.description_format, values, cat)
            elif desc and cat.readable and sep and desc == coll:
                desc_text = readable_path(desc, sep)
            else:
                desc_text = nice(desc)
            price = row[PRICE]
            products.append(
                {
                    "shop_id": shop,
                    "product_id": pid,
                    "title": title or pid,
                    "description": desc_text,
                    "price": price if price is not None else row["_ev_price"],
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


def catalog_counts(products: Rows, collections: Rows, cat: CatalogMapping) -> dict[str, int]:
    """`counts["catalog"]`: products, collections, and products in no collection (named
    after the collection column: `products_without_category_code`)."""
    out = {"products": len(products), "collections": len(collections)}
    if cat.collection:
        out[f"products_without_{cat.collection}"] = sum(
            1 for p in products if not p["collection_ids"]
        )
    return out
