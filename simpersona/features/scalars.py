"""The 16 behavioural scalars of a buyer–shop pair (paper App. A), raw (before transforms),
plus the products of each embedding channel, the funnel stratum and the label inputs."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import numpy as np
import polars as pl
import pyarrow as pa

from simpersona.features.enrich import (
    BUYER_KEYS,
    SESSION_COLUMNS,
    UNKNOWN_EVENT,
    catalog_prices,
    dense_codes,
    event_codes,
    fast_sessions,
    group_codes,
    is_constant,
    session_table,
)
from simpersona.ingest.sessionize import sessionize
from simpersona.schema import EVENT_TYPES

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
RATE_ALPHA: Final[float] = 1.0  # Laplace prior of the funnel rates (paper App. A: α = β = 1)
RATE_BETA: Final[float] = 1.0


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
    return _derived(buyers)


def _derived(buyers: pl.LazyFrame) -> pl.LazyFrame:
    """Rates, intent, average order value, stratum and label inputs from the buyer sums."""
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
    """Funnel stratum by the priority cascade (paper §2.1.1): A purchaser → B checkout abandoner →
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


def buyer_features_from_sessions(sessions: pl.LazyFrame | pl.DataFrame) -> pl.DataFrame:
    """Per buyer–shop pair, from session records (`session_table` or `enrich_sessions`): the
    16 raw scalars, helper counts, stratum, s_pur, exploration sessions, and the sorted
    distinct products of each embedding channel."""
    cols = [*BUYER_KEYS, *_SESSION_NUMBERS, *(f"{c}_products" for c in CHANNELS)]
    frame = sessions.lazy().select(cols).collect().rechunk()
    grouped = group_codes(frame, BUYER_KEYS) if frame.height else None
    fast = None
    if grouped is not None:
        buyer_of_session, first = grouped
        fast = _buyer_table(frame, buyer_of_session, frame.select(BUYER_KEYS)[first])
    if fast is None:
        return _buyer_features_polars(frame.lazy())
    buyers, rank, n_buyers = fast
    lists = []
    for c in CHANNELS:
        items = pl.DataFrame({"rank": rank, "p": frame[f"{c}_products"]}).explode(
            "p", empty_as_null=False, keep_nulls=False
        )
        code, names = dense_codes(items["p"])
        keep = code >= 0
        item_rank = items["rank"].to_numpy()[keep]
        lists.append(channel_lists(item_rank, code[keep], names, n_buyers, f"{c}_products"))
    return buyers.hstack(lists)


@dataclass
class ChannelItems:
    """The products of each embedding channel as (buyer row, product code) items, before
    removing repeats: `codes` index the sorted distinct product ids `names`."""

    n_buyers: int
    names: pl.Series
    items: dict[str, tuple[np.ndarray, np.ndarray]]  # channel → (buyer row, product code)


def buyer_features(
    events: pl.LazyFrame | pl.DataFrame,
    products: pl.LazyFrame | pl.DataFrame | None = None,
    *,
    session_gap_minutes: int | None = None,
) -> pl.DataFrame:
    """Per buyer–shop pair straight from events: the frame of
    `buyer_features_from_sessions(session_table(events, products))`, computed without the
    per-session product lists. Low-cardinality columns (event_type, product_id) may come as
    Categorical, which is faster; the product lists are strings either way.

    With `session_gap_minutes`, events without a session id are sessionized as ingestion's
    `sessionize(events, session_gap_minutes)` would (the same result, faster); without it,
    a buyer's id-less events form one session."""
    fast = buyer_scalars_and_items(events, products, session_gap_minutes=session_gap_minutes)
    if fast is None:
        frame = events.lazy().select(SESSION_COLUMNS).collect()
        if session_gap_minutes is not None:
            frame = sessionize(frame, session_gap_minutes)
        return buyer_features_from_sessions(session_table(frame.lazy(), _lazy(products)))
    buyers, channels = fast
    lists = [
        channel_lists(rank, code, channels.names, channels.n_buyers, f"{c}_products")
        for c, (rank, code) in channels.items.items()
    ]
    return buyers.hstack(lists)


def _lazy(frame: pl.LazyFrame | pl.DataFrame | None) -> pl.LazyFrame | None:
    return None if frame is None else frame.lazy()


