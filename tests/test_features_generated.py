"""On generated data, buyers of each planted type land in the expected strata and bins."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from simpersona.features.labels import (
    PURCHASE_EDGES,
    engagement_score,
    exploration_score,
    purchase_score,
    tercile_edges,
    to_bins,
)
from simpersona.features.scalars import buyer_features
from simpersona.ingest.sessionize import sessionize
from simpersona.synth import DEFAULT_TYPES, GeneratorConfig, generate_lake


@pytest.fixture(scope="module")
def by_type(tmp_path_factory) -> dict[str, dict[str, float]]:
    root: Path = tmp_path_factory.mktemp("planted")
    generate_lake(
        root / "lake",
        GeneratorConfig(n_shops=3, n_buyers=60_000, seed=11),
        ground_truth_path=root / "gt.parquet",
        progress=False,
    )
    events = sessionize(pl.read_parquet(root / "lake" / "events" / "**" / "*.parquet"))
    products = pl.read_parquet(root / "lake" / "products" / "**" / "*.parquet")
    feats = buyer_features(events, products).join(
        pl.read_parquet(root / "gt.parquet"), on=["shop_id", "buyer_id"], how="inner"
    )
    fit = feats.filter(pl.col("stratum") != "E")  # terciles fitted as on a training sample
    feats = feats.with_columns(
        pl.Series("eng", to_bins(engagement_score(feats), tercile_edges(engagement_score(fit)))),
        pl.Series("exp", to_bins(exploration_score(feats), tercile_edges(exploration_score(fit)))),
        pl.Series("pur", to_bins(purchase_score(feats), PURCHASE_EDGES)),
    )
    stats = feats.group_by("planted_type").agg(
        pl.len().alias("n"),
        *[(pl.col("stratum") == s).mean().alias(s) for s in "ABCDE"],
        (pl.col("eng") == 2).mean().alias("eng_high"),
        (pl.col("exp") == 2).mean().alias("exp_high"),
        (pl.col("pur") == 2).mean().alias("pur_high"),
        (pl.col("pur") == 0).mean().alias("pur_low"),
    )
    out = {r["planted_type"]: r for r in stats.iter_rows(named=True)}
    out["_all"] = {s: float((feats["stratum"] == s).mean()) for s in "ABCDE"}
    return out


@pytest.mark.parametrize(
    "t", [t for t in DEFAULT_TYPES if t.name != "loyal_repeat_buyer"], ids=lambda t: t.name
)
def test_type_lands_in_its_stratum(by_type, t) -> None:
    row = by_type[t.name]
    assert row["n"] >= 200
    shares = {s: row[s] for s in "ABCDE"}
    assert max(shares, key=shares.get) == t.expected_stratum, shares
    assert shares[t.expected_stratum] >= 0.45, shares


def test_loyal_repeat_buyers_purchase_far_above_population(by_type) -> None:
    # In a sparse 14-day window many loyal buyers only browse; they still buy ≫ everyone else.
    row = by_type["loyal_repeat_buyer"]
    assert row["A"] >= 0.25
    assert row["A"] >= 10 * by_type["_all"]["A"]


def test_purchase_bins(by_type) -> None:
    for t in ("decisive_buyer", "checkout_abandoner"):
        assert by_type[t]["pur_high"] >= 0.5, t
    for t in ("bouncer", "content_reader", "window_shopper"):
        assert by_type[t]["pur_low"] >= 0.95, t
    assert by_type["cart_abandoner"]["pur_low"] <= 0.45


def test_engagement_and_exploration_bins(by_type) -> None:
    # Window shoppers browse a couple of pages per visit, so only bouncers are the low end.
    low = by_type["bouncer"]["eng_high"]
    for t in ("researcher", "cart_abandoner", "checkout_abandoner", "decisive_buyer"):
        assert by_type[t]["eng_high"] >= low + 0.4, t
    assert by_type["researcher"]["exp_high"] >= by_type["window_shopper"]["exp_high"] + 0.25
    assert by_type["loyal_repeat_buyer"]["exp_high"] >= 0.35
    assert by_type["bouncer"]["exp_high"] <= 0.05
