"""Importers: real Puffy / REES46 files read in place from ../shared, plus small synthetic
files for the faults the real data does not have."""

from __future__ import annotations

import ast
import json
import os
from pathlib import Path

import polars as pl
import pytest

from simpersona.ingest.generic import read_generic
from simpersona.ingest.importers import (
    ImporterError,
    MappingError,
    import_command,
    lake_part,
    read_import,
    resolve_paths,
    run_import,
)
from simpersona.ingest.mapping import GenericMapping, bundled_mapping
from simpersona.ingest.shopify_pixels import match_item_name, read_shopify_pixels
from simpersona.ingest.urls import classify_page, clean_handle
from simpersona.schema import EVENT_TYPES, QUARANTINE_SCHEMA
from tests.conftest import require_public_data

REPO = Path(__file__).resolve().parents[1]
PUBLIC = Path(__file__).resolve().parents[2] / "shared" / "data" / "public"
PUFFY = PUBLIC / "puffy-dtc-web-events-2025"
REES = PUBLIC / "rees46-multicategory-store-sample"
REES_MAPPING = REPO / "examples" / "mappings" / "rees46.yaml"
TEMPLATE_MAPPING = REPO / "examples" / "mappings" / "user-item-event.yaml"
INGEST = REPO / "simpersona" / "ingest"
FORMAT_MODULES = {"shopify_pixels", "generic"}  # `rees46` is generic + its bundled mapping
ABOVE_FORMATS = {"registry", "run", "command", "importers"}


def realdata(fn):
    """Reads ../shared/data/public in place (marker `realdata`)."""
    return pytest.mark.realdata(fn)


# Per file: rows, page_viewed, cart, checkout_started, checkout_completed, email, empty client.
PUFFY_FILES = {
    "events_20250223.csv": (4070, 3754, 180, 64, 21, 51, 22),
    "events_20250224.csv": (3769, 3486, 151, 54, 26, 52, 55),
    "events_20250225.csv": (3470, 3211, 133, 77, 16, 33, 34),
    "events_20250226.csv": (3177, 2926, 157, 46, 15, 33, 46),
    "events_20250227.csv": (3393, 3142, 142, 62, 21, 26, 34),
    "events_20250228.csv": (3263, 2968, 178, 53, 19, 45, 27),
    "events_20250301.csv": (3489, 3152, 191, 72, 29, 45, 23),
    "events_20250302.csv": (4335, 3990, 221, 53, 22, 49, 685),
    "events_20250303.csv": (4042, 3705, 202, 60, 24, 51, 351),
    "events_20250304.csv": (3538, 3272, 154, 61, 20, 31, 300),
    "events_20250305.csv": (2881, 2648, 104, 81, 20, 28, 228),
    "events_20250306.csv": (3442, 3178, 145, 65, 23, 31, 285),
    "events_20250307.csv": (3251, 2983, 165, 53, 16, 34, 270),
    "events_20250308.csv": (3843, 3559, 184, 35, 22, 43, 548),
}
PAGE_TYPES = ("product_view", "collection_view", "page_view", "search")


@pytest.fixture(scope="module")
def puffy():
    require_public_data(PUBLIC)
    return read_shopify_pixels([PUFFY])


@pytest.fixture(scope="module")
def rees_oct():
    require_public_data(PUBLIC)
    return read_import("rees46", [REES / "2019-Oct_head.csv"])


@pytest.fixture(scope="module")
def rees_nov():
    require_public_data(PUBLIC)
    return read_import("rees46", [REES / "2019-Nov_head_noheader.csv"])


def _types(result) -> dict[str, int]:
    return dict(result.events["event_type"].value_counts().iter_rows())


# ---- Puffy (shopify-pixels) ----------------------------------------------------------------
@realdata
def test_puffy_counts_match_readme(puffy):
    c = puffy.counts
    assert c["source"] == {
        "page_viewed": 45_974,
        "product_added_to_cart": 2_307,
        "checkout_started": 836,
        "checkout_completed": 294,
        "email_filled_on_popup": 552,
    }
    types = _types(puffy)
    assert sum(types.get(t, 0) for t in PAGE_TYPES) == 45_974
    assert types["product_view"] == 20_614
    assert types["collection_view"] == 626
    assert types["page_view"] == 24_734
    assert "search" not in types  # no search URL in the data
    assert types["add_to_cart"] == 2_307
    assert types["checkout_started"] == 836
    assert types["checkout_completed"] == 294
    assert set(types) <= set(EVENT_TYPES)
    # email popups: counted as unmappable, kept in the importer quarantine
    assert c["rejected"] == {"unmappable_event_type": 552}
    popups = puffy.rejects.filter(pl.col("reason") == "unmappable_event_type")
    assert popups.height == 552
    assert all(json.loads(r)["event_name"] == "email_filled_on_popup" for r in popups["raw"])
    # every source row is accounted for
    assert puffy.events.height + puffy.rejects.height == 49_963
    assert c["totals"] == {"source_rows": 49_963, "events": 49_411, "rejected": 552}


