"""Enrichment: one pass from validated events to buyer–session records (paper §2.1.1).

`session_table` is the lean numeric part (what buyer features need); `enrich_sessions` adds
the semantic columns (ordered events with product titles, collection names, queries) that
the goal writer reads later. Both come from the same expressions, so they always agree.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl

from simpersona.ingest.sessionize import gap_units, inactivity_sessions, session_ids
from simpersona.schema import EVENT_TYPES

BUYER_KEYS = ["shop_id", "buyer_id"]
SESSION_KEYS = [*BUYER_KEYS, "session_id"]
# Event columns the numeric session record reads.
SESSION_COLUMNS = [
    *SESSION_KEYS,
    *("ts", "event_type", "product_id", "quantity", "price", "order_value"),
]
# Count column of each event type, in the order of EVENT_TYPES.
COUNT_COLUMNS = {
    "page_view": "n_page_views",
    "collection_view": "n_collection_views",
    "product_view": "n_product_views",
    "search": "n_searches",
    "add_to_cart": "n_add_to_cart",
    "remove_from_cart": "n_remove_from_cart",
    "checkout_started": "n_checkout_started",
    "checkout_completed": "n_checkout_completed",
}

_ET = pl.col("event_type")


def catalog_prices(products: pl.LazyFrame) -> pl.LazyFrame:
    """One price per catalog product (the first row, should the catalog repeat a product)."""
    return products.select(
        "shop_id", "product_id", pl.col("price").alias("__catalog_price")
    ).unique(["shop_id", "product_id"], keep="first", maintain_order=True)


def with_catalog_prices(events: pl.LazyFrame, products: pl.LazyFrame | None) -> pl.LazyFrame:
    """Fill a missing event price from the catalog (cart value needs a price)."""
    if products is None:
        return events
    prices = catalog_prices(products)
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


def _product_aggs() -> list[pl.Expr]:
    pid = pl.col("product_id")
    return [
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
    ]


def _finish(sessions: pl.LazyFrame) -> pl.LazyFrame:
    """Duration, and the purchased products: those a completed order names, else the
    session's cart (a completed checkout buys the cart)."""
    return sessions.with_columns(
        ((pl.col("end") - pl.col("start")).dt.total_microseconds() / 1e6).alias("duration_s"),
        pl.when(pl.col("n_checkout_completed") == 0)
        .then(pl.lit([], dtype=pl.List(pl.String)))
        .when(pl.col("__bought_named").list.len() > 0)
        .then(pl.col("__bought_named"))
        .otherwise(pl.col("carted_products"))
        .alias("purchased_products"),
    ).drop("__bought_named")


def session_table(events: pl.LazyFrame, products: pl.LazyFrame | None = None) -> pl.LazyFrame:
    """Per buyer–session record: counts per event type, start/end, duration (s), cart value
    (Σ price×quantity of add-to-carts), order value (Σ of completed orders) and the distinct
    products viewed, carted and purchased. The lean part of `enrich_sessions`."""
    ev = with_catalog_prices(events, products)
    return _finish(ev.group_by(SESSION_KEYS).agg(*_session_aggs(), *_product_aggs()))


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
    sessions = ev.group_by(SESSION_KEYS, maintain_order=True).agg(
        *_session_aggs(),
        *_product_aggs(),
        pl.col("search_query").filter(_ET == "search").alias("searches"),
        pl.col("collection_title")
        .filter(_ET == "collection_view")
        .drop_nulls()
        .unique(maintain_order=True)
        .alias("collections_viewed"),
        step.alias("events"),
    )
    return _finish(sessions).sort(["shop_id", "buyer_id", "start"]).collect()


# ---- fast numeric path ------------------------------------------------------------------
# Polars' group-by on three string keys with a dozen filtered aggregations is slow on few
# cores. The functions below compute the same numbers with dense integer group ids and
# numpy's bincount; callers fall back to the polars expressions when they return None.

_MIX = np.uint64(0x9E3779B97F4A7C15)  # odd 64-bit constant to combine per-column hashes
_SEEDS = (1_000, 2_000)  # the two independent hash families
UNKNOWN_EVENT = len(EVENT_TYPES)  # event code of an unknown or null event type


def is_constant(s: pl.Series) -> bool:
    """Every value equal to the first and none null (such a key column splits no group)."""
    if s.null_count():
        return False
    if len(s) == 0:
        return True
    if (s.head(64) != s[0]).any():  # cheap answer for the usual case, a varying key
        return False
    return bool((s == s[0]).all())


