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

This module holds the HTTP handlers and `create_app`. What a request resolves to, cookies,
CSRF, event logging and rendering are in `visits.py`; what each page shows in `pages.py`;
the templates' environment and caches in `render.py`; URLs in `links.py`; the validation of
cart and checkout forms in `checkout.py`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException

from simpersona.store import pages
from simpersona.store.catalog import Product, StoreCatalog
from simpersona.store.checkout import (
    cart_limit_error,
    parse_quantity,
    validate_info,
    validate_payment,
)
from simpersona.store.events import EventSink
from simpersona.store.identity import CSRF_FIELD
from simpersona.store.links import Links
from simpersona.store.pages import INFO_PAGES
from simpersona.store.render import MAX_PAGES, dom_id
from simpersona.store.state import (
    MAX_BUYERS,
    MAX_QUANTITY,
    SHIPPING_METHODS,
    Checkout,
    Line,
    Order,
    item_count,
    subtotal,
)
from simpersona.store.visits import BUYER_COOKIE, AfterAdd, StorefrontBase, Visit

# Names code outside the store package imports from here.
__all__ = [
    "BUYER_COOKIE",
    "CSRF_FIELD",
    "INFO_PAGES",
    "Links",
    "Storefront",
    "create_app",
    "dom_id",
]

STATIC_DIR = Path(__file__).resolve().parent / "static"
INFO_TEMPLATE = "checkout_information.html"
PAYMENT_TEMPLATE = "checkout_payment.html"