@realdata
def test_puffy_per_file_counts(puffy):
    ev = puffy.events.group_by("source_file", "event_type").len()
    rj = puffy.rejects.group_by("source_file").len()
    for name, (rows, views, cart, started, completed, email, _) in PUFFY_FILES.items():
        got = dict(ev.filter(pl.col("source_file") == name).select("event_type", "len").iter_rows())
        n_rej = rj.filter(pl.col("source_file") == name)["len"].sum()
        assert sum(got.values()) + n_rej == rows, name
        assert sum(got.get(t, 0) for t in PAGE_TYPES) == views, name
        assert (got["add_to_cart"], got["checkout_started"]) == (cart, started), name
        assert got["checkout_completed"] == completed, name
        assert n_rej == email, name
    # source_row is 1-based and unique per file; together they cover every data row
    both = pl.concat(
        [
            puffy.events.select("source_file", "source_row"),
            puffy.rejects.select("source_file", "source_row"),
        ]
    )
    assert both.n_unique() == both.height == 49_963
    per_file = both.group_by("source_file").agg(
        pl.col("source_row").min().alias("lo"), pl.col("source_row").max().alias("hi"), pl.len()
    )
    for name, lo, hi, n in per_file.iter_rows():
        assert (lo, hi, n) == (1, PUFFY_FILES[name][0], PUFFY_FILES[name][0])


@realdata
def test_puffy_faults(puffy):
    ev = puffy.events
    # 2,908 empty client_id rows: passed through as null buyer_id (2 are email popups)
    empty_in_rejects = sum(1 for r in puffy.rejects["raw"] if not json.loads(r)["client_id"])
    assert ev["buyer_id"].null_count() == 2_906
    assert ev["buyer_id"].null_count() + empty_in_rejects == sum(v[6] for v in PUFFY_FILES.values())
    assert puffy.counts["pass_through"] == {"null_buyer_id": 2_906, "duplicate_event_id": 1}
    # the exact duplicate row keeps the same event_id as its twin (ingestion rejects it)
    twins = ev.filter(
        (pl.col("source_file") == "events_20250308.csv") & pl.col("source_row").is_in([3768, 3769])
    )
    assert twins.height == 2 and twins["event_id"].n_unique() == 1
    assert ev.height - ev["event_id"].n_unique() == 1
    assert ev["event_id"].str.starts_with("shopify-pixels-").all()
    # clientId header (20250227+) and missing referrer column (20250304+) are read
    late = ev.filter(pl.col("source_file") >= "events_20250304.csv")
    assert late["buyer_id"].null_count() < late.height
    # junk on handles is cut off, provenance and raw URL kept
    assert "puffy-lux-mattress" in ev["product_id"].to_list()
    assert not ev["product_id"].drop_nulls().str.contains(r"[&%\"?=]").any()
    assert (
        ev.filter(
            pl.col("url").str.contains("_kx=", literal=True)
            & (pl.col("event_type") == "product_view")
        ).height
        > 0
    )
    assert ev["session_id"].null_count() == ev.height
    assert ev["shop_id"].unique().to_list() == ["puffy"]


@realdata
def test_puffy_orders_and_catalog(puffy):
    ev = puffy.events
    done = ev.filter(pl.col("event_type") == "checkout_completed")
    assert done["order_value"].null_count() == 0
    assert done["order_value"].sum() == pytest.approx(294_461, abs=1)  # README: $294,461
    assert (done["currency"] == "USD").all()
    # 10 orders have one all-null line item and revenue 0: quantity unknown, value 0 as stated
    assert (
        done["quantity"].null_count() == puffy.counts["notes"]["orders_without_item_quantity"] == 10
    )
    assert (done["quantity"].drop_nulls() >= 1).all()
    # every referenced product / collection is in the catalog
    products = set(puffy.products["product_id"])
    assert set(ev["product_id"].drop_nulls()) <= products
    assert set(ev["collection_id"].drop_nulls()) <= set(puffy.collections["collection_id"])
    assert {"bed-frames", "bedding", "smart-bed-sets", "puffy-store"} <= set(
        puffy.collections["collection_id"]
    )
    titles = dict(puffy.products.select("product_id", "title").iter_rows())
    assert titles["puffy-lux-mattress"] == "Puffy Lux Mattress"
    assert titles["puffy-topper"] == "Puffy Deluxe Mattress Topper"  # real item name
    assert titles["puffy-mattress"] == "Puffy Cloud Mattress"
    assert titles["puffy-area-rug"] == "Puffy Area Rug"  # from the handle
    assert puffy.products["title"].null_count() == 0
    # cart products: page URL, else last product view, else unknown
    cp = puffy.counts["cart_product"]
    assert sum(cp.values()) == 2_307
    assert cp["from_page_url"] == 1_942
    carts = ev.filter(pl.col("event_type") == "add_to_cart")
    assert carts["product_id"].null_count() == cp["unknown"]


