"""A request as the storefront sees it: which shop, buyer and session it is for (`Visit`),
and what every handler shares — the cookies and headers each response carries, the CSRF
check of posted forms, the events a visit logs, and rendering pages and redirects.

Buyers are identified by the `sp_buyer` cookie the storefront signed (`identity`); sessions
end after 30 minutes without a request (`sp_session_<shop>` cookie, `X-Session-Id` header to
force one). The HTTP handlers that build on this are in `app.py`.
"""

from __future__ import annotations

import hmac
import re
import threading
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, TypeVar

from fastapi import Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from starlette.exceptions import HTTPException

from simpersona.store.catalog import StoreCatalog
from simpersona.store.events import EventSink
from simpersona.store.identity import (
    CSRF_FIELD,
    buyer_cookie,
    csrf_token,
    read_buyer_cookie,
    store_secret,
)
from simpersona.store.links import Links
from simpersona.store.pages import error_context
from simpersona.store.render import MAX_PAGES, Renderer
from simpersona.store.state import (
    MAX_BUYERS,
    SESSION_TIMEOUT,
    Line,
    ShopState,
    clean_id,
    item_count,
    new_buyer_id,
)

BUYER_COOKIE = "sp_buyer"
SESSION_COOKIE_PREFIX = "sp_session_"
BUYER_COOKIE_MAX_AGE = 2 * 365 * 24 * 3600

AfterAdd = Literal["cart", "product"]  # where an add to cart leads
# `_finish` hands back the response it was given, of the same class (an HTMLResponse stays one)
_ResponseT = TypeVar("_ResponseT", bound=Response)


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


class StorefrontBase:
    """State and options of one storefront server (one or many shops) and the request
    plumbing its handlers share; `app.Storefront` adds the handlers."""

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
        self.debug_routes = debug_routes
        self.shops = {sid: ShopState(cat, max_buyers=max_buyers) for sid, cat in catalogs.items()}
        self.sink = sink
        self.root_shop = root_shop
        self.clock = clock
        self.secure_cookies = secure_cookies
        self.public_url = public_url.rstrip("/") if public_url else None
        self.secret = secret or store_secret()
        self.lock = threading.RLock()
        self._last_ts: datetime | None = None
        self.renderer = Renderer(max_pages)

    # ---- who is asking ----------------------------------------------------------------------
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

    def cart_lines(self, visit: Visit) -> list[Line]:
        """The lines of the visiting buyer's cart, read under the lock."""
        with self.lock:
            return visit.shop.lines(visit.buyer_id)

    # ---- events -----------------------------------------------------------------------------
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

    # ---- responses --------------------------------------------------------------------------
    def _finish(self, response: _ResponseT, visit: Visit) -> _ResponseT:
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

    def _chrome(self, visit: Visit | None) -> dict[str, Any]:
        """Template variables of the shop chrome (header, nav, cart count) for a visit."""
        if visit is None:
            return {"shop": None}
        cart_count = item_count(self.cart_lines(visit))
        token = csrf_token(visit.buyer_id, self.secret)
        return self.renderer.chrome(visit.catalog, visit.links, cart_count, token)

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
        page depends on) it is kept with holes for the buyer's parts (`Renderer.page`)."""
        ctx: dict[str, Any] = {"page": page, "visit": visit, "error": None, "shop": None}
        ctx.update(self._chrome(visit))
        ctx.update(context)
        key = None
        if page_key is not None and visit is not None:
            key = (visit.catalog.shop_id, visit.links.base, *page_key)
        response = HTMLResponse(self.renderer.page(template, ctx, key), status_code=status_code)
        return self._finish(response, visit) if visit is not None else response

    def redirect(self, visit: Visit, path: str) -> Response:
        return self._finish(RedirectResponse(path, status_code=303), visit)

    def error_page(self, request: Request, status: int, message: str) -> HTMLResponse:
        """The error page for a failed request, in the chrome of the shop its path names
        (no cookies set, nothing logged)."""
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
        ctx: dict[str, Any] = {"page": "error", "visit": visit, "error": None}
        ctx.update(error_context(status, message))
        ctx.update(self._chrome(visit))
        return HTMLResponse(self.renderer.page("error.html", ctx), status_code=status)
