"""Population simulation (#8 item 1) and the LLM agent policy (#7 item 5): agents planned
from a store's persona mix, run on its real storefront in headless Chromium, outcomes read
from the store's own event log, resumable runs; the LLM policy against a real local server."""

from __future__ import annotations

import json

import polars as pl
import pytest

from simpersona.agent.actions import parse_action
from simpersona.agent.llm_policy import LLMPolicy, action_schema, profile_of
from simpersona.agent.markov import MarkovModel
from simpersona.agent.markov_policy import MarkovPolicy
from simpersona.agent.plans import AgentPlan, counterparts_by_token, plan_agents
from simpersona.agent.policy import Persona, ScriptedPolicy
from simpersona.agent.population import (
    RESULT_SCHEMA,
    PopulationConfig,
    agent_row,
    results_frame,
    run_population,
)
from simpersona.agent.prompt import messages_for_step
from simpersona.evaluation.instruction import task_from_outline
from simpersona.evaluation.instruction_check import check_result
from simpersona.features.enrich import enrich_sessions
from simpersona.ingest.sessionize import sessionize
from simpersona.store import StoreCatalog
from simpersona.store.app import dom_id
from simpersona.synth import GeneratorConfig, generate_lake
from simpersona.traces.build import select_outlines
from simpersona.traces.outline import CategoryIndex, SessionEvent, SessionOutline
from tests.conftest import read_lake_table

pytestmark = pytest.mark.browser
SHOP = "shop-000"


@pytest.fixture(scope="module")
def shop(tmp_path_factory):
    """A generated shop; its buyers get tokens by stratum (A→0 … D→3) so that a token's
    counterparts share an intent."""
    root = tmp_path_factory.mktemp("pop") / "lake"
    generate_lake(
        root,
        GeneratorConfig(n_shops=1, n_buyers=300, seed=5),
        ground_truth_path=root.parent / "truth.parquet",
        progress=False,
    )
    events = sessionize(read_lake_table(root, "events").drop("shop", "date", strict=False))
    products, collections = read_lake_table(root, "products"), read_lake_table(root, "collections")
    sessions = enrich_sessions(events, products, collections)
    outlines = select_outlines(sessions, None, CategoryIndex.from_frames(products, collections))
    outlines = [
        SessionOutline(**{**o.__dict__, "token": "ABCD".index(o.stratum)}) for o in outlines
    ]
    labels = {o.buyer_id: str(o.token) for o in outlines}
    return root, events, outlines, labels


def _distribution(outlines) -> pl.DataFrame:
    counts = pl.DataFrame({"token": [o.token for o in outlines]}).group_by("token").len()
    return counts.with_columns((pl.col("len") / pl.col("len").sum()).alias("share"))


def test_plans_follow_the_store_mix_and_are_reproducible(shop):
    _, _, outlines, _ = shop
    dist = _distribution(outlines)
    cps = counterparts_by_token(outlines)
    a = plan_agents(SHOP, dist, cps, 200, "llm", seed=1)
    b = plan_agents(SHOP, dist, cps, 200, "llm", seed=1)
    assert a == b and len({p.agent_id for p in a}) == 200
    c = plan_agents(SHOP, dist, cps, 200, "llm", seed=2)
    assert [p.token for p in a] != [p.token for p in c]
    # Intent follows the counterpart's stratum; goals carry no funnel instructions.
    for p in a:
        assert p.intent == ("buy" if p.stratum in "ABC" else "browse")
        assert p.goal.startswith(f"You are here to {p.intent} ")
        assert "cart" not in p.goal.lower() and "checkout" not in p.goal.lower()
        assert p.start_path.startswith("/")
    # Token shares of 200 draws within 0.1 of p̂_s(k).
    drawn = pl.Series([p.token for p in a]).value_counts(normalize=True)
    share = dict(zip(dist["token"].to_list(), dist["share"].to_list(), strict=True))
    for tok, prop in drawn.iter_rows():
        assert abs(prop - share[tok]) < 0.1
    nop = plan_agents(SHOP, dist, cps, 5, "nopersona", seed=1)
    assert all(p.token is None for p in nop)
    # Same seed, another policy: the same people (paired), labelled by policy.
    assert [p.counterpart_buyer_id for p in nop] == [p.counterpart_buyer_id for p in a[:5]]
    neutral = plan_agents(SHOP, dist, cps, 5, "llm_neutral", seed=1, goal_kind="neutral")
    assert all(p.goal.startswith("You are interested in") for p in neutral)
    assert all(p.intent == "neutral" and p.token is not None for p in neutral)
    with pytest.raises(ValueError, match="goal_kind"):
        plan_agents(SHOP, dist, cps, 5, "llm", seed=1, goal_kind="vague")


