"""Persona agents on real stores the project did not write: django-oscar (Python) and
EverShop (Node.js), installed from PyPI and npm by `make shops`, served on loopback with a
seeded catalogue (scripts/shops). The agents read them generically, are stopped before the
order submission unless the store is declared a test store, send nothing off the allowlist,
and their clickstream ingests like any shop's."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from scripts.shops import load_shop
from simpersona.agent.live import LiveConfig, draw_labels, simulate_live
from simpersona.agent.markov import MarkovModel
from simpersona.agent.markov_policy import MarkovPolicy
from simpersona.agent.simulate import fit_shop_markov
from simpersona.ingest.ingest import ingest_catalog, ingest_events
from simpersona.lake import Lake
from simpersona.synth import GeneratorConfig, generate_lake
from simpersona.traces.store import TRAINING_GOALS
from simpersona.warehouse import Warehouse
from tests.conftest import require_chromium

pytestmark = [pytest.mark.browser, pytest.mark.slow]
ROOT = Path(__file__).resolve().parents[1]
SHOPS = ("oscar", "evershop")
N_SESSIONS = 8


@pytest.fixture(scope="module")
def markov(tmp_path_factory) -> tuple[MarkovModel, Path]:
    """Chains fitted on a generated shop (never on the stores they are run on)."""
    from simpersona.agent.cli import load_shop_events

    lake = tmp_path_factory.mktemp("gen") / "lake"
    generate_lake(lake, GeneratorConfig(n_shops=1, n_buyers=300), progress=False)
    shop = Lake.at(lake).shops()[0]
    model = fit_shop_markov(load_shop_events(shop, lake, None))
    path = lake.parent / "markov.json"
    model.save(path)
    return model, path


def _serve(name: str):
    require_chromium()
    shop = load_shop(name)
    if not shop.installed():
        shop.install()  # `make shops` has done it; a fresh checkout installs here
    url = shop.start()
    try:
        yield name, shop, url
    finally:
        shop.stop()


@pytest.fixture(scope="module", params=SHOPS)
def store(request):
    yield from _serve(request.param)


# The command and the population path do not depend on the store: one each (CI time).
@pytest.fixture(scope="module")
def oscar():
    yield from _serve("oscar")


@pytest.fixture(scope="module")
def evershop():
    yield from _serve("evershop")


def _run(model, url, tmp: Path, n: int, allow: bool):
    netloc = urlsplit(url).netloc
    cfg = LiveConfig(
        url=url + "/",
        n_sessions=n,
        concurrency=2,
        goal="buy",
        allow_orders=allow,
        order_hosts=(netloc,) if allow else (),
        seed=7,
    )
    labels = draw_labels(model.label_shares, n, seed=7)
    personas = [model.persona(lab, seed=i) for i, lab in enumerate(labels)]
    policy = MarkovPolicy(model, seed=7, follow_goal=True)
    return simulate_live(cfg, policy, personas, tmp)


def test_markov_agents_shop_the_store_stop_before_ordering_and_ingest(store, markov, tmp_path):
    name, shop, url = store
    model, _ = markov
    report = _run(model, url, tmp_path, N_SESSIONS, allow=False)
    s = report.summary()
    detail = json.dumps(s, indent=1)
    assert s["product_rate"] >= 0.8, detail
    assert s["cart_add_rate"] >= 0.5, detail
    assert s["checkout_rate"] >= 0.3, detail
    # Safety: no order reached the store, nothing left the allowlist.
    assert shop.orders() == 0 and s["orders_placed"] == 0
    assert s["requests_off_allowlist_completed"] == 0
    if name == "evershop":  # its checkout loads Stripe's script: a third party, aborted
        assert s["requests_blocked_off_allowlist"] >= 1, detail
    assert s["guards"].get("order_guard", 0) >= 1, detail
    stopped = [r for r in report.results if r.guard == "order_guard"]
    assert all("not declared a test store" in r.message for r in stopped)
    # The clickstream recorded in the browser ingests with no rejects.
    lake, wh = Lake.at(tmp_path / "lake"), Warehouse.at(tmp_path / "warehouse")
    (shop_id,) = lake.shops()
    assert ingest_catalog(lake, wh, shop_id).rejects_by_reason == {}
    types: set[str] = set()
    for date in lake.dates(shop_id):
        res = ingest_events(lake, wh, shop_id, date, b"k" * 32)
        assert res.rows_rejected == 0, res.rejects_by_reason
        types |= set(res.events_by_type)
    assert {"product_view", "add_to_cart", "checkout_started"} <= types, (name, types)


def test_orders_are_placed_only_on_a_declared_test_store(store, markov, tmp_path):
    _, shop, url = store
    model, _ = markov
    before = shop.orders()
    report = _run(model, url, tmp_path, 3, allow=True)
    s = report.summary()
    assert s["orders_placed"] >= 1, json.dumps(s, indent=1)
    assert shop.orders() - before == s["orders_placed"]
    assert not any(r.guard == "order_guard" for r in report.results)


def test_simulate_url_command(oscar, markov, tmp_path):
    name, shop, url = oscar
    _, model_path = markov
    env = {**os.environ, "SIMPERSONA_DATA_DIR": str(tmp_path / "data")}
    before = shop.orders()
    cmd = [sys.executable, "-m", "simpersona.cli", "simulate", "--url", url + "/",
           "--model", str(model_path), "--tokens", "1,2", "-n", "2", "--concurrency", "2",
           "--out", str(tmp_path / "out"), "--traces-out", str(tmp_path / "traces")]  # fmt: skip
    # The model's labels are strata here, not tokens: --tokens draws labels it may not
    # know, which fall back to the all-buyers chain.
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "NOT allowed (guarded)" in done.stderr
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["sessions"] == 2 and summary["orders_placed"] == 0
    assert summary["requests_off_allowlist_completed"] == 0
    assert shop.orders() == before
    # The same sessions as training traces: paraphrased goals, teacher-style reasoning.
    records = [json.loads(x) for x in (tmp_path / "traces" / "records.jsonl").open()]
    assert len(records) == 2 and all(r["steps"] for r in records)
    assert {r["goal_stage2"] for r in records} <= set(TRAINING_GOALS["buy"])
    kept = [r for r in records if r["keep"]]
    examples = [json.loads(x) for x in (tmp_path / "traces" / "stage2.jsonl").open()]
    assert len(examples) == sum(
        1 for r in kept for s in r["steps"] if s["action"] and not s["error"]
    )
    for ex in examples:
        reply = json.loads(ex["messages"][-1]["content"])
        intent, _, why = reply["reasoning"].partition(". ")
        assert intent == "I am here to buy" and why and "“”" not in why, reply


def test_bad_live_options_fail_fast_with_a_message(tmp_path):
    base = [sys.executable, "-m", "simpersona.cli", "simulate", "--url"]
    env = {**os.environ, "SIMPERSONA_DATA_DIR": str(tmp_path)}
    done = subprocess.run(
        [*base, "http://127.0.0.1:9/", "--allow-orders"], capture_output=True, text=True,
        env=env, timeout=120,
    )  # fmt: skip
    assert done.returncode == 2 and "--order-host" in " ".join(done.stderr.split())
    bad = tmp_path / "p.yaml"
    bad.write_text("name: x\nfacts: {prize: {selector: '.p'}}\n")
    done = subprocess.run(
        [*base, "http://127.0.0.1:9/", "--site-profile", str(bad)], capture_output=True,
        text=True, env=env, timeout=120,
    )  # fmt: skip
    assert done.returncode == 2 and "p.yaml: field facts" in " ".join(done.stderr.split())
    done = subprocess.run([*base, "ftp://x/"], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 2 and "http(s) URL" in " ".join(done.stderr.split())


def test_population_simulation_runs_on_a_store_url(evershop, markov, tmp_path):
    """The population path (what the population_simulation asset runs) on a store the
    project does not serve: events come from the browser, orders stay guarded."""
    from types import SimpleNamespace

    from simpersona.agent.plans import AgentPlan
    from simpersona.agent.population import PopulationConfig, run_population
    from simpersona.agent.session import RuntimeConfig

    name, shop, url = evershop
    model, _ = markov
    before = shop.orders()
    plans = [
        AgentPlan(
            agent_id=f"pop-{i}", shop_id="live", policy="markov", token=None, stratum="A",
            intent="buy", goal="Find something you like and buy it.",
            start_path="/products/from-our-storefront", goal_target="purchase", seed=i,
        )
        for i in range(2)
    ]  # fmt: skip
    cfg = PopulationConfig(
        concurrency=2,
        runtime=RuntimeConfig(max_steps=40, session_timeout_s=240, max_invalid_actions=3),
        store_url=url,
        progress=False,
    )
    label = model.sample_labels(1, seed=0)[0]
    run = run_population(
        SimpleNamespace(shop_id=f"live-{name}"),
        plans,
        MarkovPolicy(model, seed=1, follow_goal=True),
        cfg,
        tmp_path,
        persona_for=lambda plan: model.persona(label, seed=plan.seed),
    )
    table = run.table
    assert table.height == 2
    assert table["purchase"].sum() == 0 and shop.orders() == before
    # The agents started at the store's URL (not our storefront's landing path) and their
    # events were recorded in the browser.
    assert (table["n_events"] > 0).all() and (table["n_product_views"] > 0).any()
    assert table["outcome"].is_in(["goal_reached", "other", "steps_limit"]).all()
