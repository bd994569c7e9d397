"""Every scalar, transform, mask, stratum and bin computed by hand on a small fixture."""

from __future__ import annotations

import datetime as dt
import math

import numpy as np
import polars as pl
import pytest

from simpersona.features.enrich import enrich_sessions
from simpersona.features.labels import class_weights, tercile_edges, to_bins
from simpersona.features.sample import SampleConfig, sample_training_pairs, split_shops
from simpersona.features.scalars import SCALAR_NAMES, buyer_features, buyer_scalars_and_items
from simpersona.features.transform import (
    INTENT_EPS,
    FeatureTransform,
    pre_transform,
    robust_scale,
)
from simpersona.features.vectors import (
    CHANNEL_SLICES,
    MASK_SLICE,
    ProductEmbeddings,
    buyer_vectors,
    channel_means,
    fit_feature_transform,
)
from simpersona.schema import conform

D1 = dt.datetime(2025, 1, 1, 10, tzinfo=dt.UTC)
D2 = dt.datetime(2025, 1, 2, 12, tzinfo=dt.UTC)
M = dt.timedelta(minutes=1)


def ev(buyer, session, ts, etype, product=None, **kw):
    return {
        "shop_id": "s",
        "buyer_id": buyer,
        "session_id": session,
        "ts": ts,
        "event_type": etype,
        "product_id": product,
        **kw,
    }


EVENTS = [
    # u1: purchaser, 2 sessions on 2 days
    ev("u1", "a", D1, "product_view", "p1"),
    ev("u1", "a", D1 + 2 * M, "product_view", "p2"),
    ev("u1", "a", D1 + 4 * M, "add_to_cart", "p1", price=10.0, quantity=2),
    ev("u1", "a", D1 + 6 * M, "checkout_started"),
    ev("u1", "a", D1 + 10 * M, "checkout_completed", order_value=20.0),
    ev("u1", "b", D2, "search", search_query="red shoe"),
    ev("u1", "b", D2 + 1 * M, "collection_view", collection_id="c1"),
    ev("u1", "b", D2 + 5 * M, "product_view", "p3"),
    # u2: bouncer
    ev("u2", "c", D1, "page_view"),
    # u3: cart builder, price from the catalog, quantity defaults to 1
    ev("u3", "d", D1, "product_view", "p2"),
    ev("u3", "d", D1 + 3 * M, "add_to_cart", "p2"),
    # u4: checkout abandoner with a cart
    ev("u4", "e", D1, "add_to_cart", "p3", price=5.0, quantity=1),
    ev("u4", "e", D1 + 1 * M, "checkout_started"),
    # u5: two cart sessions, no checkout
    ev("u5", "f", D1, "add_to_cart", "p1", price=10.0, quantity=1),
    ev("u5", "g", D2, "add_to_cart", "p1", price=10.0, quantity=3),
    # u6: checkout started without a cart event
    ev("u6", "h", D1, "checkout_started"),
    # u7: window shopper
    ev("u7", "i", D1, "product_view", "p3"),
    ev("u7", "i", D1 + 20 * M, "product_view", "p3"),
]
PRODUCTS = pl.DataFrame(
    {
        "shop_id": ["s"] * 3,
        "product_id": ["p1", "p2", "p3"],
        "title": ["Red Shoe", "Blue Shoe", "Green Hat"],
        "price": [10.0, 12.0, 5.0],
    }
)
COLLECTIONS = pl.DataFrame({"shop_id": ["s"], "collection_id": ["c1"], "title": ["Shoes"]})


@pytest.fixture(scope="module")
def events() -> pl.DataFrame:
    return conform(pl.DataFrame(EVENTS, infer_schema_length=None), "events")


@pytest.fixture(scope="module")
def feats(events) -> pl.DataFrame:
    return buyer_features(events, conform(PRODUCTS, "products"))


def row(feats: pl.DataFrame, buyer: str) -> dict:
    return feats.filter(pl.col("buyer_id") == buyer).row(0, named=True)


