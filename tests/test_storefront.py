"""The storefront: pages, canonical events, carts and sessions, search, sinks, screenshots."""

from __future__ import annotations

import re
import shutil
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import polars as pl
import pytest
from fastapi.testclient import TestClient
from markupsafe import escape

from simpersona.agent.browser import CHROMIUM_ARGS, CHROMIUM_PATH
from simpersona.ingest.validate import validate_events
from simpersona.lake import Lake
from simpersona.schema import EVENT_TYPES, EVENTS_SCHEMA
from simpersona.store import (
    LakeEventSink,
    MemoryEventSink,
    StoreCatalog,
    create_app,
    events_frame,
    run_in_thread,
    serve,
)
from simpersona.store.app import CSRF_FIELD
from simpersona.store.identity import buyer_cookie, csrf_token, read_buyer_cookie
from simpersona.store.search import SearchIndex, tokenize
from simpersona.synth import GeneratorConfig, generate_lake
from simpersona.warehouse import Warehouse
from tests.conftest import require_chromium

REPO = Path(__file__).resolve().parents[1]
SCREENSHOTS = REPO / "tests" / "artifacts" / "screenshots"
SHOP = "shop-000"
INFO = {
    "email": "ann@example.com",
    "first_name": "Ann",
    "last_name": "Lee",
    "address1": "1 Main Street",
    "city": "Springfield",
    "postal_code": "12345",
    "country": "US",
    "shipping": "standard",
}
CARD = {"card_number": "4242 4242 4242 4242", "card_expiry": "12 / 34", "card_cvc": "123"}


@pytest.fixture(scope="module")
def lake_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("store") / "lake"
    generate_lake(
        root,
        GeneratorConfig(n_shops=2, n_buyers=500),
        ground_truth_path=root.parent / "truth.parquet",
        progress=False,
    )
    return root


@pytest.fixture(scope="module")
def catalog(lake_root) -> StoreCatalog:
    return StoreCatalog.from_lake(lake_root, SHOP)


@pytest.fixture
def sink() -> MemoryEventSink:
    return MemoryEventSink()


def shop_root(url: str) -> str:
    """The home page of the shop a storefront path belongs to."""
    m = re.match(r"^(?:https?://[^/]+)?(/s/[^/]+)", url)
    return f"{m.group(1)}/" if m else "/"


def with_csrf(http: httpx.Client, url: str, data: dict | None) -> dict:
    """`data` plus the CSRF token the shop's forms carry for this client's buyer (a first
    page view issues the buyer cookie when there is none yet)."""
    if "sp_buyer" not in http.cookies:
        http.head(shop_root(url))  # a HEAD logs no event
    buyer = read_buyer_cookie(http.cookies.get("sp_buyer"))
    assert buyer, "no signed buyer cookie"
    return {**(data or {}), CSRF_FIELD: csrf_token(buyer)}


class ShopClient(TestClient):
    """A TestClient that posts forms the way the shop's pages do: with the buyer's CSRF
    token (a plain `TestClient.post` is a cross-site post, and gets 403)."""

    def post(self, url, data=None, **kwargs):  # type: ignore[override]
        return super().post(url, data=with_csrf(self, str(url), data), **kwargs)


def form_post(http: httpx.Client, url: str, data: dict | None = None) -> httpx.Response:
    return http.post(url, data=with_csrf(http, url, data))


@pytest.fixture
def client(catalog, sink) -> TestClient:
    return ShopClient(create_app(catalog, sink), raise_server_exceptions=False)


def esc(text: str) -> str:
    """`text` as the templates write it into HTML."""
    return str(escape(text))


def a_product(cat: StoreCatalog, i: int = 0):
    return list(cat.products.values())[i]


def token_of(url: str) -> str:
    m = re.search(r"/checkouts/c/(\d+)", url)
    assert m, url
    return m.group(1)


def buy(client: TestClient, base: str, pid: str, qty: int = 1) -> httpx.Response:
    """Add to cart, check out, fill the forms and pay; returns the thank-you response."""
    r = client.post(f"{base}/cart/add", data={"product_id": pid, "quantity": str(qty)})
    assert r.status_code == 200
    r = client.post(f"{base}/checkout")
    token = token_of(str(r.url))
    r = client.post(f"{base}/checkouts/c/{token}", data=INFO)
    assert str(r.url).endswith("/payment"), r.text[:500]
    return client.post(f"{base}/checkouts/c/{token}/payment", data=CARD)


