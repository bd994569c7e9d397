"""What keeps agents safe on a store the project does not run (docs/agents.md, "Your store").

- **Orders** are placed only where the run allows them: `allow_orders` and the store's host
  in an explicit list (`host` or `host:port`). Anywhere else a session stops before the final
  order submission, which is recognised by the checkout step and the control (a "Place
  order" / "Pay now" / "Complete purchase" button, any submit on a page asking for card
  details), and, as a second line, the browser aborts any write request whose URL or body
  names an order placement (`ORDER_REQUEST`).
- **Hosts**: no request leaves the allowlist (the browser pool aborts it; see
  `simpersona.agent.browser`), and every request to a host waits its turn under a per-host
  rate (`HostRateLimiter`).
- **robots.txt** is honoured on hosts that are not loopback (`RobotsGuard`).

Each guard that ends a session names itself in the session's `guard` field and message.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import time
import urllib.robotparser
from collections.abc import Iterable
from urllib.error import HTTPError
from urllib.parse import urlsplit
from urllib.request import Request, urlopen

from simpersona.agent.actions import Click, _Action
from simpersona.agent.observation import Observation
from simpersona.agent.page_reading import _PLACE_ORDER_LABEL

GUARDS: tuple[str, ...] = ("order_guard", "order_request_guard", "allowlist", "robots")
USER_AGENT = "SimPersonaAgent"
# A write request that places an order: URL paths and form or GraphQL bodies of common stores.
ORDER_REQUEST = re.compile(
    r"place[-_]?order|placeorder|complete[-_]?(order|checkout)|checkout[-_/]?complete"
    r"|submit[-_]?order|create[-_]?order|order/create|confirm[-_]?order|checkoutcomplete"
    r"|/orders?/?(\?|$)|/payment/(process|submit)|/carts?/[^/]+/(checkout|complete|order)\b",
    re.I,
)


def is_loopback(host: str) -> bool:
    """`localhost` or a loopback address (127.0.0.0/8, ::1)."""
    host = host.strip("[]").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def orders_allowed(url: str, allow_orders: bool, order_hosts: Iterable[str]) -> bool:
    """Whether an order may be placed on the store at `url`: only with `allow_orders` and its
    host (any port) or host:port in `order_hosts`."""
    if not allow_orders:
        return False
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    netloc = f"{host}:{parts.port}" if parts.port else host
    for entry in order_hosts:
        e = entry.lower().strip()
        if e in (host, netloc):
            return True
    return False


def order_submission(action: _Action, obs: Observation) -> str | None:
    """Why `action` on `obs` would submit an order (a short reason), else None: a click on a
    place-order control, or on a submit button of a checkout page that asks for card
    details."""
    if not isinstance(action, Click) or obs.kind == "confirmation":
        return None
    el = obs.element(action.id)
    if el is None:
        return None
    if el.role == "place_order":
        return f"the {el.label[:40]!r} control places the order"
    if (
        el.kind in ("button", "link")
        and _PLACE_ORDER_LABEL.search(el.label or "")
        and (obs.kind in ("checkout", "cart"))
    ):
        return f"the {el.label[:40]!r} control places the order"
    if obs.is_payment_step and el.kind == "button" and el.region == "form":
        return "a submit on the payment step places the order"
    return None


def order_request(method: str, url: str, body: str | None) -> bool:
    """Whether a request looks like an order placement (a write whose URL or body says so)."""
    if method.upper() in ("GET", "HEAD", "OPTIONS"):
        return False
    return bool(ORDER_REQUEST.search(url) or (body and ORDER_REQUEST.search(body[:8192])))


class HostRateLimiter:
    """At most `rate` requests a second to each host, shared by every session of a pool:
    each request waits for its slot (`await limiter.wait(host)`)."""

    def __init__(self, rate: float) -> None:
        if rate <= 0:
            raise ValueError("the request rate must be positive")
        self.interval = 1.0 / rate
        self._next: dict[str, float] = {}

    def delay(self, host: str) -> float:
        """Reserve the next slot for `host`; the seconds to wait for it."""
        now = time.monotonic()
        slot = max(now, self._next.get(host, now))
        self._next[host] = slot + self.interval
        return slot - now

    async def wait(self, host: str) -> None:
        d = self.delay(host)
        if d > 0:
            await asyncio.sleep(d)


def _disallow_all() -> urllib.robotparser.RobotFileParser:
    parser = urllib.robotparser.RobotFileParser()
    parser.parse(["User-agent: *", "Disallow: /"])
    return parser


class RobotsGuard:
    """robots.txt of each host, fetched once (5 s timeout), read as RFC 9309 says: a file
    that is missing or otherwise refused with a 4xx allows everything; a server error (5xx)
    or an unreachable file disallows everything, since the store may have rules we cannot
    see. `mode`: "auto" checks hosts that are not loopback, "always" every host, "never"
    none."""

    def __init__(self, mode: str = "auto", user_agent: str = USER_AGENT) -> None:
        if mode not in ("auto", "always", "never"):
            raise ValueError(f"robots mode must be auto, always or never, got {mode!r}")
        self.mode = mode
        self.user_agent = user_agent
        self._parsers: dict[str, urllib.robotparser.RobotFileParser | None] = {}

    def _parser(self, url: str) -> urllib.robotparser.RobotFileParser | None:
        parts = urlsplit(url)
        origin = f"{parts.scheme}://{parts.netloc}"
        if origin not in self._parsers:
            parser: urllib.robotparser.RobotFileParser | None = None
            try:
                req = Request(origin + "/robots.txt", headers={"User-Agent": self.user_agent})
                with urlopen(req, timeout=5) as resp:  # noqa: S310 - http(s) of the store
                    text = resp.read(512_000).decode("utf-8", "replace")
                parser = urllib.robotparser.RobotFileParser()
                parser.parse(text.splitlines())
            except HTTPError as exc:
                parser = None if 400 <= exc.code < 500 else _disallow_all()
            except Exception:
                parser = _disallow_all()  # unreachable (timeout, refused, reset)
            self._parsers[origin] = parser
        return self._parsers[origin]

    def checks(self, url: str) -> bool:
        host = urlsplit(url).hostname or ""
        return self.mode == "always" or (self.mode == "auto" and not is_loopback(host))

    def allowed(self, url: str) -> bool:
        """Whether robots.txt lets the agents fetch `url` (always True where not checked)."""
        if not url.startswith(("http://", "https://")) or not self.checks(url):
            return True
        parser = self._parser(url)
        return parser is None or parser.can_fetch(self.user_agent, url)

    async def allowed_async(self, url: str) -> bool:
        if not url.startswith(("http://", "https://")) or not self.checks(url):
            return True
        return await asyncio.to_thread(self.allowed, url)
