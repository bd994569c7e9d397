"""A pool of browser contexts on one headless Debian Chromium (Playwright, async).

    async with BrowserPool(BrowserConfig(), size=4) as pool:
        async with pool.page(buyer_id="sim-1", headers_for="http://127.0.0.1:8000",
                             allowlist=("127.0.0.1",)) as page:
            await page.goto("http://127.0.0.1:8000/")

Each session gets a context of its own (cookies, storage), so concurrent buyers never share
a cart or a session cookie; at most `size` are open at once. A finished session's context is
kept for the next one with its cookies and web storage cleared (`reuse_contexts`), since a
fresh context and tab cost about three page loads of CPU. Requests to hosts outside the
allowlist are aborted in the browser. The buyer id goes out as the storefront's signed
`sp_buyer` cookie (`simpersona.store.identity.buyer_cookie`), set for the origin named in
`headers_for` (the local storefront) only, never for other hosts. When the browser process dies,
the next session launches a new one, so one crash does not take the pool down.

Sessions whose allowlist holds only loopback hosts (a local storefront: every simulation)
skip request interception, which pauses every request for a round trip to the driver,
turns off the HTTP cache, and costs about 15 % of the throughput. Their contexts send all
other traffic to a dead-end proxy on loopback (a bound port that never listens), so other
hosts fail at once with `ERR_PROXY_CONNECTION_FAILED`. Chromium never proxies the loopback
names, so `localhost` and `127.0.0.1` are not told apart there; the runtime checks a link's
or form's target host before it clicks (see `simpersona.agent.execute`).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from simpersona.agent.safety import HostRateLimiter, order_request
from simpersona.store.identity import buyer_cookie

CHROMIUM_PATH = "/usr/bin/chromium"
# Debian's chromium-headless-shell: the same Chromium build as a headless-only binary (the
# "old" headless mode, no browser UI behind it). Measured on 2 cores it runs about twice the
# agent sessions per minute of the full browser, so the pool prefers it when installed.
HEADLESS_SHELL_PATH = "/usr/bin/chromium-headless-shell"
CHROMIUM_ENV = "SIMPERSONA_CHROMIUM"
# Headless, no sandbox (containers), and nothing that phones home or updates itself: the
# machines this runs on may have no network, and background traffic costs CPU.
CHROMIUM_ARGS: tuple[str, ...] = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)
LOCAL_HOSTS = frozenset({"127.0.0.1", "localhost", "::1", "[::1]"})
# The storefront's buyer cookie (simpersona.store.app.BUYER_COOKIE), signed by
# simpersona.store.identity.
BUYER_COOKIE = "sp_buyer"
# How Chromium reports a request the pool stopped: aborted by the route, or sent to the
# dead-end proxy of a loopback-only context.
BLOCKED_FAILURES = ("ERR_BLOCKED_BY_CLIENT", "ERR_PROXY_CONNECTION_FAILED")


def default_chromium() -> str:
    """The browser the pool launches: `$SIMPERSONA_CHROMIUM` when set, else Debian's
    chromium-headless-shell when installed, else Debian's chromium."""
    chosen = os.environ.get(CHROMIUM_ENV)
    if chosen:
        return chosen
    return HEADLESS_SHELL_PATH if os.path.exists(HEADLESS_SHELL_PATH) else CHROMIUM_PATH


class BrowserUnavailable(RuntimeError):
    """Chromium or Playwright is missing or cannot start."""


@dataclass
class BrowserConfig:
    """How the browser is launched and how long it waits."""

    executable_path: str = field(default_factory=default_chromium)
    args: tuple[str, ...] = CHROMIUM_ARGS
    viewport: tuple[int, int] = (1280, 900)
    navigation_timeout_ms: float = 15_000
    action_timeout_ms: float = 5_000
    user_agent: str | None = None
    extra_args: tuple[str, ...] = field(default_factory=tuple)
    # Keep a finished session's context (cookies and storage cleared) for the next one.
    reuse_contexts: bool = True
    # Intercept requests on loopback-only sessions too (the remote-store path; ~15 % slower).
    intercept_local: bool = False
    # Requests a second to one host, over all sessions of the pool, where requests are
    # intercepted (any store but a loopback one that allows orders: see `page`).
    max_requests_per_s: float = 20.0


@dataclass
class RequestStats:
    """What one session's browser asked for (counted where requests are intercepted)."""

    sent: int = 0  # requests let through
    blocked_off_allowlist: int = 0  # aborted: host outside the allowlist
    blocked_orders: int = 0  # aborted: an order placement on a store that allows none
    blocked_urls: list[str] = field(default_factory=list)  # the first few aborted


def host_of(url: str) -> str:
    return (urlsplit(url).hostname or "").lower()


def is_local(url: str) -> bool:
    return host_of(url) in LOCAL_HOSTS


def is_blocked_failure(text: str) -> bool:
    """Whether a request failure (or a navigation error's text) is the pool's blocking."""
    upper = text.upper()
    return any(code in upper for code in BLOCKED_FAILURES) or "blockedbyclient" in text.lower()


