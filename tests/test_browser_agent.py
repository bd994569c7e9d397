"""The browser runtime on a real storefront (loopback) and a real headless Chromium: the
end-to-end purchase through ingestion and features, invalid actions, limits, crashes,
concurrency, the payment guard, and Markov agents. One browser and one server per module."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl
import pytest
from fastapi.testclient import TestClient

from simpersona.agent import (
    BrowserConfig,
    BrowserPool,
    Goal,
    Persona,
    RuntimeConfig,
    ScriptedPolicy,
    SessionRecorder,
    SessionSpec,
    read_recording,
    run_session,
    run_sessions,
)
from simpersona.agent.markov import MarkovModel
from simpersona.agent.markov_policy import MarkovPolicy
from simpersona.features.scalars import buyer_features
from simpersona.ingest.ingest import deidentify, ingest_catalog, ingest_events, load_hash_key
from simpersona.lake import Lake
from simpersona.store import LakeEventSink, MemoryEventSink, StoreCatalog, create_app
from simpersona.store.app import dom_id
from simpersona.store.server import run_in_thread
from simpersona.synth import GeneratorConfig, generate_lake
from simpersona.warehouse import Warehouse
from tests.conftest import require_chromium

pytestmark = pytest.mark.browser
SHOP = "shop-000"
BROWSE = Goal("look around", target="browse")
PERSONA = Persona("test")


@pytest.fixture(scope="module")
def loop():
    require_chromium()
    lp = asyncio.new_event_loop()
    yield lp
    lp.close()


@pytest.fixture(scope="module")
def pool(loop):
    p = BrowserPool(size=4)
    loop.run_until_complete(p.start())
    yield p
    loop.run_until_complete(p.close())


@pytest.fixture(scope="module")
def generated_lake(tmp_path_factory) -> Path:
    src = tmp_path_factory.mktemp("gen") / "lake"
    generate_lake(
        src,
        GeneratorConfig(n_shops=1, n_buyers=300),
        ground_truth_path=src.parent / "truth.parquet",
        progress=False,
    )
    return src


@pytest.fixture(scope="module")
def lake_root(generated_lake, tmp_path_factory) -> Path:
    """A generated shop's catalog, copied into an otherwise empty lake the store logs to."""
    src = generated_lake
    dst = tmp_path_factory.mktemp("agent") / "lake"
    for table in ("products", "collections"):
        shutil.copytree(src / table, dst / table)
    return dst


@pytest.fixture(scope="module")
def catalog(lake_root) -> StoreCatalog:
    return StoreCatalog.from_lake(lake_root, SHOP)


@pytest.fixture(scope="module")
def store(catalog, lake_root):
    """(base URL, lake sink) of a storefront with the debug crash route."""
    sink = LakeEventSink(lake_root, background=False)
    base_url, stop = run_in_thread(create_app(catalog, sink, debug_routes=True))
    yield base_url, sink
    stop()
    sink.close()


def run(loop, coro):
    return loop.run_until_complete(coro)


def spec(base_url: str, buyer: str, goal: Goal = BROWSE, path: str = "/") -> SessionSpec:
    return SessionSpec(base_url + path, buyer, PERSONA, goal)


def related_product(catalog: StoreCatalog, pid: str) -> str:
    """The first 'You may also like' product on `pid`'s page (read off a throwaway app)."""
    html = TestClient(create_app(catalog, MemoryEventSink())).get(f"/products/{pid}").text
    grid = html.split('id="related-grid"', 1)[1]
    return re.search(r'data-product-id="([^"]+)"', grid).group(1)


