"""The 16 behavioural scalars of a buyer–shop pair (SPEC §2), raw (before transforms),
plus the products of each embedding channel, the funnel stratum and the label inputs."""

from __future__ import annotations

from typing import Final

import polars as pl

from simpersona.features.enrich import session_table, with_catalog_prices

# Order of the 16 scalars in the buyer vector, with their transform group.
SCALARS: Final[tuple[tuple[str, str], ...]] = (
    ("sessions", "log"),
    ("active_days", "log"),
    ("product_view_sessions", "log"),
    ("atc_sessions", "log"),
    ("checkout_sessions", "log"),
    ("search_sessions", "log"),
    ("collection_view_sessions", "log"),
    ("purchase_sessions", "log"),
    ("total_duration_s", "log"),
    ("total_product_views", "log"),
    ("atc_rate", "rate"),
    ("checkout_rate", "rate"),
    ("browse_only_rate", "rate"),
    ("intent_strength", "intent"),
    ("avg_cart_value", "log"),
    ("avg_order_value", "log"),
)
SCALAR_NAMES: Final[tuple[str, ...]] = tuple(n for n, _ in SCALARS)
CHANNELS: Final[tuple[str, ...]] = ("viewed", "carted", "purchased")
STRATA: Final[tuple[str, ...]] = ("A", "B", "C", "D", "E")
RATE_ALPHA: Final[float] = 1.0  # Laplace prior of the funnel rates (SPEC §2: α = β = 1)
RATE_BETA: Final[float] = 1.0

BUYER_KEYS = ["shop_id", "buyer_id"]


def _smoothed(n: str) -> pl.Expr:
    return (pl.col(n) + RATE_ALPHA) / (pl.col("sessions") + RATE_ALPHA + RATE_BETA)


def buyer_scalars_from_sessions(sessions: pl.LazyFrame) -> pl.LazyFrame:
    """Aggregate session records into the raw scalars, counts and stratum of each buyer.

    Session counts n_* count sessions containing the event. A session with a completed
    order counts as a checkout session too (a purchase implies a checkout), so sources that
    log purchases without a checkout-start event keep consistent rates.
    """
    has = lambda c: pl.col(c) > 0  # noqa: E731
    checkout = has("n_checkout_started") | has("n_checkout_completed")
    atc = has("n_add_to_cart")
    buyers = sessions.group_by(BUYER_KEYS).agg(
        pl.len().cast(pl.Int64).alias("sessions"),
        pl.col("start").dt.date().n_unique().cast(pl.Int64).alias("active_days"),
        has("n_product_views").sum().cast(pl.Int64).alias("product_view_sessions"),
        atc.sum().cast(pl.Int64).alias("atc_sessions"),
        checkout.sum().cast(pl.Int64).alias("checkout_sessions"),
        has("n_searches").sum().cast(pl.Int64).alias("search_sessions"),
        has("n_collection_views").sum().cast(pl.Int64).alias("collection_view_sessions"),
        has("n_checkout_completed").sum().cast(pl.Int64).alias("purchase_sessions"),
        pl.col("duration_s").sum().alias("total_duration_s"),
        pl.col("n_product_views").sum().cast(pl.Int64).alias("total_product_views"),
        (~atc & ~checkout).sum().cast(pl.Int64).alias("browse_only_sessions"),
        pl.col("cart_value").filter(atc).mean().fill_null(0.0).alias("avg_cart_value"),
        pl.col("order_value").sum().alias("__order_total"),
        pl.col("n_checkout_completed").sum().cast(pl.Int64).alias("orders"),
        pl.col("n_events").sum().cast(pl.Int64).alias("events"),
    )
    s_atc, s_co, s_pur = (
        pl.col("atc_sessions"),
        pl.col("checkout_sessions"),
        pl.col("purchase_sessions"),
    )
    weighted = 3 * s_atc + 5 * s_co + 8 * s_pur
    return buyers.with_columns(
        _smoothed("atc_sessions").alias("atc_rate"),
        _smoothed("checkout_sessions").alias("checkout_rate"),
        _smoothed("browse_only_sessions").alias("browse_only_rate"),
        (weighted / (pl.col("sessions") + weighted)).cast(pl.Float64).alias("intent_strength"),
        pl.when(pl.col("orders") > 0)
        .then(pl.col("__order_total") / pl.col("orders"))
        .otherwise(0.0)
        .alias("avg_order_value"),
        stratum_expr().alias("stratum"),
        (8 * s_co + 3 * s_atc).cast(pl.Int64).alias("s_pur"),
        (
            pl.col("search_sessions")
            + pl.col("collection_view_sessions")
            + pl.col("product_view_sessions")
        )
        .cast(pl.Int64)
        .alias("exploration_sessions"),
    ).drop("__order_total")


