"""In-memory storefront state: carts, sessions, checkouts and orders per shop.

Carts are kept per (shop, buyer), so they outlive a session like a storefront's cart cookie;
sessions are per (shop, buyer) and end after 30 minutes without a request, the rule
ingestion's sessionizer applies to logs without session ids.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from simpersona.store.catalog import Product, StoreCatalog

SESSION_TIMEOUT = timedelta(minutes=30)
MAX_QUANTITY = 99
# A buyer's state (session, cart, saved details, checkouts) is dropped after this long
# without a request, and the least recently seen buyers go first beyond MAX_BUYERS, so
# memory stays bounded under any traffic (clients that never keep a cookie make a new
# buyer per request). Ours, not a real shop's: carts of simulated buyers need no week.
STATE_TTL = timedelta(hours=2)
MAX_BUYERS = 50_000
_ID_RE = re.compile(r"[^A-Za-z0-9._:@-]")


def clean_id(value: str | None, max_len: int = 128) -> str | None:
    """A buyer or session id from a cookie or header: safe characters only, or None."""
    if not value:
        return None
    value = _ID_RE.sub("", value.strip())[:max_len]
    return value or None


def new_buyer_id() -> str:
    return f"v-{secrets.token_hex(8)}"


@dataclass(frozen=True)
class ShippingMethod:
    code: str
    title: str
    eta: str
    price: float


SHIPPING_METHODS: dict[str, ShippingMethod] = {
    "standard": ShippingMethod("standard", "Standard shipping", "5–8 business days", 0.0),
    "express": ShippingMethod("express", "Express shipping", "1–2 business days", 15.0),
}

COUNTRIES: tuple[tuple[str, str], ...] = (
    ("US", "United States"),
    ("CA", "Canada"),
    ("GB", "United Kingdom"),
    ("IE", "Ireland"),
    ("DE", "Germany"),
    ("FR", "France"),
    ("NL", "Netherlands"),
    ("ES", "Spain"),
    ("IT", "Italy"),
    ("AU", "Australia"),
)


@dataclass(frozen=True)
class Line:
    product: Product
    quantity: int

    @property
    def unit_price(self) -> float:
        return self.product.price or 0.0

    @property
    def total(self) -> float:
        return round(self.unit_price * self.quantity, 2)


def subtotal(lines: list[Line]) -> float:
    """What the lines cost together, before shipping."""
    return round(sum(line.total for line in lines), 2)


def item_count(lines: list[Line]) -> int:
    """How many items the lines hold (a line of 3 counts 3)."""
    return sum(line.quantity for line in lines)


@dataclass
class Order:
    number: str
    lines: list[Line]
    subtotal: float
    shipping: ShippingMethod
    currency: str
    info: dict[str, str]
    card_brand: str
    card_last4: str
    placed_at: datetime

    @property
    def total(self) -> float:
        return round(self.subtotal + self.shipping.price, 2)

    @property
    def item_count(self) -> int:
        return item_count(self.lines)


@dataclass
class Checkout:
    token: str
    buyer_id: str
    created_at: datetime
    started_logged: bool = False
    info: dict[str, str] = field(default_factory=dict)
    shipping: str = "standard"
    order: Order | None = None

    @property
    def has_info(self) -> bool:
        return bool(self.info)


@dataclass
class Session:
    session_id: str
    last_seen: datetime


@dataclass
class ShopState:
    catalog: StoreCatalog
    carts: dict[str, dict[str, int]] = field(default_factory=dict)  # buyer -> product -> qty
    sessions: dict[str, Session] = field(default_factory=dict)
    checkouts: dict[str, Checkout] = field(default_factory=dict)
    saved_info: dict[str, tuple[dict[str, str], str]] = field(default_factory=dict)
    order_seq: int = 1000
    state_ttl: timedelta = STATE_TTL
    max_buyers: int = MAX_BUYERS
    last_sweep: datetime | None = None

    def cart(self, buyer_id: str) -> dict[str, int]:
        return self.carts.setdefault(buyer_id, {})

    def lines(self, buyer_id: str) -> list[Line]:
        cart = self.carts.get(buyer_id, {})
        return [
            Line(self.catalog.products[pid], qty)
            for pid, qty in cart.items()
            if pid in self.catalog.products and qty > 0
        ]

    def touch_session(
        self, buyer_id: str, now: datetime, cookie_session: str | None, forced: str | None
    ) -> str:
        """The buyer's session id at `now`: the forced one, the running one (last request
        at most 30 minutes ago), the cookie's (after a server restart), or a new one."""
        current = self.sessions.get(buyer_id)
        if forced:
            sid = forced
        elif current is not None and now - current.last_seen <= SESSION_TIMEOUT:
            sid = current.session_id
        elif current is None and cookie_session and cookie_session.startswith(f"{buyer_id}-"):
            sid = cookie_session
        else:
            sid = f"{buyer_id}-{int(now.timestamp() * 1000)}"
        self.sessions.pop(buyer_id, None)  # re-inserted last: `sessions` is oldest-first
        self.sessions[buyer_id] = Session(sid, now)
        self.expire(now)
        return sid

    def expire(self, now: datetime) -> int:
        """Drop the state of buyers idle longer than `state_ttl` (looked at once a minute),
        and of the least recently seen beyond `max_buyers` (down to 90 % of it at once, so
        the cost spreads over many requests). Returns how many buyers were dropped."""
        over = len(self.sessions) > self.max_buyers
        due = self.last_sweep is None or now - self.last_sweep >= timedelta(minutes=1)
        if not over and not due:
            return 0
        if due:
            self.last_sweep = now
        keep = int(self.max_buyers * 0.9) if over else len(self.sessions)
        gone: set[str] = set()
        for buyer, session in self.sessions.items():  # oldest first
            if len(self.sessions) - len(gone) > keep or now - session.last_seen > self.state_ttl:
                gone.add(buyer)
            else:
                break
        if not gone:
            return 0
        for buyer in gone:
            del self.sessions[buyer]
            self.carts.pop(buyer, None)
            self.saved_info.pop(buyer, None)
        self.checkouts = {t: c for t, c in self.checkouts.items() if c.buyer_id not in gone}
        return len(gone)

    def new_checkout(self, buyer_id: str, now: datetime) -> Checkout:
        token = str(10**11 + secrets.randbelow(9 * 10**11))
        while token in self.checkouts:
            token = str(10**11 + secrets.randbelow(9 * 10**11))
        co = Checkout(token=token, buyer_id=buyer_id, created_at=now)
        # A buyer's previous details prefill the new checkout, as a storefront would.
        if buyer_id in self.saved_info:
            info, shipping = self.saved_info[buyer_id]
            co.info, co.shipping = dict(info), shipping
        self.checkouts[token] = co
        return co

    def next_order_number(self) -> str:
        self.order_seq += 1
        return f"#{self.order_seq}"