# ---- the acceptance flow --------------------------------------------------------------------
def test_scripted_purchase_end_to_end_through_ingestion_and_features(
    loop, pool, store, catalog, lake_root, tmp_path
):
    base_url, sink = store
    product = next(p for p in catalog.products.values() if "sale" not in p.collection_ids)
    other = related_product(catalog, product.product_id)
    buyer = "e2e-buyer-1"
    actions = [
        {"action": "search", "query": product.title, "reasoning": "find the product I want"},
        {"action": "click", "id": f"product-link-{dom_id(product.product_id)}"},
        {"action": "click", "id": f"product-link-{dom_id(other)}"},
        {"action": "add_to_cart", "quantity": 2},
        {"action": "click", "id": "checkout-button"},
        {"action": "type", "id": "email", "text": "e2e@example.com"},
        {"action": "type", "id": "first-name", "text": "Ann"},
        {"action": "type", "id": "last-name", "text": "Lee"},
        {"action": "type", "id": "address1", "text": "1 Main Street"},
        {"action": "type", "id": "city", "text": "Springfield"},
        {"action": "type", "id": "postal-code", "text": "12345"},
        {"action": "select", "id": "country", "value": "United States"},
        {"action": "click", "id": "shipping-express"},
        {"action": "click", "id": "continue-to-payment"},
        {"action": "type", "id": "card-number", "text": "4242 4242 4242 4242"},
        {"action": "type", "id": "card-expiry", "text": "12 / 34"},
        {"action": "type", "id": "card-cvc", "text": "123"},
        {"action": "click", "id": "place-order-button"},
    ]
    res = run(
        loop,
        run_session(
            pool,
            spec(base_url, buyer, Goal("buy it", target="purchase")),
            ScriptedPolicy(actions),
            RuntimeConfig().own_store(base_url),  # our storefront: a declared test store
        ),
    )
    assert res.outcome == "goal_reached", res.message
    assert res.guard is None
    assert res.steps == len(actions)
    assert "confirmation" in res.message or "thank-you" in res.final_url
    assert res.session_id and res.session_id.startswith(buyer)

    # The recording: one line per step plus a header and an outcome line.
    path = SessionRecorder(tmp_path / "rec").write(res)
    lines = read_recording(path)
    assert [x["type"] for x in lines] == ["session", *["step"] * len(actions), "outcome"]
    first = lines[1]
    assert first["action"] == {"action": "search", "query": product.title}
    assert first["reasoning"] == "find the product I want"
    assert first["observation"]["kind"] == "home" and first["memory"] == []
    assert lines[2]["memory"][0].startswith("1. searched")
    assert lines[-2]["outcome"] == "goal_reached" and lines[-1]["steps"] == len(actions)

    # The lake holds exactly this visit's events, in order.
    sink.flush()
    raw = pl.concat(
        [pl.read_parquet(f) for f in sorted((lake_root / "events").rglob("*.parquet"))]
    ).filter(pl.col("buyer_id") == buyer)
    raw = raw.sort("ts")
    assert raw["event_type"].to_list() == [
        "page_view",
        "search",
        "product_view",
        "product_view",
        "add_to_cart",
        "page_view",
        "checkout_started",
        "checkout_completed",
    ]
    assert raw["session_id"].unique().to_list() == [res.session_id]
    assert raw.filter(pl.col("event_type") == "search")["search_query"][0] == " ".join(
        product.title.split()
    )
    views = raw.filter(pl.col("event_type") == "product_view")["product_id"].to_list()
    assert views == [product.product_id, other]
    done = raw.filter(pl.col("event_type") == "checkout_completed").row(0, named=True)
    assert done["quantity"] == 2 and done["product_id"] == other
    assert done["order_value"] == pytest.approx(2 * catalog.products[other].price)

    # Through the pipeline's own ingestion and features: one purchase for this buyer.
    lake, wh = Lake.at(lake_root), Warehouse.at(tmp_path / "wh")
    ingest_catalog(lake, wh, SHOP)
    frames = []
    for date in lake.dates(SHOP):
        r = ingest_events(lake, wh, SHOP, date, load_hash_key())
        assert r.rows_rejected == 0
        frames.append(wh.read_partition("raw_events", SHOP, date))
    events = pl.concat(frames)
    hashed = deidentify(pl.Series([buyer]), load_hash_key())[0]
    feats = buyer_features(events, wh.read_partition("products", SHOP)).filter(
        pl.col("buyer_id") == hashed
    )
    assert feats.height == 1
    row = feats.row(0, named=True)
    assert row["purchase_sessions"] == 1
    assert row["sessions"] == 1
    assert row["total_product_views"] == 2
    assert row["purchased_products"] == [other]
    assert row["stratum"] == "A"