# ---- catalog --------------------------------------------------------------------------------
def test_catalog_from_lake_and_warehouse(lake_root, catalog, tmp_path):
    products = pl.read_parquet(next((lake_root / "products" / f"shop={SHOP}").glob("*.parquet")))
    colls = pl.read_parquet(next((lake_root / "collections" / f"shop={SHOP}").glob("*.parquet")))
    assert list(catalog.products) == products["product_id"].to_list()
    assert set(catalog.collections) == set(colls["collection_id"].to_list())
    assert catalog.currency == "USD"  # from the shop's events
    p = a_product(catalog)
    assert p.collection_ids and all(
        p.product_id in catalog.collections[c].product_ids for c in p.collection_ids
    )
    wh = Warehouse.at(tmp_path / "wh")
    wh.write_partition("products", products, SHOP)
    wh.write_partition("collections", colls, SHOP)
    from_wh = StoreCatalog.from_warehouse(wh, SHOP, currency="EUR")
    assert from_wh.products == catalog.products
    assert from_wh.collections == catalog.collections
    assert from_wh.currency == "EUR"
    with pytest.raises(FileNotFoundError):
        StoreCatalog.from_lake(lake_root, "no-such-shop")


def test_catalog_from_lake_csv(tmp_path):
    folder = tmp_path / "lake" / "products" / "shop=csv"
    folder.mkdir(parents=True)
    (folder / "cat.csv").write_text(
        "shop_id,product_id,title,description,price,collection_ids\n"
        "csv,a1,Blue Mug,A mug,12.5,mugs|kitchen\n"
        "csv,a2,,untitled,3,mugs\n"  # no title: rejected by the ingestion rules
        "csv,a3,Red Mug,,-1,mugs\n"  # negative price: rejected
    )
    cat = StoreCatalog.from_lake(tmp_path / "lake", "csv")
    assert list(cat.products) == ["a1"]
    assert cat.products["a1"].price == 12.5
    assert cat.collections["mugs"].product_ids == ("a1",)
    assert cat.collections["kitchen"].title == "Kitchen"  # named by products only


# ---- pages ----------------------------------------------------------------------------------
def test_every_page_renders(client, catalog, sink):
    p = a_product(catalog)
    coll = max(catalog.collections.values(), key=lambda c: len(c.product_ids))
    pages = {
        "/": "featured-grid",
        f"/collections/{coll.collection_id}": "product-grid",
        f"/collections/{coll.collection_id}?page=2&sort=price-asc": "pagination-prev",
        "/collections/all?sort=title-asc": "product-grid",
        "/search?q=" + p.title.split()[-1]: "search-results",
        "/search": "search-page-input",
        "/search?q=zzzqqq": "search-empty",
        f"/products/{p.product_id}": "add-to-cart-button",
        "/cart": "cart-empty",
        "/pages/about": "page-title",
        f"/s/{SHOP}/": "featured-grid",
        f"/s/{SHOP}/products/{p.product_id}": "add-to-cart-button",
    }
    for path, element_id in pages.items():
        r = client.get(path)
        assert r.status_code == 200, path
        assert f'id="{element_id}"' in r.text, (path, element_id)
        assert 'id="search-input"' in r.text and 'id="cart-count"' in r.text
    # the prefix routes link under the prefix, the root routes at the root
    assert f'href="/s/{SHOP}/cart"' in client.get(f"/s/{SHOP}/").text
    assert 'href="/cart"' in client.get("/").text
    # cart with a line, the two checkout steps, the confirmation
    client.post("/cart/add", data={"product_id": p.product_id, "quantity": "2"})
    r = client.get("/cart")
    assert f'id="cart-qty-{p.product_id}"' in r.text and 'id="checkout-button"' in r.text
    r = client.post("/checkout")
    assert r.status_code == 200 and 'id="continue-to-payment"' in r.text
    token = token_of(str(r.url))
    r = client.post(f"/checkouts/c/{token}", data=INFO)
    assert r.status_code == 200 and 'id="place-order-button"' in r.text
    r = client.post(f"/checkouts/c/{token}/payment", data=CARD)
    assert r.status_code == 200 and 'id="order-confirmation"' in r.text
    assert r.url.path == f"/checkouts/c/{token}/thank-you"
    assert 'id="cart-count" data-testid="cart-count">0<' in r.text
    # styles and the favicon
    assert client.get("/static/store.css").status_code == 200
    assert client.get("/favicon.ico").status_code == 204
    types = [e["event_type"] for e in sink.events]
    assert set(types) <= set(EVENT_TYPES)