def test_scalars_by_hand(feats) -> None:
    u1 = row(feats, "u1")
    assert {k: u1[k] for k in SCALAR_NAMES[:10]} == {
        "sessions": 2,
        "active_days": 2,
        "product_view_sessions": 2,
        "atc_sessions": 1,
        "checkout_sessions": 1,
        "search_sessions": 1,
        "collection_view_sessions": 1,
        "purchase_sessions": 1,
        "total_duration_s": 600.0 + 300.0,
        "total_product_views": 3,
    }
    assert u1["atc_rate"] == pytest.approx((1 + 1) / (2 + 2))
    assert u1["checkout_rate"] == pytest.approx(2 / 4)
    assert u1["browse_only_rate"] == pytest.approx(2 / 4)  # session b has no cart/checkout
    assert u1["intent_strength"] == pytest.approx((3 + 5 + 8) / (2 + 3 + 5 + 8))
    assert u1["avg_cart_value"] == pytest.approx(20.0)
    assert u1["avg_order_value"] == pytest.approx(20.0)
    assert (u1["stratum"], u1["s_pur"], u1["exploration_sessions"]) == ("A", 11, 4)
    assert (u1["viewed_products"], u1["carted_products"], u1["purchased_products"]) == (
        ["p1", "p2", "p3"],
        ["p1"],
        ["p1"],  # unnamed order buys the session's cart
    )
    u2 = row(feats, "u2")
    assert (u2["sessions"], u2["total_duration_s"], u2["stratum"], u2["s_pur"]) == (1, 0.0, "E", 0)
    assert u2["atc_rate"] == pytest.approx(1 / 3) and u2["browse_only_rate"] == pytest.approx(2 / 3)
    assert (
        u2["intent_strength"] == 0.0
        and u2["avg_cart_value"] == 0.0
        and u2["avg_order_value"] == 0.0
    )
    assert u2["viewed_products"] == [] and u2["carted_products"] == []  # buyer with no cart
    u3 = row(feats, "u3")
    assert (u3["stratum"], u3["s_pur"], u3["avg_cart_value"]) == ("C", 3, 12.0)  # catalog price
    assert u3["total_duration_s"] == 180.0
    assert (row(feats, "u4")["stratum"], row(feats, "u4")["s_pur"]) == ("B", 11)
    u5 = row(feats, "u5")
    assert (u5["stratum"], u5["s_pur"], u5["avg_cart_value"], u5["active_days"]) == (
        "C",
        6,
        20.0,
        2,
    )
    assert (row(feats, "u6")["stratum"], row(feats, "u6")["s_pur"]) == ("B", 8)
    u7 = row(feats, "u7")
    assert (u7["stratum"], u7["total_product_views"], u7["viewed_products"]) == ("D", 2, ["p3"])


def test_purchase_bins_at_the_paper_values() -> None:
    s = np.array([0, 3, 6, 8, 11], dtype=float)
    assert to_bins(s, (1.5, 4.5)).tolist() == [0, 1, 2, 2, 2]


def test_terciles_and_ties() -> None:
    x = np.array([0, 0, 0, 0, 1, 2, 3, 4, 5], dtype=float)
    q1, q2 = tercile_edges(x)
    assert (q1, q2) == (np.quantile(x, 1 / 3), np.quantile(x, 2 / 3))
    bins = to_bins(x, (q1, q2))
    assert bins[:4].tolist() == [0, 0, 0, 0]  # ties at the lower edge stay Low
    assert bins.tolist() == [0, 0, 0, 0, 1, 1, 2, 2, 2]


def test_class_weights() -> None:
    b = np.array([0, 0, 0, 0, 1, 1, 2, 0])
    w = class_weights(b)
    assert w.tolist() == pytest.approx([8 / (3 * 5), 8 / (3 * 2), 8 / (3 * 1)])
    assert class_weights(np.array([0, 0]))[1:].tolist() == [0.0, 0.0]