# ---- invalid actions ------------------------------------------------------------------------
def test_malformed_and_impossible_actions_end_as_other_with_a_message(loop, pool, store):
    base_url, _ = store
    cases = {
        "not json {": "not valid JSON",
        '["click"]': "must be a JSON object",
        '{"action": "fly"}': "unknown action 'fly'",
        '{"action": "click"}': "id: Field required",
        '{"action": "click", "id": "x", "target": "y"}': "Extra inputs are not permitted",
        '{"action": "add_to_cart", "quantity": 0}': "greater than or equal to 1",
        '{"action": "add_to_cart", "quantity": "2"}': "valid integer",
        '{"action": "click", "id": "no-such-button"}': "no element with id 'no-such-button'",
        '{"action": "add_to_cart", "quantity": 1}': "no add-to-cart button on this page",
        '{"action": "type", "id": "search-submit", "text": "hi"}': "not a text field",
        '{"action": "select", "id": "search-input", "value": "x"}': "not a select",
        '{"action": "go_back"}': "no previous page",
    }
    specs = [spec(base_url, f"bad-{i}") for i in range(len(cases))]
    policies = {s.buyer_id: ScriptedPolicy([raw]) for s, raw in zip(specs, cases, strict=True)}

    class PerBuyer:
        def act(self, obs, memory, persona, goal):
            return policies[memory.state["buyer_id"]].act(obs, memory, persona, goal)

    results = run(loop, run_sessions(pool, specs, PerBuyer()))
    for res, expected in zip(results, cases.values(), strict=True):
        assert res.outcome == "other", (res.buyer_id, res.outcome, res.message)
        assert expected in res.message, (expected, res.message)
        assert res.records[-1].error == res.message
        assert res.records[-1].result == "invalid action"
    # An impossible option of a real select names the options.
    res = run(
        loop,
        run_session(
            pool,
            spec(base_url, "bad-select", path="/collections/all"),
            ScriptedPolicy([{"action": "select", "id": "sort-select", "value": "cheapest"}]),
        ),
    )
    assert res.outcome == "other" and "no option 'cheapest'" in res.message
    assert "price-asc" in res.message


def test_invalid_actions_can_be_reported_back_instead_of_ending(loop, pool, store):
    base_url, _ = store
    cfg = RuntimeConfig(max_invalid_actions=2)
    script = ScriptedPolicy(
        ['{"action": "fly"}', {"action": "click", "id": "nope"}, {"action": "scroll"}]
    )
    res = run(loop, run_session(pool, spec(base_url, "retry-1"), script, cfg))
    assert res.outcome == "goal_reached", res.message  # the script ends a browse session
    assert [r.result for r in res.records[:3]] == [
        "invalid action",
        "invalid action",
        "scrolled down",
    ]
    assert "invalid action: unknown action 'fly'" in res.records[1].memory[0]


# ---- limits ---------------------------------------------------------------------------------
def test_step_and_time_limits(loop, pool, store):
    base_url, _ = store
    steps = run(
        loop,
        run_session(
            pool,
            spec(base_url, "limit-steps"),
            ScriptedPolicy([{"action": "scroll"}] * 10),
            RuntimeConfig(max_steps=3),
        ),
    )
    assert steps.outcome == "steps_limit" and steps.steps == 3, steps.message
    assert steps.records[-1].outcome == "steps_limit"

    class Slow:
        async def act(self, obs, memory, persona, goal):
            await asyncio.sleep(0.5)  # a slow model: 30 steps would take 15 s
            return {"action": "scroll"}

    slow = run(
        loop,
        run_session(
            pool, spec(base_url, "limit-time"), Slow(), RuntimeConfig(session_timeout_s=3.0)
        ),
    )
    assert slow.outcome == "time_limit", slow.message
    assert "3 s budget" in slow.message
    assert slow.steps < 30
    assert 3.0 <= slow.duration_s < 6.0  # stopped at the budget, not at the next step's end


def test_waiting_for_a_free_browser_slot_is_not_the_sessions_time(loop, store):
    base_url, _ = store

    class Slow:
        async def act(self, obs, memory, persona, goal):
            await asyncio.sleep(1.0)
            return {"action": "scroll"}

    async def both():
        async with BrowserPool(size=1) as one:  # B queues behind A for ~5 s
            return await asyncio.gather(
                run_session(
                    one,
                    spec(base_url, "queue-a"),
                    Slow(),
                    RuntimeConfig(max_steps=5, session_timeout_s=30),
                ),
                run_session(
                    one,
                    spec(base_url, "queue-b"),
                    ScriptedPolicy([{"action": "scroll"}]),
                    RuntimeConfig(session_timeout_s=3.0),
                ),
            )

    a, b = run(loop, both())
    assert a.outcome == "steps_limit", a.message
    assert b.outcome == "goal_reached", b.message
    assert b.duration_s < 3.0