def test_errors_are_pages_not_crashes(client, catalog, sink, lake_root):
    p = a_product(catalog)
    for path in ("/products/nope", "/collections/nope", "/pages/nope", "/s/nope/", "/x/y"):
        r = client.get(path)
        assert r.status_code == 404, path
        assert 'id="error-page"' in r.text and "text/html" in r.headers["content-type"]
    assert sink.events == []  # 404s log nothing
    r = client.post("/cart/add", data={"product_id": "nope", "quantity": "1"})
    assert r.status_code == 404
    for bad in ("abc", "0", "-2", "100", "1.5", ""):
        r = client.post("/cart/add", data={"product_id": p.product_id, "quantity": bad})
        assert r.status_code == 422, bad
        assert 'id="form-error"' in r.text and "Quantity must be" in r.text
        assert 'id="add-to-cart-button"' in r.text
    assert sink.events == []  # form errors log nothing either
    client.post("/cart/add", data={"product_id": p.product_id, "quantity": "99"})
    r = client.post("/cart/add", data={"product_id": p.product_id, "quantity": "1"})
    assert r.status_code == 422 and "at most 99" in r.text
    r = client.post("/cart/update", data={"product_id": p.product_id, "quantity": "x"})
    assert r.status_code == 422 and 'id="form-error"' in r.text
    # the crash route exists only when asked for
    assert client.get("/__debug/crash").status_code == 404
    debug = ShopClient(
        create_app(StoreCatalog.from_lake(lake_root, SHOP), MemoryEventSink(), debug_routes=True),
        raise_server_exceptions=False,
    )
    r = debug.get("/__debug/crash")
    assert r.status_code == 500 and 'id="error-page"' in r.text
    assert debug.get(f"/s/{SHOP}/__debug/crash").status_code == 500
    assert debug.get("/").status_code == 200  # still serving


def test_checkout_rejects_non_test_cards(client, catalog, sink):
    p = a_product(catalog)
    client.post("/cart/add", data={"product_id": p.product_id, "quantity": "1"})
    token = token_of(str(client.post("/checkout").url))
    r = client.post(f"/checkouts/c/{token}", data={**INFO, "email": "not-an-email", "city": ""})
    assert r.status_code == 422
    assert 'id="error-email"' in r.text and 'id="error-city"' in r.text
    client.post(f"/checkouts/c/{token}", data=INFO)
    cases = {
        "4111 1111 1111 1111": "only test cards",
        "4000 0000 0000 0002": "declined",
    }
    for number, message in cases.items():
        r = client.post(f"/checkouts/c/{token}/payment", data={**CARD, "card_number": number})
        assert r.status_code == 422 and message in r.text
    r = client.post(f"/checkouts/c/{token}/payment", data={**CARD, "card_expiry": "01/20"})
    assert r.status_code == 422 and "expired" in r.text
    r = client.post(f"/checkouts/c/{token}/payment", data={**CARD, "card_cvc": "1"})
    assert r.status_code == 422 and 'id="error-card-cvc"' in r.text
    assert "checkout_completed" not in [e["event_type"] for e in sink.events]
    r = client.post(f"/checkouts/c/{token}/payment", data=CARD)
    assert r.status_code == 200 and 'id="order-number"' in r.text
    # paying twice does not order twice
    r = client.post(f"/checkouts/c/{token}/payment", data=CARD)
    assert [e["event_type"] for e in sink.events].count("checkout_completed") == 1
    # another buyer cannot see the checkout
    other = TestClient(client.app)
    assert other.get(f"/checkouts/c/{token}/thank-you").status_code == 404