def test_robust_scale_and_fallbacks() -> None:
    x = np.array(
        [
            [1.0, 0.0, 3.0],
            [2.0, 0.0, 3.0],
            [3.0, 0.0, 3.0],
            [4.0, 0.0, 3.0],
            [10.0, 0.0, 3.0],
            [6.0, 0.0, 3.0],
            [7.0, 0.0, 3.0],
            [8.0, 9.0, 3.0],
        ]
    )
    center, scale = robust_scale(x)
    assert center[0] == 5.0 and scale[0] == pytest.approx(
        np.percentile(x[:, 0], 75) - np.percentile(x[:, 0], 25)
    )
    # column 1: IQR = 0 and MAD = 0 → standard deviation
    assert center[1] == 0.0 and scale[1] == pytest.approx(x[:, 1].std())
    # constant column → 1
    assert scale[2] == 1.0


def test_robust_scale_uses_mad_when_iqr_zero_but_mad_not() -> None:
    # Not reachable with interpolated percentiles; the MAD branch is still checked directly.
    x = np.array([[0.0], [1.0], [1.0], [1.0], [2.0]])
    center, scale = robust_scale(x)
    iqr = np.percentile(x, 75) - np.percentile(x, 25)
    assert iqr == 0.0 and center[0] == 1.0
    mad = np.median(np.abs(x - 1.0)) * 1.4826
    assert scale[0] == pytest.approx(mad if mad > 0 else x.std())


def test_pre_transform_by_hand() -> None:
    raw = np.zeros((1, 16))
    raw[0, 10:13] = 0.5
    raw[0, 0] = 2  # sessions → log(3)
    raw[0, 10] = 0.5  # atc rate → logit 0
    raw[0, 11] = 0.25  # → logit(0.25)
    raw[0, 13] = 0.0  # intent → logit(ε)
    raw[0, 14] = 20.0
    out = pre_transform(raw)
    assert out[0, 0] == pytest.approx(math.log(3))
    assert out[0, 10] == pytest.approx(0.0)
    assert out[0, 11] == pytest.approx(math.log(0.25 / 0.75))
    assert out[0, 13] == pytest.approx(math.log(INTENT_EPS / (1 - INTENT_EPS)))
    assert out[0, 14] == pytest.approx(math.log(21))


def _embeddings() -> ProductEmbeddings:
    m = np.array([[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 1]], dtype=np.float32)
    return ProductEmbeddings({"p1": 0, "p2": 1, "p3": 2}, m)


def test_channel_means_and_masks(feats) -> None:
    means, observed = channel_means(feats["viewed_products"], _embeddings())
    u1 = feats["buyer_id"].to_list().index("u1")
    u2 = feats["buyer_id"].to_list().index("u2")
    assert means[u1] == pytest.approx(np.array([1, 1, 1, 1]) / 3)
    assert not observed[u2] and (means[u2] == 0).all()


def test_vectors_403_by_hand(feats, tmp_path) -> None:
    emb = _embeddings()
    tf = fit_feature_transform(feats, {"s": emb}, "toy", seed=0)
    vec = buyer_vectors(feats, emb, tf)
    assert vec.schema["vector"] == pl.Array(pl.Float32, 403)
    v = vec["vector"].to_numpy()
    assert v.shape == (7, 403)
    # scalars: robust z of the pre-transformed raw values
    raw = feats.select(SCALAR_NAMES).to_numpy().astype(float)
    pre = pre_transform(raw)
    center, scale = robust_scale(pre)
    assert v[:, :16] == pytest.approx(((pre - center) / scale).astype(np.float32), abs=1e-5)
    # masks: viewed (u1,u3,u7), carted (u1,u3,u4,u5), purchased (u1)
    ids = vec["buyer_id"].to_list()
    masks = {b: v[i, MASK_SLICE].tolist() for i, b in enumerate(ids)}
    assert masks == {
        "u1": [1, 1, 1],
        "u2": [0, 0, 0],
        "u3": [1, 1, 0],
        "u4": [0, 1, 0],
        "u5": [0, 1, 0],
        "u6": [0, 0, 0],
        "u7": [1, 0, 0],
    }
    # unobserved channels are zero-filled; observed ones equal z → PCA of the channel mean
    u2 = ids.index("u2")
    assert (v[u2, 16:400] == 0).all()
    means, observed = channel_means(feats["viewed_products"], emb)
    ch = tf.channels["viewed"]
    z = (means[observed] - ch.mean) / ch.std
    expect = (z - ch.pca_mean) @ ch.components.T
    got = v[observed][:, CHANNEL_SLICES["viewed"]]
    assert got[:, : expect.shape[1]] == pytest.approx(expect, abs=1e-5)
    assert (got[:, expect.shape[1] :] == 0).all()  # zero-padded: fewer than 128 components
    # bins and strata carried
    assert vec.filter(pl.col("buyer_id") == "u1")["purchase_bin"].item() == 2
    # save / load gives the same vectors and version
    tf.save(tmp_path / "tf")
    tf2 = FeatureTransform.load(tmp_path / "tf")
    assert tf2.version == tf.version
    assert np.array_equal(buyer_vectors(feats, emb, tf2)["vector"].to_numpy(), v)