def test_markov_population_outcomes_come_from_the_store_log_and_runs_resume(shop, tmp_path):
    root, events, outlines, labels = shop
    catalog = StoreCatalog.from_lake(root, SHOP)
    model = MarkovModel.fit(events, labels)
    plans = plan_agents(SHOP, _distribution(outlines), counterparts_by_token(outlines), 8, "markov")
    cfg = PopulationConfig(concurrency=4, progress=False)

    def persona_for(plan: AgentPlan) -> Persona:
        return model.persona(str(plan.token), seed=plan.seed)

    first = run_population(
        catalog, plans[:5], MarkovPolicy(model), cfg, tmp_path, persona_for=persona_for
    )
    assert first.ran == 5 and first.resumed == 0
    t = first.table
    assert t.height == 5 and t["agent_id"].to_list() == sorted(p.agent_id for p in plans[:5])
    assert set(t["outcome"]) <= {"goal_reached", "steps_limit", "time_limit", "other", "crash"}
    assert (t["n_events"] > 0).all(), t.select("agent_id", "outcome", "error")
    # Funnel flags are consistent: a purchase implies checkout, checkout implies a cart.
    assert (~t["purchase"] | t["checkout_reached"]).all()
    assert (~t["checkout_reached"] | t["add_to_cart"]).all()
    assert (t["add_to_cart"] == (t["n_add_to_cart"] > 0)).all()
    # A crash mid-line: the cut line is ignored, finished agents are kept, the rest run.
    log = tmp_path / "agents.jsonl"
    lines = log.read_text().splitlines()
    log.write_text("\n".join(lines[:3]) + "\n" + lines[3][:20])
    again = run_population(
        catalog, plans, MarkovPolicy(model), cfg, tmp_path, persona_for=persona_for
    )
    assert again.resumed == 3 and again.ran == 5 and again.table.height == 8
    kept = {json.loads(x)["agent_id"] for x in lines[:3]}
    assert kept <= set(again.table["agent_id"])
    assert pl.read_parquet(again.path).equals(again.table)


def test_scripted_agent_row_counts_what_the_store_logged(shop, tmp_path):
    """A scripted agent that searches, opens a product and carts it: the row says so."""
    root, _, outlines, _ = shop
    catalog = StoreCatalog.from_lake(root, SHOP)
    pid = next(iter(catalog.products))
    plan = AgentPlan(
        agent_id="scripted-0",
        shop_id=SHOP,
        policy="llm",
        token=1,
        stratum="B",
        intent="buy",
        goal="You are here to buy things.",
        start_path=f"/products/{pid}",
    )
    script = ScriptedPolicy(
        [{"action": "add_to_cart", "quantity": 1}, {"action": "end_session", "reason": "done"}]
    )
    run = run_population(
        catalog, [plan], script, PopulationConfig(concurrency=1, progress=False), tmp_path
    )
    row = run.table.row(0, named=True)
    assert row["add_to_cart"] and row["n_add_to_cart"] == 1 and not row["purchase"]
    assert row["n_product_views"] == 1 and row["n_actions"] == 2
    assert row["outcome"] == "goal_reached" and row["self_reported_done"]