# ---- events ---------------------------------------------------------------------------------
def test_scripted_flow_logs_canonical_events(catalog, tmp_path):
    """home -> search -> product -> add to cart -> cart -> checkout -> pay, over a real
    loopback server; the flushed lake files validate with zero rejects."""
    events_lake = tmp_path / "events-lake"
    sink = LakeEventSink(events_lake, flush_interval_s=3600)
    app = create_app(catalog, sink)
    p1, p2 = a_product(catalog, 3), a_product(catalog, 7)
    base_url, stop = run_in_thread(app)
    try:
        assert base_url.startswith("http://127.0.0.1:")
        with httpx.Client(base_url=base_url, follow_redirects=True, timeout=20) as http:
            assert http.get("/").status_code == 200
            buyer = read_buyer_cookie(http.cookies["sp_buyer"])
            assert http.get("/search", params={"q": p1.title}).status_code == 200
            assert http.get(f"/products/{p1.product_id}").status_code == 200
            r = form_post(http, "/cart/add", {"product_id": p1.product_id, "quantity": "2"})
            assert r.url.path == "/cart" and esc(p1.title) in r.text  # the cart page view
            form_post(http, "/cart/add", {"product_id": p2.product_id, "quantity": "1"})
            r = form_post(http, "/checkout")
            token = token_of(str(r.url))
            r = form_post(http, f"/checkouts/c/{token}", {**INFO, "shipping": "express"})
            r = form_post(http, f"/checkouts/c/{token}/payment", CARD)
            assert r.status_code == 200 and 'id="order-confirmation"' in r.text
            session = http.cookies[f"sp_session_{SHOP}"]
    finally:
        stop()  # the app's shutdown flushes the sink
        sink.close()
    files = sorted((events_lake / "events" / f"shop={SHOP}").glob("date=*/*.parquet"))
    assert files and all(re.fullmatch(r"store-\d+-[0-9a-f]+-\d{6}", f.stem) for f in files)
    raw = pl.concat([pl.read_parquet(f) for f in files]).sort("ts")
    assert raw.schema == pl.Schema(EVENTS_SCHEMA)
    got = raw.select(
        "event_type", "product_id", "collection_id", "search_query", "quantity", "price"
    ).rows()
    subtotal = round(p1.price * 2 + p2.price, 2)
    assert got == [
        ("page_view", None, None, None, None, None),
        ("search", None, None, p1.title, None, None),
        ("product_view", p1.product_id, None, None, None, p1.price),
        ("add_to_cart", p1.product_id, None, None, 2, p1.price),
        ("page_view", None, None, None, None, None),  # cart
        ("add_to_cart", p2.product_id, None, None, 1, p2.price),
        ("page_view", None, None, None, None, None),  # cart
        ("checkout_started", None, None, None, 3, None),
        ("checkout_completed", None, None, None, 3, None),  # two products: no product_id
    ]
    assert raw["order_value"].to_list()[-2:] == [subtotal, subtotal]  # shipping not included
    assert raw.filter(pl.col("price").is_not_null() | pl.col("order_value").is_not_null())[
        "currency"
    ].unique().to_list() == ["USD"]
    assert (
        raw.filter(pl.col("price").is_null() & pl.col("order_value").is_null())[
            "currency"
        ].null_count()
        == 4
    )
    assert raw["event_id"].n_unique() == raw.height
    assert raw["shop_id"].unique().to_list() == [SHOP]
    assert raw["buyer_id"].unique().to_list() == [buyer]
    assert raw["session_id"].unique().to_list() == [session]
    assert session.startswith(f"{buyer}-")
    assert raw["ts"].is_sorted() and raw["ts"].n_unique() == raw.height
    urls = raw["url"].to_list()
    assert urls[0] == base_url + "/"
    assert urls[2] == f"{base_url}/products/{p1.product_id}"
    assert urls[3] == f"{base_url}/products/{p1.product_id}"  # carted on the product page
    assert urls[7] == f"{base_url}/checkouts/c/{token}"
    assert urls[8] == f"{base_url}/checkouts/c/{token}/thank-you"
    for f in files:
        date = f.parent.name.removeprefix("date=")
        checked = validate_events(pl.read_parquet(f), SHOP, date, pl.Series(list(catalog.products)))
        assert checked.rejects.is_empty(), checked.reject_counts
        assert checked.valid.height == pl.read_parquet(f).height


def test_cart_changes_log_add_and_remove(client, catalog, sink):
    p, q = a_product(catalog, 1), a_product(catalog, 2)
    client.post("/cart/add", data={"product_id": p.product_id, "quantity": "1"})
    client.post("/cart/add", data={"product_id": q.product_id, "quantity": "2"})
    client.post("/cart/update", data={"product_id": p.product_id, "quantity": "4"})
    client.post("/cart/update", data={"product_id": p.product_id, "quantity": "3"})
    client.post("/cart/update", data={"product_id": p.product_id, "quantity": "3"})  # no change
    client.post("/cart/remove", data={"product_id": q.product_id})
    client.post("/cart/update", data={"product_id": p.product_id, "quantity": "0"})
    client.post("/cart/remove", data={"product_id": p.product_id})  # not in the cart any more
    cart_events = [
        (e["event_type"], e["product_id"], e["quantity"], e["price"])
        for e in sink.events
        if e["event_type"] in ("add_to_cart", "remove_from_cart")
    ]
    assert cart_events == [
        ("add_to_cart", p.product_id, 1, p.price),
        ("add_to_cart", q.product_id, 2, q.price),
        ("add_to_cart", p.product_id, 3, p.price),
        ("remove_from_cart", p.product_id, 1, p.price),
        ("remove_from_cart", q.product_id, 2, q.price),
        ("remove_from_cart", p.product_id, 3, p.price),
    ]
    r = client.get("/cart")
    assert 'id="cart-empty"' in r.text
    assert events_frame(sink.events).height == len(sink.events)


def test_an_add_to_cart_can_lead_back_to_the_product(catalog, sink):
    """after_add="product": the buyer lands on the product page again, with a notice, and
    the header's cart count rose; the cart holds the item. The default leads to the cart."""
    p = a_product(catalog, 1)
    stay = ShopClient(create_app(catalog, sink, after_add="product"))
    r = stay.post("/cart/add", data={"product_id": p.product_id, "quantity": "2"})
    assert r.status_code == 200 and f"/products/{p.product_id}?added=" in str(r.url)
    assert 'id="product-notice"' in r.text and esc(f"Added “{p.title}” to your cart.") in r.text
    assert re.search(r'id="cart-count"[^>]*>\s*2\s*<', r.text)
    assert 'id="product-notice"' not in stay.get(f"/products/{p.product_id}").text
    assert esc(p.title) in stay.get("/cart").text
    go = ShopClient(create_app(catalog, sink))
    r = go.post("/cart/add", data={"product_id": p.product_id, "quantity": "1"})
    assert "/cart?added=" in str(r.url) and 'id="cart-notice"' in r.text
    with pytest.raises(ValueError, match="after_add must be"):
        create_app(catalog, sink, after_add="drawer")