def test_enriched_sessions(events) -> None:
    s = enrich_sessions(events, conform(PRODUCTS, "products"), conform(COLLECTIONS, "collections"))
    a = s.filter(pl.col("session_id") == "a").row(0, named=True)
    assert [e["event_type"] for e in a["events"]] == [
        "product_view",
        "product_view",
        "add_to_cart",
        "checkout_started",
        "checkout_completed",
    ]
    assert a["events"][0]["product_title"] == "Red Shoe"
    assert (a["n_product_views"], a["n_add_to_cart"], a["cart_value"], a["order_value"]) == (
        2,
        1,
        20.0,
        20.0,
    )
    assert a["duration_s"] == 600.0 and a["purchased_products"] == ["p1"]
    b = s.filter(pl.col("session_id") == "b").row(0, named=True)
    assert b["searches"] == ["red shoe"] and b["collections_viewed"] == ["Shoes"]
    assert b["purchased_products"] == []
    assert s.height == 9


def test_sample_caps_split_and_disjoint_shops() -> None:
    rng = np.random.default_rng(0)
    rows = []
    for shop in ["s1", "s2", "s3", "s4"]:
        for i in range(2_000):
            rows.append((shop, f"{shop}-b{i}", "ABCDE"[rng.integers(0, 5)] if i > 100 else "A"))
    buyers = pl.DataFrame(rows, schema=["shop_id", "buyer_id", "stratum"], orient="row")
    cfg = SampleConfig(seed=3)
    split = split_shops(buyers["shop_id"].unique().to_list(), cfg)
    assert not set(split.train) & set(split.eval) and len(split.train) == 2
    sample = sample_training_pairs(buyers, split.train, cfg)
    assert set(sample["shop_id"]) == set(split.train)
    assert "E" not in sample["stratum"].to_list()
    per = sample.group_by(["shop_id", "stratum"]).len()
    assert per["len"].max() <= 300
    assert sample.group_by("shop_id").len()["len"].max() <= 1_500
    val_share = (sample["split"] == "val").mean()
    assert 0.13 < val_share < 0.17
    # deterministic, whatever the row order
    again = sample_training_pairs(
        buyers.sample(fraction=1.0, shuffle=True, seed=1), split.train, cfg
    )
    assert sample.sort("buyer_id").equals(again.sort("buyer_id"))
    with pytest.raises(ValueError, match="overlap"):
        split_shops(["a", "b"], SampleConfig(train_shops=["a"], eval_shops=["a", "b"]))


