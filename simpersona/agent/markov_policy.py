"""Acting as a persona Markov model (`MarkovPolicy.act`): the policy samples the next state
from the current one and takes the actions that get there on the page in front of it: a
search drawn from the persona's interests, a click on the product or collection link that
best matches them (drawn, not argmax), add to cart with a sampled quantity, the cart link,
the checkout button, the checkout forms filled with test details (`checkout_form.py`), or
end_session. A state the page already shows (the cart page after add-to-cart redirects
there) counts as reached. Everything random comes from one generator seeded by (policy
seed, session seed), so a session replays exactly.
"""

from __future__ import annotations

import math
import random
import re
from collections.abc import Mapping
from typing import Any

from simpersona.agent.actions import _Action
from simpersona.agent.checkout_form import click, fill_checkout
from simpersona.agent.markov import KIND_STATE, MarkovModel, interest_words
from simpersona.agent.observation import Element, Observation
from simpersona.agent.policy import Goal, Memory, Persona


# ---- the policy ----------------------------------------------------------------------------
class MarkovPolicy:
    """Acts out a `MarkovModel` chain on any storefront page (see the module docstring)."""

    max_tries = 6  # actions spent on one target state before giving it up

    def __init__(self, model: MarkovModel, seed: int = 0, follow_goal: bool = False) -> None:
        self.model = model
        self.seed = seed
        # With a goal to buy or cart, the chain is walked as the persona walks it, but the
        # session does not end before the goal: an `end` drawn early becomes the next step
        # of the funnel toward it (product, add to cart, checkout, purchase).
        self.follow_goal = follow_goal

    # Session state lives in `memory.state`, so one policy object serves many sessions.
    def _rng(self, memory: Memory) -> random.Random:
        rng = memory.state.get("markov_rng")
        if rng is None:
            rng = memory.state["markov_rng"] = random.Random(f"{self.seed}:{memory.seed}")
        return rng

    def act(
        self, observation: Observation, memory: Memory, persona: Persona, goal: Goal
    ) -> dict[str, Any] | _Action:
        rng = self._rng(memory)
        st = memory.state
        chain = self.model.label_model(persona.label).transitions
        here = KIND_STATE.get(observation.kind)
        current = st.setdefault("state", "start")
        target = st.get("target")
        if target is not None and self._reached(target, observation, st):
            current = st["state"] = target
            target = st["target"] = None
        if target is None:
            for _ in range(4):  # states the page already shows are reached for free
                target = _sample(rng, chain.get(current, {"end": 1.0}))
                if target != here or target in ("product", "search", "collection"):
                    break
                current = st["state"] = target
            assert target is not None  # the loop above draws at least once
            if target == "end" and self.follow_goal:
                target = _toward_goal(goal, current, observation, st)
            st["target"], st["tries"], st["last_role"] = target, 0, None
            st["start_cart"] = observation.cart_count
        st["tries"] = st.get("tries", 0) + 1
        # Checking out takes a dozen form steps; anything else should take a few.
        limit = self.max_tries * (3 if target in ("checkout", "purchase") else 1)
        if st["tries"] > limit:  # cannot get there from here: end like a real buyer
            return {"action": "end_session", "reason": f"could not reach {target}"}
        action = self._toward(target, observation, memory, persona, rng)
        for _ in range(3):
            if action is not None:
                break
            # A state this store has no page for (no information pages, no visible home
            # link): pass through it, as a buyer who would have looked there moves on.
            current = st["state"] = target
            target = _sample(rng, chain.get(current, {"end": 1.0}))
            if target == "end" and self.follow_goal:
                target = _toward_goal(goal, current, observation, st)
            st["target"], st["last_role"] = target, None
            st["tries"], st["start_cart"] = 1, observation.cart_count
            action = self._toward(target, observation, memory, persona, rng)
        if action is None:
            action = {"action": "end_session", "reason": f"no way to {target} on this store"}
        action.setdefault("reasoning", f"{persona.label}: {current} -> {target}")
        return action

    def _reached(self, target: str, obs: Observation, st: dict[str, Any]) -> bool:
        if target == "home" and obs.profile is None and st.get("tries", 0) > 0:
            # A store whose home page is a listing: following its home link gets there.
            return st.get("last_role") == "home_link" or KIND_STATE.get(obs.kind) == "home"
        if target == "add_to_cart":
            return obs.cart_count > st.get("start_cart", 0)
        if target == "remove_from_cart":
            return obs.cart_count < st.get("start_cart", 0)
        return KIND_STATE.get(obs.kind) == target and st.get("tries", 0) > 0

    # ---- one step toward a target state --------------------------------------------------
    def _toward(
        self, target: str, obs: Observation, memory: Memory, persona: Persona, rng: random.Random
    ) -> dict[str, Any] | None:
        cart = obs.cart_count
        if target == "end":
            return {"action": "end_session", "reason": "done browsing"}
        if target == "search":
            if not _can_search(obs):
                # No search box here (a checkout page): back to where there is one.
                return _click_or(obs, [], "go_back", "home_link")
            return {"action": "search", "query": self._query(persona, rng)}
        if target == "home":
            if obs.profile is None and not obs.by_role("home_link"):
                return None
            memory.state["last_role"] = "home_link"
            return _click_or(
                obs, ["home-link", "breadcrumb-home", "error-home-link"], "go_back", "home_link"
            )
        if target == "info":
            links = [e for e in obs.links() if e.region == "footer"]
            if links:
                return click(rng.choice(links))
            if obs.profile is None:
                return None
            return _click_or(obs, ["home-link"], "go_back", "home_link")
        tries = memory.state.get("tries", 0)
        if target == "cart":
            if obs.profile is None and obs.cart_count == 0 and tries > 2:
                return None  # an empty mini-cart leads nowhere on this store: move on
            return _click_or(obs, ["cart-link"], "end_session", "cart_link")
        if target == "collection":
            links = [e for e in obs.links("collection")]
            if not links:
                return {"action": "search", "query": self._query(persona, rng)}
            return click(_pick(rng, links, persona))
        if target == "product":
            return self._to_product(obs, persona, rng)
        if target == "add_to_cart":
            if obs.profile is None and obs.kind == "product" and tries > 3:
                # The store keeps refusing this one (a variant to pick): another product.
                return self._to_product(obs, persona, rng)
            if obs.kind == "product" and (obs.profile or obs.by_role("add_to_cart")):
                qty = int(_sample(rng, self.model.label_model(persona.label).quantities) or 1)
                return {"action": "add_to_cart", "quantity": max(1, min(qty, 99))}
            return self._to_product(obs, persona, rng)
        if target == "remove_from_cart":
            removes = [
                e
                for e in obs.elements
                if e.id.startswith("cart-remove-")
                or (obs.profile is None and e.role == "remove_from_cart")
            ]
            if obs.kind == "cart" and removes:
                return click(rng.choice(removes))
            if obs.profile is None and obs.kind == "cart":
                return None  # nothing this store lets a buyer remove here
            if cart == 0:
                return {"action": "end_session", "reason": "nothing in the cart to remove"}
            return _click_or(obs, ["cart-link"], "end_session", "cart_link")
        if target in ("checkout", "purchase"):
            if obs.kind == "checkout":
                return self._fill_checkout(obs, memory)
            if cart == 0 and obs.kind != "cart":
                # A checkout needs something in the cart: pick something first.
                if obs.kind == "product":
                    return {"action": "add_to_cart", "quantity": 1}
                return self._to_product(obs, persona, rng)
            if obs.kind == "cart" and obs.element("checkout-button"):
                return {"action": "click", "id": "checkout-button"}
            if obs.kind == "cart" and obs.profile is None and obs.by_role("checkout"):
                return click(obs.by_role("checkout")[0])
            if obs.kind == "cart" and self.follow_goal:
                return self._to_product(obs, persona, rng)  # emptied: find something again
            if obs.kind == "cart":
                return {"action": "end_session", "reason": "cart is empty"}
            return _click_or(obs, ["cart-link"], "end_session", "cart_link")
        return {"action": "end_session", "reason": f"no way to {target}"}

    def _query(self, persona: Persona, rng: random.Random) -> str:
        queries = list(persona.attributes.get("queries") or [])
        topics = list(persona.attributes.get("topics") or persona.interests)
        if queries and (not topics or rng.random() < 0.6):
            return rng.choice(queries)
        if topics:
            return rng.choice(topics).lower()
        return rng.choice(["gift", "new", "sale", "best seller"])

    def _to_product(self, obs: Observation, persona: Persona, rng: random.Random) -> dict[str, Any]:
        links = obs.links("product")
        if links:
            return click(_pick(rng, links, persona))
        colls = obs.links("collection")
        if colls and (rng.random() < 0.5 or not _can_search(obs)):
            return click(_pick(rng, colls, persona))
        if not _can_search(obs):
            return _click_or(obs, [], "go_back", "home_link")
        return {"action": "search", "query": self._query(persona, rng)}

    def _fill_checkout(self, obs: Observation, memory: Memory) -> dict[str, Any]:
        return fill_checkout(obs, str(memory.state.get("buyer_id", "buyer")))