def test_buyers_have_separate_carts_and_ids(catalog, sink):
    app = create_app(catalog, sink)
    alice, bob = ShopClient(app), ShopClient(app)
    pa, pb = a_product(catalog, 4), a_product(catalog, 5)
    alice.post("/cart/add", data={"product_id": pa.product_id, "quantity": "1"})
    bob.post("/cart/add", data={"product_id": pb.product_id, "quantity": "3"})
    ra, rb = alice.get("/cart"), bob.get("/cart")
    ta, tb = esc(pa.title), esc(pb.title)
    assert ta in ra.text and tb not in ra.text
    assert tb in rb.text and ta not in rb.text
    assert 'data-testid="cart-count">1<' in ra.text and 'data-testid="cart-count">3<' in rb.text
    a_id = read_buyer_cookie(alice.cookies["sp_buyer"])
    b_id = read_buyer_cookie(bob.cookies["sp_buyer"])
    assert a_id and b_id and a_id != b_id
    by_buyer = {}
    for e in sink.events:
        by_buyer.setdefault(e["buyer_id"], set()).add(e["product_id"])
    assert by_buyer[a_id] - {None} == {pa.product_id}
    assert by_buyer[b_id] - {None} == {pb.product_id}
    # agents are named by a cookie signed with the storefront's secret
    agent = TestClient(app, cookies={"sp_buyer": buyer_cookie("agent-007")})
    r = agent.get("/")
    assert r.headers["x-buyer-id"] == "agent-007"
    assert sink.events[-1]["buyer_id"] == "agent-007"
    r = agent.get("/cart")
    assert 'id="cart-empty"' in r.text  # not alice's or bob's cart
    # naming another buyer opens nothing of theirs: a header, or a cookie not signed here
    for spoof in (
        {"headers": {"X-Buyer-Id": a_id}},
        {"cookies": {"sp_buyer": a_id}},
        {"cookies": {"sp_buyer": f"{a_id}.{'0' * 32}"}},
        {"cookies": {"sp_buyer": buyer_cookie(a_id, secret=b"another shop's secret")}},
    ):
        mallory = TestClient(app, cookies=spoof.get("cookies"))
        r = mallory.get("/cart", headers=spoof.get("headers"))
        assert 'id="cart-empty"' in r.text and r.headers["x-buyer-id"] != a_id, spoof


def test_sessions_end_after_30_minutes_of_inactivity(catalog, sink):
    now = [datetime(2025, 3, 1, 23, 50, tzinfo=UTC)]
    client = ShopClient(create_app(catalog, sink, clock=lambda: now[0]))
    r = client.get("/")
    cookie = r.headers["set-cookie"]
    assert "sp_session_shop-000=" in cookie and "Max-Age=1800" in cookie
    assert "HttpOnly" in cookie and "SameSite=lax" in cookie
    first = r.headers["x-session-id"]
    for step in (29, 29, 30):  # each gap within 30 minutes keeps the session
        now[0] += timedelta(minutes=step)
        assert client.get("/cart").headers["x-session-id"] == first
    now[0] += timedelta(minutes=30, seconds=1)
    second = client.get("/").headers["x-session-id"]
    assert second != first and second.startswith(
        read_buyer_cookie(client.cookies["sp_buyer"]) + "-"
    )
    assert client.get("/", headers={"X-Session-Id": "forced-1"}).headers["x-session-id"] == (
        "forced-1"
    )
    frame = events_frame(sink.events)
    assert frame["session_id"].to_list() == [first] * 4 + [second, "forced-1"]
    assert frame["ts"].dt.date().cast(pl.String).to_list()[:2] == ["2025-03-01", "2025-03-02"]


# ---- search ---------------------------------------------------------------------------------
def test_search_ranks_exact_title_first(catalog, client, sink):
    for p in list(catalog.products.values())[::5]:
        assert catalog.search(p.title)[0].product_id == p.product_id, p.title
    p = a_product(catalog, 9)
    r = client.get("/search", params={"q": p.title})
    first = re.search(r'data-testid="product-card" data-product-id="([^"]+)"', r.text)
    assert first and first.group(1) == p.product_id
    assert sink.events[-1]["event_type"] == "search"
    assert sink.events[-1]["search_query"] == p.title
    # deterministic, plural-insensitive, typo-tolerant, empty for nonsense
    p = next(
        x for x in catalog.products.values() if re.fullmatch(r"[A-Za-z]{5,}", x.head.split()[-1])
    )
    q = p.head.split()[-1]
    assert catalog.search(q) == catalog.search(q)
    assert catalog.search(q + "s")[:5] == catalog.search(q)[:5]
    word = max(tokenize(p.title), key=len)
    typo = word[:2] + word[3:]
    assert p in catalog.search(typo)
    assert catalog.search("qqqzzz") == []