def test_match_item_names():
    handles = [
        "puffy-mattress",
        "puffy-topper",
        "puffy-blanket",
        "puffy-weighted-blanket",
        "puffy-lux-mattress",
    ]
    assert match_item_name("Puffy Lux Mattress", handles) == "puffy-lux-mattress"
    assert match_item_name("Puffy Deluxe Mattress Topper", handles) == "puffy-topper"
    assert match_item_name("Puffy Deluxe Weighted Blanket", handles) == "puffy-weighted-blanket"
    assert match_item_name("Puffy Cloud Mattress", handles) == "puffy-mattress"
    assert match_item_name("Parts - Adjustable DC Massage Motor 2nd Gen", handles) is None
    assert match_item_name(None, handles) is None


def test_classify_page():
    assert (
        clean_handle("puffy-lux-mattress&_kx=4BQHo.Kn3hWR&kind=back-pain") == "puffy-lux-mattress"
    )
    assert clean_handle("puffy-monarch-mattress%22") == "puffy-monarch-mattress"
    p = classify_page("https://puffy.com/products/puffy-monarch-mattress%22?kind=E95E4F")
    assert (p.kind, p.product_id) == ("product_view", "puffy-monarch-mattress")
    p = classify_page("https://shop.example/en-us/collections/beds/products/zen-frame?x=1")
    assert (p.kind, p.product_id, p.collection_id) == ("product_view", "zen-frame", "beds")
    p = classify_page("https://puffy.com/collections/bedding?utm_source=1")
    assert (p.kind, p.collection_id) == ("collection_view", "bedding")
    p = classify_page("https://shop.example/search?q=memory+foam")
    assert (p.kind, p.search_query) == ("search", "memory foam")
    assert classify_page("https://puffy.com/blogs/x").kind == "page_view"
    assert classify_page("https://puffy.com/javascript:void(0)").kind == "page_view"
    assert classify_page("").kind == "page_view"


PIXEL_HEADER = "clientId,page_url,timestamp,event_name,event_data,user_agent\n"


def _csv_quote(value: object) -> str:
    text = json.dumps(value)
    return '"' + text.replace('"', '""') + '"'