def test_event_trace_survives_resume_and_the_checker_reads_it(shop, tmp_path):
    """A scripted agent searches a product's title, opens it and adds 2: the row's event
    trace is the store's log of that, the same after a resume from the JSONL file and in the
    Parquet table, and the instruction checker passes the matching task on it."""
    root, _, _, _ = shop
    catalog = StoreCatalog.from_lake(root, SHOP)
    # A product that is the first hit of its own title: its card is on the first page.
    p = next(p for p in catalog.products.values() if catalog.search(p.title)[:1] == [p])
    plan = AgentPlan("trace-0", SHOP, "llm", 1, "B", "task", "Do the steps.", start_path="/")
    script = ScriptedPolicy(
        [
            {"action": "search", "query": p.title},
            {"action": "click", "id": f"product-link-{dom_id(p.product_id)}"},
            {"action": "add_to_cart", "quantity": 2},
            {"action": "end_session", "reason": "done"},
        ]
    )
    cfg = PopulationConfig(concurrency=1, progress=False)
    run = run_population(catalog, [plan], script, cfg, tmp_path)
    row = run.table.row(0, named=True)
    steps = [e for e in row["event_trace"] if e["event_type"] != "page_view"]
    assert [
        (e["event_type"], e["product_id"], e["search_query"], e["quantity"]) for e in steps
    ] == [
        ("search", None, p.title, None),
        ("product_view", p.product_id, None, None),
        ("add_to_cart", p.product_id, None, 2),
    ], row["event_trace"]
    assert len(row["event_trace"]) == row["n_events"]
    # Resumed from agents.jsonl (nothing runs again) and read back from Parquet: the same.
    again = run_population(catalog, [plan], script, cfg, tmp_path)
    assert again.ran == 0 and again.table["event_trace"].to_list() == [row["event_trace"]]
    assert pl.read_parquet(run.path)["event_trace"].to_list() == [row["event_trace"]]

    def task(quantity: int):
        events = [
            SessionEvent("search", search_query=p.title.upper()),
            SessionEvent("product_view", product_id=p.product_id, product_title=p.title),
            SessionEvent("add_to_cart", product_id=p.product_id, quantity=quantity),
        ]
        return task_from_outline(SessionOutline(SHOP, "b", f"s{quantity}", tuple(events)))

    ok = check_result(task(2), row)
    assert ok["success"] and ok["path_ok"] and not ok["trace_missing"]
    wrong = check_result(task(1), row)  # the task said one unit
    assert wrong["path_ok"] and not wrong["quantity_ok"] and not wrong["success"]


def test_malformed_policy_output_is_outcome_other(shop, tmp_path):
    root, _, _, _ = shop
    catalog = StoreCatalog.from_lake(root, SHOP)
    plan = AgentPlan("bad-0", SHOP, "llm", 0, "A", "buy", "You are here to buy things.")
    script = ScriptedPolicy(['{"reasoning": "x", "action": "fly"'])
    run = run_population(
        catalog, [plan], script, PopulationConfig(concurrency=1, progress=False), tmp_path
    )
    row = run.table.row(0, named=True)
    assert row["outcome"] == "other" and row["error"] and row["invalid_actions"] == 1


def test_profile_field_is_the_persona_token():
    assert profile_of(Persona(label="17")) == "<|persona_17|>"
    assert profile_of(Persona(label="<|persona_3|>")) == "<|persona_3|>"
    assert profile_of(Persona(label="", attributes={"token": 5})) == "<|persona_5|>"
    assert profile_of(Persona(label="")) is None
    assert profile_of(Persona(label="window_shopper")) is None