# ---- crashes --------------------------------------------------------------------------------
def test_storefront_500_and_closed_page_crash_and_the_pool_keeps_working(loop, pool, store):
    base_url, _ = store
    crash = run(
        loop,
        run_session(pool, spec(base_url, "crash-500", path="/__debug/crash"), ScriptedPolicy([])),
    )
    assert crash.outcome == "crash" and "HTTP 500" in crash.message

    async def close_page(page, step, obs):
        await page.close()

    closed = run(
        loop,
        run_session(
            pool,
            spec(base_url, "crash-closed"),
            ScriptedPolicy([{"action": "scroll"}, {"action": "scroll"}]),
            step_hook=close_page,
        ),
    )
    assert closed.outcome == "crash" and "closed" in closed.message.lower(), closed.message

    async def kill_browser(page, step, obs):
        await pool.browser.close()

    launches = pool.launches
    dead = run(
        loop,
        run_session(
            pool,
            spec(base_url, "crash-browser"),
            ScriptedPolicy([{"action": "scroll"}, {"action": "scroll"}]),
            step_hook=kill_browser,
        ),
    )
    assert dead.outcome == "crash", dead.message
    ok = run(
        loop,
        run_session(pool, spec(base_url, "after-crash"), ScriptedPolicy([{"action": "scroll"}])),
    )
    assert ok.outcome == "goal_reached", ok.message
    assert pool.launches == launches + 1  # a new browser replaced the dead one


# ---- concurrency ----------------------------------------------------------------------------
def test_four_concurrent_sessions_do_not_interfere(loop, pool, catalog, tmp_path):
    sink = MemoryEventSink()
    base_url, stop = run_in_thread(create_app(catalog, sink))
    products = list(catalog.products.values())[:4]
    try:
        specs = [spec(base_url, f"conc-{i}") for i in range(4)]
        scripts = {
            s.buyer_id: ScriptedPolicy(
                [
                    {"action": "search", "query": p.title},
                    {"action": "click", "id": f"product-link-{dom_id(p.product_id)}"},
                    {"action": "add_to_cart", "quantity": i + 1},
                    {"action": "click", "id": "home-link"},
                ]
            )
            for i, (s, p) in enumerate(zip(specs, products, strict=True))
        }

        class PerBuyer:
            def act(self, obs, memory, persona, goal):
                return scripts[memory.state["buyer_id"]].act(obs, memory, persona, goal)

        results = run(loop, run_sessions(pool, specs, PerBuyer()))
    finally:
        stop()
    ev = sink.frame()
    spans = []
    for i, (res, p) in enumerate(zip(results, products, strict=True)):
        assert res.outcome == "goal_reached", res.message
        mine = ev.filter(pl.col("buyer_id") == res.buyer_id).sort("ts")
        assert mine["event_type"].to_list() == [
            "page_view",
            "search",
            "product_view",
            "add_to_cart",
            "page_view",
            "page_view",
        ]
        assert mine["session_id"].n_unique() == 1 and mine["session_id"][0] == res.session_id
        assert mine.filter(pl.col("event_type") == "search")["search_query"][0] == " ".join(
            p.title.split()
        )
        added = mine.filter(pl.col("event_type") == "add_to_cart").row(0, named=True)
        assert (added["product_id"], added["quantity"]) == (p.product_id, i + 1)
        # Each buyer's cart holds only its own line.
        assert res.records[-1].observation["facts"]["cart_count"] == str(i + 1)
        spans.append((mine["ts"].min(), mine["ts"].max()))
    assert ev["buyer_id"].n_unique() == 4
    # They really ran at the same time: every session started before any finished.
    assert max(s for s, _ in spans) < min(e for _, e in spans)


# ---- payment guard and allowlist ------------------------------------------------------------
def test_non_local_store_stops_at_the_payment_step(loop, pool, store, catalog):
    base_url, sink = store
    pid = dom_id(next(iter(catalog.products)))
    actions = [
        {"action": "click", "id": f"product-link-{pid}"},
        {"action": "add_to_cart", "quantity": 1},
        {"action": "click", "id": "checkout-button"},
        {"action": "type", "id": "email", "text": "a@example.com"},
        {"action": "type", "id": "first-name", "text": "A"},
        {"action": "type", "id": "last-name", "text": "B"},
        {"action": "type", "id": "address1", "text": "1 Road"},
        {"action": "type", "id": "city", "text": "Town"},
        {"action": "type", "id": "postal-code", "text": "1000"},
        {"action": "click", "id": "continue-to-payment"},
        {"action": "type", "id": "card-number", "text": "4242 4242 4242 4242"},
        {"action": "click", "id": "place-order-button"},
    ]
    cfg = RuntimeConfig()  # the store is not declared a test store: orders are guarded
    res = run(
        loop,
        run_session(
            pool,
            spec(
                base_url,
                "remote-1",
                Goal("buy", target="purchase"),
                path=f"/products/{next(iter(catalog.products))}",
            ),
            ScriptedPolicy(actions[1:]),
            cfg,
        ),
    )
    assert res.outcome == "goal_reached" and "payment step" in res.message, res.message
    assert res.guard == "order_guard" and "not declared a test store" in res.message
    assert res.final_url.endswith("/payment")
    assert not any(r.action and r.action.get("id") == "card-number" for r in res.records)
    sink.flush()
    assert not [e for e in _events(sink) if e == ("remote-1", "checkout_completed")]

    blocked = run(
        loop,
        run_session(
            pool,
            spec(base_url, "elsewhere"),
            ScriptedPolicy([]),
            RuntimeConfig(allowed_domains=("example.com",)),
        ),
    )
    assert blocked.outcome == "other" and "allowlist" in blocked.message


