"""Realism figures, planted-type tendencies, single-feature separability, and the calibration
of the default generator against the real Puffy store."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl
import pytest

from simpersona.realism import (
    CALIBRATION_KEYS,
    best_threshold_f1,
    buyer_features,
    buyer_summary,
    compare_realism,
    realism_report,
    realism_stats,
    realism_table,
    separability,
)
from simpersona.schema import EVENTS_SCHEMA, conform
from simpersona.synth import DEFAULT_TYPES, GeneratorConfig, generate_lake
from tests.conftest import require_public_data

PUFFY = Path(__file__).resolve().parents[2] / "shared" / "data" / "public"
PUFFY = PUFFY / "puffy-dtc-web-events-2025"
T0 = datetime(2025, 2, 23, 10, 0, tzinfo=UTC)


def events(rows: list[tuple]) -> pl.DataFrame:
    """(buyer, minutes after T0, event_type[, session_id]) rows → canonical frame."""
    recs = []
    for i, r in enumerate(rows):
        recs.append(
            {
                "event_id": f"e{i}",
                "shop_id": "s",
                "buyer_id": r[0],
                "session_id": r[3] if len(r) > 3 else None,
                "ts": T0 + timedelta(minutes=r[1]),
                "event_type": r[2],
            }
        )
    return conform(pl.DataFrame(recs, schema_overrides={"session_id": pl.String}), "events")


def read_lake(root: Path) -> pl.DataFrame:
    files = sorted((root / "events").glob("shop=*/date=*/*.parquet"))
    return pl.concat([pl.read_parquet(f) for f in files])


@pytest.fixture(scope="module")
def default_run(tmp_path_factory):
    """The DEFAULT configuration (calibrated profile), read back with its ground truth."""
    base = tmp_path_factory.mktemp("realism")
    res = generate_lake(base / "lake", GeneratorConfig(), base / "gt.parquet", progress=False)
    return read_lake(base / "lake"), pl.read_parquet(res.ground_truth_path)


@pytest.fixture(scope="module")
def dense_run(tmp_path_factory):
    base = tmp_path_factory.mktemp("dense")
    cfg = GeneratorConfig(profile="dense", n_buyers=12_000, seed=3)
    res = generate_lake(base / "lake", cfg, base / "gt.parquet", progress=False)
    return read_lake(base / "lake"), pl.read_parquet(res.ground_truth_path)


# ---- the figures on hand-made data -------------------------------------------------------------
def test_buyer_summary_strata_and_sessions():
    ev = events(
        [
            ("a", 0, "product_view"),
            ("a", 5, "add_to_cart"),
            ("a", 8, "checkout_started"),
            ("a", 9, "checkout_completed"),
            ("b", 0, "product_view"),
            ("b", 100, "add_to_cart"),  # a second session (gap > 30 min)
            ("b", 101, "checkout_started"),
            ("c", 0, "page_view"),
            ("c", 2, "add_to_cart"),
            ("d", 0, "search"),
            ("d", 60 * 24, "page_view"),
            ("e", 0, "page_view"),
            ("f", 0, "page_view", "s1"),
            ("f", 300, "page_view", "s1"),  # a given session id is kept as is
        ]
    )
    b = buyer_summary(ev)
    assert b.columns[:2] == ["shop_id", "buyer_id"]
    got = {r["buyer_id"]: (r["stratum"], r["n_events"], r["n_sessions"]) for r in b.to_dicts()}
    assert got == {
        "a": ("A", 4, 1),
        "b": ("B", 3, 2),
        "c": ("C", 2, 1),
        "d": ("D", 2, 2),
        "e": ("E", 1, 1),
        "f": ("E", 2, 1),
    }
    s = realism_stats(ev)
    assert s["n_buyers"] == 6 and s["single_event_share"] == pytest.approx(1 / 6)
    assert s["atc_rate"] == pytest.approx(3 / 6) and s["purchase_rate"] == pytest.approx(1 / 6)
    assert s["checkout_rate"] == pytest.approx(2 / 6)
    assert s["sessions_per_buyer_mean"] == pytest.approx(8 / 6)
    assert sum(s[f"stratum_{k}_share"] for k in "ABCDE") == pytest.approx(1.0)
    assert set(CALIBRATION_KEYS) <= set(s)


def test_rows_without_a_buyer_are_not_a_buyer():
    ev = events([("a", 0, "page_view"), ("a", 1, "page_view")])
    ev = pl.concat([ev, ev.with_columns(pl.lit(None, dtype=pl.String).alias("buyer_id"))])
    assert realism_stats(ev)["n_buyers"] == 1


def test_compare_realism_ratios_and_flags():
    rows = compare_realism(
        {"atc_rate": 0.06, "purchase_rate": 0.02, "stratum_A_share": 0.0},
        {"atc_rate": 0.05, "purchase_rate": 0.01, "stratum_A_share": 0.0},
    )
    by = {r.metric: r for r in rows}
    assert by["atc_rate"].ratio == pytest.approx(1.2) and by["atc_rate"].within
    assert by["purchase_rate"].ratio == pytest.approx(2.0) and not by["purchase_rate"].within_1_5
    assert by["stratum_A_share"].within
    assert realism_table(rows).row_count == 3
    ev = events([("a", 0, "page_view")])
    assert all(r.within for r in realism_report(ev, ev))


def test_best_threshold_f1():
    f1, thr, rule = best_threshold_f1([1, 2, 3, 4, 5, 6], [0, 0, 0, 1, 1, 1])
    assert (f1, thr, rule) == (1.0, 4.0, ">=")
    f1, thr, rule = best_threshold_f1([1, 1, 1, 2], [1, 1, 0, 0])
    assert rule == "<=" and thr == 1.0 and f1 == pytest.approx(0.8)


# ---- planted types -----------------------------------------------------------------------------
def test_planted_types_land_in_their_expected_strata(default_run):
    ev, gt = default_run
    b = buyer_summary(ev).join(gt, on=["shop_id", "buyer_id"])
    share = (
        b.group_by("planted_type", "stratum")
        .len()
        .with_columns((pl.col("len") / pl.col("len").sum().over("planted_type")).alias("p"))
    )
    modal = share.sort("p", descending=True).group_by("planted_type").first()
    modal = dict(modal.select("planted_type", "stratum").iter_rows())
    n = dict(b.group_by("planted_type").len().iter_rows())
    for t in DEFAULT_TYPES:
        if n.get(t.name, 0) >= 40:
            assert modal[t.name] == t.expected_stratum, t.name
    p = {(r["planted_type"], r["stratum"]): r["p"] for r in share.to_dicts()}
    assert p[("decisive_buyer", "A")] > 0.5
    assert p[("bouncer", "E")] > 0.5
    # Tendencies, not rules: even decisive buyers do not always buy.
    assert p[("decisive_buyer", "A")] < 0.9


def _max_single_feature_f1(ev: pl.DataFrame, gt: pl.DataFrame) -> pl.DataFrame:
    f = buyer_features(ev).join(gt, on=["shop_id", "buyer_id"])
    assert f.height == gt.height
    return separability(f.drop("planted_type"), f["planted_type"], min_count=30)


def test_no_type_is_separable_by_one_feature_default_profile(default_run):
    sep = _max_single_feature_f1(*default_run)
    assert sep["label"].n_unique() >= 8
    worst = sep.row(0, named=True)
    assert worst["best_f1"] < 0.9, worst


def test_no_type_is_separable_by_one_feature_dense_profile(dense_run):
    sep = _max_single_feature_f1(*dense_run)
    assert sep["label"].n_unique() == len(DEFAULT_TYPES)
    worst = sep.row(0, named=True)
    assert worst["best_f1"] < 0.9, worst


# ---- calibration against the real store ----------------------------------------------------------
def read_puffy(folder: Path) -> pl.DataFrame:
    """The Puffy CSVs as canonical events: the importer when present, else a minimal reader."""
    files = sorted(folder.glob("events_*.csv"))
    try:
        from simpersona.ingest.shopify_pixels import read_shopify_pixels
    except ImportError:
        return _minimal_puffy_reader(files)
    return read_shopify_pixels(files, shop_id="puffy").events


def _minimal_puffy_reader(files: list[Path]) -> pl.DataFrame:
    frames = []
    for f in files:
        df = pl.read_csv(f, infer_schema=False)
        df = df.rename({"clientId": "client_id"}) if "clientId" in df.columns else df
        frames.append(df.select("client_id", "page_url", "timestamp", "event_name"))
    raw = pl.concat(frames).filter(
        (pl.col("client_id").fill_null("") != "")
        & (pl.col("event_name") != "email_filled_on_popup")
    )
    path = pl.col("page_url").str.replace(r"^https?://[^/]+", "").str.replace(r"[?#].*$", "")
    et = (
        pl.when(pl.col("event_name") != "page_viewed")
        .then(pl.col("event_name").replace({"product_added_to_cart": "add_to_cart"}))
        .when(path.str.starts_with("/products/"))
        .then(pl.lit("product_view"))
        .when(path.str.starts_with("/collections/"))
        .then(pl.lit("collection_view"))
        .otherwise(pl.lit("page_view"))
    )
    out = raw.select(
        (pl.lit("p") + pl.int_range(pl.len()).cast(pl.String)).alias("event_id"),
        pl.lit("puffy").alias("shop_id"),
        pl.col("client_id").alias("buyer_id"),
        pl.col("timestamp").str.to_datetime(time_zone="UTC").alias("ts"),
        et.alias("event_type"),
        pl.col("page_url").alias("url"),
    )
    return conform(out, "events")


@pytest.mark.realdata
def test_default_generator_is_calibrated_to_puffy(default_run):
    require_public_data(PUFFY)
    real = read_puffy(PUFFY)
    assert dict(real.select(list(EVENTS_SCHEMA)).schema) == dict(EVENTS_SCHEMA)
    rows = realism_report(default_run[0], real)
    assert [r.metric for r in rows] == list(CALIBRATION_KEYS)
    bad = [(r.metric, round(r.generated, 4), round(r.real, 4)) for r in rows if not r.within]
    assert not bad, bad
