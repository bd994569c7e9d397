"""Enrichment: one pass from validated events to buyer–session records (SPEC §1).

`session_table` is the lean numeric part (what buyer features need); `enrich_sessions` adds
the semantic columns (ordered events with product titles, collection names, queries) that
the goal writer reads later. Both come from the same expressions, so they always agree.
"""

from __future__ import annotations

import polars as pl

SESSION_KEYS = ["shop_id", "buyer_id", "session_id"]

_ET = pl.col("event_type")


def with_catalog_prices(events: pl.LazyFrame, products: pl.LazyFrame | None) -> pl.LazyFrame:
    """Fill a missing event price from the catalog (cart value needs a price)."""
    if products is None:
        return events
    prices = products.select("shop_id", "product_id", pl.col("price").alias("__catalog_price"))
    return (
        events.join(prices, on=["shop_id", "product_id"], how="left")
        .with_columns(pl.coalesce("price", "__catalog_price").alias("price"))
        .drop("__catalog_price")
    )


def _session_aggs() -> list[pl.Expr]:
    atc_value = pl.col("price").fill_null(0.0) * pl.col("quantity").fill_null(1).cast(pl.Float64)
    return [
        pl.col("ts").min().alias("start"),
        pl.col("ts").max().alias("end"),
        pl.len().cast(pl.Int64).alias("n_events"),
        (_ET == "page_view").sum().cast(pl.Int64).alias("n_page_views"),
        (_ET == "product_view").sum().cast(pl.Int64).alias("n_product_views"),
        (_ET == "collection_view").sum().cast(pl.Int64).alias("n_collection_views"),
        (_ET == "search").sum().cast(pl.Int64).alias("n_searches"),
        (_ET == "add_to_cart").sum().cast(pl.Int64).alias("n_add_to_cart"),
        (_ET == "remove_from_cart").sum().cast(pl.Int64).alias("n_remove_from_cart"),
        (_ET == "checkout_started").sum().cast(pl.Int64).alias("n_checkout_started"),
        (_ET == "checkout_completed").sum().cast(pl.Int64).alias("n_checkout_completed"),
        atc_value.filter(_ET == "add_to_cart").sum().alias("cart_value"),
        pl.col("order_value")
        .filter(_ET == "checkout_completed")
        .fill_null(0.0)
        .sum()
        .alias("order_value"),
    ]


def _with_duration(df: pl.LazyFrame) -> pl.LazyFrame:
    return df.with_columns(
        ((pl.col("end") - pl.col("start")).dt.total_microseconds() / 1e6).alias("duration_s")
    )


def session_table(events: pl.LazyFrame, products: pl.LazyFrame | None = None) -> pl.LazyFrame:
    """Per buyer–session numeric record: counts per event type, start/end, duration (s),
    cart value (Σ price×quantity of add-to-carts) and order value (Σ of completed orders)."""
    ev = with_catalog_prices(events, products)
    return _with_duration(ev.group_by(SESSION_KEYS).agg(_session_aggs()))


def enrich_sessions(
    events: pl.LazyFrame | pl.DataFrame,
    products: pl.LazyFrame | pl.DataFrame,
    collections: pl.LazyFrame | pl.DataFrame,
) -> pl.DataFrame:
    """The enriched buyer–session table: the numeric record of `session_table` plus, in time
    order, the session's events with product titles, collection names and search queries,
    and the distinct products viewed, carted and purchased.

    Purchased products: the product of a `checkout_completed` event when the source names
    one, else the products carted in that session (a completed checkout buys the cart).
    """
    ev, prods, cols = (x.lazy() for x in (events, products, collections))
    ev = with_catalog_prices(ev, prods)
    titles = prods.select("shop_id", "product_id", pl.col("title").alias("product_title"))
    ctitles = cols.select("shop_id", "collection_id", pl.col("title").alias("collection_title"))
    ev = (
        ev.join(titles, on=["shop_id", "product_id"], how="left")
        .join(ctitles, on=["shop_id", "collection_id"], how="left")
        .sort(["shop_id", "buyer_id", "session_id", "ts", "event_id"])
    )
    step = pl.struct(
        "ts",
        "event_type",
        "product_id",
        "product_title",
        "collection_id",
        "collection_title",
        "search_query",
        "quantity",
        "price",
        "order_value",
        "url",
    )
    pid = pl.col("product_id")
    sessions = ev.group_by(SESSION_KEYS, maintain_order=True).agg(
        *_session_aggs(),
        pid.filter(_ET == "product_view")
        .drop_nulls()
        .unique(maintain_order=True)
        .alias("viewed_products"),
        pid.filter(_ET == "add_to_cart")
        .drop_nulls()
        .unique(maintain_order=True)
        .alias("carted_products"),
        pid.filter(_ET == "checkout_completed")
        .drop_nulls()
        .unique(maintain_order=True)
        .alias("__bought_named"),
        pl.col("search_query").filter(_ET == "search").alias("searches"),
        pl.col("collection_title")
        .filter(_ET == "collection_view")
        .drop_nulls()
        .unique(maintain_order=True)
        .alias("collections_viewed"),
        step.alias("events"),
    )
    sessions = sessions.with_columns(
        pl.when(pl.col("n_checkout_completed") == 0)
        .then(pl.lit([], dtype=pl.List(pl.String)))
        .when(pl.col("__bought_named").list.len() > 0)
        .then(pl.col("__bought_named"))
        .otherwise(pl.col("carted_products"))
        .alias("purchased_products")
    ).drop("__bought_named")
    return _with_duration(sessions).sort(["shop_id", "buyer_id", "start"]).collect()