def test_links_to_hosts_outside_the_allowlist_are_blocked(loop, pool):
    """A page on 127.0.0.1 links to the same server as `localhost`, a host not allowed."""
    from starlette.applications import Starlette
    from starlette.responses import HTMLResponse
    from starlette.routing import Route

    def page(request):
        port = request.url.port
        return HTMLResponse(
            f'<html><body><main><a id="out" href="http://localhost:{port}/">elsewhere</a>'
            f'<a id="in" href="/next">next</a></main></body></html>'
        )

    base_url, stop = run_in_thread(Starlette(routes=[Route("/", page), Route("/next", page)]))
    try:
        script = ScriptedPolicy([{"action": "click", "id": "out"}, {"action": "click", "id": "in"}])
        res = run(
            loop,
            run_session(
                pool,
                spec(base_url, "allow-1"),
                script,
                RuntimeConfig(allowed_domains=("127.0.0.1",), max_invalid_actions=1),
            ),
        )
    finally:
        stop()
    assert res.outcome == "goal_reached", [(r.action, r.result, r.error) for r in res.records]
    assert res.records[0].result == "invalid action"
    assert "localhost" in res.records[0].error and "not allowed" in res.records[0].error
    assert res.records[1].result == "clicked in" and res.final_url.endswith("/next")
    assert res.records[1].observation["kind"] == "home"  # still on the allowed page


@pytest.mark.parametrize("intercept", [False, True], ids=["dead-end-proxy", "interception"])
def test_redirects_off_the_allowlist_are_blocked_and_the_buyer_id_arrives(loop, intercept):
    """Both ways of keeping a session on its hosts: a loopback-only session's context sends
    other hosts to a dead-end proxy (no request interception); `intercept_local` routes every
    request. A server-side redirect to another host (which no pre-click check can see) fails
    as blocked, the session goes on, and the store sees the buyer id either way (its signed
    cookie)."""
    from starlette.applications import Starlette
    from starlette.responses import HTMLResponse, RedirectResponse
    from starlette.routing import Route

    from simpersona.store.identity import read_buyer_cookie

    seen: list[str | None] = []

    def page(request):
        seen.append(read_buyer_cookie(request.cookies.get("sp_buyer")))
        return HTMLResponse(
            '<html><body><main><a id="away" href="/away">away</a>'
            '<a id="in" href="/next">next</a></main></body></html>'
        )

    def away(request):  # TEST-NET-3: never routable, so nothing leaves the machine
        return RedirectResponse("http://203.0.113.7/elsewhere", status_code=302)

    p = BrowserPool(BrowserConfig(intercept_local=intercept), size=1)
    base_url, stop = run_in_thread(
        Starlette(routes=[Route("/", page), Route("/next", page), Route("/away", away)])
    )
    try:
        run(loop, p.start())
        script = ScriptedPolicy(
            [{"action": "click", "id": "away"}, {"action": "click", "id": "in"}]
        )
        cfg = RuntimeConfig(max_invalid_actions=1)
        res = run(loop, run_session(p, spec(base_url, "redirected-1"), script, cfg))
        again = run(loop, run_session(p, spec(base_url, "redirected-2"), ScriptedPolicy([]), cfg))
    finally:
        run(loop, p.close())
        stop()
    assert res.outcome == "goal_reached", (res.message, [(r.result, r.error) for r in res.records])
    assert res.records[0].result == "invalid action"
    assert "203.0.113.7" in res.records[0].error and "not allowed" in res.records[0].error
    assert res.records[1].result == "clicked in" and res.final_url.endswith("/next")
    assert again.outcome == "goal_reached"
    # The reused context dropped the first buyer's cookie: the second buyer is its own.
    # (Going back from the error page may load "/" again: no cache under interception.)
    assert len(seen) >= 3 and set(seen[:-1]) == {"redirected-1"}, seen
    assert seen[-1] == "redirected-2", seen


