"""Reading pages of stores the project did not write: structured data, URL patterns, cart
forms, labels with their context, site profiles, and the safety guards. Pages are served by
a real HTTP server on loopback and read by the real browser."""

from __future__ import annotations

import asyncio
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from simpersona.agent.actions import Click, parse_action
from simpersona.agent.browser import BrowserPool
from simpersona.agent.capture import parse_price
from simpersona.agent.observation import observe
from simpersona.agent.safety import (
    HostRateLimiter,
    RobotsGuard,
    is_loopback,
    order_request,
    order_submission,
    orders_allowed,
)
from simpersona.agent.site_profile import ProfileError, load_profile
from tests.conftest import require_chromium

pytestmark = pytest.mark.browser

HEAD = "<html><head><title>{title}</title>{head}</head><body>"
HEADER = """<header><a class="logo" href="/">Acme</a>
<form role="search" action="/search"><input type="text" name="q"><button>Go</button></form>
<a href="/basket/" class="basket-link">Basket <span class="basket-count">{count}</span></a>
<nav><a href="/category/shoes/">Shoes</a> <a href="/category/bags/">Bags</a></nav></header>"""

PAGES: dict[str, tuple[int, str]] = {
    # JSON-LD product (Shopify-like cart form)
    "/products/trail-shoe": (
        200,
        HEAD.format(
            title="Trail shoe",
            head='<script type="application/ld+json">{"@context":"https://schema.org",'
            '"@type":"Product","name":"Trail shoe","sku":"TS-1","offers":{"@type":"Offer",'
            '"price":"89.00","priceCurrency":"USD"}}</script>',
        )
        + HEADER.format(count="2")
        + """<main><h1>Trail shoe</h1><p>$89.00</p>
<form action="/cart/add" method="post"><select name="id"><option value="">Size</option>
<option value="41">41</option></select><input name="quantity" value="1">
<button type="submit">Add to cart</button></form></main></body></html>""",
    ),
    # microdata product (WooCommerce-like form)
    "/product/leather-tote/": (
        200,
        HEAD.format(title="Leather tote", head="")
        + HEADER.format(count="")
        + """<main><div itemscope itemtype="https://schema.org/Product">
<h1 itemprop="name">Leather tote</h1><meta itemprop="sku" content="LT-9">
<div itemprop="offers" itemscope itemtype="https://schema.org/Offer">
<span itemprop="price" content="120.00">£120.00</span><meta itemprop="priceCurrency" content="GBP"></div>
<form class="cart" method="post" action="/product/leather-tote/"><input name="qty" value="1">
<button type="submit" name="add-to-cart" value="77">Add to basket</button></form></div></main></body></html>""",
    ),
    # Open Graph only
    "/p/canvas-cap": (
        200,
        HEAD.format(
            title="Canvas cap",
            head='<meta property="og:type" content="product"><meta property="og:title" '
            'content="Canvas cap"><meta property="product:price:amount" content="19.50">',
        )
        + HEADER.format(count="0")
        + '<main><h1>Canvas cap</h1><form method="post" action="/basket/add/5/">'
        '<button type="submit">Add to basket</button></form></main></body></html>',
    ),
    # a listing of product cards
    "/category/shoes/": (
        200,
        HEAD.format(title="Shoes", head="")
        + HEADER.format(count="2")
        + """<main><h1>Shoes</h1><ol>
<li><article class="product_pod"><a href="/catalogue/trail-shoe_12/">Trail shoe</a><p>$89</p></article></li>
<li><article class="product_pod"><a href="/catalogue/road-shoe_13/">Road shoe</a><p>$79</p></article></li>
</ol></main></body></html>""",
    ),
    "/checkout/shipping-method/": (
        200,
        HEAD.format(title="Shipping method", head="")
        + """<main><h1>Shipping method</h1>
<div class="method"><h3>Standard</h3><p>Free, 5 days</p><form method="post"><button type="submit">Select option</button></form></div>
<div class="method"><h3>Express</h3><p>$9.99, next day</p><form method="post"><button type="submit">Select option</button></form></div>
</main></body></html>""",
    ),
    "/checkout/preview/": (
        200,
        HEAD.format(title="Preview", head="")
        + """<main><h1>Preview order</h1><form method="post" action="/checkout/preview/">
<input type="hidden" name="action" value="place_order"><button type="submit" id="place-order">Place order</button></form></main></body></html>""",
    ),
    "/basket/": (
        200,
        HEAD.format(title="Basket", head="")
        + HEADER.format(count="(3)")
        + """<main><h1>Basket</h1><form method="post" action="/basket/"><button type="submit" name="remove">Remove</button></form>
<a href="/checkout/">Proceed to checkout</a></main></body></html>""",
    ),
    "/checkout/thank-you/": (
        200,
        HEAD.format(title="Confirmation", head="")
        + "<main><h1>Thank you for your order</h1><p>Your order number is 100023.</p></main></body></html>",
    ),
    "/missing": (
        404,
        HEAD.format(title="Page not found", head="") + "<main><p>Sorry</p></main></body></html>",
    ),
    "/robots.txt": (200, "User-agent: *\nDisallow: /private/\n"),
    # A page whose stylesheet arrives late (SLOW_CSS): what it shows depends on the CSS.
    "/sale/": (
        200,
        HEAD.format(title="Sale", head='<link rel="stylesheet" href="/slow.css">')
        + HEADER.format(count="")
        + """<main><a class="badge" href="/products/trail-shoe">Sale</a>
<button class="css-hidden">Hidden by the stylesheet</button></main></body></html>""",
    ),
    "/slow.css": (200, ".badge { text-transform: uppercase } .css-hidden { display: none }"),
}
SLOW_CSS_S = 0.8


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        status, body = PAGES.get(self.path, (404, "<html><body>Not found</body></html>"))
        data = body.encode()
        if self.path.endswith(".css"):
            time.sleep(SLOW_CSS_S)
        self.send_response(status)
        kind = {".txt": "text/plain", ".css": "text/css"}.get(
            Path(self.path).suffix, "text/html; charset=utf-8"
        )
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: object) -> None:
        """No access log in the test output."""