def test_shopify_synthetic_faults(tmp_path):
    order = {
        "transaction_id": "T1",
        "revenue": 300,
        "items": [{"item_name": "Zen Frame", "quantity": 2, "item_price": 150}],
    }
    rows = [
        "c1,https://s.example/collections/beds/products/zen-frame,2025-01-01T10:00:00.000Z,page_viewed,,ua",
        "c1,https://s.example/cart,2025-01-01T10:01:00.000Z,product_added_to_cart,,ua",
        "c1,https://s.example/x,not-a-time,page_viewed,,ua",
        "c1,https://s.example/x,2025-01-01T10:02:00.000Z,mystery_event,,ua",
        'c1,https://s.example/x,2025-01-01T10:02:00.000Z,email_filled_on_popup,"{}",ua',
        "c1,https://checkout.s.example/c/1/thank-you,2025-01-01T10:03:00.000Z,"
        f"checkout_completed,{_csv_quote(order)},ua",
        ",https://s.example/search?q=sofa,2025-01-02T00:00:00.000Z,page_viewed,,ua",
        "c2,https://s.example/,2025-01-02T00:00:01.000Z,page_viewed",  # truncated
    ]
    f = tmp_path / "pixels_a.csv"
    f.write_text(PIXEL_HEADER + "\n".join(rows) + "\n", encoding="utf-8")
    r = read_shopify_pixels([f], shop_id="My Shop")
    ev = r.events
    assert ev["shop_id"].unique().to_list() == ["My-Shop"]
    assert ev.height + r.rejects.height == len(rows)
    reasons = dict(r.rejects.select("source_row", "reason").iter_rows())
    assert reasons == {
        3: "unparseable_timestamp",
        4: "unknown_event_type",
        5: "unmappable_event_type",
        8: "malformed_row",
    }
    assert r.rejects.filter(pl.col("source_row") == 8)["field"].item() == "event_data"
    by_row = {row["source_row"]: row for row in ev.iter_rows(named=True)}
    assert by_row[1]["event_type"] == "product_view"
    assert (by_row[1]["product_id"], by_row[1]["collection_id"]) == ("zen-frame", "beds")
    assert by_row[2]["event_type"] == "add_to_cart" and by_row[2]["product_id"] == "zen-frame"
    assert by_row[6]["order_value"] == 300 and by_row[6]["quantity"] == 2
    assert by_row[6]["product_id"] == "zen-frame"  # the only line item names a known handle
    assert by_row[7]["event_type"] == "search" and by_row[7]["search_query"] == "sofa"
    assert by_row[7]["buyer_id"] is None
    prod = r.products.row(0, named=True)
    assert (prod["product_id"], prod["title"], prod["collection_ids"]) == (
        "zen-frame",
        "Zen Frame",
        ["beds"],
    )
    assert prod["price"] == 150
    assert r.collections["collection_id"].to_list() == ["beds"]
    assert r.rejects.schema == pl.Schema(QUARANTINE_SCHEMA)


# ---- REES46 --------------------------------------------------------------------------------
@realdata
def test_rees46_oct(rees_oct):
    assert _types(rees_oct) == {
        "product_view": 17_055,
        "add_to_cart": 165,
        "checkout_completed": 214,
    }
    assert rees_oct.counts["source"] == {
        "view": 17_055,
        "cart": 165,
        "purchase": 214,
        "(malformed)": 1,
    }
    rj = rees_oct.rejects
    assert rj.height == 1
    bad = rj.row(0, named=True)
    assert (bad["reason"], bad["source_row"], bad["field"]) == (
        "malformed_row",
        17_435,
        "user_session",
    )
    assert json.loads(bad["raw"])["user_id"] == "52040330"  # the cut-off value is kept
    assert rees_oct.events.height + rj.height == 17_435
    ev = rees_oct.events
    assert ev["session_id"].null_count() == 0 and ev["buyer_id"].null_count() == 0
    buys = ev.filter(pl.col("event_type") == "checkout_completed")
    assert (buys["order_value"] == buys["price"]).all() and (buys["quantity"] == 1).all()
    assert set(ev["product_id"]) <= set(rees_oct.products["product_id"])
    assert rees_oct.products.height == 6_493
    cols = set(rees_oct.collections["collection_id"])
    assert {"electronics", "electronics.smartphone", "appliances.kitchen.mixer"} <= cols
    for ids in rees_oct.products["collection_ids"]:
        assert set(ids) <= cols
    p = rees_oct.products.filter(pl.col("product_id") == "1004237").row(0, named=True)
    assert p["title"] == "Apple Smartphone"
    assert p["description"] == "Electronics > Smartphone. Brand: Apple"
    assert p["collection_ids"] == ["electronics", "electronics.smartphone"]
    titles = dict(rees_oct.collections.select("collection_id", "title").iter_rows())
    assert titles["electronics.smartphone"] == "Electronics > Smartphone"


@realdata
def test_rees46_nov_without_header(rees_nov):
    assert _types(rees_nov) == {"product_view": 678, "add_to_cart": 3, "checkout_completed": 2}
    assert rees_nov.rejects.height == 0
    assert rees_nov.events.height == 683
    assert rees_nov.events["source_row"].min() == 1  # the first line is data, not a header
    assert rees_nov.events["ts"].min().isoformat() == "2019-11-01T00:00:00+00:00"


def test_rees46_is_the_generic_importer_with_the_bundled_mapping():
    """`--format rees46` reads with the mapping shipped in the package; the documented
    example for `--format generic` is the same file."""
    bundled = bundled_mapping("rees46")
    assert bundled.is_file() and bundled.parent.name == "mappings"
    assert bundled.read_bytes() == REES_MAPPING.read_bytes()
    m = GenericMapping.load(bundled)
    assert m.shop_id == "rees46" and m.source == str(bundled)