def key_hashes(
    frame: pl.DataFrame, keys: list[str], prefix: tuple[np.ndarray, np.ndarray] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Two independently seeded 64-bit hashes of each row's `keys`, extending the hashes of
    a key prefix when given. Constant key columns are skipped."""
    cols = [k for k in keys if not is_constant(frame[k])]
    parts = frame.select(
        pl.col(k).hash(seed=s + i, seed_1=s + 101, seed_2=s + 211, seed_3=s + 307).alias(f"{s}/{k}")
        for s in _SEEDS
        for i, k in enumerate(cols)
    )
    out = []
    for j, s in enumerate(_SEEDS):
        h = prefix[j] if prefix is not None else np.zeros(frame.height, dtype=np.uint64)
        for k in cols:
            h = (h * _MIX) ^ parts[f"{s}/{k}"].to_numpy()
        out.append(h)
    return out[0], out[1]


def _string_hashes(values: pl.Series) -> tuple[np.ndarray, np.ndarray]:
    """The two independent 64-bit hashes of each value of a column (as strings)."""
    values = values.cast(pl.String)
    first, second = (
        values.hash(seed=s + 5, seed_1=s + 103, seed_2=s + 213, seed_3=s + 311).to_numpy()
        for s in _SEEDS
    )
    return first, second


def _filled_session_hashes(
    events: pl.DataFrame,
    buyer_hashes: tuple[np.ndarray, np.ndarray],
    session_hashes: tuple[np.ndarray, np.ndarray],
    gap_minutes: int,
) -> tuple[np.ndarray, np.ndarray] | None:
    """`session_hashes` where the rows without a session id have the hashes of the ids
    `sessionize` would fill in. Only one id string per new session is built. None when the
    fast path does not apply (ts not a Datetime, a hash collision)."""
    gap = gap_units(events.schema["ts"], gap_minutes)
    if gap is None:
        return None
    miss = np.flatnonzero(events["session_id"].is_null().to_numpy())
    ts = events["ts"].gather(miss)
    # The first buyer hash serves as the buyer's group id. Should two buyers share it,
    # their rows would interleave in time, and a session would mix them: the second hash
    # must then agree within every session.
    session, first = inactivity_sessions(buyer_hashes[0][miss], ts.to_physical().to_numpy(), gap)
    check = buyer_hashes[1][miss]
    if not np.array_equal(check, check[first][session]):
        return None
    ids = session_ids(events["buyer_id"].gather(miss[first]), ts.gather(first))
    out = []
    for full, new in zip(session_hashes, _string_hashes(ids), strict=True):
        full = full.copy()  # polars' buffer is read-only
        full[miss] = new[session]
        out.append(full)
    return out[0], out[1]


def codes_from_hashes(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """Dense group ids (in order of first appearance) of rows with hash `a`, and the first
    row of each group. The independent hash `b` must agree within every group, so a wrong
    merge needs both 64-bit hashes to collide at once (probability about n²·2⁻¹²⁹); should
    they disagree: None, and callers fall back to a string group-by."""
    import pandas as pd

    codes, _ = pd.factorize(a)
    codes = codes.astype(np.int64, copy=False)
    # Ids appear in increasing order, so the running maximum steps up at each first row.
    first = np.flatnonzero(np.diff(np.maximum.accumulate(codes), prepend=-1) > 0)
    if not np.array_equal(b, b[first][codes]):
        return None
    return codes, first


def group_codes(frame: pl.DataFrame, keys: list[str]) -> tuple[np.ndarray, np.ndarray] | None:
    """Dense group id of every row of `frame` by the `keys` columns and the first row of
    each group (see `codes_from_hashes`)."""
    return codes_from_hashes(*key_hashes(frame, keys))


def dense_codes(values: pl.Series) -> tuple[np.ndarray, pl.Series]:
    """Index of each value among the sorted distinct non-null values (-1 for null), and
    those values as strings. Categorical input uses its dictionary codes."""
    if values.dtype == pl.Categorical or isinstance(values.dtype, pl.Enum):
        distinct = values.drop_nulls().unique()
        phys = distinct.to_physical().cast(pl.Int64).to_numpy()
        names = distinct.cast(pl.String)
        order = names.arg_sort().to_numpy()
        lookup = np.full(int(phys.max(initial=-1)) + 2, -1, dtype=np.int64)  # [-1] → -1
        lookup[phys[order]] = np.arange(len(order))
        codes = values.to_physical().cast(pl.Int64).fill_null(-1).to_numpy()
        return lookup[codes], names.gather(order)
    values = values.cast(pl.String)
    names = values.drop_nulls().unique().sort()
    coded = values.cast(pl.Enum(names.to_list())).to_physical().cast(pl.Int64)
    return coded.fill_null(-1).to_numpy(), names


def event_codes(events: pl.DataFrame) -> np.ndarray:
    """Index of each row's event type in EVENT_TYPES (UNKNOWN_EVENT when unknown or null)."""
    et = events["event_type"]
    if et.dtype == pl.String:
        known = et.cast(pl.Enum(EVENT_TYPES), strict=False).to_physical()
        return known.fill_null(UNKNOWN_EVENT).cast(pl.Int64).to_numpy()
    codes, names = dense_codes(et)
    index = {t: i for i, t in enumerate(EVENT_TYPES)}
    lookup = [index.get(t, UNKNOWN_EVENT) for t in names.to_list()]
    return np.array([*lookup, UNKNOWN_EVENT], dtype=np.int64)[codes]  # code -1 → unknown


@dataclass
class FastSessions:
    """Numeric session records and the group ids behind them (see `fast_sessions`)."""

    numbers: pl.DataFrame  # per session: start, end, counts, cart/order value, duration_s
    session_of_row: np.ndarray  # session of each event row
    buyer_of_session: np.ndarray  # dense buyer id of each session
    buyer_first_row: np.ndarray  # first event row of each buyer, by buyer id


def fast_sessions(
    events: pl.DataFrame, event_code: np.ndarray, session_gap_minutes: int | None = None
) -> FastSessions | None:
    """The numeric columns of `session_table` (start, end, n_events, the per-type counts,
    cart_value, order_value, duration_s) without the keys, one row per session in order of
    first appearance, with the session of each event and the buyer of each session.
    `events`: collected, catalog prices filled; `event_code`: from `event_codes`. None when
    the fast path does not apply (null timestamps, a hash collision).

    With `session_gap_minutes`, events without a session id are grouped as ingestion's
    `sessionize` would fill them (same sessions, same ids, so a generated id that equals an
    existing one joins that session), without writing an id into every such row."""
    if events.height == 0 or events["ts"].null_count():
        return None
    buyer_hashes = key_hashes(events, BUYER_KEYS)
    session_hashes = _string_hashes(events["session_id"])
    if session_gap_minutes is not None and events["session_id"].null_count():
        filled = _filled_session_hashes(events, buyer_hashes, session_hashes, session_gap_minutes)
        if filled is None:
            return None
        session_hashes = filled
    sessions = codes_from_hashes(
        *((h * _MIX) ^ s for h, s in zip(buyer_hashes, session_hashes, strict=True))
    )
    if sessions is None:
        return None
    codes, first = sessions
    buyers = codes_from_hashes(buyer_hashes[0][first], buyer_hashes[1][first])
    if buyers is None:
        return None
    n = len(first)
    k = UNKNOWN_EVENT + 1
    counts = np.bincount(codes * k + event_code, minlength=n * k).reshape(n, k)
    ts = events["ts"].to_physical().to_numpy()
    start = np.full(n, np.iinfo(np.int64).max, dtype=np.int64)
    end = np.full(n, np.iinfo(np.int64).min, dtype=np.int64)
    np.minimum.at(start, codes, ts)
    np.maximum.at(end, codes, ts)

    def value_sum(event_type: str, value: pl.Expr) -> np.ndarray:
        rows = np.flatnonzero(event_code == EVENT_TYPES.index(event_type))
        part = events.select("price", "quantity", "order_value")[rows]
        weights = part.select(value.cast(pl.Float64)).to_series()
        return np.bincount(codes[rows], weights=weights.to_numpy(), minlength=n)

    atc_value = pl.col("price").fill_null(0.0) * pl.col("quantity").fill_null(1).cast(pl.Float64)
    ts_dtype = events.schema["ts"]
    numbers = pl.DataFrame(
        [
            pl.Series("start", start).cast(ts_dtype),
            pl.Series("end", end).cast(ts_dtype),
            pl.Series("n_events", counts.sum(axis=1), dtype=pl.Int64),
            *(
                pl.Series(COUNT_COLUMNS[t], counts[:, i], dtype=pl.Int64)
                for i, t in enumerate(EVENT_TYPES)
            ),
            pl.Series("cart_value", value_sum("add_to_cart", atc_value)),
            pl.Series(
                "order_value", value_sum("checkout_completed", pl.col("order_value").fill_null(0.0))
            ),
        ]
    ).with_columns(
        ((pl.col("end") - pl.col("start")).dt.total_microseconds() / 1e6).alias("duration_s")
    )
    buyer_of_session, buyer_first = buyers
    return FastSessions(numbers, codes, buyer_of_session, first[buyer_first])