def buyer_scalars_and_items(
    events: pl.LazyFrame | pl.DataFrame,
    products: pl.LazyFrame | pl.DataFrame | None = None,
    *,
    session_gap_minutes: int | None = None,
) -> tuple[pl.DataFrame, ChannelItems] | None:
    """The fast path of `buyer_features`: its frame without the product lists, and the
    channel items the lists (or the vectors' channel means, without strings) are built
    from. None when it does not apply (null timestamps, a hash collision)."""
    # One chunk per column: the hashing, casts and gathers below are several times slower
    # on a frame read from many files (one chunk per file).
    # No rechunk of the frame (a copy of every string): hashing, casts and filters work
    # chunk by chunk; only gathers from many chunks are slow, and those stay small here.
    frame = events.lazy().select(SESSION_COLUMNS).collect()
    event_code = event_codes(frame)
    if products is not None:
        frame = _fill_catalog_prices(frame, event_code, products.lazy())
    fs = fast_sessions(frame, event_code, session_gap_minutes)
    if fs is None:
        return None
    keys = frame.select(BUYER_KEYS)[fs.buyer_first_row]
    fast = _buyer_table(fs.numbers, fs.buyer_of_session, keys)
    if fast is None:
        return None
    buyers, rank, n_buyers = fast
    session_of_row = fs.session_of_row
    # Product codes only for the rows that feed a channel.
    kinds = [EVENT_TYPES.index(t) for t in ("product_view", "add_to_cart", "checkout_completed")]
    feeds = np.zeros(UNKNOWN_EVENT + 1, dtype=bool)
    feeds[kinds] = True
    mask = feeds[event_code]
    relevant = np.flatnonzero(mask)
    pcode, names = dense_codes(frame["product_id"].filter(pl.Series(mask)))
    rows, codes = {}, {}
    for k in kinds:
        pick = (event_code[relevant] == k) & (pcode >= 0)
        rows[k], codes[k] = relevant[pick], pcode[pick]
    viewed, carted, named = (rows[k] for k in kinds)
    # Purchased: the products a completed order names; a session whose orders name none
    # bought its cart.
    named_in = np.bincount(session_of_row[named], minlength=fs.numbers.height)
    unnamed = (fs.numbers["n_checkout_completed"].to_numpy() > 0) & (named_in == 0)
    bought = unnamed[session_of_row[carted]]
    items = {
        "viewed": (viewed, codes[kinds[0]]),
        "carted": (carted, codes[kinds[1]]),
        "purchased": (
            np.concatenate([named, carted[bought]]),
            np.concatenate([codes[kinds[2]], codes[kinds[1]][bought]]),
        ),
    }
    by_buyer = {c: (rank[session_of_row[r]], code) for c, (r, code) in items.items()}
    return buyers, ChannelItems(n_buyers, names, by_buyer)


# ---- fast path ----------------------------------------------------------------------------
# Dense integer buyer ids and numpy sums instead of a string group-by (see enrich.py).
_SESSION_NUMBERS = [
    "start",
    "duration_s",
    "n_events",
    "n_product_views",
    "n_collection_views",
    "n_searches",
    "n_add_to_cart",
    "n_checkout_started",
    "n_checkout_completed",
    "cart_value",
    "order_value",
]


def _fill_catalog_prices(
    frame: pl.DataFrame, event_code: np.ndarray, products: pl.LazyFrame
) -> pl.DataFrame:
    """`with_catalog_prices` for the rows whose price matters (add-to-carts without one)."""
    idx = np.flatnonzero(event_code == EVENT_TYPES.index("add_to_cart"))
    if idx.size:
        sub = frame.select("price", "product_id")[idx]
        missing = (sub["price"].is_null() & sub["product_id"].is_not_null()).to_numpy()
        idx = idx[missing]
    if idx.size == 0:
        return frame
    need = frame.select("shop_id", pl.col("product_id").cast(pl.String))[idx]
    prices = catalog_prices(products.with_columns(pl.col("product_id").cast(pl.String)))
    found = need.join(
        prices.collect(), on=["shop_id", "product_id"], how="left", maintain_order="left"
    ).get_column("__catalog_price")
    catalog = np.zeros(frame.height, dtype=np.float64)
    use = np.zeros(frame.height, dtype=bool)
    catalog[idx] = found.cast(pl.Float64).fill_null(0.0).to_numpy()
    use[idx] = found.is_not_null().to_numpy()
    price = pl.when(pl.Series(use)).then(pl.Series(catalog)).otherwise(pl.col("price"))
    return frame.with_columns(price.cast(frame.schema["price"]).alias("price"))