def host_allowed(host: str, allowlist: Iterable[str]) -> bool:
    """`host` is in the allowlist or a subdomain of an entry (`shop.example.com` under
    `example.com`)."""
    host = host.lower()
    return any(host == a or host.endswith("." + a) for a in (x.lower() for x in allowlist))


class BrowserPool:
    """One Chromium, many short-lived contexts; see the module docstring."""

    def __init__(self, config: BrowserConfig | None = None, size: int = 4) -> None:
        if size < 1:
            raise ValueError("pool size must be at least 1")
        self.config = config or BrowserConfig()
        self.size = size
        self._sem = asyncio.Semaphore(size)
        self._lock = asyncio.Lock()
        self._pw: Any = None
        self._browser: Any = None
        self._idle: list[_Slot] = []
        self._dead_end: socket.socket | None = None
        self.launches = 0
        self.rate_limiter = HostRateLimiter(self.config.max_requests_per_s)

    async def __aenter__(self) -> BrowserPool:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def start(self) -> None:
        if not os.path.exists(self.config.executable_path):
            raise BrowserUnavailable(
                f"no Chromium at {self.config.executable_path}; install it with "
                "`apt-get install chromium-headless-shell` (or `chromium`; playwright install "
                f"does not work here), or point ${CHROMIUM_ENV} at a Chromium binary"
            )
        try:
            from playwright.async_api import async_playwright
        except ImportError as exc:  # pragma: no cover - a dependency of the project
            raise BrowserUnavailable("the playwright package is not installed") from exc
        if self._pw is None:
            self._pw = await async_playwright().start()
        await self._ensure_browser()

    async def _ensure_browser(self) -> Any:
        async with self._lock:
            if self._browser is None or not self._browser.is_connected():
                if self._pw is None:
                    raise BrowserUnavailable("the pool is not started (use `async with`)")
                self._browser = await self._pw.chromium.launch(
                    executable_path=self.config.executable_path,
                    args=[*self.config.args, *self.config.extra_args],
                    headless=True,
                )
                self.launches += 1
            return self._browser

    async def close(self) -> None:
        self._idle.clear()
        if self._dead_end is not None:
            self._dead_end.close()
            self._dead_end = None
        if self._browser is not None:
            with contextlib.suppress(Exception):  # already gone
                await self._browser.close()
            self._browser = None
        if self._pw is not None:
            await self._pw.stop()
            self._pw = None

    @property
    def browser(self) -> Any:
        return self._browser

    def _dead_end_proxy(self) -> str:
        """A loopback address that refuses every connection: bound, never listening."""
        if self._dead_end is None:
            self._dead_end = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            self._dead_end.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{self._dead_end.getsockname()[1]}"

    async def _new_slot(self, loopback: tuple[str, ...] | None) -> _Slot:
        browser = await self._ensure_browser()
        w, h = self.config.viewport
        kwargs: dict[str, Any] = {"viewport": {"width": w, "height": h}}
        if self.config.user_agent:
            kwargs["user_agent"] = self.config.user_agent
        if loopback is not None:
            bypass = ",".join(
                f"[{h}]" if ":" in h and not h.startswith("[") else h for h in loopback
            )
            kwargs["proxy"] = {"server": self._dead_end_proxy(), "bypass": bypass}
        ctx = await browser.new_context(**kwargs)
        ctx.set_default_timeout(self.config.action_timeout_ms)
        ctx.set_default_navigation_timeout(self.config.navigation_timeout_ms)
        routing = _Routing(self.rate_limiter)
        if loopback is None:
            await ctx.route("**/*", routing.handle)
        page = await ctx.new_page()
        return _Slot(browser, ctx, page, routing, loopback)

    async def _take_idle(self, loopback: tuple[str, ...] | None) -> _Slot | None:
        for i in range(len(self._idle) - 1, -1, -1):
            slot = self._idle[i]
            if slot.loopback != loopback and slot.browser is self._browser:
                continue  # a context of the other kind (or another allowlist): keep it
            del self._idle[i]
            if (
                slot.browser is self._browser
                and slot.browser.is_connected()
                and not slot.page.is_closed()
            ):
                return slot
            await _close_quietly(slot.ctx)
        return None

    def _loopback_only(
        self, headers_for: str | None, allowlist: Iterable[str] | None, guard_orders: bool = False
    ) -> tuple[str, ...] | None:
        """The allowlist when the session needs no request interception, else None."""
        if self.config.intercept_local or allowlist is None or guard_orders:
            return None
        hosts = tuple(sorted({h.lower() for h in allowlist}))
        if not hosts or not all(h in LOCAL_HOSTS for h in hosts):
            return None
        if headers_for is not None and not is_local(headers_for):
            return None
        return hosts

    @asynccontextmanager
    async def page(
        self,
        buyer_id: str | None = None,
        headers_for: str | None = None,
        allowlist: Iterable[str] | None = None,
        guard_orders: bool = False,
        stats: RequestStats | None = None,
    ) -> AsyncIterator[Any]:
        """A page in a browser context of its own (waits for a free slot). `buyer_id` goes
        out as the storefront's signed buyer cookie, for the origin of `headers_for` only;
        requests to hosts outside `allowlist` (when given) are aborted. A loopback-only
        allowlist gets a context without interception instead (see the module docstring):
        other hosts fail at the dead-end proxy.

        With `reuse_contexts`, a context whose session ended with its page open is kept for
        the next session after its cookies and the store's web storage are cleared (a new
        context and tab cost about three page loads of CPU); call `forget_history(page)`
        after the first navigation so `go_back` cannot reach the previous session's pages.

        With `guard_orders` (a store where this run may not order) every request is
        intercepted, and write requests that place an order are aborted
        (`simpersona.agent.safety.order_request`); `stats` counts what was sent and aborted.
        Intercepted requests keep to the pool's per-host rate.
        """
        loopback = self._loopback_only(headers_for, allowlist, guard_orders)
        async with self._sem:
            slot = await self._take_idle(loopback) if self.config.reuse_contexts else None
            if slot is None:
                slot = await self._new_slot(loopback)
            slot.routing.set(buyer_id, headers_for, allowlist, guard_orders, stats)
            reusable = False
            try:
                if buyer_id and headers_for:
                    # the storefront trusts only a cookie signed with its secret
                    # (simpersona.store.identity), for this buyer and its origin alone
                    cookie = buyer_cookie(buyer_id)
                    await slot.ctx.add_cookies(
                        [{"name": BUYER_COOKIE, "value": cookie, "url": _origin(headers_for)}]
                    )
                yield slot.page
                reusable = self.config.reuse_contexts
            finally:
                if reusable and await _reset(slot):
                    self._idle.append(slot)
                    if len(self._idle) > self.size:  # kinds alternated: drop the oldest
                        await _close_quietly(self._idle.pop(0).ctx)
                else:
                    await _close_quietly(slot.ctx)

    async def forget_history(self, page: Any) -> None:
        """Drop the tab's back/forward history (a reused tab's previous session)."""
        if not self.config.reuse_contexts:
            return
        cdp = await page.context.new_cdp_session(page)
        try:
            await cdp.send("Page.resetNavigationHistory")
        finally:
            with contextlib.suppress(Exception):
                await cdp.detach()


