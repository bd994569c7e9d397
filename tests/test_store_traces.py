"""Training traces from persona sessions on a store (simpersona/traces/store.py): goals the
evaluation never shows, reasoning in the teacher's phrasing, sessions kept by their funnel,
and the SFT examples the dataset builder makes of them."""

from __future__ import annotations

import json

import pytest

from simpersona.agent.live import GOALS, LiveConfig, LiveReport, live_specs
from simpersona.agent.policy import Persona
from simpersona.agent.session import SessionResult, StepRecord
from simpersona.llm.cli import _joined
from simpersona.llm.train_config import TrainConfig
from simpersona.traces.dataset import build_dataset, read_dataset
from simpersona.traces.store import (
    TRAINING_GOALS,
    disjoint_from_evaluation,
    step_reasoning,
    trace_records,
)

LISTING = {
    "url": "http://127.0.0.1:9/catalogue/",
    "kind": "collection",
    "title": "All products",
    "text": "All products",
    "elements": [
        {"id": "product-link-7", "kind": "link", "label": "Leather ankle boot",
         "role": "product_link", "product_id": "7"},
        {"id": "cart-link", "kind": "button", "label": "View cart", "role": "cart_link"},
        {"id": "id_q", "kind": "input", "label": "Search", "role": "search_box"},
    ],
}  # fmt: skip
PRODUCT = {**LISTING, "kind": "product", "title": "Leather ankle boot", "elements": []}
CART = {
    **LISTING,
    "kind": "cart",
    "title": "Basket",
    "elements": [{"id": "checkout-button", "kind": "link", "label": "Proceed to checkout"}],
}


def _step(n: int, obs: dict, action: dict | None, error: str | None = None) -> StepRecord:
    return StepRecord(n, obs, [], action, None, "markov", "ok", error, 1.0)


def _result(key: str, persona: str, goal: str, steps: list[StepRecord]) -> SessionResult:
    return SessionResult(key, key, "goal_reached", "", len(steps), 1.0, "", persona=persona,
                         goal=goal, records=steps)  # fmt: skip


def _report(results: list[SessionResult], funnels: list[dict[str, bool]]) -> LiveReport:
    return LiveReport("http://127.0.0.1:9/", results, funnels, 1.0, 0, [], "live-x", False)


WALK = [
    _step(1, LISTING, {"action": "click", "id": "product-link-7"}),
    _step(2, PRODUCT, {"action": "add_to_cart", "quantity": 1}),
    _step(3, PRODUCT, {"action": "click", "id": "nowhere"}, error="no element nowhere"),
    _step(4, PRODUCT, {"action": "click", "id": "cart-link"}),
    _step(5, CART, {"action": "click", "id": "checkout-button"}),
]
FULL = {"product": True, "cart_add": True, "checkout": True, "order": False}
SHORT = {"product": True, "cart_add": True, "checkout": False, "order": False}


def test_training_goals_are_never_the_evaluation_goals():
    for kind, texts in TRAINING_GOALS.items():
        assert kind in GOALS and len(set(texts)) == len(texts) >= 3
        assert disjoint_from_evaluation(texts)
    assert not disjoint_from_evaluation([GOALS["buy"][0]])


def test_step_reasoning_names_what_the_action_touches():
    def say(obs, action):
        return step_reasoning({"observation": obs, "action": action})

    assert (
        say(LISTING, {"action": "click", "id": "product-link-7"}) == "I open “Leather ankle boot”."
    )
    assert say(LISTING, {"action": "click", "id": "cart-link"}) == "I open my cart."
    # No role on the element: its readable id says what it is.
    assert say(CART, {"action": "click", "id": "checkout-button"}) == "I go to checkout."
    assert say(PRODUCT, {"action": "add_to_cart", "quantity": 1}) == (
        "I add “Leather ankle boot” to my cart."
    )
    assert say(LISTING, {"action": "type", "id": "id_q", "text": "boots"}) == (
        "I type “boots” into the search box."
    )
    assert say(LISTING, {"action": "search", "query": "tent"}) == "I search for “tent”."
    assert say(LISTING, {"action": "click", "id": "gone"}) == "I click “gone”."


def test_trace_records_keep_sessions_that_reached_the_goals_step():
    goal = TRAINING_GOALS["buy"][0]
    report = _report(
        [_result("a", "12", goal, WALK), _result("b", "40", goal, WALK[:2])], [FULL, SHORT]
    )
    records = trace_records(report, "buy", max_steps=4)
    assert [r["keep"] for r in records] == [True, False]  # b never reached checkout
    a = records[0]
    assert a["token"] == 12 and a["goal_stage2"] == goal and a["shop_id"] == "live-x"
    assert len(a["steps"]) == 4  # max_steps
    assert a["steps"][0]["reasoning"] == "I open “Leather ankle boot”."
    assert a["steps"][2]["reasoning"] == "markov"  # a failed step keeps what it had
    # The cart goal keeps both (both added to the cart); an unknown goal is refused.
    assert all(r["keep"] for r in trace_records(report, "cart"))
    with pytest.raises(ValueError, match="goal must be one of"):
        trace_records(report, "order")