def test_llm_policy_prompts_as_in_training_and_runs_against_a_real_server(shop, tmp_path):
    """The untrained tiny model behind `serve-llm`: the policy's prompt is the training
    format, every reply reaches the runtime, and malformed ones end as `other`."""
    from simpersona.llm.client import LLMClient, LLMConfig
    from simpersona.llm.persona_tokens import add_persona_tokens
    from simpersona.llm.server import serve_in_background
    from simpersona.llm.tiny import build_tiny_model

    root, _, outlines, _ = shop
    model_dir = tmp_path / "tiny"
    build_tiny_model(None, model_dir)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    lm = AutoModelForCausalLM.from_pretrained(model_dir)
    add_persona_tokens(lm, tok, 4)
    lm.save_pretrained(model_dir)
    tok.save_pretrained(model_dir)

    plans = plan_agents(SHOP, _distribution(outlines), counterparts_by_token(outlines), 3, "llm")
    with serve_in_background(model_dir) as base_url:
        cfg = LLMConfig(base_url=base_url + "/v1", model=model_dir.name, max_retries=0)
        client = LLMClient(cfg)
        policy = LLMPolicy(client, max_tokens=24)
        run = run_population(
            StoreCatalog.from_lake(root, SHOP),
            plans,
            policy,
            PopulationConfig(concurrency=2, progress=False),
            tmp_path / "sim",
        )
    errors = run.table["error"].to_list()
    assert policy.stats.requests >= 3 and policy.stats.completion_tokens > 0, errors
    assert run.table.height == 3
    # Guided decoding: the same untrained model, every reply an action on a real element.
    with serve_in_background(model_dir) as base_url:
        cfg = LLMConfig(base_url=base_url + "/v1", model=model_dir.name, max_retries=0)
        guided = LLMPolicy(LLMClient(cfg), max_tokens=400, constrained=True)
        run2 = run_population(
            StoreCatalog.from_lake(root, SHOP),
            plans,
            guided,
            PopulationConfig(concurrency=2, progress=False),
            tmp_path / "sim-guided",
        )
    assert guided.stats.requests >= 3
    for reply in guided.stats.replies:
        parse_action(reply)  # raises on anything malformed
    assert run2.table["steps"].sum() >= 3
    assert set(run.table["outcome"]) <= {"goal_reached", "other", "steps_limit"}
    # What the policy sends is exactly the training format for that step.
    from simpersona.agent.observation import Observation
    from simpersona.agent.policy import Goal, Memory

    obs = Observation(url="http://127.0.0.1/", kind="home", title="Home", text="", elements=())
    mem = Memory(seed=1, log=["1. clicked a -> product page"])
    persona = Persona(label="2")
    goal = Goal("You are here to buy shoes.")
    assert policy.messages(obs, mem, persona, goal) == messages_for_step(
        goal.text, "<|persona_2|>", mem.log, obs
    )


def test_agent_row_reads_flags_from_events():
    from simpersona.agent.session import SessionResult

    plan = AgentPlan("a", SHOP, "markov", 3, "A", "buy", "g")
    res = SessionResult("a", "sim-a", "goal_reached", "", 4, 1.5, "http://x/")
    events = [
        {"event_type": "product_view"},
        {"event_type": "add_to_cart"},
        {"event_type": "checkout_started"},
        {"event_type": "checkout_completed"},
        {"event_type": "collection_view", "collection_id": "c1"},
        {"event_type": "search", "search_query": "Tea "},
        {"event_type": "search", "search_query": "tea"},
    ]
    row = agent_row(plan, res, events)
    assert row["add_to_cart"] and row["checkout_reached"] and row["purchase"]
    assert row["n_categories"] == 2 and row["n_searches"] == 2 and row["error"] is None
    # The event trace: every event, in the store's order, with the fields a checker needs.
    trace = row["event_trace"]
    assert [e["event_type"] for e in trace] == [e["event_type"] for e in events]
    assert trace[4]["collection_id"] == "c1" and trace[5]["search_query"] == "Tea "
    assert set(trace[0]) == {"event_type", "product_id", "collection_id", "search_query",
                             "quantity"}  # fmt: skip
    # Rows written before the trace was kept (a resume file of an older run) still load.
    old = {k: v for k, v in row.items() if k != "event_trace"}
    table = results_frame([json.loads(json.dumps(old)), {**row, "agent_id": "b"}])
    assert table["event_trace"].to_list()[0] is None
    assert table["event_trace"].to_list()[1] == trace
    assert table.schema["event_trace"] == RESULT_SCHEMA["event_trace"]


