"""The storefront: a server-rendered shop (no JavaScript needed) that logs every buyer
interaction as canonical events.

`create_app(catalog, event_sink)` serves one shop at the root (`/`, `/products/<id>`, ...)
and, for every shop, the same pages under `/s/<shop_id>/...`; given a dict of catalogs it
serves many shops by path prefix and lists them at `/`. Routes, element ids and the event
mapping are documented in `docs/storefront.md`.

Buyers are identified by the `sp_buyer` cookie the storefront signed (set on the first
visit; agents get theirs signed for their planned id, `simpersona.store.identity`), and
every state-changing form carries the buyer's CSRF token; sessions end after 30 minutes
without a request (`sp_session_<shop>` cookie, `X-Session-Id` header to force one). Page views log one event typed by the page
(page_view, collection_view, product_view, search); cart and checkout actions log
add_to_cart, remove_from_cart, checkout_started and checkout_completed. Form errors, 404s,
checkout steps between start and completion, and static files log nothing.
"""

from __future__ import annotations

import hmac
import math
import re
import secrets
import threading
import uuid
from collections import OrderedDict
from collections.abc import Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal
from urllib.parse import quote, urlencode

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape
from markupsafe import Markup
from starlette.exceptions import HTTPException

from simpersona.store.catalog import ALL_COLLECTION_ID, Product, StoreCatalog, stable_hue
from simpersona.store.events import EventSink
from simpersona.store.identity import buyer_cookie, csrf_token, read_buyer_cookie, store_secret
from simpersona.store.state import (
    COUNTRIES,
    MAX_BUYERS,
    MAX_QUANTITY,
    SESSION_TIMEOUT,
    SHIPPING_METHODS,
    Checkout,
    Line,
    Order,
    ShopState,
    clean_id,
    new_buyer_id,
)

HERE = Path(__file__).resolve().parent
TEMPLATES_DIR = HERE / "templates"
STATIC_DIR = HERE / "static"

BUYER_COOKIE = "sp_buyer"
CSRF_FIELD = "csrf_token"  # hidden input of every state-changing form
SESSION_COOKIE_PREFIX = "sp_session_"
BUYER_COOKIE_MAX_AGE = 2 * 365 * 24 * 3600
PAGE_SIZE = 24
MAX_FRAGMENTS = 20_000  # cached product cards and images, ~2 KB each
MAX_PAGES = 2_000  # cached pages with per-buyer holes, ~20-40 KB each
MAX_QUERY_LEN = 200

# Test cards only (the numbers payment providers publish for testing); nothing is charged.
TEST_CARDS: dict[str, str] = {
    "4242424242424242": "Visa",
    "4000056655665556": "Visa",
    "5555555555554444": "Mastercard",
    "2223003122003222": "Mastercard",
    "378282246310005": "American Express",
    "6011111111111117": "Discover",
}
DECLINED_TEST_CARDS: frozenset[str] = frozenset({"4000000000000002", "4000000000009995"})

SHOP_WIDE_COLLECTIONS = frozenset(
    {"all", "sale", "new-arrivals", "best-sellers", "featured", "frontpage"}
)

SORTS: dict[str, str] = {
    "featured": "Featured",
    "price-asc": "Price, low to high",
    "price-desc": "Price, high to low",
    "title-asc": "Alphabetically, A–Z",
}

INFO_PAGES: dict[str, tuple[str, list[str]]] = {
    "about": (
        "About us",
        [
            "We are a small, independent shop that cares about well-made things.",
            "Every product is chosen by our team and shipped from our own warehouse.",
        ],
    ),
    "shipping": (
        "Shipping",
        [
            "Standard shipping is free on every order and arrives in 5–8 business days.",
            "Express shipping arrives in 1–2 business days.",
        ],
    ),
    "returns": (
        "Returns",
        [
            "Not quite right? Return unworn items within 30 days for a full refund.",
            "Sale items can be exchanged but not refunded.",
        ],
    ),
    "faq": (
        "FAQ",
        [
            "Can I change my order? Yes, within an hour of placing it.",
            "Do you ship internationally? We ship to most countries in Europe, "
            "North America and Australia.",
        ],
    ),
    "contact": (
        "Contact",
        ["Write to us any time at hello@example.com; we answer within one business day."],
    ),
}

_EMAIL_RE = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_QTY_RE = re.compile(r"^\s*\+?([0-9]{1,6})\s*$")  # ASCII digits: int("٣") is 3
_EXPIRY_RE = re.compile(r"^\s*(\d{1,2})\s*/\s*(\d{2}|\d{4})\s*$")
_DOM_ID_RE = re.compile(r"[^A-Za-z0-9_-]+")

CURRENCY_SYMBOLS = {"USD": "$", "EUR": "€", "GBP": "£", "CAD": "CA$", "AUD": "A$", "JPY": "¥"}

AfterAdd = Literal["cart", "product"]


# ---- helpers usable from templates ---------------------------------------------------------
def money(value: float | None, currency: str) -> str:
    if value is None:
        return "—"
    symbol = CURRENCY_SYMBOLS.get(currency)
    amount = f"{value:,.2f}"
    return f"{symbol}{amount}" if symbol else f"{amount} {currency}"