def test_search_index_bm25_basics():
    index = SearchIndex(
        [
            ("Red Wool Sweater", "A warm sweater."),
            ("Blue Wool Sweater", "Warm and soft."),
            ("Wool Socks", "Socks made of wool, wool and more wool."),
            ("Red Mug", None),
        ]
    )
    assert [d for d, _ in index.search("red wool sweater")][:2] == [0, 1]
    assert [d for d, _ in index.search("mug")] == [3]
    assert index.search("") == []
    assert tokenize("Women's Boots – Slate Blue") == ["women", "boot", "slate", "blue"]


# ---- shops ----------------------------------------------------------------------------------
def test_many_shops_by_path_prefix(lake_root, sink):
    cats = {s: StoreCatalog.from_lake(lake_root, s) for s in ("shop-000", "shop-001")}
    client = ShopClient(create_app(cats, sink), raise_server_exceptions=False)
    r = client.get("/")
    assert r.status_code == 200
    assert 'id="shop-link-shop-000"' in r.text and 'id="shop-link-shop-001"' in r.text
    assert sink.events == []  # the directory is not a shop page
    for shop, cat in cats.items():
        p = a_product(cat)
        assert client.get(f"/s/{shop}/products/{p.product_id}").status_code == 200
        assert sink.events[-1]["shop_id"] == shop
        assert sink.events[-1]["url"].endswith(f"/s/{shop}/products/{p.product_id}")
        r = buy(client, f"/s/{shop}", p.product_id, 2)
        assert r.status_code == 200 and r.url.path.startswith(f"/s/{shop}/checkouts/c/")
        assert sink.events[-1]["event_type"] == "checkout_completed"
        assert sink.events[-1]["shop_id"] == shop
        assert sink.events[-1]["order_value"] == round(p.price * 2, 2)
        assert sink.events[-1]["product_id"] == p.product_id
    assert client.get("/cart").status_code == 404  # no root shop in multi-shop mode
    with pytest.raises(ValueError):
        create_app({"x": cats["shop-000"]}, sink)


# ---- sinks ----------------------------------------------------------------------------------
def _event(i: int, ts: datetime, shop: str = SHOP) -> dict:
    return {
        "event_id": f"t-{i}",
        "shop_id": shop,
        "buyer_id": "b",
        "session_id": "b-1",
        "ts": ts,
        "event_type": "page_view",
        "url": "http://x/",
    }


def test_lake_sink_flushes_by_size_timer_and_close(tmp_path):
    t0 = datetime(2025, 3, 1, 23, 59, 59, tzinfo=UTC)
    sink = LakeEventSink(tmp_path, flush_interval_s=3600, max_buffer=3, background=False)
    for i in range(4):  # the 3rd event fills the buffer: flushed inline (no thread)
        sink.emit(_event(i, t0 + timedelta(seconds=i)))
    assert sink.events_written == 3 and sink.pending == 1
    assert len(sink.written) == 2  # the first flush spans two days
    sink.close()
    assert sink.events_written == 4
    parts = {f.stem for f in sink.written}
    assert len(parts) == 2  # one part name per flush, never reused
    lake = Lake.at(tmp_path)
    assert lake.dates(SHOP) == ["2025-03-01", "2025-03-02"]
    sink.emit(_event(9, t0))  # a late event after close is written at once
    assert sink.events_written == 5

    timed = LakeEventSink(tmp_path / "t", flush_interval_s=0.05)
    timed.emit(_event(0, t0))
    deadline = datetime.now() + timedelta(seconds=10)
    while timed.events_written == 0 and datetime.now() < deadline:
        time.sleep(0.01)
    assert timed.events_written == 1
    timed.close()
    assert MemoryEventSink().frame().schema == pl.Schema(EVENTS_SCHEMA)


