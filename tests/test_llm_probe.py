"""The counterfactual intent probe (simpersona.llm.probe): which prompts it takes, how it
rewrites them, and that its figures add up, on the tiny model."""

from __future__ import annotations

import pytest
import torch

from simpersona.agent.prompt import messages_for_step, persona_token
from simpersona.llm.probe import (
    ProbeConfig,
    intent_probe,
    probe_prompts,
    reply_action,
    split_sessions,
    with_intent,
    without_token,
)
from simpersona.llm.tiny import build_tiny_model


def _row(i: int, intent: str, page: str, action: dict, goal_kind: str = "intent") -> dict:
    obs = {
        "url": f"http://127.0.0.1:8000/{page}s/p{i:05d}",
        "kind": page,
        "title": f"Trail Runner {i}",
        "text": f"Trail Runner {i} $49.00",
        "elements": [{"id": "add-to-cart-button", "kind": "button", "label": "Add to cart"}],
    }
    goal = f"You are here to {intent} running shoes. Open “Trail Runner {i}”."
    return {
        "messages": messages_for_step(goal, persona_token(i % 3), [], obs, action),
        "goal_kind": goal_kind,
        "token": i % 3,
    }


ATC = {"action": "add_to_cart", "quantity": 1, "reasoning": "I add it to my cart."}
LEAVE = {"action": "end_session", "reason": "done", "reasoning": "Everything is done."}


def _rows() -> list[dict]:
    return [
        _row(0, "buy", "product", ATC),
        _row(1, "buy", "product", ATC),
        _row(2, "buy", "product", LEAVE),
        _row(3, "browse", "product", LEAVE),
        _row(4, "browse", "product", LEAVE),
        _row(5, "browse", "product", LEAVE),
        _row(6, "buy", "collection", LEAVE),  # not a product page
        _row(7, "buy", "product", ATC, goal_kind="full"),  # goal spells out the cart
    ]


def test_prompts_are_intent_only_product_pages_and_rewrites_touch_one_field():
    rows = _rows()
    picked = probe_prompts(rows, 100)
    assert sorted(r["messages"][1]["content"].split("“")[1][:14] for r in picked) == [
        f"Trail Runner {i}" for i in range(6)
    ]
    assert len(probe_prompts(rows, 4)) == 4
    user = rows[3]["messages"][1]["content"]
    bought = with_intent(user, "buy")
    assert "You are here to buy running shoes." in bought
    assert bought.replace("to buy", "to browse") == user
    bare = without_token(user)
    assert "Buyer profile: (none)" in bare and "<|persona_" not in bare
    assert bare.splitlines()[0] == user.splitlines()[0]
    assert reply_action('{"reasoning": "x", "action": "add_to_cart"}') == "add_to_cart"
    assert reply_action("no json here") == "bad"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    torch.set_num_threads(1)
    return build_tiny_model(None, tmp_path_factory.mktemp("probe") / "tiny", seed=0)


def test_probe_figures_add_up(tiny):
    cfg = ProbeConfig(prompts=10, samples=2, max_new_tokens=24)
    r = intent_probe(tiny, _rows(), cfg)
    assert r["prompts"] == 6
    assert sum(r["actions"].values()) == 6 * 4 * 2  # prompts x variants x samples
    assert r["truth_atc_buy"] == pytest.approx(2 / 3)
    assert r["truth_atc_browse"] == 0.0
    for key in ("atc_buy", "atc_browse", "atc_buy_without_token", "unparsed_rate"):
        assert 0.0 <= r[key] <= 1.0
    assert r["intent_gap"] == pytest.approx(r["atc_buy"] - r["atc_browse"])
    assert r["token_gap"] == pytest.approx(r["atc_buy"] - r["atc_buy_without_token"])
    for gap in ("intent_gap", "token_gap"):  # paired bootstrap over prompts, around the gap
        assert r[f"{gap}_ci_low"] <= r[gap] + 1e-9 <= r[f"{gap}_ci_high"] + 2e-9
        assert r[f"{gap}_ci_low"] >= -1.0 and r[f"{gap}_ci_high"] <= 1.0
    assert intent_probe(tiny, _rows(), cfg) == r  # seeded


def test_probe_refuses_data_without_a_prompt_to_probe(tiny):
    rows = [r for r in _rows() if r["goal_kind"] != "intent"]
    with pytest.raises(ValueError, match="no stage-2 example of a product page"):
        intent_probe(tiny, rows, ProbeConfig(prompts=2, samples=1))


def test_split_sessions_holds_out_whole_sessions():
    rows = [{"shop_id": f"s{i % 2}", "session_id": f"x{i // 4}", "step": i % 4} for i in range(80)]
    train, held = split_sessions(rows, holdout=0.25, seed=3)
    assert len(train) + len(held) == 80
    sessions = {(r["shop_id"], r["session_id"]) for r in held}
    assert not sessions & {(r["shop_id"], r["session_id"]) for r in train}
    assert len(sessions) == round(len({(r["shop_id"], r["session_id"]) for r in rows}) * 0.25)
    assert split_sessions(rows, 0.25, 3) == (train, held)  # seeded
    assert split_sessions(rows, 0.25, 4)[1] != held
    with pytest.raises(ValueError, match="holdout"):
        split_sessions(rows, holdout=1.0)