def test_stage2_datasets_teach_intent_only_goals_for_a_stable_share():
    from simpersona.traces.dataset import uses_intent_goal
    from simpersona.traces.goals import GoalPair

    pair = GoalPair(
        "You are interested in tea. Search for “green tea”.",
        "You are here to buy tea. Search for “green tea”. Add Sencha to your cart.",
        "buy",
        "Tea",
        "template",
    )
    assert pair.stage2_intent == "You are here to buy tea. Search for “green tea”."
    odd = GoalPair("Browse whatever.", "x", "browse", "Tea", "llm")
    assert odd.stage2_intent == "You are here to browse tea."
    recs = [{"shop_id": "s", "session_id": f"x{i}", "goal_stage2_intent": "g"} for i in range(2000)]
    picked = [uses_intent_goal(r, 0.5) for r in recs]
    assert 0.45 < sum(picked) / len(picked) < 0.55
    assert picked == [uses_intent_goal(r, 0.5) for r in recs]
    assert not any(uses_intent_goal(r, 0.0) for r in recs)
    assert not uses_intent_goal({"shop_id": "s", "session_id": "x"}, 1.0)


def test_markov_tokens_back_off_to_their_stratum_not_to_everyone():
    """A token seen in one purchasing session: with its stratum as parent it keeps buying;
    smoothed toward all buyers (mostly browsers) it rarely gets to the cart."""
    from datetime import UTC, datetime, timedelta

    rows = []

    def session(buyer: str, kinds: list[str]) -> None:
        t0 = datetime(2026, 1, 1, tzinfo=UTC)
        for i, et in enumerate(kinds):
            rows.append(
                {
                    "buyer_id": buyer,
                    "session_id": f"{buyer}-1",
                    "ts": t0 + timedelta(minutes=i),
                    "event_type": et,
                    "url": "https://x.example/",
                    "product_id": "p" if et != "page_view" else None,
                }
            )

    buy = ["page_view", "product_view", "add_to_cart", "checkout_started", "checkout_completed"]
    labels = {}
    for b in range(30):  # browsers, token 1, stratum D
        session(f"d{b}", ["page_view", "product_view"])
        labels[f"d{b}"] = "1"
    for b in range(6):  # purchasers, token 2 (stratum A)
        session(f"a{b}", buy)
        labels[f"a{b}"] = "2"
    session("lone", buy)  # token 3: one purchasing buyer
    labels["lone"] = "3"
    events = pl.DataFrame(rows)
    flat = MarkovModel.fit(events, labels)
    nested = MarkovModel.fit(events, labels, parents={"1": "D", "2": "A", "3": "A"})
    p_flat = flat.labels["3"].transitions["product"].get("add_to_cart", 0.0)
    p_nested = nested.labels["3"].transitions["product"].get("add_to_cart", 0.0)
    assert p_nested > 0.6 and p_nested > 2 * p_flat
    # Labels without a parent, and the all-buyers chain, are unchanged.
    assert nested.overall.transitions == flat.overall.transitions
    assert set(nested.labels) == {"1", "2", "3"}