# ---- CLI ------------------------------------------------------------------------------------
def test_storefront_command_is_typer_ready():
    import typer
    from typer.testing import CliRunner

    from simpersona.store.cli import storefront_command

    app = typer.Typer()
    app.command("storefront")(storefront_command)
    app.command("noop")(lambda: None)  # keep "storefront" a subcommand
    result = CliRunner().invoke(app, ["storefront", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    for option in ("--shop", "--lake", "--warehouse", "--host", "--port", "--debug-routes"):
        assert option in result.output
    assert "127.0.0.1" in result.output


# ---- a real browser -------------------------------------------------------------------------
@pytest.mark.browser
def test_screenshots_in_headless_chromium(catalog, sink):
    require_chromium()
    import playwright.sync_api as playwright
    from PIL import Image, ImageStat

    if SCREENSHOTS.exists():
        shutil.rmtree(SCREENSHOTS)
    SCREENSHOTS.mkdir(parents=True)
    p = max(catalog.products.values(), key=lambda x: len(x.collection_ids))
    coll = max(catalog.collections.values(), key=lambda c: len(c.product_ids))
    shots: dict[str, Path] = {}
    with serve(create_app(catalog, sink)) as base, playwright.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM_PATH, args=list(CHROMIUM_ARGS))
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})

            def shot(name: str) -> None:
                shots[name] = SCREENSHOTS / f"{name}.png"
                page.screenshot(path=str(shots[name]), full_page=True)

            page.goto(base + "/")
            shot("home")
            page.click(f"#nav-collection-{coll.collection_id}")
            page.wait_for_selector("#collection-title")
            shot("collection")
            page.fill("#search-input", p.title)
            page.click("#search-submit")
            page.wait_for_selector("#search-results")
            shot("search")
            page.click(f"#product-link-{p.product_id}")
            page.wait_for_selector("#add-to-cart-button")
            shot("product")
            page.fill("#quantity-input", "2")
            page.click("#add-to-cart-button")
            page.wait_for_selector("#cart-notice")
            assert page.inner_text("#cart-count") == "2"
            shot("cart")
            page.click("#checkout-button")
            page.fill("#email", INFO["email"])
            page.fill("#first-name", INFO["first_name"])
            page.fill("#last-name", INFO["last_name"])
            page.fill("#address1", INFO["address1"])
            page.fill("#city", INFO["city"])
            page.fill("#postal-code", INFO["postal_code"])
            page.check("#shipping-express")
            shot("checkout")
            page.click("#continue-to-payment")
            page.fill("#card-number", "4242 4242 4242 4242")
            page.fill("#card-expiry", "12 / 34")
            page.fill("#card-cvc", "123")
            shot("payment")
            page.click("#place-order-button")
            page.wait_for_selector("#order-confirmation")
            shot("confirmation")
            page.goto(base + "/products/does-not-exist")
            shot("not_found")
        finally:
            browser.close()
    assert [e["event_type"] for e in sink.events] == [
        "page_view",
        "collection_view",
        "search",
        "product_view",
        "add_to_cart",
        "page_view",
        "checkout_started",
        "checkout_completed",
    ]
    assert sink.events[-1]["order_value"] == round(2 * p.price, 2)
    for name, path in shots.items():
        assert path.stat().st_size > 15_000, name
        with Image.open(path) as img:
            assert img.width == 1280 and img.height >= 700, name
            gray = img.convert("L")
            assert ImageStat.Stat(gray).stddev[0] > 20, name  # not a blank page
            assert len(img.convert("RGB").getcolors(1 << 20) or []) > 200, name


# ---- hostile clients ------------------------------------------------------------------------
def test_state_changing_posts_need_the_buyers_csrf_token(catalog, sink):
    """A page of another site can make a browser post to the shop (with its cookies); it
    cannot read the token the shop's own forms carry. Without it, nothing changes."""
    app = create_app(catalog, sink)
    victim = ShopClient(app)
    p = a_product(catalog)
    assert victim.post("/cart/add", data={"product_id": p.product_id}).status_code == 200
    attacker_token = csrf_token("someone-else")
    cross_site = TestClient(app, cookies=dict(victim.cookies))  # the victim's cookies ride along
    n_events = len(sink.events)
    for data in ({}, {CSRF_FIELD: ""}, {CSRF_FIELD: attacker_token}):
        for path, extra in (
            ("/cart/add", {"product_id": p.product_id, "quantity": "5"}),
            ("/cart/update", {"product_id": p.product_id, "quantity": "0"}),
            ("/cart/remove", {"product_id": p.product_id}),
            ("/checkout", {}),
        ):
            r = cross_site.post(path, data={**extra, **data})
            assert r.status_code == 403 and 'id="error-page"' in r.text, (path, data)
    assert len(sink.events) == n_events  # nothing logged
    assert f'id="cart-qty-{p.product_id}"' in victim.get("/cart").text  # cart untouched
    # every state-changing form the shop renders carries the token
    page = victim.get(f"/products/{p.product_id}").text + victim.get("/cart").text
    forms = re.findall(r"<form[^>]*method=\"post\"[^>]*>\s*<input[^>]*>", page)
    assert len(forms) == 4 and all(f'name="{CSRF_FIELD}"' in f for f in forms)