@realdata
def test_generic_mapping_equals_rees46_importer():
    """Row for row: the same events, rejects, catalog and counts; only the event ids'
    prefix and the format's name differ."""
    dedicated = read_import("rees46", [REES])
    generic = read_import("generic", [REES], mapping=REES_MAPPING)
    assert (dedicated.format, generic.format) == ("rees46", "generic")
    assert generic.counts == dedicated.counts
    assert dedicated.events["event_id"].str.starts_with("rees46-").all()
    assert generic.events["event_id"].str.starts_with("generic-").all()
    assert generic.events.drop("event_id").equals(dedicated.events.drop("event_id"))
    suffixes = [r.events["event_id"].str.split("-").list.last() for r in (generic, dedicated)]
    assert suffixes[0].equals(suffixes[1])
    assert generic.rejects.equals(dedicated.rejects)
    assert generic.products.equals(dedicated.products)
    assert generic.collections.equals(dedicated.collections)


def test_catalog_templates_take_the_first_whose_columns_all_have_a_value(tmp_path):
    """The bundled REES46 mapping's naming rules: brand + last category level, brand only,
    category only, neither (docs/importers.md, "rees46")."""
    f = tmp_path / "rees.csv"
    f.write_text(
        "event_time,event_type,product_id,category_id,category_code,brand,price,user_id,"
        "user_session\n"
        "2019-10-01 00:00:04 UTC,view,1,9,appliances.kitchen.sewing_machine,janome,5,u,s\n"
        "2019-10-01 00:00:05 UTC,view,2,9,,shiseido,5,u,s\n"
        "2019-10-01 00:00:06 UTC,view,3,9,kids.toys,,5,u,s\n"
        "2019-10-01 00:00:07 UTC,purchase,4,9,,,5,u,s\n",
        encoding="utf-8",
    )
    r = read_import("rees46", [f])
    got = {p: (t, d) for p, t, d in r.products.select("product_id", "title", "description").rows()}
    assert got == {
        "1": ("Janome Sewing Machine", "Appliances > Kitchen > Sewing Machine. Brand: Janome"),
        "2": ("Shiseido Product", "Brand: Shiseido"),
        "3": ("Toys", "Kids > Toys"),
        "4": ("Product 4", None),
    }
    assert r.counts["catalog"] == {
        "products": 4,
        "collections": 5,
        "products_without_category_code": 2,
    }
    assert r.events["event_id"].str.starts_with("rees46-").all()


# ---- generic (synthetic) -------------------------------------------------------------------
def test_generic_template_csv_and_parquet(tmp_path):
    csv_text = (
        "user,item,action,time,item_name,amount\n"
        "u1,sku-1,view,2024-05-01T10:00:00Z,Blue Mug,\n"
        "u1,sku-1,buy,2024-05-01T10:03:00Z,Blue Mug,12.50\n"
        "u1,sku-1,buy,2024-05-01T10:04:00Z,Blue Mug,twelve\n"
        "u2,sku-2,newsletter,2024-05-01T11:00:00Z,,\n"
        "u2,sku-2,wishlist,2024-05-01T11:00:00Z,,\n"
        ",sku-2,view,2024-05-01T12:00:00Z,Red Mug,\n"
        "u3,sku-3,view,,Green Mug,\n"
    )
    f = tmp_path / "shop_log.csv"
    f.write_text(csv_text, encoding="utf-8")
    r = read_generic([f], TEMPLATE_MAPPING)
    reasons = dict(r.rejects.select("source_row", "reason").iter_rows())
    assert reasons == {
        3: "unparseable_value",
        4: "unmappable_event_type",
        5: "unknown_event_type",
        7: "unparseable_timestamp",
    }
    assert r.rejects.filter(pl.col("source_row") == 3)["field"].item() == "amount"
    ev = r.events
    assert ev.height == 3 and ev["buyer_id"].null_count() == 1  # passed through
    buy = ev.filter(pl.col("event_type") == "checkout_completed").row(0, named=True)
    assert (buy["order_value"], buy["quantity"], buy["currency"]) == (12.5, 1, "EUR")
    assert dict(r.products.select("product_id", "title").iter_rows()) == {
        "sku-1": "Blue Mug",
        "sku-2": "Red Mug",
    }
    # the same rows as Parquet give the same events
    pq = tmp_path / "shop_log_pq.parquet"
    pl.read_csv(f, infer_schema=False).write_parquet(pq)
    r2 = read_generic([pq], TEMPLATE_MAPPING, shop_id="other")
    assert r2.events["shop_id"].unique().to_list() == ["other"]
    cols = ["source_row", "buyer_id", "ts", "event_type", "product_id", "order_value"]
    assert r2.events.select(cols).equals(ev.select(cols))
    assert r2.rejects.select("source_row", "reason").equals(
        r.rejects.select("source_row", "reason")
    )