class Storefront(StorefrontBase):
    """Request handlers of one storefront server (one or many shops)."""

    # ---- pages ------------------------------------------------------------------------------
    async def shop_index(self, request: Request) -> Response:
        if self.root_shop is not None:
            return await self.home(request)
        cats = [s.catalog for s in self.shops.values()]
        return self.render("index.html", None, "index", shops=cats, Links=Links)

    async def home(self, request: Request) -> Response:
        v = self.visit(request)
        ctx = pages.home_context(v.catalog)
        self.emit(v, "page_view", self.page_url(request))
        return self.render("home.html", v, "home", page_key=(), **ctx)

    async def collections_index(self, request: Request) -> Response:
        v = self.visit(request)
        ctx = pages.collections_context(v.catalog)
        self.emit(v, "page_view", self.page_url(request))
        return self.render("collections.html", v, "collection", page_key=(), **ctx)

    async def collection(self, request: Request) -> Response:
        v = self.visit(request)
        coll = v.catalog.collection(request.path_params["collection_id"])
        if coll is None:
            raise HTTPException(404, "Collection not found")
        sort = pages.sort_order(request.query_params.get("sort"))
        page = pages.page_number(request.query_params.get("page"))
        ctx = pages.collection_context(v.catalog, coll, sort, page, v.links)
        self.emit(v, "collection_view", self.page_url(request), collection_id=coll.collection_id)
        key = (coll.collection_id, ctx["page_no"], sort)
        return self.render("collection.html", v, "collection", page_key=key, **ctx)

    async def search(self, request: Request) -> Response:
        v = self.visit(request)
        q = pages.search_query(request.query_params.get("q", ""))
        page = pages.page_number(request.query_params.get("page"))
        ctx = pages.search_context(v.catalog, q, page, v.links)
        if q:
            self.emit(v, "search", self.page_url(request), search_query=q)
        else:
            self.emit(v, "page_view", self.page_url(request))
        return self.render("search.html", v, "search", page_key=(q, ctx["page_no"]), **ctx)

    async def product(self, request: Request) -> Response:
        v = self.visit(request)
        p = v.catalog.product(request.path_params["product_id"])
        if p is None:
            raise HTTPException(404, "Product not found")
        self.emit(v, "product_view", self.page_url(request), product_id=p.product_id, price=p.price)
        added = request.query_params.get("added") == p.product_id
        return self._product_page(v, p, notice=pages.added_notice(p) if added else None)

    def _product_page(
        self,
        v: Visit,
        p: Product,
        error: str | None = None,
        quantity: str = "1",
        notice: str | None = None,
    ) -> HTMLResponse:
        ctx = pages.product_context(v.catalog, p, error=error, quantity=quantity, notice=notice)
        key = None if error or notice else (p.product_id, quantity)
        status = 422 if error else 200
        return self.render("product.html", v, "product", status, page_key=key, **ctx)

    async def info_page(self, request: Request) -> Response:
        v = self.visit(request)
        handle = request.path_params["handle"]
        ctx = pages.info_context(handle)
        if ctx is None:
            raise HTTPException(404, "Page not found")
        self.emit(v, "page_view", self.page_url(request))
        return self.render("page.html", v, "info", page_key=(handle,), **ctx)

    # ---- cart -------------------------------------------------------------------------------
    def _cart_page(
        self, v: Visit, error: str | None = None, notice: str | None = None, status: int = 200
    ) -> HTMLResponse:
        lines = self.cart_lines(v)
        return self.render(
            "cart.html", v, "cart", status, **pages.cart_context(lines, error, notice)
        )

    async def cart(self, request: Request) -> Response:
        v = self.visit(request)
        added = v.catalog.product(request.query_params.get("added", ""))
        self.emit(v, "page_view", self.page_url(request))
        return self._cart_page(v, notice=pages.added_notice(added) if added is not None else None)

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
                    error = cart_limit_error(cart[p.product_id])
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

    def _step_redirect(
        self, v: Visit, co: Checkout, *, needs_info: bool = False
    ) -> Response | None:
        """Where a checkout step sends the buyer instead of itself, if anywhere: the
        confirmation once the order is placed; the information step while a step that
        `needs_info` (payment, placing the order) has no address yet."""
        if co.order is not None:
            return self.redirect(v, v.links.thank_you(co.token))
        if needs_info and not co.has_info:
            return self.redirect(v, v.links.checkout_info(co.token))
        return None

    def _checkout_page(
        self, template: str, v: Visit, co: Checkout, lines: list[Line], **form: Any
    ) -> HTMLResponse:
        """A checkout step; `form`: the errors, values and shipping method to show
        (`pages.checkout_context`)."""
        ctx = pages.checkout_context(co, lines, payment=template == PAYMENT_TEMPLATE, **form)
        return self.render(template, v, "checkout", 422 if form.get("errors") else 200, **ctx)

    async def checkout_info(self, request: Request) -> Response:
        v = self.visit(request)
        co = self._checkout_for(v, request)
        if (elsewhere := self._step_redirect(v, co)) is not None:
            return elsewhere
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
                order_value=subtotal(lines),
                quantity=item_count(lines),
            )
        return self._checkout_page(INFO_TEMPLATE, v, co, lines)

    async def checkout_info_submit(self, request: Request) -> Response:
        v = self.visit(request)
        co = self._checkout_for(v, request)
        if (elsewhere := self._step_redirect(v, co)) is not None:
            return elsewhere
        info = validate_info(await self.checked_form(request, v))
        lines = self.cart_lines(v)
        if not lines:
            return self.redirect(v, v.links.cart())
        if info.errors:
            form = {"errors": info.errors, "values": info.values, "shipping": info.shipping}
            return self._checkout_page(INFO_TEMPLATE, v, co, lines, **form)
        with self.lock:
            co.info, co.shipping = info.values, info.shipping
            v.shop.saved_info[v.buyer_id] = (dict(info.values), info.shipping)
        return self.redirect(v, v.links.checkout_payment(co.token))

    async def checkout_payment(self, request: Request) -> Response:
        v = self.visit(request)
        co = self._checkout_for(v, request)
        if (elsewhere := self._step_redirect(v, co, needs_info=True)) is not None:
            return elsewhere
        lines = self.cart_lines(v)
        if not lines:
            return self.redirect(v, v.links.cart())
        return self._checkout_page(PAYMENT_TEMPLATE, v, co, lines, values={})

    async def place_order(self, request: Request) -> Response:
        v = self.visit(request)
        co = self._checkout_for(v, request)
        if (elsewhere := self._step_redirect(v, co, needs_info=True)) is not None:
            return elsewhere
        payment = validate_payment(await self.checked_form(request, v), v.now)
        lines = self.cart_lines(v)
        if not lines:
            return self.redirect(v, v.links.cart())
        if payment.errors:
            form = {"errors": payment.errors, "values": payment.values}
            return self._checkout_page(PAYMENT_TEMPLATE, v, co, lines, **form)
        with self.lock:
            if co.order is not None:  # a double submit
                return self.redirect(v, v.links.thank_you(co.token))
            amount = subtotal(lines)
            co.order = Order(
                number=v.shop.next_order_number(),
                lines=lines,
                subtotal=amount,
                shipping=SHIPPING_METHODS[co.shipping],
                currency=v.catalog.currency,
                info=dict(co.info),
                card_brand=payment.card_brand,
                card_last4=payment.card_last4,
                placed_at=v.now,
            )
            v.shop.carts[v.buyer_id] = {}
        pids = {line.product.product_id for line in lines}
        self.emit(
            v,
            "checkout_completed",
            self.absolute(request, v.links.thank_you(co.token)),
            order_value=amount,
            quantity=item_count(lines),
            product_id=next(iter(pids)) if len(pids) == 1 else None,
        )
        return self.redirect(v, v.links.thank_you(co.token))

    async def thank_you(self, request: Request) -> Response:
        v = self.visit(request)
        co = self._checkout_for(v, request)
        if co.order is None:
            return self.redirect(v, v.links.checkout_info(co.token))
        return self.render("thank_you.html", v, "confirmation", **pages.thank_you_context(co))

    # ---- debugging --------------------------------------------------------------------------
    async def crash(self, request: Request) -> Response:
        if not self.debug_routes:
            raise HTTPException(404, "Not found")
        raise RuntimeError("forced storefront error (debug route)")

    async def favicon(self, request: Request) -> Response:
        return Response(status_code=204)


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
    buyer's parts (`render.Renderer.page`; 0 renders every page in full). `after_add` is
    where an add to cart leads: the cart page, or back to the product page with a notice.
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
