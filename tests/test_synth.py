"""The synthetic clickstream generator: determinism, schema, sessions, ground truth, shops."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from simpersona.ingest.sessionize import sessionize
from simpersona.lake import Lake
from simpersona.schema import (
    COLLECTIONS_SCHEMA,
    EVENT_TYPES,
    EVENTS_SCHEMA,
    PRODUCTS_SCHEMA,
    sanitize_shop_id,
)
from simpersona.synth import (
    DEFAULT_TYPES,
    PROFILES,
    TYPE_NAMES,
    GeneratorConfig,
    generate_lake,
    plan_shops,
)

SMALL = GeneratorConfig(n_buyers=6_000, seed=7)


def read_events(root: Path) -> pl.DataFrame:
    files = sorted((root / "events").glob("shop=*/date=*/*.parquet"))
    assert files
    return pl.concat([pl.read_parquet(f) for f in files])


def lake_files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*.parquet"))}


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    base = tmp_path_factory.mktemp("synth")
    res = generate_lake(base / "lake", SMALL, base / "truth" / "planted.parquet", progress=False)
    return res, read_events(base / "lake")


# ---- determinism --------------------------------------------------------------------------
def test_same_seed_gives_byte_identical_files(tmp_path):
    cfg = GeneratorConfig(n_buyers=3_000, seed=11, profile="dense", n_shops=3)
    generate_lake(tmp_path / "a", cfg, tmp_path / "ta.parquet", progress=False)
    generate_lake(tmp_path / "b", cfg, tmp_path / "tb.parquet", progress=False)
    a, b = lake_files(tmp_path / "a"), lake_files(tmp_path / "b")
    assert a.keys() == b.keys() and len(a) > 10
    assert a == b
    assert (tmp_path / "ta.parquet").read_bytes() == (tmp_path / "tb.parquet").read_bytes()
    generate_lake(tmp_path / "c", cfg.replace(seed=12), tmp_path / "tc.parquet", progress=False)
    c = read_events(tmp_path / "c")
    assert not c.equals(read_events(tmp_path / "a"))


# ---- schema -------------------------------------------------------------------------------
def test_events_conform_to_the_canonical_schema(small):
    res, ev = small
    assert dict(ev.schema) == dict(EVENTS_SCHEMA)
    assert set(ev["event_type"].unique()) <= set(EVENT_TYPES)
    assert ev.height == res.n_events
    assert ev["event_id"].n_unique() == ev.height
    for col in ("event_id", "shop_id", "buyer_id", "ts", "event_type", "url"):
        assert ev[col].null_count() == 0, col
    assert all(re.fullmatch(r"shop-\d{3}", s) for s in ev["shop_id"].unique())
    assert all(sanitize_shop_id(s) == s for s in ev["shop_id"].unique())
    assert ev["buyer_id"].str.contains(r"^b\d{6,}$").all()
    start = datetime.combine(SMALL.start_date, datetime.min.time(), tzinfo=UTC)
    assert ev["ts"].min() >= start
    assert ev["ts"].max() < start + timedelta(days=SMALL.n_days)


def test_event_fields_are_filled_sensibly(small):
    _, ev = small

    def of(t: str) -> pl.DataFrame:
        return ev.filter(pl.col("event_type") == t)

    pv, cv, se = of("product_view"), of("collection_view"), of("search")
    assert pv["product_id"].null_count() == 0 and pv["price"].null_count() == 0
    assert pv["url"].str.contains("/products/").all()
    assert cv["collection_id"].null_count() == 0 and cv["url"].str.contains("/collections/").all()
    assert se["search_query"].null_count() == 0 and se["url"].str.contains(r"/search\?q=").all()
    atc = of("add_to_cart")
    assert atc.height > 0
    assert atc.select(pl.col("product_id", "quantity", "price").null_count()).row(0) == (0, 0, 0)
    assert (atc["quantity"] >= 1).all() and (atc["price"] > 0).all()
    done = of("checkout_completed")
    assert done.height > 0
    assert (done["order_value"] > 0).all() and done["currency"].null_count() == 0
    assert done["url"].str.contains("/thank-you").all()
    assert of("page_view")["product_id"].null_count() == of("page_view").height
    # Prices carry a currency, rows without money carry none.
    money = pl.col("price").is_not_null() | pl.col("order_value").is_not_null()
    assert ev.filter(money)["currency"].null_count() == 0
    assert ev.filter(~money)["currency"].null_count() == ev.filter(~money).height


def test_catalog_tables_and_references(small):
    res, ev = small
    lake = Lake.at(res.lake_root)
    for counts in res.shops:
        shop = counts.shop_id
        prods = pl.read_parquet(lake.catalog_dir("products", shop) / "synth-catalog.parquet")
        colls = pl.read_parquet(lake.catalog_dir("collections", shop) / "synth-catalog.parquet")
        assert dict(prods.schema) == dict(PRODUCTS_SCHEMA)
        assert dict(colls.schema) == dict(COLLECTIONS_SCHEMA)
        assert prods.height == counts.products and colls.height == counts.collections
        assert prods["product_id"].is_unique().all() and prods["title"].is_unique().all()
        assert (prods["price"] > 0).all()
        assert prods["title"].str.contains(" – ").mean() > 0.8  # "... – Navy"
        assert 2 <= len(counts.categories) <= 4
        shop_ev = ev.filter(pl.col("shop_id") == shop)
        used_p = set(shop_ev["product_id"].drop_nulls().unique())
        assert used_p <= set(prods["product_id"])
        used_c = set(shop_ev["collection_id"].drop_nulls().unique())
        assert used_c <= set(colls["collection_id"])
        members = {c for cols in prods["collection_ids"].to_list() for c in cols}
        assert members <= set(colls["collection_id"])


def test_events_land_in_their_date_partition(small):
    res, _ = small
    lake = Lake.at(res.lake_root)
    parts = list(lake.partitions())
    assert len(parts) == SMALL.n_shops * SMALL.n_days
    for shop, day in parts[:6]:
        for f in lake.raw_files(lake.events_dir(shop, day)):
            df = pl.read_parquet(f)
            assert (df["ts"].dt.date().cast(pl.String) == day).all()
            assert df["ts"].is_sorted()


# ---- sessions -------------------------------------------------------------------------------
def test_sessions_are_30_minute_sessions_and_some_ids_are_null(small):
    _, ev = small
    null_share = ev["session_id"].null_count() / ev.height
    assert 0.1 < null_share < 0.3  # default 20 % of buyers
    have = ev.filter(pl.col("session_id").is_not_null())
    # The generator's sessions are exactly what the 30-minute sessionizer finds.
    redo = sessionize(have.with_columns(pl.lit(None, dtype=pl.String).alias("session_id")))
    joined = have.select("event_id", "session_id").join(
        redo.select("event_id", pl.col("session_id").alias("redo")), on="event_id"
    )
    assert (joined["session_id"] == joined["redo"]).all()
    # Within a session < 30 min between events; a buyer's sessions are > 30 min apart.
    gaps = have.sort("buyer_id", "ts").with_columns(
        pl.col("ts").diff().over("buyer_id").alias("gap"),
        (pl.col("session_id") != pl.col("session_id").shift(1).over("buyer_id")).alias("new"),
    )
    inner = gaps.filter(~pl.col("new"))["gap"]
    between = gaps.filter(pl.col("new"))["gap"]
    assert inner.max() < timedelta(minutes=30)
    assert between.min() > timedelta(minutes=30)
    # Buyers without session ids have none at all (so sessions stay exact).
    mixed = ev.group_by("buyer_id").agg(pl.col("session_id").null_count().alias("n"), pl.len())
    assert mixed.filter((pl.col("n") > 0) & (pl.col("n") < pl.col("len"))).height == 0


def test_null_session_shops(tmp_path):
    cfg = GeneratorConfig(n_buyers=1_500, n_shops=3, null_session_shops=1, null_session_share=0.0)
    generate_lake(tmp_path / "lake", cfg, tmp_path / "t.parquet", progress=False)
    ev = read_events(tmp_path / "lake")
    by_shop = ev.group_by("shop_id").agg(pl.col("session_id").null_count() / pl.len())
    shares = dict(by_shop.iter_rows())
    assert shares == {"shop-000": 0.0, "shop-001": 0.0, "shop-002": 1.0}


# ---- ground truth ---------------------------------------------------------------------------
def test_ground_truth_is_separate_and_covers_every_buyer(small):
    res, ev = small
    gt = pl.read_parquet(res.ground_truth_path)
    assert gt.columns == ["shop_id", "buyer_id", "planted_type"]
    assert not res.ground_truth_path.resolve().is_relative_to(res.lake_root.resolve())
    assert not list(res.lake_root.rglob("planted*"))
    assert gt.height == res.n_buyers == SMALL.n_buyers
    assert gt.select("shop_id", "buyer_id").is_unique().all()
    buyers = ev.select("shop_id", "buyer_id").unique()
    assert buyers.join(gt, on=["shop_id", "buyer_id"], how="anti").height == 0
    assert gt.join(buyers, on=["shop_id", "buyer_id"], how="anti").height == 0
    assert set(gt["planted_type"].unique()) <= set(TYPE_NAMES)


def test_ground_truth_inside_the_lake_is_refused(tmp_path):
    with pytest.raises(ValueError, match="outside the lake"):
        generate_lake(tmp_path / "lake", SMALL, tmp_path / "lake" / "truth.parquet", progress=False)


# ---- types and shops ------------------------------------------------------------------------
def test_at_least_eight_types_that_differ():
    assert len(DEFAULT_TYPES) >= 8 and len(set(TYPE_NAMES)) == len(TYPE_NAMES)
    for field in ("browse_mean", "p_atc", "p_purchase", "explore", "sessions_mean"):
        assert len({getattr(t, field) for t in DEFAULT_TYPES}) >= 4, field
    assert {t.expected_stratum for t in DEFAULT_TYPES} == set("ABCDE")
    for prof in PROFILES.values():
        assert set(prof.shares) == set(TYPE_NAMES)


def test_shops_have_different_type_mixtures_and_catalogs(small):
    res, _ = small
    mixes = [s.type_mix for s in res.shops]
    assert len(mixes) == SMALL.n_shops
    for i in range(len(mixes)):
        for j in range(i + 1, len(mixes)):
            diff = max(abs(mixes[i][k] - mixes[j][k]) for k in TYPE_NAMES)
            assert diff > 0.005
    gt = pl.read_parquet(res.ground_truth_path)
    realised = gt.group_by("shop_id", "planted_type").len().pivot("planted_type", index="shop_id")
    assert realised.height == SMALL.n_shops
    assert len({tuple(s.categories) for s in res.shops}) > 1
    # A lower Dirichlet concentration makes shops differ more from the base mixture.
    base = np.array([SMALL.resolved_shares()[k] for k in TYPE_NAMES])

    def spread(cfg: GeneratorConfig) -> float:
        plans = plan_shops(cfg.replace(n_shops=40))
        return float(np.mean([np.abs(p.mixture - base).sum() for p in plans]))

    assert spread(SMALL.replace(mixture_concentration=20.0)) > 2 * spread(SMALL)


def test_dense_profile_is_about_twenty_events_per_buyer(tmp_path):
    res = generate_lake(
        tmp_path / "lake",
        GeneratorConfig(n_buyers=4_000, profile="dense"),
        tmp_path / "t.parquet",
        progress=False,
    )
    assert 15 <= res.n_events / res.n_buyers <= 25
    assert res.events_by_type["checkout_completed"] > 0


def test_rerun_replaces_earlier_files_and_keeps_foreign_ones(tmp_path):
    lake = Lake.at(tmp_path / "lake")
    foreign = lake.events_dir("other-shop", "2025-02-23") / "import.parquet"
    foreign.parent.mkdir(parents=True)
    pl.DataFrame({"x": [1]}).write_parquet(foreign)
    first = GeneratorConfig(n_buyers=800, n_shops=3)
    generate_lake(lake.root, first, tmp_path / "t.parquet", progress=False)
    assert set(lake.shops()) == {"shop-000", "shop-001", "shop-002", "other-shop"}
    cfg = GeneratorConfig(n_buyers=500, n_shops=1, n_days=3, start_date=date(2025, 3, 1))
    res = generate_lake(lake.root, cfg, tmp_path / "t.parquet", progress=False)
    assert set(lake.shops()) == {"shop-000", "other-shop"}
    assert lake.dates("shop-000") == ["2025-03-01", "2025-03-02", "2025-03-03"]
    assert foreign.exists()
    assert read_events_synth(lake.root).height == res.n_events


def read_events_synth(root: Path) -> pl.DataFrame:
    files = sorted((root / "events").glob("shop=*/date=*/synth-*.parquet"))
    return pl.concat([pl.read_parquet(f) for f in files])


def test_small_chunks_give_the_same_population_shape(tmp_path):
    cfg = GeneratorConfig(n_buyers=3_000, n_shops=2, chunk_buyers=400)
    res = generate_lake(tmp_path / "lake", cfg, tmp_path / "t.parquet", progress=False)
    ev = read_events(tmp_path / "lake")
    assert ev.height == res.n_events and ev["event_id"].n_unique() == ev.height
    assert pl.read_parquet(tmp_path / "t.parquet").height == 3_000
    names = {p.name for p in (tmp_path / "lake" / "events").rglob("*.parquet")}
    assert {"synth-000.parquet", "synth-001.parquet", "synth-002.parquet"} <= names


def test_config_is_validated():
    with pytest.raises(ValueError, match="profile"):
        GeneratorConfig(profile="nope").validate()
    with pytest.raises(ValueError, match="unknown types"):
        GeneratorConfig(type_shares={"martian": 1.0}).validate()
    cfg = GeneratorConfig(type_shares={"bouncer": 1.0, "decisive_buyer": 1.0})
    shares = cfg.resolved_shares()
    assert shares["bouncer"] == 0.5 and shares["researcher"] == 0.0
    d = GeneratorConfig(profile="dense").to_dict()
    assert d["events_scale"] == PROFILES["dense"].events_scale


def test_generate_command(tmp_path):
    import typer
    from typer.testing import CliRunner

    from simpersona.synth.cli import calibrate_command, generate_command

    app = typer.Typer()
    app.command("generate")(generate_command)
    app.command("calibrate")(calibrate_command)
    out = CliRunner().invoke(
        app,
        [
            "generate",
            "--out",
            str(tmp_path / "lake"),
            "--buyers",
            "700",
            "--shops",
            "2",
            "--days",
            "3",
            "--ground-truth",
            str(tmp_path / "gt.parquet"),
            "--no-progress",
        ],
    )
    assert out.exit_code == 0, out.output
    assert Lake.at(tmp_path / "lake").shops() == ["shop-000", "shop-001"]
    assert pl.read_parquet(tmp_path / "gt.parquet").height == 700
    assert "700 buyers" in out.output