@pytest.fixture(scope="module")
def site():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


@pytest.fixture(scope="module")
def read(site):
    require_chromium()
    loop = asyncio.new_event_loop()
    pool = BrowserPool(size=1)
    loop.run_until_complete(pool.start())

    def read_page(path: str, profiles=(), wait_until: str = "load"):
        async def go():
            async with pool.page(allowlist=("127.0.0.1",)) as page:
                resp = await page.goto(site + path, wait_until=wait_until)
                return await observe(page, profiles=profiles, status=resp.status)

        return loop.run_until_complete(go())

    yield read_page
    loop.run_until_complete(pool.close())
    loop.close()


def test_json_ld_product_page(read):
    obs = read("/products/trail-shoe")
    assert obs.kind == "product" and obs.profile is None
    assert obs.facts["product_id"] == "TS-1" and obs.facts["price"] == "89.00"
    assert obs.facts["currency"] == "USD" and obs.cart_count == 2
    assert [e.label for e in obs.by_role("add_to_cart")] == ["Add to cart"]
    assert obs.by_role("quantity") and obs.by_role("cart_link") and obs.by_role("home_link")
    assert {e.label for e in obs.links("collection")} == {"Shoes", "Bags"}


def test_microdata_and_open_graph_products(read):
    tote = read("/product/leather-tote/")
    assert tote.kind == "product" and tote.facts["product_id"] == "LT-9"
    assert tote.facts["price"] == "120.00" and tote.facts["currency"] == "GBP"
    assert [e.label for e in tote.by_role("add_to_cart")] == ["Add to basket"]
    cap = read("/p/canvas-cap")
    assert cap.kind == "product" and cap.facts["price"] == "19.50" and cap.title == "Canvas cap"
    assert cap.facts["product_id"] == "canvas-cap"  # from the URL: no sku declared


def test_listing_cards_are_product_links_with_ids(read):
    obs = read("/category/shoes/")
    assert obs.kind == "collection"
    products = obs.links("product")
    assert [(e.label, e.product_id) for e in products] == [
        ("Trail shoe", "12"),
        ("Road shoe", "13"),
    ]


def test_identical_controls_get_their_context_in_the_label(read):
    obs = read("/checkout/shipping-method/")
    assert obs.kind == "checkout"
    labels = [e.label for e in obs.elements if e.kind == "button"]
    assert len(labels) == 2 and labels[0] != labels[1]
    assert "Standard" in labels[0] and "Express" in labels[1] and "9.99" in labels[1]


def test_a_page_is_read_as_styled_even_before_its_stylesheet_arrives(read):
    # Labels come from innerText and visibility from computed style, so both depend on the
    # CSS: a page read at DOMContentLoaded must read as it will once styled, or the same
    # session reads "Sale" one run and "SALE" the next (and the SFT data with it).
    obs = read("/sale/", wait_until="domcontentloaded")
    labels = [e.label for e in obs.elements]
    assert "SALE" in labels and "Sale" not in labels
    assert not any("Hidden by the stylesheet" in label for label in labels)


def test_cart_confirmation_and_error_pages(read):
    cart = read("/basket/")
    assert cart.kind == "cart" and cart.cart_count == 3
    assert [e.label for e in cart.by_role("checkout")] == ["Proceed to checkout"]
    assert [e.label.split(" (")[0] for e in cart.by_role("remove_from_cart")] == ["Remove"]
    done = read("/checkout/thank-you/")
    assert done.kind == "confirmation" and done.facts["order_number"] == "100023"
    assert read("/missing").kind == "error"