def _buyer_table(
    sessions: pl.DataFrame, buyer_of_session: np.ndarray, keys: pl.DataFrame
) -> tuple[pl.DataFrame, np.ndarray, int] | None:
    """The scalar part of `buyer_features_from_sessions` with numpy sums over dense buyer ids.

    `sessions`: the `_SESSION_NUMBERS` columns; `buyer_of_session`: dense buyer id of each
    session; `keys`: shop_id and buyer_id of each buyer id. Returns the buyer frame sorted
    by shop and buyer, the row of each session's buyer in it, and the number of buyers."""
    if sessions.height == 0 or sessions["start"].null_count():
        return None
    nb = keys.height
    sort_keys = [k for k in BUYER_KEYS if not is_constant(keys[k])] or BUYER_KEYS
    order = keys.select(pl.arg_sort_by(sort_keys)).to_series().to_numpy()
    rank_of_id = np.empty(nb, dtype=np.int64)
    rank_of_id[order] = np.arange(nb)
    rank = rank_of_id[buyer_of_session]

    def col(name: str) -> np.ndarray:
        return sessions[name].to_numpy()

    def count(mask: np.ndarray) -> np.ndarray:
        return np.bincount(rank[mask], minlength=nb).astype(np.int64)

    def total(values: np.ndarray) -> np.ndarray:
        return np.bincount(rank, weights=values.astype(np.float64), minlength=nb)

    has = {c: col(c) > 0 for c in _SESSION_NUMBERS if c.startswith("n_") and c != "n_events"}
    checkout = has["n_checkout_started"] | has["n_checkout_completed"]
    atc = has["n_add_to_cart"]
    day = _day_numbers(sessions["start"])
    day -= day.min()
    n_days = int(day.max()) + 1
    buyer_days = distinct_pairs(rank, day, nb, n_days) // n_days
    atc_n = count(atc)
    cart_sum = np.bincount(rank[atc], weights=col("cart_value")[atc], minlength=nb)
    sums = {
        "sessions": np.bincount(rank, minlength=nb).astype(np.int64),
        "active_days": np.bincount(buyer_days, minlength=nb).astype(np.int64),
        "product_view_sessions": count(has["n_product_views"]),
        "atc_sessions": atc_n,
        "checkout_sessions": count(checkout),
        "search_sessions": count(has["n_searches"]),
        "collection_view_sessions": count(has["n_collection_views"]),
        "purchase_sessions": count(has["n_checkout_completed"]),
        "total_duration_s": total(col("duration_s")),
        "total_product_views": _int_total(rank, col("n_product_views"), nb),
        "browse_only_sessions": count(~atc & ~checkout),
        "avg_cart_value": np.where(atc_n > 0, cart_sum / np.maximum(atc_n, 1), 0.0),
        "__order_total": total(col("order_value")),
        "orders": _int_total(rank, col("n_checkout_completed"), nb),
        "events": _int_total(rank, col("n_events"), nb),
    }
    frame = keys[order].hstack(
        [
            pl.Series(k, v, dtype=pl.Int64 if v.dtype.kind in "iu" else pl.Float64)
            for k, v in sums.items()
        ]
    )
    return _derived(frame.lazy()).collect(), rank, nb


def _day_numbers(start: pl.Series) -> np.ndarray:
    """`start.dt.date()` as day numbers (integer division when the zone is UTC or none)."""
    dtype = start.dtype
    per_day = {"us": 86_400_000_000, "ns": 86_400_000_000_000, "ms": 86_400_000}
    if isinstance(dtype, pl.Datetime) and dtype.time_zone in (None, "UTC", "Etc/UTC"):
        return start.to_physical().to_numpy() // per_day[dtype.time_unit]
    return start.dt.date().to_physical().cast(pl.Int64).to_numpy()


def _int_total(rank: np.ndarray, values: np.ndarray, n: int) -> np.ndarray:
    # bincount sums in float64: exact for integer totals below 2**53
    return np.bincount(rank, weights=values.astype(np.float64), minlength=n).astype(np.int64)


def channel_lists(
    rank: np.ndarray, code: np.ndarray, names: pl.Series, n_buyers: int, name: str
) -> pl.Series:
    """Sorted distinct products per buyer as a List(String) column of `n_buyers` rows, from
    items (buyer row, product code into the sorted `names`); buyers without any get []."""
    n_names = max(len(names), 1)
    pairs = distinct_pairs(rank, code, n_buyers, n_names)
    owner = pairs // n_names
    offsets = np.zeros(n_buyers + 1, dtype=np.int64)
    np.cumsum(np.bincount(owner, minlength=n_buyers), out=offsets[1:])
    values = names.gather(pairs % n_names).to_arrow(compat_level=pl.CompatLevel.newest())
    return pl.Series(name, pa.LargeListArray.from_arrays(pa.array(offsets), values))


def _distinct(x: np.ndarray) -> np.ndarray:
    """Sorted distinct values (np.unique without its slow hash path)."""
    x = np.sort(x)
    if x.size:
        keep = np.empty(x.size, dtype=bool)
        keep[0] = True
        np.not_equal(x[1:], x[:-1], out=keep[1:])
        x = x[keep]
    return x


def distinct_pairs(a: np.ndarray, b: np.ndarray, n_a: int, n_b: int) -> np.ndarray:
    """Sorted distinct a·n_b + b of pairs with 0 ≤ a < n_a, 0 ≤ b < n_b. A bitmap over
    all n_a·n_b pairs when that is not much larger than the input (small catalogs, few
    days), else a sort."""
    keys = a.astype(np.int64) * n_b + b
    space = n_a * n_b
    if space <= 8 * keys.size + (1 << 22):
        seen = np.zeros(space, dtype=bool)
        seen[keys] = True
        return np.flatnonzero(seen)
    return _distinct(keys)


def _buyer_features_polars(sessions: pl.LazyFrame) -> pl.DataFrame:
    """Reference implementation of `buyer_features_from_sessions` (string group-by)."""
    scalars = buyer_scalars_from_sessions(sessions)
    lists = sessions.group_by(BUYER_KEYS).agg(
        pl.col(f"{c}_products").flatten().drop_nulls().unique().sort().alias(f"{c}_products")
        for c in CHANNELS
    )
    return scalars.join(lists, on=BUYER_KEYS, how="left").sort(BUYER_KEYS).collect()