def dom_id(value: str) -> str:
    """An id-attribute-safe form of a product or collection id."""
    return _DOM_ID_RE.sub("-", str(value)).strip("-") or "x"


def _url_quote(value: str) -> str:
    return quote(str(value), safe="")


@dataclass(frozen=True)
class Links:
    """Paths of one shop's pages, under its prefix ('' for the root-mounted shop)."""

    base: str

    def home(self) -> str:
        return self.base + "/" if self.base else "/"

    def collection(self, cid: str, page: int | None = None, sort: str | None = None) -> str:
        params = {k: v for k, v in (("sort", sort), ("page", page)) if v not in (None, "", 1)}
        query = f"?{urlencode(params)}" if params else ""
        return f"{self.base}/collections/{_url_quote(cid)}{query}"

    def all_products(self) -> str:
        return self.collection(ALL_COLLECTION_ID)

    def collections(self) -> str:
        return f"{self.base}/collections"

    def product(self, pid: str) -> str:
        return f"{self.base}/products/{_url_quote(pid)}"

    def search(self, q: str | None = None, page: int | None = None) -> str:
        params = {k: v for k, v in (("q", q), ("page", page)) if v not in (None, "", 1)}
        return f"{self.base}/search" + (f"?{urlencode(params)}" if params else "")

    def cart(self) -> str:
        return f"{self.base}/cart"

    def cart_add(self) -> str:
        return f"{self.base}/cart/add"

    def cart_update(self) -> str:
        return f"{self.base}/cart/update"

    def cart_remove(self) -> str:
        return f"{self.base}/cart/remove"

    def checkout(self) -> str:
        return f"{self.base}/checkout"

    def checkout_info(self, token: str) -> str:
        return f"{self.base}/checkouts/c/{token}"

    def checkout_payment(self, token: str) -> str:
        return f"{self.base}/checkouts/c/{token}/payment"

    def thank_you(self, token: str) -> str:
        return f"{self.base}/checkouts/c/{token}/thank-you"

    def page(self, handle: str) -> str:
        return f"{self.base}/pages/{handle}"


@dataclass
class Visit:
    """Who is asking, resolved at the start of a request."""

    shop: ShopState
    buyer_id: str
    session_id: str
    now: datetime
    links: Links
    log: bool  # False for HEAD requests

    @property
    def catalog(self) -> StoreCatalog:
        return self.shop.catalog


def parse_quantity(raw: object, minimum: int = 1) -> tuple[int | None, str | None]:
    """(quantity, None) or (None, error message) for a form value."""
    m = _QTY_RE.match(str(raw)) if raw is not None else None
    qty = int(m.group(1)) if m else None
    if qty is None or not minimum <= qty <= MAX_QUANTITY:
        return None, f"Quantity must be a whole number from {minimum} to {MAX_QUANTITY}."
    return qty, None


def _page_number(raw: str | None) -> int:
    if not raw or not raw.isascii() or not raw.strip().isdigit() or len(raw) > 6:
        return 1
    return max(1, int(raw))


def _paginate(items: list[Any], page: int, size: int = PAGE_SIZE) -> tuple[list[Any], int, int]:
    pages = max(1, math.ceil(len(items) / size))
    page = min(page, pages)
    return items[(page - 1) * size : page * size], page, pages


def _sort_products(products: list[Product], sort: str) -> list[Product]:
    if sort == "price-asc":
        return sorted(products, key=lambda p: (p.price is None, p.price or 0.0, p.position))
    if sort == "price-desc":
        return sorted(products, key=lambda p: (p.price is None, -(p.price or 0.0), p.position))
    if sort == "title-asc":
        return sorted(products, key=lambda p: (p.title.lower(), p.position))
    return products


