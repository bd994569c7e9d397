"""Vectorised simulation of one chunk of buyers of one shop.

Three levels, each a flat numpy array (no per-event Python loop):

1. buyers: type → own session rate, browsing rate, funnel probabilities (Beta), landing and
   browsing mixes (Dirichlet), price sensitivity, favourite category, sale affinity, dwell;
2. sessions: browsing length (negative binomial), whether the session carts, starts and
   completes checkout, its category, and a small pool of products it considers;
3. events: browsing events (landing + later), cart lines placed right after a product view,
   removals, a /cart view, checkout started / completed; ordered within the session, given
   lognormal gaps, and the sessions laid out in the window with > 30 min between them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl

from simpersona.schema import EVENT_TYPES, TS_DTYPE
from simpersona.synth.catalog import N_QUERY_VARIANTS, ShopCatalog
from simpersona.synth.types import BuyerType
from simpersona.synth.vocab import LINE_NAMES

US = 1_000_000
MIN_SESSION_GAP_US = 31 * 60 * US  # > the sessionizer's 30 minutes
MAX_EVENT_GAP_S = 25 * 60  # < 30 minutes, so a session never splits
INTER_SESSION_MEDIAN_S = 18 * 3600  # median slack between sessions (Puffy: ~18 h)
INTER_SESSION_SIGMA = 1.3
MAX_CARTS_PER_SESSION = 40
MAX_POOL = 60
P_CART_VIEW = 0.3  # a carting session shows the /cart page before checkout or leaving

ET = {name: i for i, name in enumerate(EVENT_TYPES)}
PAGE_VIEW, COLLECTION_VIEW, PRODUCT_VIEW, SEARCH = 0, 1, 2, 3
ADD_TO_CART, REMOVE_FROM_CART = ET["add_to_cart"], ET["remove_from_cart"]
CHECKOUT_STARTED, CHECKOUT_COMPLETED = ET["checkout_started"], ET["checkout_completed"]
assert [ET[k] for k in ("page_view", "collection_view", "product_view", "search")] == [0, 1, 2, 3]
_EVENT_SERIES = pl.Series("event_type", list(EVENT_TYPES))


@dataclass(frozen=True)
class TypeTable:
    """The planted types as parallel arrays (index = type code)."""

    names: tuple[str, ...]
    sessions_mean: np.ndarray
    sessions_shape: np.ndarray
    browse_mean: np.ndarray
    browse_sigma: np.ndarray
    landing: np.ndarray  # (T, 4)
    browse: np.ndarray  # (T, 4)
    pages_cum: np.ndarray  # (T, 2) cumulative page-kind weights
    p_atc: np.ndarray
    p_checkout: np.ndarray
    p_purchase: np.ndarray
    funnel_kappa: np.ndarray
    mix_concentration: np.ndarray
    extra_carts: np.ndarray
    p_remove: np.ndarray
    extra_quantity: np.ndarray
    price_cum: np.ndarray  # (T, 2) cumulative price-level weights
    sale_affinity: np.ndarray
    focus: np.ndarray
    explore: np.ndarray
    dwell_s: np.ndarray
    line: np.ndarray  # favourite product line index; len(PRODUCT_LINES) = none
    line_focus: np.ndarray
    min_browse: np.ndarray
    always_product_view: np.ndarray  # bool

    @classmethod
    def build(
        cls, types: tuple[BuyerType, ...], sessions_scale: float, events_scale: float
    ) -> TypeTable:
        def arr(name: str) -> np.ndarray:
            return np.array([getattr(t, name) for t in types], dtype=np.float64)

        def mix(name: str) -> np.ndarray:
            m = np.array([getattr(t, name) for t in types], dtype=np.float64)
            return m / m.sum(axis=1, keepdims=True)

        return cls(
            names=tuple(t.name for t in types),
            sessions_mean=arr("sessions_mean") * sessions_scale,
            sessions_shape=arr("sessions_shape"),
            browse_mean=arr("browse_mean") * events_scale,
            browse_sigma=arr("browse_sigma"),
            landing=mix("landing"),
            browse=mix("browse"),
            pages_cum=np.cumsum(mix("pages"), axis=1)[:, :2],
            p_atc=arr("p_atc"),
            p_checkout=arr("p_checkout"),
            p_purchase=arr("p_purchase"),
            funnel_kappa=arr("funnel_kappa"),
            mix_concentration=arr("mix_concentration"),
            extra_carts=arr("extra_carts"),
            p_remove=arr("p_remove"),
            extra_quantity=arr("extra_quantity"),
            price_cum=np.cumsum(mix("price_levels"), axis=1)[:, :2],
            sale_affinity=arr("sale_affinity"),
            focus=arr("focus"),
            explore=arr("explore"),
            dwell_s=arr("dwell_s"),
            line=np.array(
                [LINE_NAMES.index(t.line) if t.line else len(LINE_NAMES) for t in types],
                dtype=np.int64,
            ),
            line_focus=np.array([t.line_focus if t.line else 0.0 for t in types]),
            min_browse=np.array([t.min_browse for t in types], dtype=np.int64),
            always_product_view=np.array([t.always_product_view for t in types], dtype=bool),
        )


def expected_events_per_buyer(tt: TypeTable, shares: np.ndarray) -> float:
    """Approximate mean events per buyer for a type mixture (ignores caps and censoring)."""
    sessions = 1 + tt.sessions_mean
    funnel = tt.p_atc * (
        (1 + tt.extra_carts) * (1 + tt.p_remove) + P_CART_VIEW + tt.p_checkout * (1 + tt.p_purchase)
    )
    per_type = sessions * (1 + tt.min_browse + tt.browse_mean + funnel)
    return float(np.dot(shares, per_type))


@dataclass
class ChunkResult:
    events: pl.DataFrame  # canonical events, sorted by ts
    n_sessions: int
    events_by_type: np.ndarray  # counts in EVENT_TYPES order


def _beta(rng: np.random.Generator, mean: np.ndarray, kappa: np.ndarray) -> np.ndarray:
    m = np.clip(mean, 1e-4, 1 - 1e-4)
    return rng.beta(m * kappa, (1 - m) * kappa)


def _dirichlet_cum(rng: np.random.Generator, mix: np.ndarray, conc: np.ndarray) -> np.ndarray:
    """Per-row Dirichlet(conc × mix) draws, returned as cumulative weights without the last."""
    g = rng.gamma(mix * conc[:, None])
    s = g.sum(axis=1, keepdims=True)
    w = np.where(s > 0, g / np.where(s > 0, s, 1.0), mix)
    return np.cumsum(w, axis=1)[:, :-1]


def _seg_starts(counts: np.ndarray) -> np.ndarray:
    return np.cumsum(counts) - counts


def _pick(rng: np.random.Generator, count: np.ndarray) -> np.ndarray:
    """A uniform integer in [0, count) per entry (count >= 1)."""
    return np.minimum((rng.random(len(count)) * count).astype(np.int64), count - 1)


def simulate_chunk(
    rng: np.random.Generator,
    cat: ShopCatalog,
    tt: TypeTable,
    type_code: np.ndarray,
    buyer_ids: pl.Series,
    null_session: np.ndarray,
    *,
    window_start_us: int,
    window_us: int,
    event_id_prefix: str,
    max_sessions: int,
    max_browse: int,
) -> ChunkResult:
    """Events of `len(type_code)` buyers of shop `cat`, as a canonical frame sorted by ts."""
    t = type_code.astype(np.int64)
    n_buyers = len(t)
    n_cat = cat.n_categories

    # ---- buyers -----------------------------------------------------------------------
    shape = tt.sessions_shape[t]
    rate = rng.gamma(shape, tt.sessions_mean[t] / shape)
    n_sess = 1 + np.minimum(rng.poisson(rate), max_sessions - 1)
    sig = tt.browse_sigma[t]
    browse_rate = tt.browse_mean[t] * np.exp(sig * rng.standard_normal(n_buyers) - sig**2 / 2)
    p_atc = _beta(rng, tt.p_atc[t], tt.funnel_kappa[t])
    p_co = _beta(rng, tt.p_checkout[t], tt.funnel_kappa[t])
    p_buy = _beta(rng, tt.p_purchase[t], tt.funnel_kappa[t])
    conc = tt.mix_concentration[t]
    landing_cum = _dirichlet_cum(rng, tt.landing[t], conc)
    browse_cum = _dirichlet_cum(rng, tt.browse[t], conc)
    u = rng.random(n_buyers)
    price_level = (u > tt.price_cum[t, 0]).astype(np.int64) + (u > tt.price_cum[t, 1])
    sale_aff = _beta(rng, tt.sale_affinity[t], np.full(n_buyers, 6.0))
    focus = _beta(rng, tt.focus[t], np.full(n_buyers, 6.0))
    fav = rng.integers(0, n_cat, n_buyers)
    line_focus = _beta(rng, tt.line_focus[t], np.full(n_buyers, 20.0))
    explore = tt.explore[t] * rng.lognormal(0.0, 0.5, n_buyers)
    dwell = tt.dwell_s[t] * rng.lognormal(0.0, 0.4, n_buyers)

    # ---- sessions ---------------------------------------------------------------------
    sb = np.repeat(np.arange(n_buyers), n_sess)
    n_s = len(sb)
    n_browse = 1 + tt.min_browse[t][sb] + rng.poisson(browse_rate[sb] * rng.gamma(2.0, 0.5, n_s))
    n_browse = np.minimum(n_browse, max_browse)
    atc = rng.random(n_s) < p_atc[sb]
    co = atc & (rng.random(n_s) < p_co[sb])
    buy = co & (rng.random(n_s) < p_buy[sb])
    n_atc = np.where(atc, 1 + rng.poisson(tt.extra_carts[t][sb]), 0)
    n_atc = np.minimum(n_atc, MAX_CARTS_PER_SESSION)
    n_rm = rng.binomial(n_atc - co, tt.p_remove[t][sb])  # a checkout keeps >= 1 line
    cart_view = atc & (rng.random(n_s) < P_CART_VIEW)
    s_cat = np.where(rng.random(n_s) < focus[sb], fav[sb], rng.integers(0, n_cat, n_s))
    s_sale = rng.random(n_s) < sale_aff[sb]
    pool_size = np.minimum(1 + rng.poisson(explore[sb]), MAX_POOL)
    pool_start = _seg_starts(pool_size)
    s_line = np.where(rng.random(n_s) < line_focus[sb], tt.line[t][sb], cat.n_lines)
    group = cat.sampler_group(price_level[sb], s_line, np.where(s_sale, n_cat, s_cat))
    pool = cat.sampler.sample(np.repeat(group, pool_size), rng.random(int(pool_size.sum())))

    # ---- browsing events ----------------------------------------------------------------
    bs = np.repeat(np.arange(n_s), n_browse)
    n_b = len(bs)
    pos = np.arange(n_b) - _seg_starts(n_browse)[bs]
    bb = sb[bs]
    first = pos == 0
    u = rng.random(n_b)
    kind = np.zeros(n_b, dtype=np.int8)
    for k in range(3):
        kind += u > np.where(first, landing_cum[bb, k], browse_cum[bb, k])
    # A carting session needs a product view to cart from, and some types view a product
    # every session: force the session's last browse event.
    has_pv = np.bincount(bs[kind == PRODUCT_VIEW], minlength=n_s) > 0
    force = (atc | tt.always_product_view[t][sb]) & ~has_pv
    kind[(_seg_starts(n_browse) + n_browse - 1)[force]] = PRODUCT_VIEW

    product = pool[pool_start[bs] + _pick(rng, pool_size[bs])]
    variant = rng.integers(0, N_QUERY_VARIANTS, n_b)
    # Collections: the session's sale collection, a shop-wide one, or one of its category.
    bcat = s_cat[bs]
    r = rng.random(n_b)
    cat_coll = cat.cat_coll_members[cat.cat_coll_start[bcat] + _pick(rng, cat.cat_coll_count[bcat])]
    shop_coll = cat.sale_collection + 1 + (r < 0.07)  # new-arrivals / best-sellers
    coll = np.where(s_sale[bs], cat.sale_collection, np.where(r < 0.14, shop_coll, cat_coll))
    # Pages: home, a blog post or an info page, by the buyer type's weights.
    r = rng.random(n_b)
    tb = t[bb]
    page_url = np.where(
        r < tt.pages_cum[tb, 0],
        cat.url_home,
        np.where(
            r < tt.pages_cum[tb, 1],
            cat.url_blog_start + rng.integers(0, cat.n_blogs, n_b),
            cat.url_info_start + rng.integers(0, cat.n_info, n_b),
        ),
    )
    query = product.astype(np.int64) * N_QUERY_VARIANTS + variant
    is_pv, is_cv, is_s = kind == PRODUCT_VIEW, kind == COLLECTION_VIEW, kind == SEARCH
    b_url = np.select(
        [is_pv, is_cv, is_s],
        [
            cat.url_product_start + product,
            cat.url_collection_start + coll,
            cat.url_search_start + query,
        ],
        page_url,
    )
    b_product = np.where(is_pv, product, -1)
    b_coll = np.where(is_cv, coll, -1)
    b_query = np.where(is_s, query, -1)
    b_price = np.where(is_pv, cat.product_price[product], np.nan)

    # ---- cart lines, right after a product view of the same session ----------------------
    a_s = np.repeat(np.arange(n_s), n_atc)
    n_a = len(a_s)
    pv_idx = np.flatnonzero(kind == PRODUCT_VIEW)
    pv_count = np.bincount(bs[pv_idx], minlength=n_s)
    pick = pv_idx[_seg_starts(pv_count)[a_s] + _pick(rng, np.maximum(pv_count[a_s], 1))]
    a_product = product[pick]
    a_rank = np.arange(n_a) - _seg_starts(n_atc)[a_s]
    a_key = pos[pick] + 0.5 + 0.001 * (a_rank + 1)
    a_qty = 1 + rng.poisson(tt.extra_quantity[t][sb[a_s]])
    a_price = cat.product_price[a_product]
    # Removals: the first n_rm lines (lines are in random page order), some time later.
    rm = a_rank < n_rm[a_s]
    r_s = a_s[rm]
    r_key = a_key[rm] + (n_browse[r_s] - a_key[rm]) * rng.uniform(0.05, 0.95, int(rm.sum()))
    # float64 with weights (numpy's stubs type bincount as integer counts only)
    cart_value: np.ndarray = np.bincount(a_s, weights=a_price * a_qty, minlength=n_s)
    cart_value -= np.bincount(r_s, weights=a_price[rm] * a_qty[rm], minlength=n_s)
    cart_value = np.round(np.maximum(cart_value, 0.0), 2)

    # ---- funnel tail: /cart view, checkout started, checkout completed -----------------------
    cv_s = np.flatnonzero(cart_view)
    co_s = np.flatnonzero(co)
    buy_s = np.flatnonzero(buy)
    co_code = np.full(n_s, -1, dtype=np.int64)
    co_code[co_s] = np.arange(len(co_s))

    def cat_i(*xs: np.ndarray) -> np.ndarray:
        return np.concatenate(xs)

    n_r, n_cv, n_co, n_buy = len(r_s), len(cv_s), len(co_s), len(buy_s)
    neg = np.int64(-1)
    ev_sess = cat_i(bs, a_s, r_s, cv_s, co_s, buy_s)
    ev_key = cat_i(
        pos.astype(np.float64),
        a_key,
        r_key,
        n_browse[cv_s] + 0.2,
        n_browse[co_s] + 0.5,
        n_browse[buy_s] + 0.8,
    )
    ev_type = cat_i(
        kind,
        np.full(n_a, ADD_TO_CART, np.int8),
        np.full(n_r, REMOVE_FROM_CART, np.int8),
        np.full(n_cv, PAGE_VIEW, np.int8),
        np.full(n_co, CHECKOUT_STARTED, np.int8),
        np.full(n_buy, CHECKOUT_COMPLETED, np.int8),
    )
    tail = n_cv + n_co + n_buy
    ev_product = cat_i(b_product, a_product, a_product[rm], np.full(tail, neg)).astype(np.int64)
    ev_coll = cat_i(b_coll, np.full(n_a + n_r + tail, neg))
    ev_query = cat_i(b_query, np.full(n_a + n_r + tail, neg))
    ev_url = cat_i(
        b_url,
        cat.url_product_start + a_product,
        np.full(n_r, cat.url_cart),
        np.full(n_cv, cat.url_cart),
        np.full(n_co + n_buy, neg),
    )
    ev_qty = cat_i(np.full(n_b, neg), a_qty, a_qty[rm], np.full(tail, neg))
    ev_price = cat_i(b_price, a_price, a_price[rm], np.full(tail, np.nan))
    ev_value = cat_i(np.full(n_b + n_a + n_r + n_cv, np.nan), cart_value[co_s], cart_value[buy_s])
    ev_co = cat_i(np.full(n_b + n_a + n_r + n_cv, neg), co_code[co_s], co_code[buy_s])

    order = np.lexsort((ev_key, ev_sess))
    ev_type_pre = ev_type
    ev_sess = ev_sess[order]
    ev_type = ev_type[order]

    # ---- time: gaps within sessions, sessions within the window ---------------------------
    n_e = len(ev_sess)
    e_count = np.bincount(ev_sess, minlength=n_s)
    e_first = _seg_starts(e_count)
    gap = dwell[sb[ev_sess]] * rng.lognormal(0.0, 0.9, n_e)
    gap = np.where(ev_type == ADD_TO_CART, gap * 0.5, gap)
    gap = np.where(ev_type == CHECKOUT_STARTED, rng.lognormal(np.log(25.0), 0.6, n_e), gap)
    gap = np.where(ev_type == CHECKOUT_COMPLETED, rng.lognormal(np.log(150.0), 0.5, n_e), gap)
    gap_us = (np.clip(gap, 1.0, MAX_EVENT_GAP_S) * US).astype(np.int64)
    gap_us[e_first] = 0
    cs = np.cumsum(gap_us)
    offset = cs - cs[e_first][ev_sess]
    dur = offset[e_first + e_count - 1].astype(np.float64)

    w = float(window_us - 2 * US)
    first_of_buyer = np.ones(n_s, dtype=bool)
    first_of_buyer[1:] = sb[1:] != sb[:-1]
    slack = rng.lognormal(np.log(INTER_SESSION_MEDIAN_S * US), INTER_SESSION_SIGMA, n_s)
    slack[first_of_buyer] = 0.0
    fixed_b = np.bincount(sb, weights=dur, minlength=n_buyers) + (n_sess - 1) * MIN_SESSION_GAP_US
    slack_b = np.bincount(sb, weights=slack, minlength=n_buyers)
    # Buyers whose sessions do not fit get their gaps squeezed into a random share of the
    # window (not all of it, so they do not all start at the first instant).
    room = np.maximum(w - fixed_b, 0.0) * rng.uniform(0.5, 1.0, n_buyers)
    scale = np.where(slack_b > room, room / np.where(slack_b > 0, slack_b, 1.0), 1.0)
    prev_dur = np.concatenate([[0.0], dur[:-1]])
    step = np.where(first_of_buyer, 0.0, prev_dur + MIN_SESSION_GAP_US + slack * scale[sb])
    cstep = np.cumsum(step)
    sess_first = _seg_starts(n_sess)
    rel = cstep - cstep[sess_first][sb]
    total_b = rel[sess_first + n_sess - 1] + dur[sess_first + n_sess - 1]
    start0 = rng.random(n_buyers) * np.maximum(w - total_b, 0.0)
    s_start = np.floor(start0[sb] + rel).astype(np.int64)
    keep_s = s_start + dur <= w  # only fails for buyers with more sessions than fit
    keep_s[sess_first] = True

    ts = window_start_us + s_start[ev_sess] + offset
    keep_e = keep_s[ev_sess]
    # Strictly increasing timestamps (ties moved by microseconds): a deterministic order.
    ts_order = np.argsort(ts, kind="stable")
    ts_order = ts_order[keep_e[ts_order]]
    ts_sorted = ts[ts_order]
    ar = np.arange(len(ts_sorted), dtype=np.int64)
    ts_sorted = np.maximum.accumulate(ts_sorted - ar) + ar
    ts_final = np.empty_like(ts)
    ts_final[ts_order] = ts_sorted
    session_start_ms = ts_final[e_first] // 1000  # first event of each session, in ms

    final = order[ts_order]  # original (pre-lexsort) index of each output row
    out_sess = ev_sess[ts_order]
    out_type = ev_type[ts_order]
    out_buyer = sb[out_sess]

    # ---- strings: integer codes first, then gathers from small lookup tables -----------
    sess_id = (
        pl.DataFrame(
            {
                "b": buyer_ids.gather(pl.Series(sb)),
                "ms": pl.Series(session_start_ms).cast(pl.String),
                "null": pl.Series(null_session[sb]),
            }
        )
        .select(pl.when(~pl.col("null")).then(pl.concat_str(["b", "ms"], separator="-")))
        .to_series()
    )
    # Checkout pages: one token per checkout; index k (started) or n_co + k (completed).
    token = pl.Series(rng.integers(10**11, 10**12, len(co_s))).cast(pl.String)
    started_url = cat.base_url + "/checkouts/c/" + token
    co_url = pl.concat([started_url, started_url + "/thank-you"])

    def code(name: str) -> pl.Expr:  # an index column with -1 as null
        return pl.when(pl.col(name) >= 0).then(pl.col(name))

    ev_co2 = np.where(ev_co >= 0, ev_co + n_co * (ev_type_pre == CHECKOUT_COMPLETED), -1)
    codes = pl.DataFrame(
        {
            "b": out_buyer,
            "s": out_sess,
            "ts": ts_sorted,
            "et": out_type,
            "p": ev_product[final],
            "c": ev_coll[final],
            "q": ev_query[final],
            "u": ev_url[final],
            "k": ev_co2[final],
            "qty": ev_qty[final],
            "price": ev_price[final],
            "value": ev_value[final],
        }
    )
    del ev_product, ev_coll, ev_query, ev_url, ev_co2, ev_qty, ev_price, ev_value
    price = pl.col("price").fill_nan(None)
    value = pl.col("value").fill_nan(None)
    frame = codes.select(
        pl.format(event_id_prefix + "{}", pl.int_range(pl.len(), dtype=pl.Int64)).alias("event_id"),
        pl.lit(cat.shop_id, dtype=pl.String).alias("shop_id"),
        pl.lit(buyer_ids).gather("b").alias("buyer_id"),
        pl.lit(sess_id).gather("s").alias("session_id"),
        pl.col("ts").cast(pl.Datetime("us")).dt.replace_time_zone("UTC"),
        pl.lit(_EVENT_SERIES).gather("et").alias("event_type"),
        pl.lit(cat.product_ids).gather(code("p")).alias("product_id"),
        pl.lit(cat.collection_ids).gather(code("c")).alias("collection_id"),
        pl.lit(cat.queries).gather(code("q")).alias("search_query"),
        code("qty").alias("quantity"),
        price.alias("price"),
        value.alias("order_value"),
        pl.when(price.is_not_null() | value.is_not_null())
        .then(pl.lit(cat.currency))
        .alias("currency"),
        pl.coalesce(pl.lit(cat.urls).gather(code("u")), pl.lit(co_url).gather(code("k"))).alias(
            "url"
        ),
    )
    assert frame.schema["ts"] == TS_DTYPE
    return ChunkResult(
        events=frame,
        n_sessions=int(keep_s.sum()),
        events_by_type=np.bincount(out_type, minlength=len(EVENT_TYPES)),
    )