def stratum_expr() -> pl.Expr:
    """Funnel stratum by the priority cascade (SPEC §3): A purchaser → B checkout abandoner →
    C cart builder → D window shopper → E bouncer."""
    viewed = (
        pl.col("product_view_sessions")
        + pl.col("collection_view_sessions")
        + pl.col("search_sessions")
    ) > 0
    return (
        pl.when(pl.col("purchase_sessions") > 0)
        .then(pl.lit("A"))
        .when(pl.col("checkout_sessions") > 0)
        .then(pl.lit("B"))
        .when(pl.col("atc_sessions") > 0)
        .then(pl.lit("C"))
        .when(viewed)
        .then(pl.lit("D"))
        .otherwise(pl.lit("E"))
    )


def channel_products(events: pl.LazyFrame) -> pl.LazyFrame:
    """Distinct products per buyer for each embedding channel: viewed, carted, purchased.

    Purchased: the product of a completed order when the source names one; otherwise the
    products carted in the session of the order.
    """
    et = pl.col("event_type")
    pid = pl.col("product_id")
    viewed = events.filter((et == "product_view") & pid.is_not_null()).select(
        *BUYER_KEYS, "product_id", pl.lit("viewed").alias("channel")
    )
    carted = events.filter((et == "add_to_cart") & pid.is_not_null()).select(
        *BUYER_KEYS, "session_id", "product_id"
    )
    orders = events.filter(et == "checkout_completed").select(
        *BUYER_KEYS, "session_id", "product_id"
    )
    named = orders.filter(pid.is_not_null())
    unnamed_sessions = (
        orders.group_by(*BUYER_KEYS, "session_id")
        .agg(pid.is_not_null().any().alias("__named"))
        .filter(~pl.col("__named"))
        .drop("__named")
    )
    bought_from_cart = carted.join(unnamed_sessions, on=[*BUYER_KEYS, "session_id"], how="semi")
    purchased = pl.concat([named, bought_from_cart]).select(
        *BUYER_KEYS, "product_id", pl.lit("purchased").alias("channel")
    )
    carted = carted.select(*BUYER_KEYS, "product_id", pl.lit("carted").alias("channel"))
    return pl.concat([viewed, carted, purchased]).unique(maintain_order=False)


def buyer_features(
    events: pl.LazyFrame | pl.DataFrame, products: pl.LazyFrame | pl.DataFrame | None = None
) -> pl.DataFrame:
    """Per buyer–shop pair: the 16 raw scalars, helper counts, stratum, s_pur, exploration
    sessions, and the product lists of the three embedding channels."""
    ev = events.lazy()
    prods = products.lazy() if products is not None else None
    ev = with_catalog_prices(ev, prods)
    scalars = buyer_scalars_from_sessions(session_table(ev))
    lists = (
        channel_products(ev)
        .group_by(BUYER_KEYS)
        .agg(
            *[
                pl.col("product_id").filter(pl.col("channel") == c).sort().alias(f"{c}_products")
                for c in CHANNELS
            ]
        )
    )
    empty = pl.lit([], dtype=pl.List(pl.String))
    out = scalars.join(lists, on=BUYER_KEYS, how="left").with_columns(
        [pl.col(f"{c}_products").fill_null(empty) for c in CHANNELS]
    )
    return out.sort(BUYER_KEYS).collect()