def test_trace_records_make_stage2_examples(tmp_path):
    goal = TRAINING_GOALS["buy"][1]
    report = _report([_result("a", "12", goal, WALK)], [FULL])
    stats = build_dataset(trace_records(report, "buy"), "stage2", tmp_path / "s2.jsonl")
    examples = read_dataset(tmp_path / "s2.jsonl")
    assert stats.examples == len(examples) == 4  # the failed step is not taught
    replies = [json.loads(e["messages"][-1]["content"]) for e in examples]
    assert [r["action"] for r in replies] == ["click", "add_to_cart", "click", "click"]
    assert replies[-1]["reasoning"] == "I am here to buy. I go to checkout."
    assert all(f"Goal: {goal}" in e["messages"][1]["content"] for e in examples)
    assert all("<|persona_12|>" in e["messages"][1]["content"] for e in examples)


def test_live_sessions_draw_their_goal_from_the_training_texts():
    personas = [Persona(label=str(i)) for i in range(40)]
    plain = live_specs(LiveConfig(url="http://127.0.0.1:9/"), personas, "r")
    assert {s.goal.text for s in plain} == {GOALS["buy"][0]}
    cfg = LiveConfig(url="http://127.0.0.1:9/", goal_texts=TRAINING_GOALS["buy"], seed=3)
    drawn = [s.goal.text for s in live_specs(cfg, personas, "r")]
    assert set(drawn) == set(TRAINING_GOALS["buy"])  # 40 draws cover the 5 texts
    assert drawn == [s.goal.text for s in live_specs(cfg, personas, "r")]  # seeded
    assert all(s.goal.target == "purchase" for s in live_specs(cfg, personas, "r"))


def test_train_profile_by_name_and_by_base(tmp_path):
    tiny, base = tmp_path / "tiny", tmp_path / "base"
    tiny.mkdir()
    base.mkdir()
    (tiny / "tiny_config.json").write_text("{}")
    assert TrainConfig.for_profile("auto", tiny) == TrainConfig.cpu()
    assert TrainConfig.for_profile("auto", base) == TrainConfig.cpu_base()
    assert TrainConfig.for_profile("auto", base, gpu=True) == TrainConfig()
    assert TrainConfig.for_profile("cpu_base") == TrainConfig.cpu_base()
    with pytest.raises(ValueError, match="profile must be auto or one of"):
        TrainConfig.for_profile("fast")


def test_several_datasets_are_joined_into_one(tmp_path):
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    a.write_text('{"x": 1}\n{"x": 2}')  # no final newline
    b.write_text('{"x": 3}\n')
    assert _joined([a], tmp_path / "j.jsonl") == a
    joined = _joined([a, b], tmp_path / "j.jsonl")
    assert [json.loads(x)["x"] for x in joined.read_text().splitlines()] == [1, 2, 3]


def test_a_recorded_page_with_an_unlabelled_control_makes_examples(tmp_path):
    """Recordings leave out empty fields (Observation.to_dict): an unlabelled input on a
    foreign store's checkout comes back with an empty label, not a crash."""
    from simpersona.agent.observation import Element, Observation

    page = Observation(url="http://127.0.0.1:9/checkout/", kind="checkout", title="Checkout",
                       text="", elements=(Element("id_line4", "input", ""),))  # fmt: skip
    recorded = page.to_dict()
    assert "label" not in recorded["elements"][0]
    step = _step(1, recorded, {"action": "type", "id": "id_line4", "text": "Springfield"})
    report = _report([_result("a", "3", TRAINING_GOALS["buy"][0], [step])], [FULL])
    stats = build_dataset(trace_records(report, "buy"), "stage2", tmp_path / "s2.jsonl")
    assert stats.examples == 1
    assert "[id_line4] input" in read_dataset(tmp_path / "s2.jsonl")[0]["messages"][1]["content"]


def test_walk_config_refuses_what_it_cannot_walk():
    from simpersona.traces.walks import WalkConfig

    assert WalkConfig().kept_steps is None  # every step by default, checkout forms included
    for bad in ({"goal": "steal"}, {"sessions": -1}, {"kept_steps": 0}, {"max_steps": 0}):
        with pytest.raises(ValueError):
            WalkConfig(**bad)
