"""Importer for Shopify web-pixel CSV exports (e.g. the Puffy.com skill-test data).

Columns: `client_id,page_url,referrer,timestamp,event_name,event_data,user_agent`. Headers are
normalised (`clientId` -> `client_id`); `referrer`, `event_data` and `user_agent` may be
missing. docs/importers.md has the full mapping table and the measured counts.

* `page_viewed` becomes product_view / collection_view / search / page_view by its URL
  (`/products/<handle>`, `/collections/<handle>`, `/search?q=`), handles cleaned of junk.
* `product_added_to_cart` -> add_to_cart; the product is the page's product when the page is
  a product page, else the buyer's most recent earlier product view in the same import,
  else null (`counts["cart_product"]` says how many of each).
* `checkout_started` -> checkout_started; `checkout_completed` -> checkout_completed with
  order_value = revenue, quantity = total items, currency USD, and product_id only when every
  line item names the same catalog product.
* `email_filled_on_popup` (and checkout-step pixels) have no canonical type: importer
  quarantine `unmappable_event_type`. Unknown event names: `unknown_event_type`.
* session_id stays null (ingestion sessionizes); buyer_id is the raw client_id (empty ->
  null, passed through for ingestion to reject); url is the raw page_url.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import polars as pl

from simpersona.ingest.csv_rows import blank_to_null, read_csv_rows
from simpersona.ingest.errors import ImporterError
from simpersona.ingest.rejects import (
    UNKNOWN_EVENT_TYPE,
    UNMAPPABLE_EVENT_TYPE,
    UNPARSEABLE_TIMESTAMP,
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
from simpersona.ingest.urls import classify_page, readable, slugify
from simpersona.ingest.validate import DEFAULT_BOUNDS
from simpersona.schema import sanitize_shop_id
from simpersona.timestamps import parse_timestamp

FORMAT = "shopify-pixels"
COLUMNS: tuple[str, ...] = (
    "client_id",
    "page_url",
    "referrer",
    "timestamp",
    "event_name",
    "event_data",
    "user_agent",
)
REQUIRED_COLUMNS: tuple[str, ...] = ("client_id", "page_url", "timestamp", "event_name")

# Pixel events whose canonical type is fixed; page_viewed is classified by its URL.
DIRECT_TYPES: dict[str, str] = {
    "product_viewed": "product_view",
    "collection_viewed": "collection_view",
    "search_submitted": "search",
    "cart_viewed": "page_view",
    "product_added_to_cart": "add_to_cart",
    "product_removed_from_cart": "remove_from_cart",
    "checkout_started": "checkout_started",
    "checkout_completed": "checkout_completed",
}
URL_TYPED = "page_viewed"
# Real pixel events with no canonical counterpart: kept in the importer quarantine.
UNMAPPABLE: frozenset[str] = frozenset(
    {
        "email_filled_on_popup",
        "checkout_contact_info_submitted",
        "checkout_address_info_submitted",
        "checkout_shipping_info_submitted",
        "payment_info_submitted",
        "alert_displayed",
        "ui_extension_errored",
    }
)
CART_TYPES = ("add_to_cart", "remove_from_cart")


def is_real_title(product_id: str, title: str) -> bool:
    """False for a title made up from the handle (`puffy-topper` -> `Puffy Topper`)."""
    return title != readable(product_id)


def match_item_name(name: str | None, handles: Sequence[str]) -> str | None:
    """The product handle an order line's item_name clearly names, or None.

    Exact slug match first (`Puffy Lux Mattress` -> `puffy-lux-mattress`); otherwise the
    handles whose words are all in the name (`Puffy Deluxe Mattress Topper` ->
    `puffy-topper`, `puffy-mattress`), the one with most words, ties broken by the name's last
    word ending the handle (`topper`). Handles of one word, and ties that remain, match
    nothing.
    """
    if not isinstance(name, str) or not name:  # a list or a number where a name belongs
        return None
    slug = slugify(name)
    if slug in handles:
        return slug
    words = slug.split("-")
    cands = [h for h in handles if len(h.split("-")) >= 2 and set(h.split("-")) <= set(words)]
    if not cands:
        return None
    best = max(len(h.split("-")) for h in cands)
    cands = [h for h in cands if len(h.split("-")) == best]
    if len(cands) > 1:
        cands = [h for h in cands if h.split("-")[-1] == words[-1]]
    return cands[0] if len(cands) == 1 else None


def _parse_order(payload: str | None) -> dict[str, Any] | None:
    """revenue, quantity and line items of a checkout_completed payload; None if unreadable."""
    if not payload:
        return None
    try:
        data = json.loads(payload)
    except ValueError:
        return None
    if not isinstance(data, dict):
        return None
    raw_items = data.get("items")
    items = [it for it in raw_items if isinstance(it, dict)] if isinstance(raw_items, list) else []
    revenue = data.get("revenue")
    try:
        revenue = float(revenue) if revenue is not None else None
    except (TypeError, ValueError):
        revenue = None
    qty: int | None = None
    for it in items:
        if it.get("quantity") is None:
            continue
        with contextlib.suppress(TypeError, ValueError, OverflowError):
            units = int(it["quantity"])
            if abs(units) < 2**63 and abs((qty or 0) + units) < 2**63:  # what Int64 holds
                qty = (qty or 0) + units
    return {
        "transaction_id": data.get("transaction_id"),
        "revenue": revenue,
        "quantity": qty,  # None when no line item states a quantity
        "items": items,
    }


def read_shopify_pixels(
    paths: Sequence[str | os.PathLike[str]],
    shop_id: str = "puffy",
    *,
    progress: ProgressFn | None = None,
) -> ImportResult:
    """Read Shopify web-pixel CSV files into canonical events, catalog and rejects."""
    shop = sanitize_shop_id(shop_id)
    files = resolve_paths(paths)
    frames: list[pl.DataFrame] = []
    malformed: list[dict[str, Any]] = []
    extra_cols: list[str] = []
    for path in files:
        src = read_csv_rows(path, shop_id=shop, default_columns=COLUMNS, known_columns=COLUMNS)
        missing = [c for c in REQUIRED_COLUMNS if c not in src.columns]
        if missing:
            raise ImporterError(
                f"required column missing (header: {', '.join(src.columns)})",
                file=path,
                field=missing[0],
            )
        extra_cols += [c for c in src.columns if c not in COLUMNS and c not in extra_cols]
        frames.append(src.frame)
        malformed += src.malformed
        if progress:
            progress(path)
    raw_cols = [*COLUMNS, *extra_cols]
    schema = dict.fromkeys(raw_cols, pl.String) | {
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
    source = value_counts(df["event_name"].str.strip_chars()) if df.height else {}
    if malformed:
        source["(malformed)"] = len(malformed)

    df = df.with_columns(
        parse_timestamp(pl.col("timestamp")).alias("ts"),
        pl.col("event_name").str.strip_chars().fill_null("").alias("_name"),
    )
    known = set(DIRECT_TYPES) | {URL_TYPED}
    is_unmappable = pl.col("_name").is_in(list(UNMAPPABLE))
    is_unknown = ~pl.col("_name").is_in(list(known)) & ~is_unmappable
    bad_ts = pl.col("ts").is_null()
    rejects = [
        rejects_frame(malformed),
        reject_rows(
            df.filter(is_unmappable),
            raw_cols,
            UNMAPPABLE_EVENT_TYPE,
            "event_name",
            shop,
            pl.col("ts"),
        ),
        reject_rows(
            df.filter(is_unknown), raw_cols, UNKNOWN_EVENT_TYPE, "event_name", shop, pl.col("ts")
        ),
        reject_rows(
            df.filter(~is_unmappable & ~is_unknown & bad_ts),
            raw_cols,
            UNPARSEABLE_TIMESTAMP,
            "timestamp",
            shop,
        ),
    ]
    ok = df.filter(~is_unmappable & ~is_unknown & ~bad_ts)

    # ---- classify pages --------------------------------------------------------------------
    urls = ok["page_url"].fill_null("").unique().to_list()
    pages = pl.DataFrame(
        [(u, *_page_tuple(u)) for u in urls],
        schema={
            "_url": pl.String,
            "_kind": pl.String,
            "_page_product": pl.String,
            "_page_collection": pl.String,
            "_page_query": pl.String,
        },
        orient="row",
    )
    ok = ok.with_columns(pl.col("page_url").fill_null("").alias("_url")).join(
        pages, on="_url", how="left"
    )
    name = pl.col("_name")
    event_type = (
        pl.when(name == URL_TYPED)
        .then(pl.col("_kind"))
        .otherwise(name.replace_strict(DIRECT_TYPES, default=None))
    )
    ok = ok.with_columns(event_type.alias("event_type"))
    et = pl.col("event_type")
    page_product = et.is_in(["product_view", *CART_TYPES])
    ok = ok.with_columns(
        pl.when(page_product).then(pl.col("_page_product")).alias("product_id"),
        pl.when(et.is_in(["product_view", "collection_view"]))
        .then(pl.col("_page_collection"))
        .alias("collection_id"),
        pl.when(et == "search").then(pl.col("_page_query")).alias("search_query"),
        blank_to_null(pl.col("client_id")).alias("buyer_id"),
    )

    # ---- cart product: page, else the buyer's last earlier product view ------------------
    ok = ok.with_row_index("_order")
    is_cart = et.is_in(list(CART_TYPES))
    from_url = int(ok.filter(is_cart & pl.col("product_id").is_not_null()).height)
    last_view = (
        pl.when(et == "product_view")
        .then(pl.col("product_id"))
        .otherwise(None)
        .forward_fill()
        .over("buyer_id")
    )
    ok = (
        ok.sort(["buyer_id", "ts", "_order"], nulls_last=True)
        .with_columns(last_view.alias("_last_view"))
        .with_columns(
            pl.when(is_cart & pl.col("product_id").is_null() & pl.col("buyer_id").is_not_null())
            .then(pl.col("_last_view"))
            .otherwise(pl.col("product_id"))
            .alias("product_id")
        )
        .sort("_order")
    )
    n_cart = int(ok.filter(is_cart).height)
    cart_known = int(ok.filter(is_cart & pl.col("product_id").is_not_null()).height)

    # ---- orders ----------------------------------------------------------------------------
    handles = sorted(set(ok["product_id"].drop_nulls().to_list()))
    orders = ok.filter(et == "checkout_completed").select("_order", "event_data")
    # (row order, revenue, quantity, the one catalog product the order names)
    order_rows: list[tuple[int, float | None, int | None, str | None]] = []
    item_titles: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    item_prices: dict[str, list[float]] = defaultdict(list)
    notes: dict[str, int] = defaultdict(int)
    tx_seen: dict[str, int] = defaultdict(int)
    for order_idx, payload in orders.iter_rows():
        order = _parse_order(payload)
        if order is None:
            notes["checkout_payload_unreadable"] += 1
            order_rows.append((order_idx, None, None, None))
            continue
        if order["quantity"] is None:
            notes["orders_without_item_quantity"] += 1
        if order["transaction_id"] is not None:
            tx_seen[str(order["transaction_id"])] += 1
        matched = []
        for it in order["items"]:
            item_name = it.get("item_name")
            if not item_name:
                notes["order_items_without_name"] += 1
            handle = match_item_name(item_name, handles)
            matched.append(handle)
            if handle:
                item_titles[handle][str(item_name).strip()] += 1
                with contextlib.suppress(TypeError, ValueError):
                    price = float(it.get("item_price"))
                    if math.isfinite(price) and 0 <= price <= DEFAULT_BOUNDS.max_amount:
                        item_prices[handle].append(price)
        single = matched[0] if matched and all(m == matched[0] for m in matched) else None
        if single:
            notes["orders_with_one_catalog_product"] += 1
        order_rows.append((order_idx, order["revenue"], order["quantity"], single))
    notes["repeated_transaction_id"] = sum(n - 1 for n in tx_seen.values() if n > 1)
    order_df = pl.DataFrame(
        order_rows,
        schema={
            "_order": pl.UInt32,
            "_order_value": pl.Float64,
            "_quantity": pl.Int64,
            "_order_product": pl.String,
        },
        orient="row",
    )
    ok = ok.join(order_df, on="_order", how="left").with_columns(
        pl.col("_order_value").alias("order_value"),
        pl.col("_quantity").alias("quantity"),
        pl.when(et == "checkout_completed")
        .then(pl.col("_order_product"))
        .otherwise(pl.col("product_id"))
        .alias("product_id"),
        pl.when(et == "checkout_completed").then(pl.lit("USD")).alias("currency"),
        pl.lit(shop).alias("shop_id"),
        pl.col("page_url").alias("url"),
        pl.lit(None, pl.String).alias("session_id"),
    )
    ok = ok.with_columns(
        pl.Series("event_id", event_ids(FORMAT, [shop] * ok.height, ok["_digest"].to_list()))
    )
    events = events_frame(ok) if ok.height else empty_events()

    # ---- catalog ---------------------------------------------------------------------------
    membership: dict[str, set[str]] = defaultdict(set)
    for prod, coll in (
        ok.filter((et == "product_view") & pl.col("collection_id").is_not_null())
        .select("product_id", "collection_id")
        .unique()
        .iter_rows()
    ):
        if prod:
            membership[prod].add(coll)
    product_rows = []
    for handle in handles:
        titles = item_titles.get(handle)
        title = max(titles.items(), key=lambda kv: (kv[1], kv[0]))[0] if titles else None
        prices = item_prices.get(handle)
        product_rows.append(
            {
                "shop_id": shop,
                "product_id": handle,
                "title": title or readable(handle),
                "description": None,
                "price": min(prices) if prices else None,
                "collection_ids": sorted(membership.get(handle, ())),
            }
        )
    coll_ids = set(events["collection_id"].drop_nulls().to_list())
    for colls in membership.values():
        coll_ids |= colls
    collection_rows = [
        {"shop_id": shop, "collection_id": c, "title": readable(c)} for c in sorted(coll_ids)
    ]

    rejects_df = concat_rejects(rejects)
    counts = base_counts(source, events, rejects_df)
    counts["page_viewed_as"] = value_counts(ok.filter(name == URL_TYPED)["event_type"])
    counts["cart_product"] = {
        "from_page_url": from_url,
        "from_last_product_view": cart_known - from_url,
        "unknown": n_cart - cart_known,
    }
    counts["notes"] = {
        "products_titled_from_item_name": sum(1 for h in handles if h in item_titles),
        **dict(notes),
    }
    return ImportResult(
        format=FORMAT,
        events=events,
        products=products_frame(product_rows),
        collections=collections_frame(collection_rows),
        rejects=rejects_df,
        counts=counts,
        files=list(files),
    )


def _page_tuple(url: str) -> tuple[str, str | None, str | None, str | None]:
    info = classify_page(url)
    return info.kind, info.product_id, info.collection_id, info.search_query
