"""The agent library without a browser: the action schema, observations and their token
budget, the Markov policy (fitting by hand-counted transitions, persistence, seeding, acting
on observations), and recordings."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import polars as pl
import pytest

from simpersona.agent import (
    ActionError,
    Goal,
    Memory,
    Persona,
    ScriptedPolicy,
    SessionRecorder,
    SessionResult,
    parse_action,
    read_recording,
)
from simpersona.agent.actions import AddToCart, Click, EndSession, Search
from simpersona.agent.browser import host_allowed
from simpersona.agent.markov import MarkovModel, page_state
from simpersona.agent.markov_policy import MarkovPolicy
from simpersona.agent.observation import build_observation, estimate_tokens, page_kind
from simpersona.agent.policy import Policy
from simpersona.agent.runtime import goal_met
from simpersona.agent.session import StepRecord

T0 = datetime(2026, 3, 1, 12, tzinfo=UTC)


# ---- actions --------------------------------------------------------------------------------
def test_parse_action_accepts_dicts_json_and_models():
    assert parse_action({"action": "search", "query": " boots "}) == Search(query="boots")
    a = parse_action('{"action": "add_to_cart", "quantity": 3, "reasoning": "need three"}')
    assert isinstance(a, AddToCart) and a.quantity == 3 and a.reasoning == "need three"
    assert a.to_dict() == {"action": "add_to_cart", "quantity": 3}
    assert parse_action({"action": "add_to_cart"}).quantity == 1
    assert parse_action(Click(id="x")) == Click(id="x")
    assert isinstance(parse_action({"action": "end_session"}), EndSession)


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("{nope", "not valid JSON"),
        ("[1, 2]", "must be a JSON object"),
        ({"query": "x"}, "has no 'action' field"),
        ({"action": "buy"}, "unknown action 'buy'"),
        ({"action": "search"}, "query: Field required"),
        ({"action": "search", "query": ""}, "at least 1 character"),
        ({"action": "add_to_cart", "quantity": 100}, "less than or equal to 99"),
        ({"action": "add_to_cart", "quantity": 1.5}, "valid integer"),
        ({"action": "scroll", "direction": "left"}, "'down' or 'up'"),
        ({"action": "go_back", "id": "x"}, "Extra inputs are not permitted"),
    ],
)
def test_parse_action_rejects_with_a_message(raw, message):
    with pytest.raises(ActionError) as err:
        parse_action(raw)
    assert message in str(err.value)


# ---- observations ---------------------------------------------------------------------------
def _raw(n_links: int = 3, text: str = "Welcome to the shop", **extra) -> dict:
    elements = [
        {"id": "home-link", "kind": "link", "label": "Shop", "region": "header"},
        {"id": "search-input", "kind": "input", "label": "Search", "region": "header", "value": ""},
        *(
            {
                "id": f"product-link-p{i}",
                "kind": "link",
                "label": f"Trail Sandal {i}",
                "region": "main",
                "product_id": f"p{i}",
                "in_view": i < 2,
            }
            for i in range(n_links)
        ),
        {"id": "footer-page-about", "kind": "link", "label": "About us", "region": "footer"},
    ]
    return {
        "url": "http://127.0.0.1:8000/",
        "title": "Shop 000",
        "page": "home",
        "heading": "Shop 000",
        "cart_count": "2",
        "text": text,
        "elements": elements,
        **extra,
    }


def test_observation_facts_and_rendering():
    obs = build_observation(_raw())
    assert obs.kind == "home" and obs.facts["cart_count"] == "2"
    assert [e.id for e in obs.links("product")] == [f"product-link-p{i}" for i in range(3)]
    text = obs.render()
    assert "Page: home · Shop" in text and "cart count: 2" in text
    assert "[product-link-p1] Trail Sandal 1" in text
    d = obs.to_dict()
    assert json.loads(json.dumps(d))["elements"][0] == {
        "id": "home-link",
        "kind": "link",
        "label": "Shop",
        "region": "header",
    }


def test_prompt_page_is_compact_and_always_shows_a_taught_target():
    """The prompt lists the page's controls, the first product links (the rest counted),
    the menu only where a visit browses, the footer only where it starts; a taught action's
    target is listed whatever the caps, so no example teaches an id its page does not show."""
    from simpersona.agent.observation import PROMPT_PRODUCTS, PROMPT_TEXT
    from simpersona.agent.prompt import messages_for_step

    raw = _raw(n_links=30, text="word " * 400)
    raw["elements"].append({"id": "nav-collection-sandals", "kind": "link", "label": "Sandals",
                            "region": "nav"})  # fmt: skip
    home = build_observation(raw)
    text = home.render()
    listed = [ln for ln in text.splitlines() if ln.startswith("[product-link-")]
    assert len(listed) == PROMPT_PRODUCTS and f"(+{30 - PROMPT_PRODUCTS} more products" in text
    assert "[search-input] input Search" in text  # controls of any region stay
    assert "Menu: [home-link] Shop · [nav-collection-sandals] Sandals" in text
    assert "Footer: [footer-page-about] About us" in text
    text_line = next(ln for ln in text.splitlines() if ln.startswith("Text: "))
    assert len(text_line) <= len("Text: ") + PROMPT_TEXT
    assert "[product-link-p29]" in home.render(show=["product-link-p29"])
    product = build_observation({**raw, "page": "product"})
    assert "Menu:" not in product.render() and "Footer:" not in product.render()
    # A taught click on the 30th product: its page lists it.
    msgs = messages_for_step("Buy sandals.", None, [], home.to_dict(),
                             {"action": "click", "id": "product-link-p29"})  # fmt: skip
    assert "[product-link-p29] Trail Sandal 29" in msgs[1]["content"]
    assert "URL:" not in msgs[1]["content"]  # the host and port say nothing to the model


def test_observation_is_capped_to_its_token_budget_keeping_what_matters():
    raw = _raw(n_links=300, text="word " * 5000)
    obs = build_observation(raw, token_budget=500)
    assert estimate_tokens(obs.render()) <= 500 * 1.1  # the element lines' overhead is small
    assert obs.truncated > 0 and "more elements; scroll" in obs.render()
    assert len(obs.text) <= 500 * 4 // 3
    kept = [e.id for e in obs.elements]
    # Controls in view come first; the footer goes before them.
    assert "product-link-p0" in kept and "product-link-p1" in kept
    assert "footer-page-about" not in kept
    # Document order is kept among what survives.
    assert kept == [e["id"] for e in raw["elements"] if e["id"] in kept]
    big = build_observation(raw, token_budget=100_000)
    assert big.truncated == 0 and len(big.elements) == 303


def test_page_kind_from_the_store_or_the_url():
    assert page_kind("cart", "http://x/whatever") == "cart"
    assert page_kind(None, "https://shop.example/products/abc") == "product"
    assert page_kind(None, "https://shop.example/collections/all?page=2") == "collection"
    assert page_kind(None, "https://shop.example/checkouts/c/1/thank-you") == "confirmation"
    assert page_kind(None, "https://shop.example/anything", payment_fields=True) == "checkout"
    assert page_kind(None, "https://shop.example/") == "home"
    assert page_kind(None, "https://shop.example/account") == "other"
    pay = build_observation(_raw(checkout_step="payment", page="checkout"))
    assert pay.is_payment_step and not build_observation(_raw()).is_payment_step


def test_goal_conditions():
    home = build_observation(_raw())
    done = build_observation(_raw(page="confirmation"))
    assert goal_met(Goal("buy", "purchase"), done, 0) and not goal_met(
        Goal("buy", "purchase"), home, 0
    )
    assert goal_met(Goal("add", "add_to_cart"), home, 1)  # cart count 2 > 1
    assert not goal_met(Goal("add", "add_to_cart"), home, 2)
    prod = build_observation(_raw(page="product", product_id="p7"))
    assert goal_met(Goal("see", "view_product", "p7"), prod, 0)
    assert not goal_met(Goal("see", "view_product", "p8"), prod, 0)
    assert not goal_met(Goal("look"), done, 0)  # browse: only the agent ends it


def test_host_allowlist_matches_subdomains_only():
    assert host_allowed("shop.example.com", ["example.com"])
    assert host_allowed("EXAMPLE.com", ["example.com"])
    assert not host_allowed("badexample.com", ["example.com"])
    assert not host_allowed("example.com.evil.io", ["example.com"])


# ---- the Markov policy ----------------------------------------------------------------------
def _events(sessions: dict[tuple[str, str], list[tuple[str, str | None]]]) -> pl.DataFrame:
    rows = []
    for (buyer, sid), steps in sessions.items():
        for i, (et, extra) in enumerate(steps):
            rows.append(
                {
                    "buyer_id": buyer,
                    "session_id": sid,
                    "ts": T0 + timedelta(seconds=i),
                    "event_type": et,
                    "url": "https://s.example/cart" if extra == "cart" else "https://s.example/",
                    "product_id": extra if et in ("product_view", "add_to_cart") else None,
                    "search_query": extra if et == "search" else None,
                    "quantity": 2 if et == "add_to_cart" else None,
                }
            )
    return pl.DataFrame(rows)


EVENTS = _events(
    {
        ("a", "a-1"): [("page_view", None), ("product_view", "p1"), ("add_to_cart", "p1")],
        ("a", "a-2"): [("search", "sandals"), ("product_view", "p2")],
        ("b", "b-1"): [("page_view", "cart"), ("page_view", None)],
        ("c", "c-1"): [("product_view", "p1")],
    }
)
PRODUCTS = pl.DataFrame(
    {"product_id": ["p1", "p2"], "collection_ids": [["footwear-sandals", "sale"], ["bags"]]}
)
COLLECTIONS = pl.DataFrame(
    {"collection_id": ["footwear-sandals", "bags", "sale"], "title": ["Sandals", "Bags", "Sale"]}
)


def test_page_states_from_events():
    assert page_state("page_view", "https://x.example/") == "home"
    assert page_state("page_view", "http://127.0.0.1:8000/s/shop-1") == "home"
    assert page_state("page_view", "https://x.example/cart") == "cart"
    assert page_state("page_view", "https://x.example/blogs/news/x") == "info"
    assert page_state("checkout_completed", None) == "purchase"


def test_markov_fit_counts_transitions_by_label():
    model = MarkovModel.fit(
        EVENTS, {"a": "shopper", "b": "looker"}, PRODUCTS, COLLECTIONS
    )  # c: unlabelled
    shopper = model.labels["shopper"]
    assert shopper.sessions == 2 and shopper.buyers == 1
    # The all-buyers chain, counted by hand: start -> home (a-1), search (a-2), cart (b-1),
    # product (c-1).
    start = model.overall.transitions["start"]
    for s in ("home", "search", "cart", "product"):
        assert start[s] == pytest.approx(0.25)
    # product -> add_to_cart once, -> end twice (a-2, c-1); min_end_prob keeps end >= 2 %.
    prod = model.overall.transitions["product"]
    assert prod["add_to_cart"] == pytest.approx(1 / 3, abs=1e-3)
    assert prod["end"] == pytest.approx(2 / 3, abs=1e-3)
    # A label's chain: its own counts (2 sessions) plus 5 pseudo-sessions of the overall.
    own = {"home": 1, "search": 1}
    for s, p in model.overall.transitions["start"].items():
        expected = (own.get(s, 0) + 5 * p) / (2 + 5)
        assert shopper.transitions["start"][s] == pytest.approx(expected, abs=1e-5)
    # Interests: collections of the products they touched (not shop-wide ones), queries.
    assert set(shopper.topics) == {"Sandals", "Bags"}
    assert shopper.topics["Sandals"] > shopper.topics["Bags"]  # viewed + carted vs viewed
    assert shopper.queries == {"sandals": 1.0}
    assert shopper.quantities == {"2": 1.0}
    assert model.label_shares == {"looker": 0.5, "shopper": 0.5}
    for trans in (shopper.transitions, model.labels["looker"].transitions):
        for s, row in trans.items():
            assert sum(row.values()) == pytest.approx(1.0, abs=1e-4), s


def test_markov_fit_errors_are_clear():
    with pytest.raises(ValueError, match="session ids"):
        MarkovModel.fit(EVENTS.with_columns(pl.lit(None, pl.String).alias("session_id")), {})
    with pytest.raises(ValueError, match="buyer_id and 'token'"):
        MarkovModel.fit(
            EVENTS, pl.DataFrame({"buyer_id": ["a"], "label": ["x"]}), label_column="token"
        )


def test_markov_model_saves_and_loads_json(tmp_path):
    model = MarkovModel.fit(
        EVENTS, pl.DataFrame({"buyer_id": ["a", "b"], "token": [7, 3]}), PRODUCTS, COLLECTIONS,
        label_column="token",
    )  # fmt: skip
    path = model.save(tmp_path / "m.json")
    again = MarkovModel.load(path)
    assert again.to_dict() == model.to_dict()
    assert set(again.labels) == {"7", "3"}
    with pytest.raises(ValueError, match="not a SimPersona Markov"):
        MarkovModel.from_dict({"format": "other"})


def test_markov_personas_and_labels_are_seeded():
    model = MarkovModel.fit(EVENTS, {"a": "shopper", "b": "looker"}, PRODUCTS, COLLECTIONS)
    assert model.sample_labels(20, seed=1) == model.sample_labels(20, seed=1)
    assert set(model.sample_labels(200, seed=1)) == {"shopper", "looker"}
    p1, p2 = model.persona("shopper", seed=4), model.persona("shopper", seed=4)
    assert p1 == p2 and p1.label == "shopper"
    assert set(p1.attributes["topics"]) <= {"Sandals", "Bags"}
    assert p1.attributes["queries"] == ["sandals"]


def _product_page() -> dict:
    return _raw(
        page="product",
        product_id="p1",
        elements=[
            {"id": "home-link", "kind": "link", "label": "Shop", "region": "header"},
            {"id": "cart-link", "kind": "link", "label": "Cart", "region": "header"},
            {"id": "quantity-input", "kind": "input", "label": "Quantity", "region": "form"},
            {"id": "add-to-cart-button", "kind": "button", "label": "Add", "region": "form"},
            {"id": "product-link-p2", "kind": "link", "label": "Leather Bag", "region": "main",
             "product_id": "p2"},
            {"id": "product-link-p3", "kind": "link", "label": "Trail Sandal", "region": "main",
             "product_id": "p3"},
        ],
    )  # fmt: skip


def test_markov_policy_is_a_policy_and_replays_exactly_with_a_seed():
    model = MarkovModel.fit(EVENTS, {"a": "shopper", "b": "looker"}, PRODUCTS, COLLECTIONS)
    policy = MarkovPolicy(model, seed=11)
    assert isinstance(policy, Policy) and isinstance(ScriptedPolicy([]), Policy)
    obs = build_observation(_product_page())
    persona = model.persona("shopper", seed=0)

    def walk(seed: int) -> list[dict]:
        mem = Memory(seed=seed)
        return [policy.act(obs, mem, persona, Goal("shop")) for _ in range(6)]

    assert walk(5) == walk(5)
    assert any(walk(5) != walk(s) for s in range(6, 12))
    for a in walk(5):
        parse_action(a)  # every action it emits is valid


def test_markov_policy_acts_toward_its_sampled_state():
    model = MarkovModel.fit(EVENTS, {"a": "shopper"}, PRODUCTS, COLLECTIONS)
    policy = MarkovPolicy(model)
    persona = Persona("shopper", interests=("Sandals",), attributes={"topics": ["Sandals"]})
    obs = build_observation(_product_page())
    actions = {}
    for target in ("add_to_cart", "cart", "home", "search", "end"):
        mem = Memory(state={"state": "product", "target": target, "tries": 0, "start_cart": 2})
        actions[target] = policy.act(obs, mem, persona, Goal("shop"))
    assert actions["add_to_cart"]["action"] == "add_to_cart"
    assert actions["add_to_cart"]["quantity"] == 2  # the label's only quantity
    assert actions["cart"] == {
        "action": "click",
        "id": "cart-link",
        "reasoning": "shopper: product -> cart",
    }
    assert actions["home"]["id"] == "home-link"
    assert actions["search"]["action"] == "search"
    assert actions["end"]["action"] == "end_session"
    # Product choice leans to the persona's interests: the sandal far more than the bag.
    picks = []
    for seed in range(300):
        mem = Memory(seed=seed, state={"state": "home", "target": "product", "tries": 0})
        picks.append(policy.act(obs, mem, persona, Goal("shop"))["id"])
    assert picks.count("product-link-p3") > 2 * picks.count("product-link-p2") > 0


def test_markov_policy_fills_checkout_forms():
    model = MarkovModel.fit(EVENTS, {"a": "shopper"})
    policy = MarkovPolicy(model)
    form = _raw(
        page="checkout",
        checkout_step="information",
        elements=[
            {"id": "email", "kind": "input", "label": "Email", "region": "form", "value": ""},
            {
                "id": "country",
                "kind": "select",
                "label": "Country",
                "region": "form",
                "value": "US",
            },
            {"id": "continue-to-payment", "kind": "button", "label": "Continue", "region": "form"},
        ],
    )
    mem = Memory(state={"state": "checkout", "target": "purchase", "tries": 0, "buyer_id": "B-1"})
    obs = build_observation(form)
    first = policy.act(obs, mem, Persona("shopper"), Goal("buy"))
    assert (
        first["action"] == "type" and first["id"] == "email" and first["text"] == "b1@example.com"
    )
    form["elements"][0]["value"] = "b1@example.com"
    second = policy.act(build_observation(form), mem, Persona("shopper"), Goal("buy"))
    assert second["action"] == "click" and second["id"] == "continue-to-payment"


# ---- recordings -----------------------------------------------------------------------------
def test_recorder_writes_jsonl_atomically(tmp_path):
    rec = StepRecord(
        1, {"url": "u"}, [], {"action": "go_back"}, None, "why", "went back", None, 12.5, "other"
    )
    res = SessionResult("k/1", "b", "other", "msg", 1, 0.5, "u", records=[rec], persona="p")
    path = SessionRecorder(tmp_path).write(res, {"run": 3})
    assert path.name == "k-1.jsonl"
    lines = read_recording(path)
    assert [x["type"] for x in lines] == ["session", "step", "outcome"]
    assert lines[0]["run"] == 3 and lines[0]["persona"] == "p"
    assert lines[1]["reasoning"] == "why" and lines[1]["outcome"] == "other"
    assert lines[2]["message"] == "msg"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp files left


def test_the_pool_prefers_the_headless_shell_and_obeys_the_environment(monkeypatch, tmp_path):
    from simpersona.agent import browser

    monkeypatch.delenv(browser.CHROMIUM_ENV, raising=False)
    shell = tmp_path / "chromium-headless-shell"
    monkeypatch.setattr(browser, "HEADLESS_SHELL_PATH", str(shell))
    assert browser.BrowserConfig().executable_path == browser.CHROMIUM_PATH
    shell.write_text("")
    assert browser.BrowserConfig().executable_path == str(shell)
    monkeypatch.setenv(browser.CHROMIUM_ENV, "/opt/my-chromium")
    assert browser.BrowserConfig().executable_path == "/opt/my-chromium"