@dataclass
class _Slot:
    browser: Any
    ctx: Any
    page: Any
    routing: _Routing
    loopback: tuple[str, ...] | None  # the allowlist of a context without interception


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}/"


async def _close_quietly(ctx: Any) -> None:
    # The browser may have died with it; the next session relaunches it.
    with contextlib.suppress(Exception):
        await ctx.close()


async def _reset(slot: _Slot) -> bool:
    """Make a used context fit for another buyer; False when it cannot be (then it is closed)."""
    try:
        if slot.page.is_closed() or not slot.browser.is_connected():
            return False
        if slot.page.url.startswith(("http://", "https://")):
            await slot.page.evaluate(
                "() => { try { localStorage.clear(); sessionStorage.clear(); } catch (e) {} }"
            )
        await slot.ctx.clear_cookies()
        slot.routing.set(None, None, None)
        return True
    except Exception:
        return False


class _Routing:
    """The per-context request filter: the allowlist, the order guard and the per-host rate.
    Mutable, so a reused context serves the next buyer."""

    def __init__(self, limiter: HostRateLimiter | None = None) -> None:
        self.limiter = limiter
        self.set(None, None, None)

    def set(
        self,
        buyer_id: str | None,
        headers_for: str | None,
        allowlist: Iterable[str] | None,
        guard_orders: bool = False,
        stats: RequestStats | None = None,
    ) -> None:
        self.buyer_id = buyer_id
        self.allowed = tuple(allowlist) if allowlist is not None else None
        parts = urlsplit(headers_for) if headers_for else None
        self.origin = (parts.scheme, parts.hostname, parts.port) if parts else None
        self.guard_orders = guard_orders
        self.stats = stats if stats is not None else RequestStats()

    def _blocked(self, url: str) -> None:
        if len(self.stats.blocked_urls) < 20:
            self.stats.blocked_urls.append(url[:200])

    async def handle(self, route: Any) -> None:
        request = route.request
        url = request.url
        parts = urlsplit(url)
        if parts.scheme in ("data", "blob", "about"):
            await route.continue_()
            return
        if self.allowed is not None and not host_allowed(parts.hostname or "", self.allowed):
            self.stats.blocked_off_allowlist += 1
            self._blocked(url)
            await route.abort("blockedbyclient")
            return
        if self.guard_orders:
            body = None
            with contextlib.suppress(Exception):  # a binary body is no order form
                body = request.post_data
            if order_request(request.method, url, body):
                self.stats.blocked_orders += 1
                self._blocked(url)
                await route.abort("blockedbyclient")
                return
        if self.limiter is not None:
            await self.limiter.wait((parts.hostname or "").lower())
        self.stats.sent += 1
        await route.continue_()