# ---- the app -------------------------------------------------------------------------------
class Storefront:
    """Request handlers and state of one storefront server (one or many shops)."""

    def __init__(
        self,
        catalogs: Mapping[str, StoreCatalog],
        sink: EventSink,
        *,
        root_shop: str | None,
        debug_routes: bool,
        clock: Callable[[], datetime],
        secure_cookies: bool,
        public_url: str | None = None,
        secret: bytes | None = None,
        max_buyers: int = MAX_BUYERS,
        max_pages: int = MAX_PAGES,
        after_add: AfterAdd = "cart",
    ) -> None:
        if after_add not in ("cart", "product"):
            raise ValueError(f"after_add must be 'cart' or 'product', got {after_add!r}")
        self.after_add = after_add
        self.max_pages = max_pages
        self.shops = {sid: ShopState(cat, max_buyers=max_buyers) for sid, cat in catalogs.items()}
        self.sink = sink
        self.root_shop = root_shop
        self.debug_routes = debug_routes
        self.clock = clock
        self.secure_cookies = secure_cookies
        self.public_url = public_url.rstrip("/") if public_url else None
        self.secret = secret or store_secret()
        self.lock = threading.RLock()
        self._last_ts: datetime | None = None
        self.env = Environment(
            loader=FileSystemLoader(str(TEMPLATES_DIR)),
            autoescape=select_autoescape(["html"]),
            trim_blocks=True,
            lstrip_blocks=True,
            undefined=StrictUndefined,
            auto_reload=False,  # templates ship with the package: no stat() per render
        )
        self.env.globals.update(
            dom_id=dom_id,
            hue=stable_hue,
            sorts=SORTS,
            country_name=lambda code: dict(COUNTRIES).get(code, code),
        )
        self.env.filters["urlq"] = _url_quote
        # Product cards, images and the shop's menus were most of a page's rendering time
        # and depend only on the shop, its link prefix and the product: render each once.
        self._fragment_template = self.env.from_string(
            '{% import "_macros.html" as m with context %}'
            '{% if kind == "card" %}{{ m.product_card(p, L, money) }}'
            '{% elif kind == "image" %}{{ m.product_image(p, arg) }}'
            '{% elif kind == "nav" %}{{ m.nav_links(nav, L, arg) }}'
            "{% else %}{{ m.footer_links(info_pages, L) }}{% endif %}"
        )
        self._fragments: dict[tuple[str, str, str, str, str], Markup] = {}
        # Rendered pages with holes for the per-buyer parts (see `render`). The holes' text
        # has a random part, so no catalogue text can be mistaken for one.
        self._pages: OrderedDict[tuple[Any, ...], str] = OrderedDict()
        nonce = secrets.token_hex(8)
        self._holes = (f"sp-hole-{nonce}-csrf", f"sp-hole-{nonce}-cart")

    def fragment(self, visit: Visit, kind: str, p: Product | None = None, arg: str = "") -> Markup:
        """A piece of page that depends only on the shop, its link prefix and `p`/`arg`,
        rendered once and kept (at most `MAX_FRAGMENTS`; the catalogue is fixed while
        serving): a product's `card`, its placeholder `image` (`arg`: CSS class), the
        header's `nav` (`arg`: the current collection) and the footer's `links`."""
        cat = visit.catalog
        key = (kind, cat.shop_id, visit.links.base, p.product_id if p else "", arg)
        html = self._fragments.get(key)
        if html is None:
            html = Markup(
                self._fragment_template.render(
                    kind=kind, p=p, arg=arg, L=visit.links, shop=cat,
                    money=lambda v: money(v, cat.currency),
                    nav=cat.nav_collections(), info_pages=INFO_PAGES,
                )
            )  # fmt: skip
            if len(self._fragments) >= MAX_FRAGMENTS:
                self._fragments.pop(next(iter(self._fragments)))
            self._fragments[key] = html
        return html

    # ---- plumbing ---------------------------------------------------------------------------
    def _shop_id(self, request: Request) -> str:
        shop_id = request.path_params.get("shop_id") or self.root_shop
        if shop_id is None or shop_id not in self.shops:
            raise HTTPException(404, "Shop not found")
        return shop_id

    def buyer_of(self, request: Request) -> str | None:
        """The buyer a request's cookie names, when this storefront signed it (else None)."""
        return read_buyer_cookie(request.cookies.get(BUYER_COOKIE), self.secret)

    def visit(self, request: Request) -> Visit:
        shop_id = self._shop_id(request)
        shop = self.shops[shop_id]
        buyer = self.buyer_of(request) or new_buyer_id()
        now = self.clock()
        with self.lock:
            session_id = shop.touch_session(
                buyer,
                now,
                clean_id(request.cookies.get(SESSION_COOKIE_PREFIX + shop_id)),
                clean_id(request.headers.get("x-session-id")),
            )
        base = f"/s/{shop_id}" if "shop_id" in request.path_params else ""
        return Visit(
            shop, buyer, session_id, now, Links(base), log=request.method.upper() != "HEAD"
        )

    def _finish(self, response: Response, visit: Visit) -> Response:
        shop_id = visit.catalog.shop_id
        response.set_cookie(
            BUYER_COOKIE,
            buyer_cookie(visit.buyer_id, self.secret),
            max_age=BUYER_COOKIE_MAX_AGE,
            path="/",
            httponly=True,
            samesite="lax",
            secure=self.secure_cookies,
        )
        response.set_cookie(
            SESSION_COOKIE_PREFIX + shop_id,
            visit.session_id,
            max_age=int(SESSION_TIMEOUT.total_seconds()),
            path="/",
            httponly=True,
            samesite="lax",
            secure=self.secure_cookies,
        )
        response.headers["X-Buyer-Id"] = visit.buyer_id
        response.headers["X-Session-Id"] = visit.session_id
        response.headers["Cache-Control"] = "no-store"
        return response

    async def checked_form(self, request: Request, visit: Visit) -> Any:
        """The posted form, after its CSRF token was checked against the buyer's (403 when
        it is missing or wrong: the post did not come from this buyer's page)."""
        form = await request.form()
        sent = str(form.get(CSRF_FIELD, ""))
        if not hmac.compare_digest(sent, csrf_token(visit.buyer_id, self.secret)):
            raise HTTPException(
                403, "This form has expired or did not come from this shop. Reload the page."
            )
        return form

    def emit(self, visit: Visit, event_type: str, url: str, **fields: Any) -> None:
        if not visit.log:
            return
        with self.lock:
            ts = visit.now.astimezone(UTC)
            # Strictly increasing timestamps keep the events' order through any sort.
            if self._last_ts is not None and ts <= self._last_ts:
                ts = self._last_ts + timedelta(microseconds=1)
            self._last_ts = ts
        priced = fields.get("price") is not None or fields.get("order_value") is not None
        event = {
            "event_id": f"st-{uuid.uuid4().hex}",
            "shop_id": visit.catalog.shop_id,
            "buyer_id": visit.buyer_id,
            "session_id": visit.session_id,
            "ts": ts,
            "event_type": event_type,
            "product_id": None,
            "collection_id": None,
            "search_query": None,
            "quantity": None,
            "price": None,
            "order_value": None,
            "currency": visit.catalog.currency if priced else None,
            "url": url,
        }
        event.update(fields)
        self.sink.emit(event)

    def origin(self, request: Request) -> str:
        """The origin logged in event URLs: `public_url` when configured, else the address
        the server listens on — never the request's Host header, which a client sets."""
        if self.public_url:
            return self.public_url
        server = request.scope.get("server")
        if not server:
            return "http://storefront.invalid"
        host, port = server[0], server[1]
        host = f"[{host}]" if ":" in str(host) else host
        return f"http://{host}" if port in (None, 80) else f"http://{host}:{port}"

    def absolute(self, request: Request, path: str) -> str:
        return self.origin(request) + path

    def page_url(self, request: Request) -> str:
        """The requested page's URL for the event log (path and query on `origin`)."""
        query = request.url.query
        return self.origin(request) + request.url.path + (f"?{query}" if query else "")

    def _shop_context(self, visit: Visit | None) -> dict[str, Any]:
        """Template variables of the shop chrome (header, nav, cart count) for a visit."""
        if visit is None:
            return {"shop": None}
        cat = visit.catalog
        with self.lock:
            cart_count = sum(line.quantity for line in visit.shop.lines(visit.buyer_id))
        return {
            "shop": cat,
            "L": visit.links,
            "cart_count": cart_count,
            "money": lambda v: money(v, cat.currency),
            "q": "",
            "csrf_field": CSRF_FIELD,
            "csrf_token": csrf_token(visit.buyer_id, self.secret),
            "card": lambda p: self.fragment(visit, "card", p),
            "image": lambda p, cls="ph": self.fragment(visit, "image", p, cls),
            "nav_links": lambda current: self.fragment(visit, "nav", None, current or ""),
            "footer_links": lambda: self.fragment(visit, "links"),
        }

    def render(
        self,
        template: str,
        visit: Visit | None,
        page: str,
        status_code: int = 200,
        *,
        page_key: tuple[Any, ...] | None = None,
        **context: Any,
    ) -> HTMLResponse:
        """Render a page. With `page_key` (what, besides the shop and its link prefix, the
        page depends on) the page is rendered once with holes for the buyer's CSRF token and
        cart count, kept (at most `MAX_PAGES`, least recently used first out) and filled in
        per request: the same bytes as a full render, at a fraction of the CPU."""
        ctx: dict[str, Any] = {"page": page, "visit": visit, "error": None, "shop": None}
        ctx.update(self._shop_context(visit))
        ctx.update(context)
        if page_key is None or visit is None or self.max_pages <= 0:
            html = self.env.get_template(template).render(**ctx)
        else:
            key = (template, visit.catalog.shop_id, visit.links.base, *page_key)
            shell = self._pages.get(key)
            if shell is None:
                holes = {"csrf_token": self._holes[0], "cart_count": self._holes[1]}
                shell = self.env.get_template(template).render(**{**ctx, **holes})
                if len(self._pages) >= self.max_pages:
                    self._pages.popitem(last=False)
                self._pages[key] = shell
            else:
                self._pages.move_to_end(key)
            html = shell.replace(self._holes[0], ctx["csrf_token"]).replace(
                self._holes[1], str(ctx["cart_count"])
            )
        response = HTMLResponse(html, status_code=status_code)
        return self._finish(response, visit) if visit is not None else response

    def redirect(self, visit: Visit, path: str) -> Response:
        return self._finish(RedirectResponse(path, status_code=303), visit)

    # ---- pages ------------------------------------------------------------------------------
    async def shop_index(self, request: Request) -> Response:
        if self.root_shop is not None:
            return await self.home(request)
        cats = [s.catalog for s in self.shops.values()]
        return self.render("index.html", None, "index", shops=cats, Links=Links)

    async def home(self, request: Request) -> Response:
        v = self.visit(request)
        cat = v.catalog
        featured = cat.featured_products(8)
        seen = {p.product_id for p in featured}
        new = []
        if "new-arrivals" in cat.collections:
            new = cat.products_of(
                [p for p in cat.collections["new-arrivals"].product_ids if p not in seen][:4]
            )
        collections = cat.nav_collections(8)
        self.emit(v, "page_view", self.page_url(request))
        return self.render(
            "home.html",
            v,
            "home",
            page_key=(),
            featured=featured,
            new_arrivals=new,
            collections=collections,
        )

    async def collections_index(self, request: Request) -> Response:
        """Every collection of the shop (Shopify's /collections page): any collection is two
        clicks from any page, as on real stores whose menus list only a few."""
        v = self.visit(request)
        colls = [c for c in v.catalog.collections.values() if c.product_ids]
        self.emit(v, "page_view", self.page_url(request))
        return self.render("collections.html", v, "collection", page_key=(), collections=colls)

    async def collection(self, request: Request) -> Response:
        v = self.visit(request)
        coll = v.catalog.collection(request.path_params["collection_id"])
        if coll is None:
            raise HTTPException(404, "Collection not found")
        sort = request.query_params.get("sort", "featured")
        sort = sort if sort in SORTS else "featured"
        products = _sort_products(v.catalog.products_of(coll.product_ids), sort)
        items, page, pages = _paginate(products, _page_number(request.query_params.get("page")))
        self.emit(v, "collection_view", self.page_url(request), collection_id=coll.collection_id)
        return self.render(
            "collection.html",
            v,
            "collection",
            page_key=(coll.collection_id, page, sort),
            collection=coll,
            products=items,
            total=len(products),
            page_no=page,
            pages=pages,
            sort=sort,
            page_url=lambda n: v.links.collection(coll.collection_id, n, sort),
        )

    async def search(self, request: Request) -> Response:
        v = self.visit(request)
        q = " ".join(request.query_params.get("q", "").split())[:MAX_QUERY_LEN]
        results = v.catalog.search(q) if q else []
        items, page, pages = _paginate(results, _page_number(request.query_params.get("page")))
        if q:
            self.emit(v, "search", self.page_url(request), search_query=q)
        else:
            self.emit(v, "page_view", self.page_url(request))
        return self.render(
            "search.html",
            v,
            "search",
            page_key=(q, page),
            q=q,
            products=items,
            total=len(results),
            page_no=page,
            pages=pages,
            page_url=lambda n: v.links.search(q, n),
        )

    async def product(self, request: Request) -> Response:
        v = self.visit(request)
        p = v.catalog.product(request.path_params["product_id"])
        if p is None:
            raise HTTPException(404, "Product not found")
        self.emit(v, "product_view", self.page_url(request), product_id=p.product_id, price=p.price)
        added = request.query_params.get("added") == p.product_id
        return self._product_page(
            v, p, notice=f"Added “{p.title}” to your cart." if added else None
        )

    def _product_page(
        self,
        v: Visit,
        p: Product,
        error: str | None = None,
        quantity: str = "1",
        notice: str | None = None,
    ) -> HTMLResponse:
        cat = v.catalog
        colls = [cat.collections[c] for c in p.collection_ids if c in cat.collections]
        # Related: the smallest collection of the product that is not shop-wide (sale, new
        # arrivals...), i.e. the most specific one, e.g. "Sandals" rather than "Footwear".
        pools = [c for c in colls if c.collection_id not in SHOP_WIDE_COLLECTIONS] or colls
        pools = sorted(
            (c for c in pools if len(c.product_ids) > 1), key=lambda c: len(c.product_ids)
        )
        related_ids = [pid for pid in pools[0].product_ids if pid != p.product_id] if pools else []
        return self.render(
            "product.html",
            v,
            "product",
            status_code=422 if error else 200,
            page_key=None if error or notice else (p.product_id, quantity),
            product=p,
            notice=notice,
            product_collections=colls,
            related=cat.products_of(related_ids[:4]),
            error=error,
            quantity=quantity,
            max_quantity=MAX_QUANTITY,
        )

    async def info_page(self, request: Request) -> Response:
        v = self.visit(request)
        handle = request.path_params["handle"]
        if handle not in INFO_PAGES:
            raise HTTPException(404, "Page not found")
        title, paragraphs = INFO_PAGES[handle]
        self.emit(v, "page_view", self.page_url(request))
        return self.render(
            "page.html", v, "info", page_key=(handle,), handle=handle, title=title,
            paragraphs=paragraphs,
        )  # fmt: skip

    # ---- cart -------------------------------------------------------------------------------
    def _cart_page(
        self, v: Visit, error: str | None = None, notice: str | None = None, status: int = 200
    ) -> HTMLResponse:
        with self.lock:
            lines = v.shop.lines(v.buyer_id)
        subtotal = round(sum(line.total for line in lines), 2)
        return self.render(
            "cart.html",
            v,
            "cart",
            status_code=status,
            lines=lines,
            subtotal=subtotal,
            error=error,
            notice=notice,
            max_quantity=MAX_QUANTITY,
        )

    async def cart(self, request: Request) -> Response:
        v = self.visit(request)
        notice = None
        added = v.catalog.product(request.query_params.get("added", ""))
        if added is not None:
            notice = f"Added “{added.title}” to your cart."
        self.emit(v, "page_view", self.page_url(request))
        return self._cart_page(v, notice=notice)

    async def cart_add(self, request: Request) -> Response:
        v = self.visit(request)
        form = await self.checked_form(request, v)
        p = v.catalog.product(str(form.get("product_id", "")))
        if p is None:
            raise HTTPException(404, "Product not found")
        raw_qty = form.get("quantity", "1")
        qty, error = parse_quantity(raw_qty)
        if qty is not None:
            with self.lock:
                cart = v.shop.cart(v.buyer_id)
                if cart.get(p.product_id, 0) + qty > MAX_QUANTITY:
                    error = (
                        f"You can have at most {MAX_QUANTITY} of this item in your cart "
                        f"(you already have {cart[p.product_id]})."
                    )
                else:
                    cart[p.product_id] = cart.get(p.product_id, 0) + qty
        if error is not None or qty is None:
            return self._product_page(v, p, error=error, quantity=str(raw_qty)[:10])
        self.emit(
            v,
            "add_to_cart",
            self.absolute(request, v.links.product(p.product_id)),
            product_id=p.product_id,
            quantity=qty,
            price=p.price,
        )
        # Where the buyer lands: the cart (the default), or back on the product with a notice,
        # as most themes do (the cart link in the header then leads on).
        where = v.links.cart() if self.after_add == "cart" else v.links.product(p.product_id)
        return self.redirect(v, f"{where}?{urlencode({'added': p.product_id})}")

    async def cart_update(self, request: Request) -> Response:
        v = self.visit(request)
        form = await self.checked_form(request, v)
        pid = str(form.get("product_id", ""))
        qty, error = parse_quantity(form.get("quantity"), minimum=0)
        with self.lock:
            cart = v.shop.cart(v.buyer_id)
            old = cart.get(pid, 0)
            if error is None and pid not in cart:
                error = "That item is not in your cart."
            if error is not None or qty is None:
                return self._cart_page(v, error=error, status=422)
            if qty == 0:
                del cart[pid]
            else:
                cart[pid] = qty
        p = v.catalog.products[pid]
        url = self.absolute(request, v.links.cart())
        if qty > old:
            self.emit(v, "add_to_cart", url, product_id=pid, quantity=qty - old, price=p.price)
        elif qty < old:
            self.emit(v, "remove_from_cart", url, product_id=pid, quantity=old - qty, price=p.price)
        return self.redirect(v, v.links.cart())

    async def cart_remove(self, request: Request) -> Response:
        v = self.visit(request)
        form = await self.checked_form(request, v)
        pid = str(form.get("product_id", ""))
        with self.lock:
            old = v.shop.cart(v.buyer_id).pop(pid, 0)
        if old:
            p = v.catalog.products[pid]
            self.emit(
                v,
                "remove_from_cart",
                self.absolute(request, v.links.cart()),
                product_id=pid,
                quantity=old,
                price=p.price,
            )
        return self.redirect(v, v.links.cart())

    # ---- checkout ---------------------------------------------------------------------------
    async def checkout(self, request: Request) -> Response:
        """Start a checkout of the cart (POST from the cart). A GET changes nothing: it shows
        the cart, whose checkout button posts here (a link or prefetch must not start one)."""
        v = self.visit(request)
        if request.method != "POST":
            return self.redirect(v, v.links.cart())
        await self.checked_form(request, v)
        with self.lock:
            if not v.shop.lines(v.buyer_id):
                return self.redirect(v, v.links.cart())
            co = v.shop.new_checkout(v.buyer_id, v.now)
        return self.redirect(v, v.links.checkout_info(co.token))

    def _checkout_for(self, v: Visit, request: Request) -> Checkout:
        with self.lock:
            co = v.shop.checkouts.get(request.path_params["token"])
        if co is None or co.buyer_id != v.buyer_id:
            raise HTTPException(404, "Checkout not found")
        return co

    def _checkout_page(
        self,
        template: str,
        v: Visit,
        co: Checkout,
        lines: list[Line],
        errors: dict[str, str] | None = None,
        values: Mapping[str, str] | None = None,
        shipping: str | None = None,
    ) -> HTMLResponse:
        subtotal = round(sum(line.total for line in lines), 2)
        method = SHIPPING_METHODS[shipping or co.shipping]
        return self.render(
            template,
            v,
            "checkout",
            status_code=422 if errors else 200,
            checkout=co,
            lines=lines,
            subtotal=subtotal,
            method=method,
            total=round(subtotal + method.price, 2),
            methods=list(SHIPPING_METHODS.values()),
            countries=COUNTRIES,
            errors=errors or {},
            values=dict(values if values is not None else co.info),
            error="Please correct the highlighted fields." if errors else None,
            shipping_final=template == "checkout_payment.html",
        )

    async def checkout_info(self, request: Request) -> Response:
        v = self.visit(request)
        co = self._checkout_for(v, request)
        if co.order is not None:
            return self.redirect(v, v.links.thank_you(co.token))
        with self.lock:
            lines = v.shop.lines(v.buyer_id)
            first = not co.started_logged
            co.started_logged = True
        if not lines:
            return self.redirect(v, v.links.cart())
        if first:
            self.emit(
                v,
                "checkout_started",
                self.page_url(request),
                order_value=round(sum(line.total for line in lines), 2),
                quantity=sum(line.quantity for line in lines),
            )
        return self._checkout_page("checkout_information.html", v, co, lines)

    async def checkout_info_submit(self, request: Request) -> Response:
        v = self.visit(request)
        co = self._checkout_for(v, request)
        if co.order is not None:
            return self.redirect(v, v.links.thank_you(co.token))
        form = await self.checked_form(request, v)
        fields = (
            "email",
            "first_name",
            "last_name",
            "address1",
            "address2",
            "city",
            "postal_code",
            "country",
            "phone",
        )
        values = {f: " ".join(str(form.get(f, "")).split())[:200] for f in fields}
        shipping = str(form.get("shipping", "standard"))
        errors: dict[str, str] = {}
        for f, label in (
            ("email", "Email"),
            ("first_name", "First name"),
            ("last_name", "Last name"),
            ("address1", "Address"),
            ("city", "City"),
            ("postal_code", "Postal code"),
        ):
            if not values[f]:
                errors[f] = f"{label} is required."
        if values["email"] and not _EMAIL_RE.match(values["email"]):
            errors["email"] = "Enter a valid email address."
        if values["country"] not in dict(COUNTRIES):
            errors["country"] = "Choose a country we ship to."
        if shipping not in SHIPPING_METHODS:
            errors["shipping"] = "Choose a shipping method."
            shipping = "standard"
        with self.lock:
            lines = v.shop.lines(v.buyer_id)
        if not lines:
            return self.redirect(v, v.links.cart())
        if errors:
            return self._checkout_page(
                "checkout_information.html", v, co, lines, errors, values, shipping
            )
        with self.lock:
            co.info, co.shipping = values, shipping
            v.shop.saved_info[v.buyer_id] = (dict(values), shipping)
        return self.redirect(v, v.links.checkout_payment(co.token))

    async def checkout_payment(self, request: Request) -> Response:
        v = self.visit(request)
        co = self._checkout_for(v, request)
        if co.order is not None:
            return self.redirect(v, v.links.thank_you(co.token))
        if not co.has_info:
            return self.redirect(v, v.links.checkout_info(co.token))
        with self.lock:
            lines = v.shop.lines(v.buyer_id)
        if not lines:
            return self.redirect(v, v.links.cart())
        return self._checkout_page("checkout_payment.html", v, co, lines, values={})

    async def place_order(self, request: Request) -> Response:
        v = self.visit(request)
        co = self._checkout_for(v, request)
        if co.order is not None:
            return self.redirect(v, v.links.thank_you(co.token))
        if not co.has_info:
            return self.redirect(v, v.links.checkout_info(co.token))
        form = await self.checked_form(request, v)
        number = re.sub(r"[\s-]", "", str(form.get("card_number", "")))
        expiry = str(form.get("card_expiry", "")).strip()
        cvc = str(form.get("card_cvc", "")).strip()
        name = " ".join(str(form.get("card_name", "")).split())[:100]
        errors: dict[str, str] = {}
        if not number:
            errors["card_number"] = "Enter a card number."
        elif number in DECLINED_TEST_CARDS:
            errors["card_number"] = "Your card was declined. Try a different card."
        elif number not in TEST_CARDS:
            errors["card_number"] = (
                "This is a test store: only test cards are accepted, e.g. 4242 4242 4242 4242."
            )
        m = _EXPIRY_RE.match(expiry)
        if not m:
            errors["card_expiry"] = "Enter the expiry date as MM / YY."
        else:
            month, year = int(m.group(1)), int(m.group(2))
            year = year + 2000 if year < 100 else year
            now = v.now.astimezone(UTC)
            if not 1 <= month <= 12:
                errors["card_expiry"] = "Enter the expiry date as MM / YY."
            elif (year, month) < (now.year, now.month):
                errors["card_expiry"] = "Your card has expired."
        if not re.fullmatch(r"\d{3,4}", cvc):
            errors["card_cvc"] = "Enter the 3 or 4 digit security code."
        with self.lock:
            lines = v.shop.lines(v.buyer_id)
        if not lines:
            return self.redirect(v, v.links.cart())
        if errors:
            values = {
                "card_number": str(form.get("card_number", ""))[:30],
                "card_expiry": expiry[:10],
                "card_name": name,
            }
            return self._checkout_page("checkout_payment.html", v, co, lines, errors, values)
        with self.lock:
            if co.order is not None:  # a double submit
                return self.redirect(v, v.links.thank_you(co.token))
            subtotal = round(sum(line.total for line in lines), 2)
            co.order = Order(
                number=v.shop.next_order_number(),
                lines=lines,
                subtotal=subtotal,
                shipping=SHIPPING_METHODS[co.shipping],
                currency=v.catalog.currency,
                info=dict(co.info),
                card_brand=TEST_CARDS[number],
                card_last4=number[-4:],
                placed_at=v.now,
            )
            v.shop.carts[v.buyer_id] = {}
        pids = {line.product.product_id for line in lines}
        self.emit(
            v,
            "checkout_completed",
            self.absolute(request, v.links.thank_you(co.token)),
            order_value=subtotal,
            quantity=sum(line.quantity for line in lines),
            product_id=next(iter(pids)) if len(pids) == 1 else None,
        )
        return self.redirect(v, v.links.thank_you(co.token))

    async def thank_you(self, request: Request) -> Response:
        v = self.visit(request)
        co = self._checkout_for(v, request)
        if co.order is None:
            return self.redirect(v, v.links.checkout_info(co.token))
        return self.render("thank_you.html", v, "confirmation", checkout=co, order=co.order)

    # ---- debugging and errors ---------------------------------------------------------------
    async def crash(self, request: Request) -> Response:
        if not self.debug_routes:
            raise HTTPException(404, "Not found")
        raise RuntimeError("forced storefront error (debug route)")

    async def favicon(self, request: Request) -> Response:
        return Response(status_code=204)

    def error_page(self, request: Request, status: int, message: str) -> HTMLResponse:
        shop_id = request.path_params.get("shop_id") or self.root_shop
        if shop_id is None:
            m = re.match(r"^/s/([^/]+)", request.url.path)
            shop_id = m.group(1) if m else None
        visit = None
        if shop_id in self.shops:
            base = f"/s/{shop_id}" if request.url.path.startswith(f"/s/{shop_id}") else ""
            buyer = self.buyer_of(request)
            visit = Visit(
                self.shops[shop_id],
                buyer or "",
                "",
                self.clock(),
                Links(base),
                log=False,
            )
        title = {404: "Page not found", 500: "Something went wrong"}.get(status, message)
        ctx: dict[str, Any] = {
            "page": "error",
            "visit": visit,
            "error": None,
            "status": status,
            "title": title,
            "message": message,
        }
        ctx.update(self._shop_context(visit))
        html = self.env.get_template("error.html").render(**ctx)
        return HTMLResponse(html, status_code=status)