def test_generic_shop_column_and_epoch(tmp_path):
    f = tmp_path / "multi.csv"
    f.write_text(
        "store;uid;what;when\nShop A;1;product_view;1714557600\n;2;product_view;1714557601\n"
        "b/c;3;search;1714557602\n",
        encoding="utf-8",
    )
    m = GenericMapping.from_dict(
        {
            "shop_id_column": "store",
            "delimiter": ";",
            "fields": {"buyer_id": "uid", "event_type": "what", "ts": "when"},
            "timestamp_format": "epoch_s",
        }
    )
    r = read_generic([f], m)
    assert r.events["shop_id"].to_list() == ["Shop-A", "b-c"]
    assert r.events["ts"][0].isoformat() == "2024-05-01T10:00:00+00:00"
    assert r.rejects["reason"].to_list() == ["missing_shop_id"]


# ---- lake writes and re-import -------------------------------------------------------------
def _lake_state(root: Path) -> tuple[list[str], int]:
    files = sorted(str(p.relative_to(root)) for p in root.rglob("*.parquet"))
    rows = sum(pl.read_parquet(root / f).height for f in files if f.startswith("events/"))
    return files, rows


@realdata
def test_reimport_replaces(tmp_path):
    lake = tmp_path / "lake"
    puffy_files = [PUFFY / "events_20250303.csv", PUFFY / "events_20250304.csv"]
    r1 = run_import("shopify-pixels", puffy_files, lake, None, None)
    run_import("rees46", [REES], lake, None, None)
    first = _lake_state(lake)
    run_import("shopify-pixels", puffy_files, lake, None, None)
    run_import("rees46", [REES], lake, None, None)
    assert _lake_state(lake) == first
    files, rows = first
    assert rows == r1.events.height + 17_434 + 683
    rees_part = lake_part(REES / "2019-Oct_head.csv")
    puffy_part = lake_part(puffy_files[1])
    assert rees_part.startswith("2019-Oct_head-") and puffy_part.startswith("events_20250304-")
    assert f"_quarantine/import/rees46/{rees_part}.parquet" in files
    assert f"_quarantine/import/shopify-pixels/{puffy_part}.parquet" in files
    assert "products/shop=puffy/shopify-pixels.parquet" in files
    assert "collections/shop=rees46/rees46.parquet" in files
    q = pl.read_parquet(lake / f"_quarantine/import/rees46/{rees_part}.parquet")
    assert q.schema == pl.Schema(QUARANTINE_SCHEMA) and q.height == 1
    ev = pl.read_parquet(lake / f"events/shop=puffy/date=2025-03-04/{puffy_part}.parquet")
    assert {"source_file", "source_row"} <= set(ev.columns)
    assert ev["source_file"].unique().to_list() == ["events_20250304.csv"]


@realdata
def test_import_one_file_at_a_time_keeps_catalog(tmp_path):
    lake = tmp_path / "lake"
    a = run_import("shopify-pixels", [PUFFY / "events_20250223.csv"], lake, None, None)
    b = run_import("shopify-pixels", [PUFFY / "events_20250224.csv"], lake, None, None)
    catalog = pl.read_parquet(lake / "products/shop=puffy/shopify-pixels.parquet")
    needed = set(a.events["product_id"].drop_nulls()) | set(b.events["product_id"].drop_nulls())
    assert needed <= set(catalog["product_id"])
    assert catalog["product_id"].is_unique().all()


# ---- errors --------------------------------------------------------------------------------
def test_missing_and_unreadable_files(tmp_path):
    with pytest.raises(ImporterError, match="nope.csv"):
        resolve_paths([tmp_path / "nope.csv"])
    binary = tmp_path / "events_bin.csv"
    binary.write_bytes(b"PAR1\x00\x01\x02")
    with pytest.raises(ImporterError, match="events_bin.csv.*Parquet"):
        read_shopify_pixels([binary])
    latin = tmp_path / "latin.csv"
    latin.write_bytes(
        PIXEL_HEADER.encode()
        + "c1,https://x/caf\xe9,2025-01-01T00:00:00Z,page_viewed,,ua\n".encode("latin-1")
    )
    with pytest.raises(ImporterError, match="latin.csv.*UTF-8"):
        read_shopify_pixels([latin])
    nocol = tmp_path / "nocol.csv"
    nocol.write_text("client_id,page_url,event_name\nc,u,page_viewed\n", encoding="utf-8")
    with pytest.raises(ImporterError, match="nocol.csv.*timestamp"):
        read_shopify_pixels([nocol])
    with pytest.raises(ImporterError, match="unknown format 'magento'"):
        run_import("magento", [nocol], tmp_path / "lake", None, None)
    if os.geteuid() != 0:
        locked = tmp_path / "locked.csv"
        locked.write_text(PIXEL_HEADER, encoding="utf-8")
        locked.chmod(0)
        with pytest.raises(ImporterError, match="locked.csv"):
            read_shopify_pixels([locked])