def test_the_order_guard_recognises_the_final_submission_without_card_fields(read):
    obs = read("/checkout/preview/")
    assert obs.kind == "checkout" and not obs.is_payment_step
    button = obs.by_role("place_order")[0]
    assert order_submission(Click(id=button.id), obs)
    assert order_submission(parse_action({"action": "scroll"}), obs) is None
    ship = read("/checkout/shipping-method/")
    first = [e for e in ship.elements if e.kind == "button"][0]
    assert order_submission(Click(id=first.id), ship) is None  # a step, not the order


def test_site_profile_url_patterns_and_selectors_win(read, tmp_path: Path):
    prof = tmp_path / "acme.yaml"
    prof.write_text(
        "name: acme\nmatch: {hosts: ['127.0.0.1']}\n"
        "page_kind: {urls: {info: ['^/missing$']}}\n"
        "facts: {cart_count: {selector: '.basket-count'}, price: {selector: 'main p'}}\n"
    )
    profile = load_profile(prof)
    obs = read("/products/trail-shoe", profiles=(profile,))
    assert obs.profile == "acme" and obs.facts["price"] == "$89.00" and obs.cart_count == 2
    assert read("/missing", profiles=(profile,)).kind == "info"


def test_bad_site_profiles_name_the_file_and_field(tmp_path: Path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\npage_kind: {urls: {productz: ['^/p/']}}\n")
    with pytest.raises(ProfileError, match=r"bad\.yaml: field page_kind\.urls.*unknown page kind"):
        load_profile(bad)
    bad.write_text("name: x\nfacts: {price: {selectr: '.p'}}\n")
    with pytest.raises(ProfileError, match=r"field facts\.price\.selector"):
        load_profile(bad)
    bad.write_text("name: x\npage_kind: {urls: {product: ['(']}}\n")
    with pytest.raises(ProfileError, match="bad regular expression"):
        load_profile(bad)
    bad.write_text("- a list\n")
    with pytest.raises(ProfileError, match="YAML mapping"):
        load_profile(bad)
    with pytest.raises(ProfileError, match="no such site profile"):
        load_profile(tmp_path / "absent.yaml")


def test_orders_are_allowed_only_on_declared_hosts():
    url = "http://127.0.0.1:8123/checkout/"
    assert not orders_allowed(url, False, ["127.0.0.1"])
    assert not orders_allowed(url, True, [])
    assert orders_allowed(url, True, ["127.0.0.1"]) and orders_allowed(
        url, True, ["127.0.0.1:8123"]
    )
    assert not orders_allowed(url, True, ["127.0.0.1:9000"])
    assert order_request("POST", "http://x/checkout/preview/", "action=place_order&csrf=1")
    assert order_request(
        "POST", "http://x/graphql", '{"query":"mutation { placeOrder(cartId: 1) }"}'
    )
    assert not order_request("GET", "http://x/place-order", None)
    assert not order_request("POST", "http://x/basket/add/5/", "quantity=1")
    assert is_loopback("127.0.0.2") and is_loopback("localhost") and not is_loopback("shop.example")


def test_robots_txt_is_honoured_where_checked(site):
    guard = RobotsGuard("always")
    assert guard.allowed(site + "/products/trail-shoe")
    assert not guard.allowed(site + "/private/secret")
    assert RobotsGuard("auto").allowed(site + "/private/secret")  # loopback: not checked
    with pytest.raises(ValueError):
        RobotsGuard("sometimes")


def _robots_answering(status: int) -> ThreadingHTTPServer:
    """A store on loopback whose robots.txt answers with `status` (every other page: 200)."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            self.send_response(status if self.path == "/robots.txt" else 200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            """No access log in the test output."""

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def test_robots_txt_that_cannot_be_read_disallows_as_rfc_9309_says():
    # a server error: the store may have rules nobody can read, so nothing is fetched;
    # a 4xx (no file): nothing is disallowed
    answers = {}
    for status in (503, 404, 403):
        server = _robots_answering(status)
        url = f"http://127.0.0.1:{server.server_address[1]}/products/trail-shoe"
        answers[status] = RobotsGuard("always").allowed(url)
        server.shutdown()
        server.server_close()
    assert answers == {503: False, 404: True, 403: True}
    # nothing listens there any more: unreachable, so nothing is fetched
    assert not RobotsGuard("always").allowed(url)


def test_the_rate_limiter_spaces_requests_per_host():
    lim = HostRateLimiter(10.0)
    delays = [lim.delay("a") for _ in range(5)]
    assert delays[0] == 0 and delays[-1] == pytest.approx(0.4, abs=0.02)
    assert lim.delay("b") == 0  # another host has its own budget


@pytest.mark.parametrize(
    ("text", "value"),
    [("$1,299.00", 1299.0), ("£12.50", 12.5), ("12,50 €", 12.5), ("USD 89", 89.0), ("", None)],
)
def test_prices_parse(text, value):
    assert parse_price(text) == value