def test_action_schema_names_only_the_pages_elements():
    from simpersona.agent.observation import Element, Observation

    els = (
        Element("nav-home", "link", "Home"),
        Element("add-to-cart", "button", "Add to cart"),
        Element("email", "input", "Email"),
        Element("country", "select", "Country", options=("US", "DE")),
    )
    obs = Observation(url="http://127.0.0.1/products/p1", kind="product", title="P", text="",
                      elements=els)  # fmt: skip
    schema = action_schema(obs)
    by_action = {o["properties"]["action"]["const"]: o for o in schema["anyOf"]}
    assert by_action["click"]["properties"]["id"]["enum"] == ["add-to-cart", "nav-home"]
    assert by_action["type"]["properties"]["id"]["enum"] == ["email"]
    assert by_action["select"]["properties"]["value"]["enum"] == ["US", "DE"]
    assert "add_to_cart" in by_action
    assert list(by_action["click"]["properties"])[:2] == ["reasoning", "action"]
    home = Observation(url="http://127.0.0.1/", kind="home", title="", text="", elements=els[:1])
    assert "add_to_cart" not in {
        o["properties"]["action"]["const"] for o in action_schema(home)["anyOf"]
    }
    # A product page with nothing that adds to the cart (a parent product whose variants are
    # links) offers no add_to_cart; a foreign store's button read as one (its role) does.
    parent = Observation(url="http://127.0.0.1/p/1", kind="product", title="P", text="",
                         elements=(els[0], Element("product-link-2", "link", "Size 9")))  # fmt: skip
    assert "add_to_cart" not in {
        o["properties"]["action"]["const"] for o in action_schema(parent)["anyOf"]
    }
    basket = Element("sp-4", "button", "Add to basket", role="add_to_cart")
    foreign = Observation(url="http://127.0.0.1/p/2", kind="product", title="P", text="",
                          elements=(basket,))  # fmt: skip
    assert "add_to_cart" in {
        o["properties"]["action"]["const"] for o in action_schema(foreign)["anyOf"]
    }


def test_invalid_actions_within_the_tolerance_are_reported_and_the_session_goes_on(shop, tmp_path):
    from dagster_project.defs.simulation.assets import SimulationConfig
    from simpersona.agent.policy_set import PolicySet
    from simpersona.agent.session import RuntimeConfig

    root, _, _, _ = shop
    catalog = StoreCatalog.from_lake(root, SHOP)
    plan = AgentPlan("retry-0", SHOP, "llm", 0, "A", "buy", "You are here to buy things.")
    script = ScriptedPolicy(
        [
            '{"reasoning": "x", "action": "click", "id": "no-such-element"}',
            '{"reasoning": "x", "action": "fly"',
            '{"reasoning": "done", "action": "end_session", "reason": "done"}',
        ]
    )
    tolerant = PopulationConfig(
        concurrency=1, progress=False, runtime=RuntimeConfig(max_invalid_actions=2)
    )
    row = run_population(catalog, [plan], script, tolerant, tmp_path).table.row(0, named=True)
    assert row["invalid_actions"] == 2 and row["steps"] == 3, row
    # one reply did not parse; the other parsed and named an element the page lacks
    assert row["malformed_replies"] == 1, row
    assert row["outcome"] != "other" and row["self_reported_done"], row
    # the simulation asset's config reaches the runtime
    pop = PolicySet(None, None, SHOP, SimulationConfig(max_invalid_actions=2)).population_config()
    assert pop.runtime.max_invalid_actions == 2


def test_strata_sampling_gives_each_stratum_its_share_and_keeps_agents_paired(shop):
    _, _, outlines, _ = shop
    dist = _distribution(outlines)
    cps = counterparts_by_token(outlines)
    mix = plan_agents(SHOP, dist, cps, 400, "markov", seed=3)
    strata = plan_agents(SHOP, dist, cps, 400, "markov", seed=3, sampling="strata")
    # Tokens here are pure in stratum (A→0 … D→3): each stratum present gets an equal share
    # under "strata", while "mix" follows p̂_s, where the deep strata are rare.
    present = len(set(cps))
    drawn = pl.Series([p.token for p in strata]).value_counts(normalize=True)
    assert drawn.height == present >= 3
    assert all(abs(prop - 1 / present) < 0.07 for _, prop in drawn.iter_rows()), drawn
    rare = min(dist.iter_rows(named=True), key=lambda r: r["share"])["token"]
    assert sum(p.token == rare for p in strata) > 2 * sum(p.token == rare for p in mix)
    # Agent i is one person across policies under either design.
    notoken = plan_agents(SHOP, dist, cps, 400, "markov_notoken", seed=3, sampling="strata",
                          with_token=False)  # fmt: skip
    assert [p.counterpart_buyer_id for p in notoken] == [p.counterpart_buyer_id for p in strata]
    assert all(p.token is None for p in notoken)
    # What the goal names travels with the plan (the Markov persona looks for it).
    assert all(p.topics for p in strata)
    with pytest.raises(ValueError, match="sampling"):
        plan_agents(SHOP, dist, cps, 5, "markov", sampling="stratified")


