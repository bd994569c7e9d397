"""Training traces on any store: persona sessions walked on a store, as SFT trajectory records
(docs/llm.md, "Traces on your store").

    cfg = LiveConfig(url, goal="buy", goal_texts=TRAINING_GOALS["buy"])
    report = simulate_live(cfg, MarkovPolicy(model, follow_goal=True), personas, out)
    records = trace_records(report, goal="buy", max_steps=16)
    build_dataset(records, "stage2", "stage2.jsonl")      # traces/dataset.py

The replayed traces (traces/replay.py) re-enact real buyers' sessions on the project's
storefront, each with a goal naming the products it touched. A model fine-tuned only on them
has never been asked to shop without a named product, nor walked a checkout to its end. These
records come from the persona's own Markov walk (agent/markov.py, which keeps to the goal's
funnel step) on a store — the project's storefront or a staging copy of the user's — under the
same guards as `simulate --url`. A session is kept when it reached its goal's funnel step.

The goal texts are paraphrases, never the texts `simulate --url` evaluates with
(`agent.live.GOALS`): a model fine-tuned on these traces is not scored on a prompt it saw.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from simpersona.agent.live import GOALS, LiveReport

# Per goal: texts sessions draw their goal from (seeded). Disjoint from GOALS (the
# evaluation's texts), which a test checks.
TRAINING_GOALS: dict[str, tuple[str, ...]] = {
    "buy": (
        "Buy something you like.",
        "Pick a product that suits you and check out.",
        "Choose one thing to purchase and go through checkout.",
        "Look around, then buy the item you like best.",
        "Find a product worth buying and purchase it.",
    ),
    "cart": (
        "Put something you like in your cart.",
        "Choose a product and add it to your cart.",
        "Find an item you want and place it in the cart.",
    ),
    "view": (
        "Open a product that catches your eye.",
        "Have a look at a product you like.",
        "Find an item and check its details.",
    ),
    "browse": (
        "Look around the store as you usually do.",
        "Browse the shop your own way, then leave.",
        "Take a look at what the store offers.",
    ),
}
# The intent each goal states (the stage-2 reasoning opens with it: traces/dataset.py).
INTENT = {"buy": "buy", "cart": "buy", "view": "browse", "browse": "browse"}
# The funnel step (agent.live.funnel_of) a session must reach to be kept.
KEEP_STEP = {"buy": "checkout", "cart": "cart_add", "view": "product", "browse": None}
NEUTRAL_GOAL = "Look around the store and shop the way you usually do."

_ID_ROLES = (  # readable ids (agent.observation.role_ids, our storefront's ids) → role
    ("product-link-", "product_link"),
    ("collection-link-", "collection_link"),
    ("product-collection-", "collection_link"),
    ("cart-remove-", "remove_from_cart"),
    ("cart-link", "cart_link"),
    ("checkout-button", "checkout"),
    ("place-order", "place_order"),
    ("continue-", "continue"),
    ("add-to-cart", "add_to_cart"),
    ("home-link", "home_link"),
)


def _role(element: Mapping[str, Any]) -> str | None:
    if element.get("role"):
        return str(element["role"])
    eid = str(element.get("id") or "")
    return next((role for prefix, role in _ID_ROLES if eid.startswith(prefix)), None)


def _short(text: str, n: int = 60) -> str:
    text = re.sub(r"\s+", " ", text).strip()
    return text if len(text) <= n else text[: n - 1].rstrip() + "…"


def step_reasoning(step: Mapping[str, Any]) -> str:
    """One first-person sentence for a recorded step's action, in the replay teacher's
    phrasing (traces/teacher.py), from the action and the element it names."""
    action = step.get("action") or {}
    obs = step.get("observation") or {}
    kind = action.get("action")
    element: Mapping[str, Any] = next(
        (e for e in obs.get("elements", []) if e.get("id") == action.get("id")), {}
    )
    label = _short(str(element.get("label") or action.get("id") or ""))
    title = _short(str(obs.get("title") or "this product"))
    if kind == "add_to_cart":
        return f"I add “{title}” to my cart."
    if kind == "search":
        return f"I search for “{action.get('query', '')}”."
    if kind == "go_back":
        return "I go back to the previous page."
    if kind == "scroll":
        return "I scroll to see more of the page."
    if kind == "end_session":
        return "I have done what I came for, so I leave the shop."
    if kind == "select":
        return f"I choose “{action.get('value', '')}” for {label or 'this field'}."
    role = _role(element) if element else _role({"id": action.get("id")})
    if kind == "type":
        if role == "search_box":
            return f"I type “{action.get('text', '')}” into the search box."
        return f"I fill in the checkout form: {label or 'this field'}."
    return {
        "product_link": f"I open “{label}”.",
        "collection_link": f"I open the “{label}” collection.",
        "cart_link": "I open my cart.",
        "checkout": "I go to checkout.",
        "continue": "I continue to the next step.",
        "place_order": "Everything is filled in; I place the order.",
        "remove_from_cart": "I take an item out of my cart.",
        "add_to_cart": f"I add this to my cart: {label}.",
        "home_link": "I go to the home page.",
    }.get(role or "", f"I click “{label}”.")


def trace_records(
    report: LiveReport, goal: str, max_steps: int | None = 16
) -> list[dict[str, Any]]:
    """Trajectory records (the fields `traces.dataset.step_examples` reads) of `report`'s
    sessions: each step's reasoning written by `step_reasoning`, the first `max_steps` steps
    (a bound on CPU fine-tuning cost; None keeps all), `keep` when the session reached its
    goal's funnel step. Persona labels must be token numbers."""
    if goal not in KEEP_STEP:
        raise ValueError(f"goal must be one of {', '.join(KEEP_STEP)}, got {goal!r}")
    out = []
    for res, funnel in zip(report.results, report.funnels, strict=True):
        need = KEEP_STEP[goal]
        steps = []
        for rec in res.records[:max_steps]:
            s = rec.to_dict()
            if s.get("action") is not None and not s.get("error"):
                s["reasoning"] = step_reasoning(s)
            steps.append(s)
        token = int(res.persona) if str(res.persona).isdigit() else None
        out.append(
            {
                "shop_id": report.shop_id,
                "session_id": res.key,
                "buyer_id": res.buyer_id,
                "token": token,
                "stratum": "",
                "goal_stage1": NEUTRAL_GOAL,
                "goal_stage2": res.goal,
                "goal_stage2_intent": None,
                "intent": INTENT[goal],
                "outcome": res.outcome,
                "guard": res.guard,
                "funnel": dict(funnel),
                "keep": bool(steps) and (need is None or bool(funnel.get(need))),
                "steps": steps,
            }
        )
    return out


def disjoint_from_evaluation(texts: Sequence[str]) -> bool:
    """Whether none of `texts` is a goal text `simulate --url` evaluates with."""
    return not {t for t, _ in GOALS.values()} & set(texts)