def test_the_pools_buyer_cookie_is_the_storefronts():
    from simpersona.agent.browser import BUYER_COOKIE
    from simpersona.store.app import BUYER_COOKIE as STORE_COOKIE

    assert BUYER_COOKIE == STORE_COOKIE


def _events(sink: LakeEventSink) -> list[tuple[str, str]]:
    files = sink.written
    if not files:
        return []
    df = pl.concat([pl.read_parquet(f) for f in files])
    return list(zip(df["buyer_id"].to_list(), df["event_type"].to_list(), strict=True))


# ---- the Markov policy in the browser -------------------------------------------------------
def _funnel_events(n: int) -> pl.DataFrame:
    """`n` buyers labelled 'closer' who always go home → product → cart → checkout → buy."""
    rows = []
    steps = [
        ("page_view", "https://x.example/"),
        ("product_view", "https://x.example/products/p"),
        ("add_to_cart", "https://x.example/products/p"),
        ("page_view", "https://x.example/cart"),
        ("checkout_started", "https://x.example/checkouts/c/1"),
        ("checkout_completed", "https://x.example/checkouts/c/1/thank-you"),
    ]
    for b in range(n):
        for i, (et, url) in enumerate(steps):
            rows.append(
                {
                    "buyer_id": f"b{b}",
                    "session_id": f"b{b}-1",
                    "ts": datetime(2026, 1, 1, tzinfo=UTC) + timedelta(minutes=b * 60 + i),
                    "event_type": et,
                    "url": url,
                    "product_id": "p" if "product" in et or et == "add_to_cart" else None,
                    "quantity": 1 if et == "add_to_cart" else None,
                }
            )
    return pl.DataFrame(rows)


def test_markov_agents_shop_and_buy_through_the_forms(loop, pool, store):
    base_url, _ = store
    events = _funnel_events(5)
    model = MarkovModel.fit(events, {f"b{i}": "closer" for i in range(5)})
    assert model.labels["closer"].transitions["checkout"]["purchase"] > 0.9
    policy = MarkovPolicy(model, seed=3)
    specs = [
        SessionSpec(
            base_url + "/",
            f"markov-{i}",
            model.persona("closer", seed=i),
            Goal("buy something", target="purchase"),
            seed=i,
        )
        for i in range(2)
    ]
    results = run(loop, run_sessions(pool, specs, policy, RuntimeConfig().own_store(base_url)))
    for res in results:
        assert res.outcome == "goal_reached", (res.message, [r.action for r in res.records])
        kinds = [r.observation["kind"] for r in res.records]
        assert {"product", "cart", "checkout"} <= set(kinds)
        assert all(r.reasoning and r.reasoning.startswith("closer:") for r in res.records)


# ---- the command ----------------------------------------------------------------------------
def test_simulate_command_fits_runs_records_and_logs(generated_lake, tmp_path):
    from typer.testing import CliRunner

    from simpersona.cli import app

    out = tmp_path / "sim"
    result = CliRunner().invoke(
        app,
        ["simulate", "--shop", SHOP, "--lake", str(generated_lake), "-n", "3", "--out", str(out)],
    )
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["sessions"] == 3 and sum(summary["outcomes"].values()) == 3
    model = MarkovModel.load(out / "markov_policy.json")
    assert set(model.labels) <= {"A", "B", "C", "D", "E"} and model.labels
    recs = sorted((out / "recordings" / SHOP).glob("*.jsonl"))
    assert len(recs) == 3
    for path in recs:
        lines = read_recording(path)
        assert lines[0]["type"] == "session" and lines[-1]["type"] == "outcome"
        assert lines[0]["persona"] in model.labels
    events = pl.concat([pl.read_parquet(f) for f in (out / "lake" / "events").rglob("*.parquet")])
    assert events.height == summary["events_written"] > 0
    assert set(events["buyer_id"].unique()) == {path.stem for path in recs}
    assert events["buyer_id"].str.starts_with("sim-").all()
    # Nothing went into the generated shop's own lake.
    assert not list((generated_lake / "events").rglob("sim-*.parquet"))