def test_get_checkout_head_and_odd_input_change_nothing(catalog, sink):
    client = ShopClient(create_app(catalog, sink))
    p = a_product(catalog)
    client.post("/cart/add", data={"product_id": p.product_id, "quantity": "1"})
    app_state = client.app.state.storefront.shops[SHOP]
    before = (len(app_state.checkouts), len(sink.events))
    r = client.get("/checkout")  # a link or a prefetch must not start a checkout
    assert r.url.path == "/cart" and len(app_state.checkouts) == before[0]
    n = len(sink.events)
    for path in ("/", f"/products/{p.product_id}", "/cart", "/collections/all", "/search?q=x"):
        r = client.head(path)
        assert r.status_code == 200 and r.content == b"", path
    assert len(sink.events) == n  # HEAD logs nothing
    for digits in ("\u0663", "\uff13", "\u00b2"):  # Arabic-Indic 3, full-width 3, superscript 2
        r = client.post("/cart/add", data={"product_id": p.product_id, "quantity": digits})
        assert r.status_code == 422, digits
    assert client.get("/collections/all?page=\u0663").status_code == 200


def test_logged_urls_do_not_trust_the_host_header(catalog, sink):
    app = create_app(catalog, sink)
    with serve(app) as base_url, httpx.Client(base_url=base_url) as http:
        http.get("/", headers={"Host": "evil.example"})
        http.get("/pages/about", headers={"Host": "evil.example:8080"})
    assert [e["url"] for e in sink.events] == [f"{base_url}/", f"{base_url}/pages/about"]
    pinned = create_app(catalog, MemoryEventSink(), public_url="https://shop.example.com/")
    client = TestClient(pinned)
    client.get("/pages/about", headers={"Host": "evil.example"})
    assert pinned.state.storefront.sink.events[-1]["url"] == "https://shop.example.com/pages/about"


def test_buyer_state_is_bounded_and_expires(catalog, sink):
    """Per-buyer state used to be kept forever: memory grew with every cookieless client."""
    now = [datetime(2025, 3, 1, 12, 0, tzinfo=UTC)]
    app = create_app(catalog, sink, clock=lambda: now[0])
    shop = app.state.storefront.shops[SHOP]
    shop.max_buyers = 50
    p = a_product(catalog)
    for _ in range(200):  # a client that never keeps a cookie: a new buyer per request
        TestClient(app).get("/")
    assert 40 <= len(shop.sessions) <= 50
    keeper = ShopClient(app)
    keeper.post("/cart/add", data={"product_id": p.product_id})
    buyer = read_buyer_cookie(keeper.cookies["sp_buyer"])
    assert buyer in shop.carts
    now[0] += timedelta(hours=1)
    keeper.get("/cart")  # active: kept
    now[0] += timedelta(hours=1, minutes=30)
    TestClient(app).get("/")  # the others idle 2.5 h: swept
    assert buyer in shop.carts and len(shop.sessions) == 2
    now[0] += timedelta(hours=3)
    TestClient(app).get("/")
    assert buyer not in shop.carts and buyer not in shop.sessions and len(shop.sessions) == 1


def test_cached_pages_are_the_bytes_of_a_full_render(catalog):
    """Pages are kept with holes for the buyer's CSRF token and cart count: each buyer must
    get exactly what a full render gives them, the first time and from the cache."""
    clock = lambda: datetime(2025, 3, 1, 12, 0, tzinfo=UTC)  # noqa: E731
    secret = b"s" * 32
    cached = create_app(catalog, MemoryEventSink(), clock=clock, secret=secret, max_pages=4)
    full = create_app(catalog, MemoryEventSink(), clock=clock, secret=secret, max_pages=0)
    p, q = a_product(catalog, 2), a_product(catalog, 7)
    coll = next(iter(catalog.collections))
    paths = ["/", f"/products/{p.product_id}", f"/products/{q.product_id}",
             f"/collections/{coll}?sort=price-asc", "/collections", "/search?q=a",
             "/search?q=b", "/pages/about", f"/s/{SHOP}/products/{p.product_id}"]  # fmt: skip
    for buyer, cart in (("alice", {p.product_id: 2}), ("bob", {}), ("carol", {q.product_id: 5})):
        cookies = {"sp_buyer": buyer_cookie(buyer, secret)}
        ours, theirs = TestClient(cached, cookies=cookies), TestClient(full, cookies=cookies)
        for app in (cached, full):
            app.state.storefront.shops[SHOP].carts[buyer] = dict(cart)
        for path in paths + paths:  # the second round comes from the cache
            a, b = ours.get(path), theirs.get(path)
            assert a.status_code == b.status_code == 200
            assert a.text == b.text, path
            assert f'data-testid="cart-count">{sum(cart.values())}<' in a.text
            assert "sp-hole-" not in a.text
    store = cached.state.storefront
    assert 0 < len(store.renderer._pages) <= 4  # bounded: least recently used pages go first
    # a form error is never cached: it re-renders the product page with the message
    dave = TestClient(cached, cookies={"sp_buyer": buyer_cookie("dave", secret)})
    form = {"product_id": p.product_id, "quantity": "x", CSRF_FIELD: csrf_token("dave", secret)}
    bad = dave.post("/cart/add", data=form)
    assert bad.status_code == 422 and 'id="form-error"' in bad.text
    assert 'id="form-error"' not in TestClient(cached).get(f"/products/{p.product_id}").text