def create_app(
    catalog: StoreCatalog | Mapping[str, StoreCatalog],
    event_sink: EventSink,
    *,
    debug_routes: bool = False,
    clock: Callable[[], datetime] | None = None,
    secure_cookies: bool = False,
    flush_on_shutdown: bool = True,
    public_url: str | None = None,
    secret: bytes | None = None,
    max_buyers: int = MAX_BUYERS,
    max_pages: int = MAX_PAGES,
    after_add: AfterAdd = "cart",
) -> FastAPI:
    """The storefront app for one shop (served at `/` and `/s/<shop_id>/`) or many (a dict
    shop_id -> catalog, served at `/s/<shop_id>/`, listed at `/`).

    `debug_routes` enables `/__debug/crash` (a forced 500); `clock` replaces the wall clock
    (UTC-aware datetimes) for event times and session expiry, e.g. in tests. `public_url`
    is the origin written into logged event URLs (default: the address the server listens
    on; the request's Host header is never trusted). `secret` signs buyer cookies and CSRF
    tokens (default: `identity.store_secret()`). Each shop keeps the state of at most
    `max_buyers` buyers (the least recently seen go first; idle ones expire after
    `state.STATE_TTL`). Up to `max_pages` rendered pages are kept with holes for the
    buyer's parts (`Storefront.render`; 0 renders every page in full). `after_add` is where
    an add to cart leads: the cart page, or back to the product page with a notice.
    """
    if isinstance(catalog, StoreCatalog):
        catalogs: dict[str, StoreCatalog] = {catalog.shop_id: catalog}
        root_shop: str | None = catalog.shop_id
    else:
        catalogs = dict(catalog)
        for key, cat in catalogs.items():
            if key != cat.shop_id:
                raise ValueError(f"catalog under key {key!r} is for shop {cat.shop_id!r}")
        if not catalogs:
            raise ValueError("no catalogs to serve")
        root_shop = None
    store = Storefront(
        catalogs,
        event_sink,
        root_shop=root_shop,
        debug_routes=debug_routes,
        clock=clock or (lambda: datetime.now(UTC)),
        secure_cookies=secure_cookies,
        public_url=public_url,
        secret=secret,
        max_buyers=max_buyers,
        max_pages=max_pages,
        after_add=after_add,
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        if flush_on_shutdown:
            event_sink.flush()

    app = FastAPI(
        title="SimPersona storefront",
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
        lifespan=lifespan,
    )
    app.state.storefront = store
    app.mount("/static", StaticFiles(directory=str(STATIC_DIR)), name="static")

    routes: list[tuple[str, Callable[..., Any], list[str]]] = [
        ("/", store.home, ["GET"]),
        ("/collections", store.collections_index, ["GET"]),
        ("/collections/{collection_id:path}", store.collection, ["GET"]),
        ("/products/{product_id:path}", store.product, ["GET"]),
        ("/search", store.search, ["GET"]),
        ("/pages/{handle}", store.info_page, ["GET"]),
        ("/cart", store.cart, ["GET"]),
        ("/cart/add", store.cart_add, ["POST"]),
        ("/cart/update", store.cart_update, ["POST"]),
        ("/cart/remove", store.cart_remove, ["POST"]),
        ("/checkout", store.checkout, ["GET", "POST"]),
        ("/checkouts/c/{token}", store.checkout_info, ["GET"]),
        ("/checkouts/c/{token}", store.checkout_info_submit, ["POST"]),
        ("/checkouts/c/{token}/payment", store.checkout_payment, ["GET"]),
        ("/checkouts/c/{token}/payment", store.place_order, ["POST"]),
        ("/checkouts/c/{token}/thank-you", store.thank_you, ["GET"]),
        ("/__debug/crash", store.crash, ["GET"]),
    ]
    app.add_api_route("/favicon.ico", store.favicon, methods=["GET"], include_in_schema=False)
    app.add_api_route("/", store.shop_index, methods=["GET", "HEAD"], include_in_schema=False)
    app.add_api_route("/s/{shop_id}", store.home, methods=["GET", "HEAD"], include_in_schema=False)
    # HEAD wherever GET is allowed (link checkers, uptime probes); a HEAD logs no event
    routes = [(p, e, [*m, "HEAD"] if "GET" in m else m) for p, e, m in routes]
    for path, endpoint, methods in routes:
        app.add_api_route("/s/{shop_id}" + path, endpoint, methods=methods, include_in_schema=False)
        if root_shop is not None and path != "/":
            app.add_api_route(path, endpoint, methods=methods, include_in_schema=False)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> Response:
        return store.error_page(request, exc.status_code, str(exc.detail))

    @app.exception_handler(Exception)
    async def server_error(request: Request, exc: Exception) -> Response:
        return store.error_page(request, 500, "The shop hit an unexpected error.")

    return app
