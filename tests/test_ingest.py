"""Ingestion: every kind of bad row is quarantined with its reason; no valid row is lost."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import polars as pl
import pytest

from simpersona.ingest.ingest import (
    SESSION_NAMESPACE,
    IngestError,
    deidentify,
    ingest_catalog,
    ingest_events,
    sessionize_across_days,
)
from simpersona.lake import Lake
from simpersona.timestamps import parse_timestamp
from simpersona.warehouse import Warehouse

KEY = b"k"
HEADER = "event_id,shop_id,buyer_id,session_id,ts,event_type,product_id,collection_id,search_query,quantity,price,order_value,currency,url"

GOOD = [
    "e1,s1,u1,,2025-01-02T10:00:00Z,page_view,,,,,,,USD,/",
    "e2,s1,u1,,2025-01-02T10:01:00Z,product_view,p1,,,,10.5,,USD,/products/p1",
    "e3,s1,u1,,2025-01-02T10:02:00Z,add_to_cart,p1,,,2,10.5,,USD,/products/p1",
    "e4,s1,u2,sess9,2025-01-02 11:00:00 UTC,search,,,red shoes,,,,USD,/search",
    "e5,s1,u2,sess9,2025-01-02T11:03:00.250+00:00,collection_view,,c1,,,,,USD,/collections/c1",
    "e6,s1,u2,sess9,2025-01-02T11:10:00Z,checkout_completed,,,,1,,21.0,USD,/checkout",
    "e7,s1,u3,,2025-01-02T23:50:00Z,add_to_cart,,,,1,,,USD,/cart",
]
# (row, expected reason, expected field)
BAD = [
    ("e8,s1,u1,,2025-01-02T10:00:00Z,teleport,,,,,,,USD,/", "unknown_event_type", "event_type"),
    ("e9,s1,,,2025-01-02T10:00:00Z,page_view,,,,,,,USD,/", "missing_field", "buyer_id"),
    ("e10,s1,u1,,not-a-time,page_view,,,,,,,USD,/", "unparseable_timestamp", "ts"),
    ("e11,s1,u1,,2025-01-02T10:00:00Z,product_view,p1,,,,-3,,USD,/", "negative_price", "price"),
    ("e1,s1,u9,,2025-01-02T12:00:00Z,page_view,,,,,,,USD,/", "duplicate_event_id", "event_id"),
    (
        "e12,s1,u1,,2025-01-02T10:00:00Z,product_view,p404,,,,,,USD,/",
        "product_not_in_catalog",
        "product_id",
    ),
    ("e13,s1,u1,,2025-01-02T10:00:00Z,product_view,,,,,,,USD,/", "missing_field", "product_id"),
    ("e14,s1,u1,,2025-01-03T10:00:00Z,page_view,,,,,,,USD,/", "timestamp_outside_partition", "ts"),
    ("e15,s2,u1,,2025-01-02T10:00:00Z,page_view,,,,,,,USD,/", "wrong_shop", "shop_id"),
    (
        "e16,s1,u1,,2025-01-02T10:00:00Z,add_to_cart,p1,,,two,,,USD,/",
        "unparseable_number",
        "quantity",
    ),
    (",s1,u1,,2025-01-02T10:00:00Z,page_view,,,,,,,USD,/", "missing_field", "event_id"),
    (
        "e17,s1,u1,,2025-01-02T10:00:00Z,checkout_completed,,,,1,,-5,USD,/",
        "negative_price",
        "order_value",
    ),
]


def make_lake(tmp_path: Path, rows: list[str]) -> tuple[Lake, Warehouse]:
    lake = Lake.at(tmp_path / "lake")
    wh = Warehouse.at(tmp_path / "warehouse")
    (lake.catalog_dir("products", "s1")).mkdir(parents=True)
    (lake.catalog_dir("products", "s1") / "p.csv").write_text(
        "shop_id,product_id,title,description,price,collection_ids\n"
        "s1,p1,Red Shoe,A shoe,10.5,c1\n"
        "s1,p2,Blue Shoe,,12,c1|c2\n"
        "s1,p2,Dup Shoe,,12,c1\n"
        "s1,p3,,no title,5,\n"
        "s1,p4,Neg,,-1,\n"
    )
    lake.catalog_dir("collections", "s1").mkdir(parents=True)
    (lake.catalog_dir("collections", "s1") / "c.csv").write_text(
        "shop_id,collection_id,title\ns1,c1,Shoes\ns1,c2,Blue things\n"
    )
    d = lake.events_dir("s1", "2025-01-02")
    d.mkdir(parents=True)
    (d / "day.csv").write_text("\n".join([HEADER, *rows]) + "\n")
    return lake, wh


def test_catalog_quarantine(tmp_path: Path) -> None:
    lake, wh = make_lake(tmp_path, GOOD)
    res = ingest_catalog(lake, wh, "s1", max_reject_share=1.0)
    assert res.products == 2 and res.collections == 2
    assert res.rejects_by_reason == {
        "duplicate_product_id": 1,
        "missing_field": 1,
        "negative_price": 1,
    }
    prods = wh.read_partition("products", "s1")
    assert prods.filter(pl.col("product_id") == "p2")["collection_ids"].to_list() == [["c1", "c2"]]
    assert prods.filter(pl.col("product_id") == "p2")["title"].item() == "Blue Shoe"


def test_each_bad_row_is_quarantined_with_reason(tmp_path: Path) -> None:
    lake, wh = make_lake(tmp_path, GOOD + [row for row, _, _ in BAD])
    ingest_catalog(lake, wh, "s1", max_reject_share=1.0)
    res = ingest_events(lake, wh, "s1", "2025-01-02", KEY, max_reject_share=1.0)
    assert res.rows_read == len(GOOD) + len(BAD)
    assert res.rows_valid == len(GOOD)
    assert res.rows_rejected == len(BAD)
    q = wh.read_quarantine("events").sort("source_row")
    assert q["source_file"].unique().to_list() == ["day.csv"]
    # every bad row, at its own row number, with the expected reason and field
    expected = [(len(GOOD) + i + 1, reason, fld) for i, (_, reason, fld) in enumerate(BAD)]
    got = list(zip(q["source_row"], q["reason"], q["field"], strict=True))
    assert got == expected
    # the raw content is kept
    first_bad = json.loads(q["raw"][0])
    assert first_bad["event_type"] == "teleport" and first_bad["event_id"] == "e8"
    # valid rows all present, de-identified, sessions filled
    ev = wh.read_partition("raw_events", "s1", "2025-01-02")
    assert sorted(ev["event_id"].to_list()) == sorted(r.split(",")[0] for r in GOOD)
    assert ev["session_id"].null_count() == 0
    assert not set(ev["buyer_id"]) & {"u1", "u2", "u3"}
    # a given session id is kept as a session, under its keyed hash (never the raw value)
    sess9 = deidentify(pl.Series(["sess9"]), KEY, SESSION_NAMESPACE)[0]
    assert ev.filter(pl.col("event_id") == "e4")["session_id"].item() == sess9
    assert sess9 != deidentify(pl.Series(["sess9"]), KEY)[0]
    assert "u1" not in "".join(wh.read_quarantine("events")["raw"])
    assert ev.schema["ts"] == pl.Datetime("us", "UTC")
    assert res.sessions_filled == 4


def test_reject_share_threshold_fails_naming_file_and_keeps_previous(tmp_path: Path) -> None:
    lake, wh = make_lake(tmp_path, GOOD)
    ingest_catalog(lake, wh, "s1", max_reject_share=1.0)
    ingest_events(lake, wh, "s1", "2025-01-02", KEY)
    before = wh.read_partition("raw_events", "s1", "2025-01-02")
    d = lake.events_dir("s1", "2025-01-02")
    (d / "day.csv").write_text("\n".join([HEADER, *GOOD, *[r for r, _, _ in BAD]]) + "\n")
    with pytest.raises(IngestError, match=r"day\.csv.*(unknown_event_type|missing_field)"):
        ingest_events(lake, wh, "s1", "2025-01-02", KEY, max_reject_share=0.05)
    # the failed run left the previous good partition in place, and the quarantine to inspect
    assert wh.read_partition("raw_events", "s1", "2025-01-02").equals(before)
    assert wh.read_quarantine("events").height == len(BAD)


def test_unreadable_file_fails_naming_it(tmp_path: Path) -> None:
    lake, wh = make_lake(tmp_path, GOOD)
    ingest_catalog(lake, wh, "s1", max_reject_share=1.0)
    bad = lake.events_dir("s1", "2025-01-02") / "broken.parquet"
    bad.write_bytes(b"PAR1 this is not parquet")
    with pytest.raises(IngestError, match="broken.parquet"):
        ingest_events(lake, wh, "s1", "2025-01-02", KEY)


def test_rematerializing_replaces_not_duplicates(tmp_path: Path) -> None:
    lake, wh = make_lake(tmp_path, GOOD + [BAD[0][0]])
    ingest_catalog(lake, wh, "s1", max_reject_share=1.0)
    a = ingest_events(lake, wh, "s1", "2025-01-02", KEY, max_reject_share=1.0)
    first = wh.read_partition("raw_events", "s1", "2025-01-02")
    b = ingest_events(lake, wh, "s1", "2025-01-02", KEY, max_reject_share=1.0)
    second = wh.read_partition("raw_events", "s1", "2025-01-02")
    assert first.equals(second) and a.rows_valid == b.rows_valid == len(GOOD)
    assert wh.read_quarantine("events").height == 1
    files = list((tmp_path / "warehouse").rglob("*.parquet"))
    assert not [f for f in files if f.name.startswith(".")]  # no temp files left
    views = wh.refresh_views()
    assert "raw_events" in views and "quarantine" in views
    n = wh.query("select count(*) as n from raw_events")["n"].item()
    assert n == len(GOOD)


def test_parquet_input_with_typed_columns(tmp_path: Path) -> None:
    lake, wh = make_lake(tmp_path, GOOD)
    (lake.events_dir("s1", "2025-01-02") / "day.csv").unlink()
    t = dt.datetime(2025, 1, 2, 9, tzinfo=dt.UTC)
    df = pl.DataFrame(
        {
            "event_id": ["x1", "x2"],
            "shop_id": ["s1", "s1"],
            "buyer_id": ["u1", "u1"],
            "session_id": [None, None],
            "ts": [t, t + dt.timedelta(minutes=5)],
            "event_type": ["product_view", "add_to_cart"],
            "product_id": ["p1", "p1"],
            "quantity": [None, 1],
            "price": [10.5, -1.0],
        },
        schema_overrides={"session_id": pl.String},
    )
    lake.write_events(df, part="typed")
    ingest_catalog(lake, wh, "s1", max_reject_share=1.0)
    res = ingest_events(lake, wh, "s1", "2025-01-02", KEY, max_reject_share=1.0)
    assert res.rows_valid == 1 and res.rejects_by_reason == {"negative_price": 1}


def test_timestamp_parsing() -> None:
    s = pl.DataFrame(
        {
            "x": [
                "2025-02-23T00:00:01.750Z",
                "2019-10-01 00:00:04 UTC",
                "2025-01-01T10:00:00+02:00",
                "x",
                None,
            ]
        }
    ).select(parse_timestamp(pl.col("x")))["x"]
    assert s[0] == dt.datetime(2025, 2, 23, 0, 0, 1, 750000, tzinfo=dt.UTC)
    assert s[1] == dt.datetime(2019, 10, 1, 0, 0, 4, tzinfo=dt.UTC)
    assert s[2] == dt.datetime(2025, 1, 1, 8, tzinfo=dt.UTC)
    assert s[3] is None and s[4] is None


def test_one_timestamp_parser_for_importers_and_validation() -> None:
    """What the importers and the warehouse used to read differently now reads the same."""
    from simpersona.ingest import generic, shopify_pixels, validate

    for reader in (generic, shopify_pixels, validate):
        assert reader.parse_timestamp is parse_timestamp
    utc = dt.UTC
    cases = {
        "2024-01-02 03:04": dt.datetime(2024, 1, 2, 3, 4, tzinfo=utc),
        "2024-01-02T03:04:05.5z": dt.datetime(2024, 1, 2, 3, 4, 5, 500000, tzinfo=utc),
        "2024-01-02 03:04:05 utc": dt.datetime(2024, 1, 2, 3, 4, 5, tzinfo=utc),
        "2024-01-02T03:04:05+0200": dt.datetime(2024, 1, 2, 1, 4, 5, tzinfo=utc),
        " 2024-01-02 ": dt.datetime(2024, 1, 2, tzinfo=utc),
        "1704164645": None,  # epochs only with an explicit epoch format
    }
    got = pl.DataFrame({"x": list(cases)}).select(parse_timestamp(pl.col("x")))["x"]
    assert got.to_list() == list(cases.values())
    # Naive times in the mapping's zone; an explicit offset or Z wins over it.
    paris = pl.DataFrame({"x": ["2024-07-01 12:00:00", "2024-07-01T12:00:00Z"]}).select(
        parse_timestamp(pl.col("x"), timezone="Europe/Paris")
    )["x"]
    assert paris.to_list() == [dt.datetime(2024, 7, 1, 10, tzinfo=utc),
                               dt.datetime(2024, 7, 1, 12, tzinfo=utc)]  # fmt: skip
    epoch = pl.DataFrame({"x": ["1704164645"]}).select(parse_timestamp(pl.col("x"), fmt="epoch_s"))[
        "x"
    ]
    assert epoch[0] == dt.datetime(2024, 1, 2, 3, 4, 5, tzinfo=utc)


def test_deidentify_is_keyed_and_stable() -> None:
    ids = pl.Series(["a", "b", "a", None])
    h1, h2 = deidentify(ids, b"k1"), deidentify(ids, b"k2")
    assert h1[0] == h1[2] and h1[0] != h1[1] and h1[3] is None
    assert h1[0] != h2[0] and len(h1[0]) == 16


def test_session_crossing_midnight_keeps_id() -> None:
    t = dt.datetime(2025, 1, 2, 0, 10, tzinfo=dt.UTC)
    today = pl.DataFrame(
        {
            "event_id": ["a", "b", "c"],
            "shop_id": ["s"] * 3,
            "buyer_id": ["u", "u", "v"],
            "session_id": [None, None, None],
            "ts": [t, t + dt.timedelta(hours=2), t],
        },
        schema_overrides={"session_id": pl.String},
    )
    prev = pl.DataFrame(
        {
            "buyer_id": ["u", "v"],
            "ts": [t - dt.timedelta(minutes=20), t - dt.timedelta(hours=3)],
            "session_id": ["u-old", "v-old"],
        }
    )
    out = sessionize_across_days(today, prev, 30)
    sid = dict(zip(out["event_id"], out["session_id"], strict=True))
    assert sid["a"] == "u-old"  # continues yesterday's session (20 min gap)
    assert sid["b"] not in ("u-old", sid["a"])  # 2 h later: a new session
    assert sid["c"] != "v-old"  # 3 h gap: new session


def test_ground_truth_joins_after_deidentify_frame(tmp_path: Path) -> None:
    from simpersona.ingest.ingest import deidentify_frame

    lake, wh = make_lake(tmp_path, GOOD)
    ingest_catalog(lake, wh, "s1", max_reject_share=1.0)
    ingest_events(lake, wh, "s1", "2025-01-02", KEY)
    truth = pl.DataFrame({"shop_id": ["s1"] * 3, "buyer_id": ["u1", "u2", "u3"], "t": [1, 2, 3]})
    ev = wh.read_partition("raw_events", "s1", "2025-01-02")
    joined = ev.join(deidentify_frame(truth, KEY), on=["shop_id", "buyer_id"], how="inner")
    assert joined.height == ev.height and set(joined["t"]) == {1, 2, 3}


def _tricky_sessionize_input(seed: int = 3, n: int = 3_000) -> pl.DataFrame:
    """Two shops sharing buyer ids, a null buyer, equal timestamps, gaps of exactly 30
    minutes, rows out of time order and some rows that already carry a session id."""
    import numpy as np

    rng = np.random.default_rng(seed)
    t0 = dt.datetime(2025, 1, 2, tzinfo=dt.UTC)
    minutes = np.cumsum(rng.choice([0, 1, 5, 29, 30, 31, 90], size=n))
    buyers = rng.choice(["u1", "u2", "u3", ""], size=n, p=[0.4, 0.3, 0.25, 0.05])
    return pl.DataFrame(
        {
            "event_id": [f"e{i}" for i in range(n)],
            "shop_id": rng.choice(["s1", "s2"], size=n).tolist(),
            "buyer_id": [b or None for b in buyers.tolist()],
            "session_id": [None if rng.random() < 0.8 else f"x{i % 7}" for i in range(n)],
            "ts": [t0 + dt.timedelta(minutes=int(m)) for m in rng.permutation(minutes)],
        },
        schema_overrides={"session_id": pl.String},
    )


def test_sessionize_fast_path_matches_reference() -> None:
    from simpersona.ingest.sessionize import _sessionize_polars, sessionize

    for seed in (3, 4):
        events = _tricky_sessionize_input(seed)
        before = events.clone()
        out = sessionize(events)
        assert events.equals(before)  # the input is not modified
        assert out.equals(_sessionize_polars(events, 30))
        assert out["session_id"].null_count() == events["buyer_id"].null_count() - (
            events.filter(pl.col("buyer_id").is_null() & pl.col("session_id").is_not_null()).height
        )


def test_sessionize_keeps_given_ids_next_to_filled_ones() -> None:
    """A few rows with a session id among many without (String scatter once broke this)."""
    from simpersona.ingest.sessionize import sessionize

    t0 = dt.datetime(2025, 3, 1, 10, tzinfo=dt.UTC)
    rows = [("a", 0, None), ("a", 5, None), ("a", 9, None), ("b", 0, "s1"), ("b", 3, "s1")]
    rows += [("c", 0, None), ("c", 100, None)]
    events = pl.DataFrame(
        {
            "shop_id": ["s"] * len(rows),
            "buyer_id": [r[0] for r in rows],
            "session_id": [r[2] for r in rows],
            "ts": [t0 + dt.timedelta(minutes=r[1]) for r in rows],
        },
        schema_overrides={"session_id": pl.String},
    )
    out = sessionize(events)
    per_buyer = out.group_by("buyer_id").agg(pl.col("session_id").n_unique()).sort("buyer_id")
    assert per_buyer["session_id"].to_list() == [1, 1, 2]
    assert out["session_id"][3] == "s1" and out["session_id"][4] == "s1"
    assert out["session_id"].null_count() == 0
