"""The agents' clickstream on any store, recorded in the browser as canonical events.

The project's storefront logs its visitors' events itself. A store the project does not run
logs nothing for us, so each session's events are derived from what the browser saw: the
pages it loaded, as the page reading understood them, and the actions that succeeded.

| event | when |
|---|---|
| `product_view` | a product page loads (product id from its structured data or URL; price) |
| `collection_view` | a collection or category page loads (id: the URL's last segment) |
| `search` | a search results page loads (query from the URL, else the typed phrase) |
| `page_view` | any other page loads (home, cart, information pages) |
| `add_to_cart` | an add-to-cart action succeeded: the cart count rose, or, where the page shows no count, the store accepted the write and the page shows no error |
| `remove_from_cart` | a remove control succeeded the same way |
| `checkout_started` | the first checkout page of the session |
| `checkout_completed` | an order confirmation page (order value from the page, when shown) |

Events carry the session's buyer id (`sim-…`, never a person), a session id, UTC timestamps
and the page URL, and go to an `EventSink` (a `LakeEventSink` writes them into the lake in
the layout ingestion reads, as a simulation run).
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from simpersona.agent.actions import AddToCart, Click, Search, _Action
from simpersona.agent.observation import Observation
from simpersona.agent.page_reading import product_id_from_url, search_query
from simpersona.store.events import EventSink

_PRICE_NUMBER = re.compile(r"\d+(?:[.,]\d{3})*(?:[.,]\d{1,2})?")


def parse_price(text: str | None) -> float | None:
    """A price's number from text such as "$1,299.00", "£12.50" or "12,50 €"."""
    if not text:
        return None
    m = _PRICE_NUMBER.search(str(text))
    if not m:
        return None
    s = m.group(0)
    if re.fullmatch(r"\d+(,\d{3})*\.\d{1,2}|\d+", s):
        s = s.replace(",", "")
    elif re.fullmatch(r"\d+(\.\d{3})*,\d{1,2}", s):
        s = s.replace(".", "").replace(",", ".")
    else:
        s = s.replace(",", "")
    try:
        return float(s)
    except ValueError:
        return None


@dataclass
class SessionCapture:
    """Derives one session's canonical events (see the module docstring) and emits them."""

    sink: EventSink
    shop_id: str
    buyer_id: str
    session_id: str
    currency: str | None = None
    events: int = 0
    cart_items: int = 0  # items the session's successful adds and removes leave in the cart
    _seq: itertools.count = field(default_factory=itertools.count)
    _checkout_started: bool = False
    _last_query: str | None = None

    def _emit(self, event_type: str, obs: Observation, **fields: Any) -> None:
        self.sink.emit(
            {
                "event_id": f"{self.session_id}-{next(self._seq):04d}",
                "shop_id": self.shop_id,
                "buyer_id": self.buyer_id,
                "session_id": self.session_id,
                "ts": datetime.now(UTC),
                "event_type": event_type,
                "url": obs.url,
                "currency": obs.facts.get("currency") or self.currency,
                **fields,
            }
        )
        self.events += 1

    def _saw(self, table: str, row: dict[str, Any]) -> None:
        # The store's catalogue as the agents saw it (a sink that keeps one: live runs).
        note = getattr(self.sink, "saw", None)
        if note is not None:
            note(self.shop_id, table, row)

    def page(self, obs: Observation) -> None:
        """A page loaded: its view event."""
        for link in obs.links("product"):
            self._saw("products", {"product_id": link.product_id, "title": link.label})
        if obs.kind == "product":
            pid = obs.product_id or product_id_from_url(obs.url)
            price = parse_price(obs.facts.get("price"))
            self._saw("products", {"product_id": pid, "title": obs.title, "price": price})
            self._emit("product_view", obs, product_id=pid, price=price)
        elif obs.kind == "collection" and product_id_from_url(obs.url):
            cid = product_id_from_url(obs.url)
            self._saw("collections", {"collection_id": cid, "title": obs.title})
            self._emit("collection_view", obs, collection_id=cid)
        elif obs.kind == "search":
            query = search_query(obs.url) or self._last_query
            if query:
                self._emit("search", obs, search_query=query)
            else:  # an empty search box submitted: a page view, as a store would log it
                self._emit("page_view", obs)
        elif obs.kind == "checkout":
            if not self._checkout_started:
                self._checkout_started = True
                self._emit("checkout_started", obs)
            else:
                self._emit("page_view", obs)
        elif obs.kind == "confirmation":
            value = parse_price(obs.facts.get("subtotal") or obs.facts.get("total"))
            self._emit("checkout_completed", obs, order_value=value)
            self.cart_items = 0
        else:
            self._emit("page_view", obs)

    def fill_cart_count(self, obs: Observation) -> None:
        """Where the page shows no cart count, the count the session's own adds and removes
        left (so a goal to add to the cart can be seen reached)."""
        if "cart_count" not in obs.facts:
            obs.facts["cart_count"] = str(self.cart_items)
            obs.facts["cart_count_source"] = "session"

    def action(
        self, action: _Action, before: Observation, after: Observation, writes_ok: int
    ) -> None:
        """An action succeeded (`writes_ok`: the store accepted that many write requests
        while it ran): its cart event, then the view event of the page it led to."""
        if isinstance(action, Search):
            self._last_query = action.query
        el = before.element(action.id) if isinstance(action, Click) else None
        adding = isinstance(action, AddToCart) or (el is not None and el.role == "add_to_cart")
        removing = el is not None and el.role == "remove_from_cart"
        if adding or removing:
            shown = all(
                "cart_count" in o.facts and "cart_count_source" not in o.facts
                for o in (before, after)
            )
            if shown:
                ok = (
                    (after.cart_count > before.cart_count)
                    if adding
                    else (after.cart_count < before.cart_count)
                )
            else:
                ok = writes_ok > 0 and not after.form_error and after.kind != "error"
            pid = before.product_id if before.kind == "product" else None
            pid = pid or (el.product_id if el else None)
            if ok:
                qty = action.quantity if isinstance(action, AddToCart) else 1
                self.cart_items = max(0, self.cart_items + (qty if adding else -qty))
            # An add the page does not tie to a product is counted, not logged.
            if ok and (pid or removing):
                price = parse_price(before.facts.get("price")) if before.kind == "product" else None
                self._emit(
                    "add_to_cart" if adding else "remove_from_cart",
                    before,
                    product_id=pid,
                    quantity=qty,
                    price=price,
                )
        if after.url != before.url or after.kind != before.kind:
            self.page(after)