def _can_search(obs: Observation) -> bool:
    """Whether the page has a search box, or (a store read by the conventions) a control
    that opens one."""
    if obs.profile is not None or obs.by_role("search_box"):
        return True
    return any(e.kind in ("link", "button") and re.match(r"\s*search\b", e.label, re.I)
               for e in obs.elements)  # fmt: skip


_FUNNEL_NEXT = {"product": "add_to_cart", "add_to_cart": "checkout", "cart": "checkout",
                "checkout": "purchase"}  # fmt: skip


def _toward_goal(goal: Goal, current: str, obs: Observation, st: dict[str, Any]) -> str:
    """The next funnel state toward a buy or cart goal not yet met, else `end`."""
    if goal.target not in ("purchase", "add_to_cart"):
        return "end"
    added = st.setdefault("added", False) or current == "add_to_cart"
    st["added"] = added
    if goal.target == "add_to_cart" and added:
        return "end"
    if obs.kind == "confirmation":
        return "end"
    if not added:
        return "add_to_cart" if obs.kind == "product" else "product"
    return _FUNNEL_NEXT.get(current, "checkout")


def _sample(rng: random.Random, probs: Mapping[str, float]) -> str:
    keys = sorted(probs)
    if not keys:
        return "end"
    return rng.choices(keys, weights=[probs[k] for k in keys])[0]


def _click_or(
    obs: Observation, ids: list[str], fallback: str, role: str | None = None
) -> dict[str, Any]:
    for i in ids:
        if obs.element(i):
            return {"action": "click", "id": i}
    if role is not None and obs.profile is None:  # a store read by the conventions
        found = obs.by_role(role)
        if found:  # a link, then a page's own button, before a header toggle
            return click(
                sorted(found, key=lambda e: (e.kind != "link", e.region in ("header", "nav")))[0]
            )
    if fallback == "go_back":
        return {"action": "go_back"}
    return {"action": "end_session", "reason": "no way forward from this page"}


def _pick(rng: random.Random, links: list[Element], persona: Persona) -> Element:
    """A link drawn with weight growing with its overlap with the persona's interests."""
    wanted = (
        set().union(*(interest_words(t) for t in persona.interests)) if persona.interests else set()
    )
    weights = [1.0 + 4.0 * math.sqrt(len(interest_words(e.label) & wanted)) for e in links]
    return rng.choices(links, weights=weights)[0]
