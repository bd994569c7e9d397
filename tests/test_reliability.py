"""Reliability: hostile input, failures and privacy on the ingestion path (docs/data-model.md,
"Guarantees"). Every test builds its hostile input itself and checks what a user would see."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import polars as pl
import pytest

from scripts.local_services import free_port as _free_port

EVENT_HEADER = "event_id,shop_id,buyer_id,session_id,ts,event_type,product_id"


def write_shop(lake: Path, shop: str, date: str, rows: list[str]) -> None:
    """One shop with one product `p1` and the given event rows (EVENT_HEADER columns)."""
    (lake / "products" / f"shop={shop}").mkdir(parents=True, exist_ok=True)
    (lake / "products" / f"shop={shop}" / "p.csv").write_text(
        f"shop_id,product_id,title,description,price,collection_ids\n{shop},p1,Shoe,,10,\n"
    )
    d = lake / "events" / f"shop={shop}" / f"date={date}"
    d.mkdir(parents=True, exist_ok=True)
    (d / "e.csv").write_text(EVENT_HEADER + "\n" + "\n".join(rows) + "\n")


def good_rows(shop: str, date: str, n: int = 4) -> list[str]:
    return [f"{shop}-{i},{shop},u{i},,{date}T10:0{i}:00Z,product_view,p1" for i in range(n)]


def run_cli(*args: str, data_dir: Path, timeout: float = 120) -> tuple[int, str, float]:
    """The installed `simpersona` console script in a fresh process: (exit code, output, s)."""
    exe = Path(sys.executable).with_name("simpersona")
    env = {**os.environ, "SIMPERSONA_DATA_DIR": str(data_dir), "COLUMNS": "200"}
    env.pop("SIMPERSONA_TRACEBACK", None)
    t0 = time.perf_counter()
    proc = subprocess.run(
        [str(exe), *args], capture_output=True, text=True, timeout=timeout, env=env
    )
    return proc.returncode, proc.stdout + proc.stderr, time.perf_counter() - t0


def test_failing_partition_ends_the_cli_in_seconds_with_one_line_and_others_ingested(
    tmp_path: Path,
) -> None:
    """A partition above the reject threshold used to hang the CLI (rich followed the cyclic
    exception chain of Dagster's step error forever). Now: exit 1, one line naming the shop,
    day and the reason; the healthy shop is still ingested; `--fail-fast` stops at the first."""
    date = "2025-03-01"
    lake = tmp_path / "lake"
    # alpha: 2 of 5 rows lack a buyer id (40 % > the 5 % default); beta is clean
    write_shop(lake, "alpha", date, [*good_rows("alpha", date, 3), *[
        f"bad{i},alpha,,,{date}T11:00:00Z,product_view,p1" for i in range(2)
    ]])  # fmt: skip
    write_shop(lake, "beta", date, good_rows("beta", date))
    code, out, seconds = run_cli("ingest", "--data-dir", str(tmp_path), data_dir=tmp_path)
    assert code == 1, out
    assert seconds < 90, f"took {seconds:.0f} s"
    failed = [line for line in out.splitlines() if line.startswith("failed ")]
    assert len(failed) == 1, out
    assert "shop=alpha date=2025-03-01" in failed[0] and "missing_field" in failed[0]
    assert "e.csv" in failed[0] and "Traceback" not in out
    assert "1 partition(s) failed" in out
    beta = tmp_path / "warehouse" / "raw_events" / "shop=beta" / f"date={date}" / "data.parquet"
    assert pl.read_parquet(beta).height == 4
    # the rejected rows are kept for inspection
    q = tmp_path / "warehouse" / "quarantine" / "events" / "shop=alpha" / f"date={date}"
    assert pl.read_parquet(q / "data.parquet")["reason"].to_list() == ["missing_field"] * 2

    fresh = tmp_path / "again"
    write_shop(fresh / "lake", "alpha", date, [f"bad,alpha,,,{date}T11:00:00Z,product_view,p1"])
    write_shop(fresh / "lake", "beta", date, good_rows("beta", date))
    code, out, _ = run_cli("ingest", "--data-dir", str(fresh), "--fail-fast", data_dir=fresh)
    assert code == 1 and out.count("error:") == 1 and "missing_field" in out, out
    assert "Traceback" not in out
    assert not (fresh / "warehouse" / "raw_events" / "shop=beta").exists()


# ---- hostile inputs: every source row accounted for ------------------------------------------
HOSTILE_MAPPING = """
shop_id: hostile
header: true
fields: {buyer_id: user, product_id: item, event_type: action, ts: time, price: amount,
         quantity: qty}
event_types: {view: product_view, cart: add_to_cart, buy: checkout_completed, newsletter: null}
catalog: {title: item_name}
"""
GENERIC_HEADER = "user,item,action,time,item_name,amount,qty"
DAY = "2025-03-01"


def generic_good(n: int = 200) -> list[str]:  # ~12 KB: hostile rows lie past 8 KiB
    return [
        f"user{i % 7}@example.org,sku-{i % 5},{'cart' if i % 4 == 0 else 'view'},"
        f"{DAY}T{10 + i // 60:02d}:{i % 60:02d}:00Z,Mug {i % 5},12.5,1"
        for i in range(n)
    ]


# (case, hostile rows, the reason it must end with: importer or ingestion quarantine)
GENERIC_CASES: list[tuple[str, list[str], str]] = [
    (
        "quantity_beyond_int64",
        [f"u@x.org,sku-1,cart,{DAY}T12:00:00Z,Mug,1,99999999999999999999"],
        "unparseable_value",
    ),
    ("quantity_1e30", [f"u@x.org,sku-1,cart,{DAY}T12:00:00Z,Mug,1,1e30"], "unparseable_value"),
    (
        "quantity_9e18",
        [f"u@x.org,sku-1,cart,{DAY}T12:00:00Z,Mug,1,9000000000000000000"],
        "implausible_quantity",
    ),
    ("quantity_negative", [f"u@x.org,sku-1,cart,{DAY}T12:00:00Z,Mug,1,-2"], "negative_quantity"),
    (
        "quantity_arabic_digit",
        [f"u@x.org,sku-1,cart,{DAY}T12:00:00Z,Mug,1,\u0663"],
        "unparseable_value",
    ),
    ("price_nan", [f"u@x.org,sku-1,view,{DAY}T12:00:00Z,Mug,NaN,1"], "unparseable_value"),
    ("price_infinity", [f"u@x.org,sku-1,view,{DAY}T12:00:00Z,Mug,Infinity,1"], "unparseable_value"),
    ("price_1e308", [f"u@x.org,sku-1,view,{DAY}T12:00:00Z,Mug,1e308,1"], "implausible_value"),
    ("price_negative", [f"u@x.org,sku-1,view,{DAY}T12:00:00Z,Mug,-5,1"], "negative_price"),
    ("year_0001", ["u@x.org,sku-1,view,0001-01-01T00:00:00Z,Mug,1,1"], "implausible_timestamp"),
    ("year_1970", ["u@x.org,sku-1,view,1970-01-01T00:00:00Z,Mug,1,1"], "implausible_timestamp"),
    ("year_2099", ["u@x.org,sku-1,view,2099-01-01T00:00:00Z,Mug,1,1"], "implausible_timestamp"),
    ("ts_garbage", ["u@x.org,sku-1,view,yesterday-ish,Mug,1,1"], "unparseable_timestamp"),
    ("empty_buyer", [f",sku-1,view,{DAY}T12:00:00Z,Mug,1,1"], "missing_field"),
    ("unknown_action", [f"u@x.org,sku-1,teleport,{DAY}T12:00:00Z,Mug,1,1"], "unknown_event_type"),
    (
        "unmappable_action",
        [f"u@x.org,sku-1,newsletter,{DAY}T12:00:00Z,Mug,1,1"],
        "unmappable_event_type",
    ),
    ("too_few_fields", ["u@x.org,sku-1,view"], "malformed_row"),
    ("too_many_fields", [f"u@x.org,sku-1,view,{DAY}T12:00:00Z,Mug,1,1,extra"], "malformed_row"),
    ("nul_byte_late", [f"u@x.org,sku-1,view,{DAY}T12:00:00Z,Mu\x00g,1,1"], "malformed_row"),
    ("duplicate_row", [f"dup@x.org,sku-1,view,{DAY}T12:00:00Z,Mug,1,1"] * 2, "duplicate_event_id"),
    ("view_without_item", [f"u@x.org,,view,{DAY}T12:00:00Z,Mug,1,1"], "missing_field"),
]
# rows that are odd but valid: they must reach the warehouse intact
GENERIC_VALID_CASES: list[tuple[str, list[str]]] = [
    (
        "emoji_and_rtl_title",
        [f'u@x.org,sku-9,view,{DAY}T12:00:00Z,"Mug \U0001f375 \u05e9\u05dc\u05d5\u05dd",1,1'],
    ),
    ("quoted_newline_title", [f'u@x.org,sku-9,view,{DAY}T12:00:00Z,"Mug\nwith a newline",1,1']),
    ("quoted_comma_title", [f'u@x.org,sku-9,view,{DAY}T12:00:00Z,"Mug, large",1,1']),
    ("huge_title", [f"u@x.org,sku-9,view,{DAY}T12:00:00Z,{'M' * 200_000},1,1"]),
    ("offset_plus_14", [f"u@x.org,sku-9,view,{DAY}T20:00:00+14:00,Mug,1,1"]),
]


def import_and_ingest(tmp_path: Path, src: Path, fmt: str = "generic", mapping: Path | None = None):
    """Import `src`, ingest every lake partition (nothing fails on share), and return the
    counts of each stage plus the two quarantines."""
    from simpersona.ingest.importers import run_import
    from simpersona.ingest.ingest import ingest_catalog, ingest_events
    from simpersona.lake import Lake
    from simpersona.warehouse import Warehouse

    lake_root = tmp_path / "lake"
    res = run_import(fmt, [src], lake_root, mapping=mapping)
    lake, wh = Lake.at(lake_root), Warehouse.at(tmp_path / "warehouse")
    lake_rows = sum(
        pl.read_parquet(f).height
        for shop in lake.shops()
        for d in lake.dates(shop)
        for f in lake.raw_files(lake.events_dir(shop, d))
    )
    warehouse_rows = 0
    for shop in lake.shops():
        ingest_catalog(lake, wh, shop, max_reject_share=1.0)
        for d in lake.dates(shop):
            warehouse_rows += ingest_events(
                lake, wh, shop, d, b"key", max_reject_share=1.0
            ).rows_valid
    q = wh.read_quarantine("events") if lake.shops() else pl.DataFrame(schema={"reason": pl.String})
    return res, lake_rows, warehouse_rows, res.rejects, q


def source_rows(text: str) -> int:
    import csv
    import io

    return sum(1 for rec in csv.reader(io.StringIO(text)) if rec) - 1  # header not counted


def good_rows_and(tmp_path: Path, case: str, rows: list[str]):
    """A generic CSV of the good rows followed by `rows`, imported and ingested: (the file's
    text, `import_and_ingest`'s result)."""
    mapping = tmp_path / "m.yaml"
    mapping.write_text(HOSTILE_MAPPING)
    text = "\n".join([GENERIC_HEADER, *generic_good(), *rows]) + "\n"
    src = tmp_path / f"{case}.csv"
    src.write_text(text, encoding="utf-8")
    return text, import_and_ingest(tmp_path, src, mapping=mapping)


@pytest.mark.parametrize(
    ("case", "rows", "reason"), GENERIC_CASES, ids=[c[0] for c in GENERIC_CASES]
)
def test_hostile_row_is_quarantined_with_its_reason_and_every_row_accounted_for(
    tmp_path: Path, case: str, rows: list[str], reason: str
) -> None:
    text, (_, lake_rows, wh_rows, import_q, ingest_q) = good_rows_and(tmp_path, case, rows)
    # source rows = lake events + importer quarantine; lake events = warehouse + quarantine
    assert source_rows(text) == lake_rows + import_q.height, case
    assert lake_rows == wh_rows + ingest_q.height, case
    reasons = set(import_q["reason"]) | set(ingest_q["reason"])
    assert reason in reasons, (case, reasons)
    kept = 1 if case == "duplicate_row" else 0  # the first of two identical rows is valid
    assert wh_rows == len(generic_good()) + kept, case  # the good rows all made it
    # no partition outside the data's own days
    assert sorted(p.name for p in (tmp_path / "lake/events/shop=hostile").iterdir()) == [
        f"date={DAY}"
    ]


@pytest.mark.parametrize(
    ("case", "rows"), GENERIC_VALID_CASES, ids=[c[0] for c in GENERIC_VALID_CASES]
)
def test_odd_but_valid_rows_arrive_intact(tmp_path: Path, case: str, rows: list[str]) -> None:
    _, (_, lake_rows, wh_rows, import_q, ingest_q) = good_rows_and(tmp_path, case, rows)
    assert import_q.height == 0 and ingest_q.height == 0, (import_q, ingest_q)
    assert wh_rows == lake_rows == len(generic_good()) + len(rows)


def test_unreadable_sources_fail_in_seconds_naming_file_and_line(tmp_path: Path) -> None:
    """A truncated .csv.gz used to end with only "Aborted."; a bad UTF-8 byte was reported
    ~70 lines off. Both now name the file and the line, exit 1, and write nothing."""
    import gzip

    body = "\n".join([GENERIC_HEADER, *generic_good(3000)]) + "\n"
    mapping = tmp_path / "m.yaml"
    mapping.write_text(HOSTILE_MAPPING)
    packed = gzip.compress(body.encode())
    trunc = tmp_path / "cut.csv.gz"
    trunc.write_bytes(packed[: len(packed) // 2])
    code, out, seconds = run_cli(
        "import", "-f", "generic", "-m", str(mapping), str(trunc), "--lake", str(tmp_path / "lake"),
        data_dir=tmp_path,
    )  # fmt: skip
    assert code == 1 and "cut.csv.gz" in out and "truncated" in out, out
    assert "Aborted" not in out and seconds < 60
    assert not (tmp_path / "lake" / "events").exists()

    lines = body.encode().split(b"\n")
    lines[2001] = lines[2001].replace(b"Mug", b"M\xffg")  # line 2002 of the file
    bad = tmp_path / "latin.csv"
    bad.write_bytes(b"\n".join(lines))
    code, out, _ = run_cli(
        "import", "-f", "generic", "-m", str(mapping), str(bad), "--lake", str(tmp_path / "lake"),
        data_dir=tmp_path,
    )  # fmt: skip
    assert code == 1 and "latin.csv" in out and "line 2002" in out, out


def test_same_file_name_in_two_folders_keeps_both(tmp_path: Path) -> None:
    """Importing a/events.csv and then b/events.csv used to delete a's events silently."""
    from simpersona.ingest.importers import run_import
    from simpersona.lake import Lake

    mapping = tmp_path / "m.yaml"
    mapping.write_text(HOSTILE_MAPPING)
    for folder, rows in (("a", generic_good(10)), ("b", generic_good(20)[10:])):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "events.csv").write_text("\n".join([GENERIC_HEADER, *rows]) + "\n")
    lake = tmp_path / "lake"
    run_import("generic", [tmp_path / "a" / "events.csv"], lake, mapping=mapping)
    run_import("generic", [tmp_path / "b" / "events.csv"], lake, mapping=mapping)
    run_import("generic", [tmp_path / "a" / "events.csv"], lake, mapping=mapping)  # re-import
    lk = Lake.at(lake)
    files = lk.raw_files(lk.events_dir("hostile", DAY))
    assert len(files) == 2
    assert sum(pl.read_parquet(f).height for f in files) == 20


def test_corrected_reimport_removes_the_vanished_day_from_the_warehouse(tmp_path: Path) -> None:
    """Rows that a corrected file moves to another day leave the old day behind in the
    warehouse no longer: lake 3 rows, warehouse 3 rows (it was 6)."""
    import dagster as dg

    from dagster_project.run import run_ingestion
    from tests.conftest import resources_for

    mapping = tmp_path / "m.yaml"
    mapping.write_text(HOSTILE_MAPPING)
    src = tmp_path / "log.csv"
    src.write_text("\n".join([GENERIC_HEADER, *generic_good(3)]) + "\n")
    from simpersona.ingest.importers import run_import

    run_import("generic", [src], tmp_path / "lake", mapping=mapping)
    with dg.instance_for_test() as instance:
        run_ingestion(tmp_path / "lake", instance=instance, resources=resources_for(tmp_path))
        src.write_text(
            "\n".join([GENERIC_HEADER, *generic_good(3)]).replace(DAY, "2025-03-02") + "\n"
        )
        run_import("generic", [src], tmp_path / "lake", mapping=mapping)
        run_ingestion(tmp_path / "lake", instance=instance, resources=resources_for(tmp_path))
    days = sorted(p.name for p in (tmp_path / "warehouse/raw_events/shop=hostile").iterdir())
    assert days == ["date=2025-03-02"]
    wh_rows = pl.read_parquet(
        tmp_path / "warehouse/raw_events/shop=hostile/date=2025-03-02/data.parquet"
    ).height
    assert wh_rows == 3


# ---- Shopify pixels: one bad order payload must not end the import -----------------------
PIXEL_HEADER = "clientId,page_url,timestamp,event_name,event_data,user_agent"


def _csv_json(value: object) -> str:
    import json

    return '"' + json.dumps(value).replace('"', '""') + '"'


@pytest.mark.parametrize(
    ("case", "order", "reason"),
    [
        (
            "item_name_list",
            {"revenue": 10, "items": [{"item_name": ["Zen", "Frame"], "quantity": 1}]},
            None,
        ),
        (
            "quantity_1e30",
            {"revenue": 10, "items": [{"item_name": "Zen Frame", "quantity": 1e30}]},
            None,
        ),
        (
            "revenue_nan",
            {"revenue": "NaN", "items": [{"item_name": "Zen Frame", "quantity": 1}]},
            "non_finite_value",
        ),
        ("revenue_infinity", {"revenue": "Infinity", "items": []}, "non_finite_value"),
        (
            "negative_item_price",
            {
                "revenue": 10,
                "items": [{"item_name": "Zen Frame", "quantity": 1, "item_price": -150}],
            },
            None,
        ),
    ],
    ids=lambda v: v if isinstance(v, str) else "",
)
def test_hostile_pixel_orders(tmp_path: Path, case: str, order: dict, reason: str | None) -> None:
    rows = [
        f"c{i},https://s.example/products/zen-frame,{DAY}T10:{i:02d}:00.000Z,page_viewed,,ua"
        for i in range(40)
    ]
    rows.append(
        f"c1,https://checkout.s.example/c/1/thank-you,{DAY}T11:00:00.000Z,checkout_completed,"
        f"{_csv_json(order)},ua"
    )
    src = tmp_path / "pixels.csv"
    src.write_text(PIXEL_HEADER + "\n" + "\n".join(rows) + "\n")
    res, lake_rows, wh_rows, import_q, ingest_q = import_and_ingest(tmp_path, src, "shopify-pixels")
    assert len(rows) == lake_rows + import_q.height
    assert lake_rows == wh_rows + ingest_q.height
    if reason:
        assert ingest_q["reason"].to_list() == [reason]
    else:
        assert ingest_q.height == 0 and wh_rows == len(rows)
    # the catalog never takes a price from a bad order line
    prices = res.products["price"].drop_nulls().to_list()
    assert all(0 <= p < 1e9 for p in prices), prices


# ---- files written into the lake by other tools (typed Parquet) ----------------------------
def test_typed_parquet_lake_files_with_extreme_values_are_quarantined(tmp_path: Path) -> None:
    """Parquet in the lake carries typed values no CSV parse would produce: NaN and ±inf
    prices, 1e308, quantity 9e18. Each is quarantined with its reason; the catalog's list
    column no longer crashes the catalog quarantine."""
    import datetime as dt

    from simpersona.ingest.ingest import ingest_catalog, ingest_events
    from simpersona.lake import Lake
    from simpersona.warehouse import Warehouse

    lake = Lake.at(tmp_path / "lake")
    wh = Warehouse.at(tmp_path / "warehouse")
    products = lake.catalog_dir("products", "s1")
    products.mkdir(parents=True)
    pl.DataFrame(
        {
            "shop_id": ["s1"] * 4,
            "product_id": ["p1", "p2", "p3", "p4"],
            "title": ["Mug", "Cup", "Bad", "Worse"],
            "price": [10.0, 5.0, -1.0, float("nan")],
            "collection_ids": [["c1"], ["c1", "c2"], ["c2"], []],
        }
    ).write_parquet(products / "p.parquet")
    res = ingest_catalog(lake, wh, "s1", max_reject_share=1.0)
    assert res.products == 2 and res.rejects_by_reason == {
        "negative_price": 1,
        "non_finite_value": 1,
    }
    q = wh.read_quarantine("products").sort("source_row")
    assert '"collection_ids":["c2"]' in q["raw"][0]  # the list kept as a list

    ts = dt.datetime(2025, 3, 1, 10, tzinfo=dt.UTC)
    day = lake.events_dir("s1", DAY)
    day.mkdir(parents=True)
    values = [
        (10.0, 1, None),
        (float("nan"), 1, "non_finite_value"),
        (float("inf"), 1, "non_finite_value"),
        (-float("inf"), 1, "non_finite_value"),
        (1e308, 1, "implausible_value"),
        (10.0, 9_000_000_000_000_000_000, "implausible_quantity"),
    ]
    pl.DataFrame(
        {
            "event_id": [f"e{i}" for i in range(len(values))],
            "shop_id": "s1",
            "buyer_id": "b1",
            "ts": [ts] * len(values),
            "event_type": "add_to_cart",
            "product_id": "p1",
            "price": [v[0] for v in values],
            "quantity": pl.Series([v[1] for v in values], dtype=pl.Int64),
        }
    ).write_parquet(day / "typed.parquet")
    r = ingest_events(lake, wh, "s1", DAY, b"key", max_reject_share=1.0)
    assert r.rows_valid == 1 and r.rows_read == len(values)
    got = wh.read_quarantine("events").sort("source_row")["reason"].to_list()
    assert got == [v[2] for v in values if v[2]]


def test_hash_key_file_must_be_private_and_non_empty(tmp_path: Path) -> None:
    from simpersona.ingest.ingest import IngestError

    key_file = tmp_path / "key"
    key_file.write_text("")
    key_file.chmod(0o600)
    with pytest.raises(IngestError, match="empty"):  # an empty key hashes like plain SHA-256
        _no_env(key_file)
    key_file.write_text("s3cret")
    key_file.chmod(0o644)
    with pytest.raises(IngestError, match="chmod 600"):
        _no_env(key_file)
    key_file.chmod(0o600)
    assert _no_env(key_file) == b"s3cret"
    fresh = tmp_path / "new" / "key"
    first = _no_env(fresh)
    assert len(first) == 64 and (fresh.stat().st_mode & 0o777) == 0o600
    assert _no_env(fresh) == first


def _no_env(key_file: Path) -> bytes:
    from simpersona.ingest.ingest import HASH_KEY_ENV, load_hash_key

    with pytest.MonkeyPatch.context() as mp:
        mp.delenv(HASH_KEY_ENV, raising=False)
        return load_hash_key(None, key_file)


# ---- the storefront killed mid-load --------------------------------------------------------


def test_storefront_kill_9_loses_no_acknowledged_event(tmp_path: Path) -> None:
    """Events used to wait up to 10 s in memory: `kill -9` lost them. Now each is in the
    write-ahead log before its request is answered; the next sink on the lake writes what
    the killed process left. Four clients hammer the shop; the kill comes at a random moment."""
    import random
    import signal
    import threading

    import httpx

    from simpersona.store.events import LakeEventSink

    lake = tmp_path / "lake"
    (lake / "products" / "shop=s1").mkdir(parents=True)
    (lake / "products" / "shop=s1" / "p.csv").write_text(
        "shop_id,product_id,title,description,price,collection_ids\n"
        + "".join(f"s1,p{i},Mug {i},,{10 + i},mugs\n" for i in range(20))
    )
    port = _free_port()
    exe = Path(sys.executable).with_name("simpersona")
    proc = subprocess.Popen(
        [
            str(exe),
            "storefront",
            "--lake",
            str(lake),
            "--port",
            str(port),
            "--flush-seconds",
            "3600",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.head(base + "/", timeout=1).status_code == 200:  # a HEAD logs nothing
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline and proc.poll() is None, "storefront did not start"
            time.sleep(0.2)
        acknowledged = [0] * 4

        def client(i: int) -> None:
            with httpx.Client(base_url=base, timeout=5) as http:
                n = 0
                while True:
                    try:
                        r = http.get(f"/products/p{n % 20}")
                    except httpx.TransportError:
                        return
                    if r.status_code == 200:
                        acknowledged[i] += 1  # its product_view was logged
                    n += 1

        threads = [threading.Thread(target=client, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        time.sleep(random.uniform(1.0, 3.0))
        proc.send_signal(signal.SIGKILL)
        for t in threads:
            t.join(30)
    finally:
        proc.kill()
        proc.wait(30)

    def lake_rows() -> pl.DataFrame:
        files = list((lake / "events").glob("shop=s1/date=*/*.parquet"))
        return pl.concat([pl.read_parquet(f) for f in files]) if files else pl.DataFrame()

    # the server flushes by itself every 2,000 events (`max_buffer`): what it wrote before
    # the kill is in the lake already, the rest only in its write-ahead log
    flushed = lake_rows().height
    sink = LakeEventSink(lake, background=False)  # what the next storefront does at start
    sink.close()
    logged = lake_rows()
    acked = sum(acknowledged)
    assert acked > 50, acked
    # every answered request's event is there; at most the 4 in flight were logged unanswered
    assert acked <= logged.height <= acked + 4, (acked, logged.height)
    assert logged["event_id"].n_unique() == logged.height  # recovery duplicated nothing
    assert sink.recovered_events == logged.height - flushed
    assert not list((lake / "_wal").glob("*.jsonl"))  # the log is drained


# ---- kills during import and ingestion -----------------------------------------------------
def _kill_when(proc: subprocess.Popen, ready, extra_s: float, timeout: float = 120) -> bool:
    """SIGKILL `proc` `extra_s` seconds after `ready()` turns true; False if it ended first."""
    import signal

    deadline = time.monotonic() + timeout
    while not ready():
        if proc.poll() is not None:
            return False
        assert time.monotonic() < deadline, "never got going"
        time.sleep(0.05)
    time.sleep(extra_s)
    if proc.poll() is not None:
        return False
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)
    return True


def test_kill_9_during_import_then_reimport_gives_exact_counts(tmp_path: Path) -> None:
    import random

    from simpersona.lake import sweep_temp_files

    mapping = tmp_path / "m.yaml"
    mapping.write_text(HOSTILE_MAPPING)
    rows = [
        f"user{i % 997}@example.org,sku-{i % 50},{'cart' if i % 9 == 0 else 'view'},"
        f"2025-03-{1 + i % 20:02d}T{i % 24:02d}:{i % 60:02d}:00Z,Mug {i % 50},12.5,1"
        for i in range(120_000)
    ]
    src = tmp_path / "big.csv"
    src.write_text("\n".join([GENERIC_HEADER, *rows]) + "\n")
    lake = tmp_path / "lake"
    exe = str(Path(sys.executable).with_name("simpersona"))
    cmd = [exe, "import", "-f", "generic", "-m", str(mapping), str(src), "--lake", str(lake), "-q"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    killed = _kill_when(proc, lambda: True, random.uniform(0.5, 4.0))
    # whatever the moment, every file in the lake is whole (atomic writes) ...
    for f in lake.rglob("*.parquet"):
        pl.read_parquet(f)
    sweep_temp_files(lake, min_age_s=0)  # a killed writer's temporary files are recognised
    assert not [p for p in lake.rglob(".*") if p.is_file()]
    # ... and the re-import replaces: exact counts, no duplicates
    assert subprocess.run(cmd, capture_output=True).returncode == 0
    events = pl.concat([pl.read_parquet(f) for f in lake.glob("events/shop=*/date=*/*.parquet")])
    assert events.height == len(rows) and events["event_id"].n_unique() == len(set(rows))
    print(f"killed mid-import: {killed}")


def test_kill_9_during_ingest_then_next_ingest_completes_and_fails_the_stale_run(
    tmp_path: Path,
) -> None:
    import random

    import dagster as dg

    from simpersona.synth import GeneratorConfig, generate_lake

    generate_lake(
        tmp_path / "lake",
        GeneratorConfig(n_shops=2, n_buyers=1_500, n_days=8, seed=3),
        tmp_path / "truth.parquet",
        progress=False,
    )
    exe = str(Path(sys.executable).with_name("simpersona"))
    env = {**os.environ, "SIMPERSONA_DATA_DIR": str(tmp_path)}
    env.pop("DAGSTER_HOME", None)
    cmd = [exe, "ingest", "--data-dir", str(tmp_path)]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    events = tmp_path / "warehouse" / "raw_events"
    killed = _kill_when(proc, lambda: any(events.rglob("data.parquet")), random.uniform(0, 1.5))
    assert killed, "ingest finished before the kill"
    again = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stdout + again.stderr
    with dg.DagsterInstance.from_config(str(tmp_path / "dagster_home")) as instance:
        open_runs = instance.get_runs(filters=dg.RunsFilter(statuses=[dg.DagsterRunStatus.STARTED]))
        assert open_runs == []
        failed = instance.get_runs(filters=dg.RunsFilter(statuses=[dg.DagsterRunStatus.FAILURE]))
        assert len(failed) >= 1  # the run the kill interrupted, marked by the next command
    from simpersona.lake import Lake
    from simpersona.warehouse import Warehouse

    lake, wh = Lake.at(tmp_path / "lake"), Warehouse.at(tmp_path / "warehouse")
    lake_rows = sum(
        pl.read_parquet(f).height
        for s in lake.shops()
        for d in lake.dates(s)
        for f in lake.raw_files(lake.events_dir(s, d))
    )
    wh_rows = sum(wh.read_events(s).height for s in lake.shops())
    assert lake_rows == wh_rows + wh.read_quarantine("events").height


def test_no_raw_identity_leaves_ingestion_of_an_import(tmp_path: Path) -> None:
    """Import a log whose buyer ids are e-mail addresses and whose sessions embed them (as
    the storefront's `<buyer>-<ms>` do), with some rows rejected; ingest it through Dagster
    (metadata previews, MLflow); nothing outside the lake may hold a raw id."""
    import dagster as dg

    from dagster_project.run import run_ingestion
    from simpersona.ingest.importers import run_import
    from tests.conftest import resources_for
    from tests.privacy import files_containing

    mapping = tmp_path / "m.yaml"
    mapping.write_text(
        HOSTILE_MAPPING.replace("quantity: qty}", "quantity: qty, session_id: sess}")
    )
    header = GENERIC_HEADER + ",sess"
    rows = [
        f"person{i % 9}@secret.example,sku-{i % 5},view,{DAY}T10:{i % 60:02d}:00Z,Mug,1,1,"
        f"person{i % 9}@secret.example-{1_700_000_000_000 + i // 20}"
        for i in range(120)
    ]
    # a view without a product: rejected at ingestion, its raw row kept in the quarantine
    rows.append(f"person1@secret.example,,view,{DAY}T11:00:00Z,Mug,1,1,person1@secret.example-1")
    src = tmp_path / "log.csv"
    src.write_text("\n".join([header, *rows]) + "\n")
    run_import("generic", [src], tmp_path / "lake", mapping=mapping)
    with dg.instance_for_test() as instance:
        run_ingestion(tmp_path / "lake", instance=instance, resources=resources_for(tmp_path))
        assert files_containing(Path(instance.root_directory), "@secret.example") == []
    q = pl.read_parquet(next((tmp_path / "warehouse" / "quarantine" / "events").rglob("*.parquet")))
    assert q["reason"].to_list() == ["missing_field"]
    raw = json.loads(q["raw"][0])
    assert re.fullmatch(r"[0-9a-f]{16}", raw["buyer_id"]), raw  # the warehouse's keyed hash
    assert re.fullmatch(r"[0-9a-f]{16}", raw["session_id"]), raw
    assert (tmp_path / "warehouse" / "raw_events").exists()
    assert files_containing(tmp_path, "@secret.example", skip=("lake", "log.csv")) == []


def test_every_guarantee_names_a_test_that_exists() -> None:
    """docs/data-model.md, "Guarantees": each promise names the test that holds it."""
    repo = Path(__file__).resolve().parents[1]
    doc = (repo / "docs" / "data-model.md").read_text()
    section = doc.split("## Guarantees", 1)[1]
    named = set(re.findall(r"`(test_[a-z0-9_]+)`", section))
    assert len(named) >= 12
    defined = set()
    for f in (repo / "tests").glob("test_*.py"):
        defined |= set(re.findall(r"^def (test_[a-z0-9_]+)", f.read_text(), re.M))
    assert named <= defined, named - defined


def test_outputs_follow_the_umask_and_only_the_key_is_private(tmp_path, monkeypatch):
    """Atomic writers used to leave every file 0600 (mkstemp's mode), so cards.html could
    not be shared as is; outputs now get the umask's mode, and the hash key stays 0600."""
    import stat

    from simpersona.ingest.ingest import HASH_KEY_ENV, load_hash_key
    from simpersona.lake import atomic_write_parquet, atomic_write_text, shareable

    monkeypatch.delenv(HASH_KEY_ENV, raising=False)  # the key comes from its file here

    def mode(p: Path) -> int:
        return stat.S_IMODE(p.stat().st_mode)

    old = os.umask(0o022)
    try:
        text = atomic_write_text("<html></html>", tmp_path / "cards.html")
        table = atomic_write_parquet(pl.DataFrame({"a": [1]}), tmp_path / "t.parquet")
        folder = Path(tempfile.mkdtemp(dir=tmp_path, suffix=".tmp"))
        shareable(folder)
        key_file = tmp_path / "keys" / "buyer_hash.key"
        load_hash_key(None, key_file)
        assert (mode(text), mode(table), mode(folder), mode(key_file)) == (
            0o644, 0o644, 0o755, 0o600
        )  # fmt: skip
        os.umask(0o077)  # a team that wants everything private gets that too
        assert mode(atomic_write_text("x", tmp_path / "private.txt")) == 0o600
    finally:
        os.umask(old)