def test_markov_deepest_sessions_carry_the_buyers_funnel_rates():
    """A purchaser with one buying session among four browsing ones: fitted on every session
    the token's chain buys in ~1/5 of sessions; fitted on each buyer's deepest session it
    buys in all, the rate at which its buyers ever bought (what ARA compares)."""
    from datetime import UTC, datetime, timedelta

    from simpersona.agent.markov import MarkovConfig

    rows = []
    buy = ["page_view", "product_view", "add_to_cart", "checkout_started", "checkout_completed"]
    for b in range(10):
        for s in range(5):
            kinds = buy if s == 2 else ["page_view", "product_view"]
            for i, et in enumerate(kinds):
                rows.append({"buyer_id": f"a{b}", "session_id": f"a{b}-{s}", "event_type": et,
                             "ts": datetime(2026, 1, 1, tzinfo=UTC) + timedelta(hours=s, minutes=i),
                             "url": "https://x.example/", "product_id": "p"})  # fmt: skip
    events = pl.DataFrame(rows)
    labels = {f"a{b}": "7" for b in range(10)}
    every = MarkovModel.fit(events, labels, config=MarkovConfig(smoothing=0))
    deepest = MarkovModel.fit(events, labels, config=MarkovConfig(smoothing=0, sessions="deepest"))
    p_every = every.labels["7"].transitions["product"].get("add_to_cart", 0.0)
    p_deep = deepest.labels["7"].transitions["product"].get("add_to_cart", 0.0)
    assert p_every == pytest.approx(0.2, abs=0.02) and p_deep > 0.95
    assert deepest.labels["7"].sessions == 10 and every.labels["7"].sessions == 50
    with pytest.raises(ValueError, match="sessions"):
        MarkovConfig(sessions="longest")


def test_pooled_fit_keeps_shops_apart(shop):
    """fit_token_policy over two shops whose buyer and session ids collide: every buyer is
    counted once per shop, the token's parent is its modal stratum over the pooled buyers,
    and a shop not passed in changes nothing."""
    from simpersona.agent.markov import MarkovConfig
    from simpersona.agent.markov_fit import ShopData, fit_token_policy, token_strata

    _, events, outlines, labels = shop
    lab = pl.DataFrame(
        {"buyer_id": list(labels), "token": [int(t) for t in labels.values()],
         "stratum": ["ABCD"[int(t)] for t in labels.values()]}
    )  # fmt: skip
    raw = MarkovConfig(smoothing=0)  # no pseudo-sessions: twice the data, the same chain
    one = fit_token_policy([ShopData("s1", events, lab)], raw)
    two = fit_token_policy([ShopData("s1", events, lab), ShopData("s2", events, lab)], raw)
    assert two.overall.buyers == 2 * one.overall.buyers
    assert two.overall.sessions == 2 * one.overall.sessions
    assert two.labels["0"].transitions == one.labels["0"].transitions
    assert token_strata(lab) == {t: "ABCD"[int(t)] for t in set(labels.values())}
    # A persona's goal words replace the label's drawn interests; the chain stays the token's.
    p = one.persona("0", seed=1, topics=("Skirts",), queries=("red skirt",))
    assert p.attributes["topics"] == ["Skirts"] and p.attributes["queries"] == ["red skirt"]
    assert p.label == "0"
    q = one.persona("0", seed=1, topics=("Skirts",))
    assert q.attributes["queries"] == ["skirts"]
    with pytest.raises(ValueError, match="no shops"):
        fit_token_policy([])
