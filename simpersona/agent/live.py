"""Persona agents on any store URL: a staging copy of the user's store, or any store that
allows them (docs/agents.md, "Your store").

    cfg = LiveConfig(url="https://staging.shop.example/", n_sessions=20)
    report = simulate_live(cfg, policy, personas, out_dir)

Sessions start at `url`, read pages generically (`simpersona.agent.page_reading`, plus any
site profiles), keep to the URL's host and `allowed_hosts`, and record their clickstream in
the browser (`simpersona.agent.capture`) into `<events lake>/events/shop=<shop_id>/…`, the
layout ingestion reads. Orders only with `allow_orders` and the host in `order_hosts`.
"""

from __future__ import annotations

import asyncio
import random
import statistics
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from simpersona.agent.browser import BrowserConfig, BrowserPool, host_of
from simpersona.agent.policy import Goal, GoalTarget, Persona, Policy
from simpersona.agent.recorder import SessionRecorder
from simpersona.agent.runtime import run_sessions
from simpersona.agent.session import RuntimeConfig, SessionResult, SessionSpec
from simpersona.agent.site_profile import SiteProfile

GOALS: dict[str, tuple[str, GoalTarget]] = {
    "buy": ("Find something you like and buy it.", "purchase"),
    "cart": ("Find something you like and put it in your cart.", "add_to_cart"),
    "view": ("Find a product you like and look at it.", "view_product"),
    "browse": ("Shop the way you usually do; leave when you are done.", "browse"),
}
FUNNEL: tuple[str, ...] = ("product", "cart_add", "checkout", "order")


@dataclass
class LiveConfig:
    """Where the agents shop, what they may do there, and how many run."""

    url: str
    n_sessions: int = 20
    concurrency: int = 4
    seed: int = 0
    goal: str = "buy"  # a key of GOALS
    # Texts each session's goal is drawn from (seeded), in place of the goal's own text:
    # training traces use paraphrases the evaluation never shows (traces/store.py).
    goal_texts: tuple[str, ...] = ()
    run_id: str | None = None  # buyer ids are sim-<run_id>-<n>; default: from the clock
    shop_id: str | None = None  # the events' shop id; default live-<host>[-<port>]
    allowed_hosts: tuple[str, ...] = ()  # hosts besides the URL's the browser may load
    allow_orders: bool = False
    order_hosts: tuple[str, ...] = ()
    profiles: tuple[SiteProfile, ...] = ()
    robots: str = "auto"
    max_requests_per_s: float = 20.0
    max_steps: int = 40
    session_timeout_s: float = 240.0
    max_invalid_actions: int = 3
    browser: BrowserConfig = field(default_factory=BrowserConfig)

    def __post_init__(self) -> None:
        parts = urlsplit(self.url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"--url must be an http(s) URL with a host, got {self.url!r}")
        if self.goal not in GOALS:
            raise ValueError(f"goal must be one of {', '.join(GOALS)}, got {self.goal!r}")
        if self.allow_orders and not self.order_hosts:
            raise ValueError(
                "--allow-orders needs the test store's host named with --order-host "
                f"(e.g. --order-host {parts.netloc}): orders are never allowed by default"
            )

    @property
    def events_shop_id(self) -> str:
        if self.shop_id:
            return self.shop_id
        parts = urlsplit(self.url)
        host = (parts.hostname or "store").replace(".", "-")
        return f"live-{host}" + (f"-{parts.port}" if parts.port else "")

    def runtime(self, sink: Any) -> RuntimeConfig:
        return RuntimeConfig(
            max_steps=self.max_steps,
            session_timeout_s=self.session_timeout_s,
            max_invalid_actions=self.max_invalid_actions,
            allowed_domains=(host_of(self.url), *self.allowed_hosts),
            allow_orders=self.allow_orders,
            order_hosts=self.order_hosts,
            profiles=self.profiles,
            robots=self.robots,
            capture_sink=sink,
            capture_shop_id=self.events_shop_id,
        )