def test_gzip_cut_inside_its_first_block_names_the_file(tmp_path):
    """A .csv.gz that ends within the first 8 KiB fails the first read with EOFError, which
    has no strerror: an ImporterError naming the file, not an AttributeError."""
    import gzip

    packed = gzip.compress(
        (PIXEL_HEADER + "c1,https://x/,2025-01-01T00:00:00Z,page_viewed,,ua\n").encode()
    )
    cut = tmp_path / "cut.csv.gz"
    cut.write_bytes(packed[: len(packed) // 2])
    with pytest.raises(ImporterError, match="cut.csv.gz.*cannot read file"):
        read_shopify_pixels([cut])


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ("fields: [oops", None),  # not YAML
        ("fields: {ts: t, event_type: e}\nshop_id: s\n", "fields.buyer_id"),
        (
            "fields: {ts: t, event_type: e, buyer_id: u}\nevent_types: {v: viewed}\n",
            "event_types.v",
        ),
        ("fields: {ts: t, event_type: e, buyer_id: u, colour: c}\n", "fields.colour"),
        ("fields: {ts: t, event_type: e, buyer_id: u}\nshop_idd: x\n", "shop_idd"),
        ("fields: {ts: t, event_type: e, buyer_id: u}\ntimezone: Mars/Base\n", "timezone"),
        ("fields: {ts: t, event_type: e, buyer_id: 7}\n", "fields.buyer_id"),
        ("fields: {ts: t, event_type: e, buyer_id: u}\nevent_types: {yes: x}\n", "event_types.True"),
        ("fields: {ts: t, event_type: e, buyer_id: u}\nconstants: {quantity: 1.5}\n",
         "constants.quantity"),
        ("fields: {ts: t, event_type: e}\nconstants: {buyer_id: b, ts: 1}\n", "constants.ts"),
        ("fields: {ts: t, event_type: e, buyer_id: u}\nby_event_type: {search: {colour: 1}}\n",
         "by_event_type.search.colour"),
        ("fields: {ts: t, event_type: e, buyer_id: u}\nby_event_type: {search: {fields: {ts: t}}}\n",
         "by_event_type.search.fields.ts"),
        ("fields: {ts: t, event_type: e, buyer_id: u}\ncatalog: {readable: 'yes'}\n",
         "catalog.readable"),
        ("fields: {ts: t, event_type: e, buyer_id: u}\ncatalog: {title_format: '{brand:upper}'}\n",
         "catalog.title_format"),
        ("fields: {ts: t, event_type: e, buyer_id: u}\ncatalog: {title: a, title_format: '{a}'}\n",
         "catalog.title_format"),
        ("fields: {ts: t, event_type: e, buyer_id: u}\nheader: false\n", "columns"),
    ],
)  # fmt: skip
def test_bad_mapping_names_file_and_field(tmp_path, text, field):
    path = tmp_path / "bad_mapping.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(MappingError) as err:
        GenericMapping.load(path)
    assert "bad_mapping.yaml" in str(err.value)
    if field:
        assert err.value.field == field and field in str(err.value)
    else:
        assert "line 1" in str(err.value)


def test_mapping_column_missing_in_file(tmp_path):
    f = tmp_path / "log.csv"
    f.write_text("user,item,action,time\nu,i,view,2024-01-01T00:00:00Z\n", encoding="utf-8")
    with pytest.raises(ImporterError, match=r"log.csv.*is not in the file"):
        read_generic([f], TEMPLATE_MAPPING)
    m = GenericMapping.from_dict(
        {"fields": {"ts": "time", "event_type": "action", "buyer_id": "user"}}
    )
    with pytest.raises(MappingError, match="no shop"):
        read_generic([f], m)