def _idless_events(seed: int = 5, n: int = 4_000) -> pl.DataFrame:
    """Events of two shops where most rows lack a session id: equal timestamps, gaps of
    exactly 30 minutes, a null buyer, unknown products, and existing ids of the form the
    sessionizer writes ("<buyer>-<start ms>"), so some generated ids join an existing
    session."""
    rng = np.random.default_rng(seed)
    t0 = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)
    minutes = rng.permutation(np.cumsum(rng.choice([0, 1, 7, 29, 30, 31, 120], size=n)))
    ts = [t0 + dt.timedelta(minutes=int(m)) for m in minutes]
    buyers = [None if b == "" else b for b in rng.choice(["u1", "u2", "u3", "u4", ""], size=n)]
    types = rng.choice(
        ["page_view", "product_view", "add_to_cart", "checkout_started", "checkout_completed"],
        size=n,
        p=[0.2, 0.4, 0.2, 0.1, 0.1],
    )
    products = [None if p == "" else p for p in rng.choice(["p1", "p2", "p3", "p9", ""], size=n)]
    sessions = []
    for i in range(n):
        r = rng.random()
        if r < 0.15 and buyers[i] is not None:  # the id the sessionizer would write
            sessions.append(f"{buyers[i]}-{int(ts[i].timestamp() * 1000)}")
        else:
            sessions.append("x" if r < 0.25 else None)
    frame = pl.DataFrame(
        {
            "shop_id": rng.choice(["s", "t"], size=n).tolist(),
            "buyer_id": buyers,
            "session_id": sessions,
            "ts": ts,
            "event_type": types.tolist(),
            "product_id": products,
            "price": rng.choice([5.0, 12.5, None], size=n).tolist(),
            "quantity": rng.choice([1, 2, None], size=n).tolist(),
            "order_value": rng.choice([20.0, None], size=n).tolist(),
        },
        schema_overrides={"session_id": pl.String},
    )
    return conform(frame, "events")


def test_fused_sessionizing_matches_sessionize_then_features() -> None:
    from simpersona.ingest.sessionize import sessionize

    products = conform(
        pl.concat([PRODUCTS, PRODUCTS.with_columns(shop_id=pl.lit("t"))]), "products"
    )
    for seed in (5, 6):
        events = _idless_events(seed)
        filled = sessionize(events, 30)
        generated = set(filled.filter(events["session_id"].is_null())["session_id"].drop_nulls())
        assert generated & set(events["session_id"].drop_nulls())  # some join existing ids
        assert buyer_scalars_and_items(events, products, session_gap_minutes=30) is not None
        fused = buyer_features(events, products, session_gap_minutes=30)
        ref = buyer_features(filled, products)
        assert fused.equals(ref)
        assert (
            fused["sessions"].sum()
            == filled.select("shop_id", "buyer_id", "session_id").unique().height
        )


@pytest.mark.filterwarnings("ignore:invalid value encountered in divide")  # toy PCA fit
def test_vectors_from_events_match_the_pipeline(tmp_path) -> None:
    from simpersona.features.vectors import (
        iter_buyer_vectors,
        iter_buyer_vectors_from_events,
        write_buyer_vectors,
    )
    from simpersona.ingest.sessionize import sessionize
    from simpersona.personas.assign import iter_parquet_vectors

    products = conform(PRODUCTS, "products")
    events = _idless_events(7).with_columns(shop_id=pl.lit("s"))
    feats = buyer_features(sessionize(events, 30), products)
    emb = _embeddings()
    tf = fit_feature_transform(feats, {"s": emb}, "toy", seed=0)
    ref = pl.concat(list(iter_buyer_vectors(feats, emb, tf, chunk_size=3)))
    fused = pl.concat(
        list(
            iter_buyer_vectors_from_events(
                events, products, emb, tf, session_gap_minutes=30, chunk_size=3
            )
        )
    )
    assert fused.equals(ref)  # every column, vectors bit for bit
    # the Parquet file keeps the schema and values; the persona reader takes it as is
    path = tmp_path / "v.parquet"
    assert write_buyer_vectors(iter([fused.head(2), fused.slice(2)]), path) == fused.height
    back = pl.read_parquet(path)
    assert back.schema == fused.schema and back.equals(fused)
    read = np.concatenate(list(iter_parquet_vectors(path)))
    assert np.array_equal(read, fused["vector"].to_numpy())