def draw_labels(shares: Mapping[str, float], n: int, seed: int) -> list[str]:
    """`n` persona labels drawn in the proportions `shares` (a shop's p̂_s), seeded."""
    keys = sorted(k for k, v in shares.items() if v > 0)
    if not keys:
        raise ValueError("no persona labels to draw from (all shares are zero)")
    rng = random.Random(f"labels:{seed}")
    return rng.choices(keys, weights=[shares[k] for k in keys], k=n)


def live_specs(cfg: LiveConfig, personas: Sequence[Persona], run_id: str) -> list[SessionSpec]:
    text, target = GOALS[cfg.goal]
    rng = random.Random(f"goals:{cfg.seed}")
    texts = [rng.choice(cfg.goal_texts) if cfg.goal_texts else text for _ in personas]
    return [
        SessionSpec(
            start_url=cfg.url,
            buyer_id=f"sim-{run_id}-{i:05d}",
            persona=p,
            goal=Goal(texts[i], target=target),
            seed=cfg.seed * 1_000_003 + i,
            key=f"sim-{run_id}-{i:05d}",
        )
        for i, p in enumerate(personas)
    ]


def proportion_ci(k: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson interval of a proportion k/n (sessions are independent draws)."""
    from scipy.stats import binomtest

    if n == 0:
        return (float("nan"), float("nan"))
    ci = binomtest(k, n).proportion_ci(confidence_level=confidence, method="wilson")
    return (round(float(ci.low), 3), round(float(ci.high), 3))


def funnel_of(res: SessionResult, events: Sequence[Mapping[str, Any]]) -> dict[str, bool]:
    """Which funnel steps one session reached: a product page, a successful add to cart,
    a checkout page, a placed order."""
    types = {e["event_type"] for e in events}
    return {
        "product": res.reached("product"),
        "cart_add": "add_to_cart" in types,
        "checkout": res.reached("checkout") or res.reached("confirmation"),
        "order": "checkout_completed" in types,
    }


@dataclass
class LiveReport:
    """What the agents did on the store: per-session results and funnel, the guards."""

    url: str
    results: list[SessionResult]
    funnels: list[dict[str, bool]]
    wall_s: float
    events_written: int
    event_files: list[str]
    shop_id: str
    allow_orders: bool

    def summary(self) -> dict[str, Any]:
        n = len(self.results)
        out: dict[str, Any] = {"url": self.url, "shop_id": self.shop_id, "sessions": n}
        for step in FUNNEL:
            k = sum(f[step] for f in self.funnels)
            lo, hi = proportion_ci(k, n)
            out[f"{step}_rate"] = round(k / n, 3) if n else None
            out[f"{step}_rate_ci"] = [lo, hi]
        out["orders_placed"] = sum(f["order"] for f in self.funnels)
        out["allow_orders"] = self.allow_orders
        out["guards"] = dict(Counter(r.guard for r in self.results if r.guard))
        out["outcomes"] = dict(Counter(r.outcome for r in self.results))
        out["requests_sent"] = sum(r.requests.sent for r in self.results)
        out["requests_blocked_off_allowlist"] = sum(
            r.requests.blocked_off_allowlist for r in self.results
        )
        out["requests_blocked_orders"] = sum(r.requests.blocked_orders for r in self.results)
        out["requests_off_allowlist_completed"] = sum(
            r.off_allowlist_completed for r in self.results
        )
        out["events_written"] = self.events_written
        steps = [r.steps for r in self.results]
        out["mean_steps"] = round(statistics.fmean(steps), 2) if steps else 0.0
        out["wall_s"] = round(self.wall_s, 1)
        out["sessions_per_min"] = round(n / self.wall_s * 60, 2) if self.wall_s else 0.0
        return out


class _BySession:
    """An event sink that also keeps each session's events (for the funnel) and the
    catalogue the agents saw (products with titles and prices, collections), which
    ingestion needs beside the events."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.by_buyer: dict[str, list[dict[str, Any]]] = {}
        self.catalog: dict[str, dict[str, dict[str, Any]]] = {"products": {}, "collections": {}}

    def emit(self, event: dict[str, Any]) -> None:
        self.by_buyer.setdefault(event["buyer_id"], []).append(event)
        self.inner.emit(event)

    def saw(self, shop_id: str, table: str, row: dict[str, Any]) -> None:
        key = row.get("product_id") if table == "products" else row.get("collection_id")
        if not key:
            return
        known = self.catalog[table].setdefault(str(key), {"shop_id": shop_id})
        for k, v in row.items():  # a product page's title and price beat a link's label
            if v not in (None, "") and (k not in known or table == "products" and "price" in row):
                known[k] = v

    def write_catalog(self, lake_root: Path, part: str) -> list[Path]:
        """The seen catalogue as the lake's products and collections of the shop."""
        import polars as pl

        from simpersona.lake import Lake
        from simpersona.schema import COLLECTIONS_SCHEMA, PRODUCTS_SCHEMA

        lake = Lake.at(lake_root)
        files: list[Path] = []
        for table, schema in (("products", PRODUCTS_SCHEMA), ("collections", COLLECTIONS_SCHEMA)):
            rows = [
                {**{c: r.get(c) for c in schema}, "product_id": k} if table == "products"
                else {**{c: r.get(c) for c in schema}, "collection_id": k}
                for k, r in sorted(self.catalog[table].items())
            ]  # fmt: skip
            if table == "products":
                for r in rows:
                    r["collection_ids"] = []
                    r["title"] = r["title"] or r["product_id"]
            if rows:
                files += lake.write_catalog(table, pl.DataFrame(rows, schema=schema), part=part)
        return files


def simulate_live(
    cfg: LiveConfig,
    policy: Policy,
    personas: Sequence[Persona],
    out_dir: str | Path,
    events_lake: str | Path | None = None,
    on_done: Callable[[SessionResult], None] | None = None,
) -> LiveReport:
    """Run one session per persona on `cfg.url`; recordings go to `<out_dir>/recordings`,
    events to `events_lake` (default `<out_dir>/lake`)."""
    from simpersona.store.events import LakeEventSink

    out = Path(out_dir)
    run_id = cfg.run_id or format(int(time.time() * 1000), "x")
    lake = Path(events_lake) if events_lake is not None else out / "lake"
    sink = LakeEventSink(lake, part_prefix=f"sim-{run_id}", background=False, max_buffer=10**9)
    tee = _BySession(sink)
    recorder = SessionRecorder(out / "recordings" / cfg.events_shop_id)
    specs = live_specs(cfg, personas, run_id)
    runtime = cfg.runtime(tee)
    browser = replace(cfg.browser, max_requests_per_s=cfg.max_requests_per_s)

    def done(res: SessionResult) -> None:
        recorder.write(res, {"url": cfg.url, "guard": res.guard})
        if on_done is not None:
            on_done(res)

    async def main() -> tuple[list[SessionResult], float]:
        async with BrowserPool(browser, size=cfg.concurrency) as pool:
            t0 = time.monotonic()
            results = await run_sessions(pool, specs, policy, runtime, on_done=done)
            if hasattr(policy, "aclose"):
                await policy.aclose()
            return results, time.monotonic() - t0

    try:
        results, wall = asyncio.run(main())
    finally:
        files = sink.flush()
        sink.close()
        files += tee.write_catalog(lake, part=f"sim-{run_id}")
    funnels = [funnel_of(r, tee.by_buyer.get(r.buyer_id, [])) for r in results]
    return LiveReport(
        url=cfg.url,
        results=results,
        funnels=funnels,
        wall_s=wall,
        events_written=sink.events_written,
        event_files=[str(f) for f in files],
        shop_id=cfg.events_shop_id,
        allow_orders=cfg.allow_orders,
    )