def test_cli_errors_and_summary(tmp_path):
    import typer
    from typer.testing import CliRunner

    app = typer.Typer()
    app.command("import")(import_command)
    app.command("noop")(lambda: None)
    runner = CliRunner()
    lake = tmp_path / "lake"
    bad = tmp_path / "broken_mapping.yaml"
    bad.write_text("fields: {ts: t}\n", encoding="utf-8")
    src = tmp_path / "log.csv"
    src.write_text("user,item,action,time,item_name,amount\nu,i,view,2024-01-01T00:00:00Z,Mug,\n")

    res = runner.invoke(
        app, ["import", "--format", "generic", "--mapping", str(bad), str(src), "--lake", str(lake)]
    )
    assert res.exit_code != 0
    assert "broken_mapping.yaml" in res.output and "fields.event_type" in res.output

    res = runner.invoke(
        app,
        [
            "import",
            "--format",
            "shopify-pixels",
            str(tmp_path / "missing.csv"),
            "--lake",
            str(lake),
        ],
    )
    assert res.exit_code != 0 and "missing.csv" in res.output

    res = runner.invoke(app, ["import", "-f", "nope", str(src), "--lake", str(lake)])
    assert res.exit_code != 0 and "unknown format" in res.output

    res = runner.invoke(
        app, ["import", "-f", "generic", "-m", str(TEMPLATE_MAPPING), str(src), "--lake", str(lake)]
    )
    assert res.exit_code == 0, res.output
    assert "log.csv" in res.output and "product_view" in res.output
    assert (lake / f"events/shop=my-shop/date=2024-01-01/{lake_part(src)}.parquet").is_file()


def test_commands_share_the_data_dir_and_quarantine_shows_import_rejects(tmp_path):
    """$SIMPERSONA_DATA_DIR used to be ignored by the CLI (it read ./data), and `simpersona
    quarantine` showed only ingestion's rejects ("empty" after 2,357 rows rejected at import)."""
    from typer.testing import CliRunner

    from simpersona.cli import app

    data = tmp_path / "team-data"
    src = tmp_path / "log.csv"
    src.write_text(
        "user,item,action,time,item_name,amount\n"
        "u,i,view,2024-01-01T00:00:00Z,Mug,\n"
        "u,i,view,not a time,Mug,\n",
        encoding="utf-8",
    )
    runner = CliRunner(env={"SIMPERSONA_DATA_DIR": str(data)})
    res = runner.invoke(app, ["import", "-f", "generic", "-m", str(TEMPLATE_MAPPING), str(src)])
    assert res.exit_code == 0, res.output
    assert (data / "lake" / "events" / "shop=my-shop").is_dir()
    assert not (tmp_path / "data").exists() and not Path("data/lake/events/shop=my-shop").exists()
    res = runner.invoke(app, ["partitions"])
    assert res.exit_code == 0 and "my-shop" in res.output, res.output
    res = runner.invoke(app, ["quarantine"])
    assert res.exit_code == 0, res.output
    assert "import" in res.output and "unparseable" in res.output and "log.csv" in res.output
    # --data-dir wins over the variable, the same way for every command
    res = runner.invoke(app, ["partitions", "--data-dir", str(tmp_path / "elsewhere")])
    assert res.exit_code == 1 and "no shops" in res.output


# ---- the package's shape -------------------------------------------------------------------
def _ingest_imports() -> dict[str, set[str]]:
    """module -> the simpersona.ingest modules it imports (anywhere, lazy imports too)."""
    modules = {f.stem for f in INGEST.glob("*.py")}
    graph = {}
    for f in INGEST.glob("*.py"):
        deps = set()
        for node in ast.walk(ast.parse(f.read_text(encoding="utf-8"))):
            names = []
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            deps |= {n.split(".")[2] for n in names if n.startswith("simpersona.ingest.")}
        graph[f.stem] = (deps & modules) - {f.stem}
    return graph


def _reach(graph: dict[str, set[str]], module: str) -> set[str]:
    seen: set[str] = set()
    todo = [module]
    while todo:
        for dep in graph[todo.pop()] - seen:
            seen.add(dep)
            todo.append(dep)
    return seen


def test_ingest_modules_import_without_cycles_and_formats_only_the_common_parts():
    graph = _ingest_imports()
    for module in graph:
        assert module not in _reach(graph, module), f"{module} imports itself through a cycle"
    for fmt in FORMAT_MODULES:
        reach = _reach(graph, fmt)
        assert not reach & (FORMAT_MODULES | ABOVE_FORMATS), (fmt, reach)
    assert _reach(graph, "registry") >= FORMAT_MODULES
    for f in INGEST.glob("*.py"):
        n = len(f.read_text(encoding="utf-8").splitlines())
        assert n < 500, f"{f.name} has {n} lines"
