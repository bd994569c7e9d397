"""The replay teacher: a policy that re-enacts a real session's events on a storefront.

Each original event maps to one action on what the page shows:

| event | action |
|---|---|
| search q | `search(q)` (every page has the search box) |
| product_view P | click the link to P; if the page has none, a detour: search P's title first |
| collection_view C | click the link to C; else a detour through "All collections" |
| page_view | click the home / cart / footer page link the URL names |
| add_to_cart P ×n | `add_to_cart(n)` on P's page (a detour to P's page when elsewhere) |
| remove_from_cart P | click P's remove button on the cart page (a detour to the cart first) |
| checkout_started | click the cart's checkout button (a detour to the cart first) |
| checkout_completed | fill the checkout form, then place the order (test card) |

Every step is written down as a `PlannedStep`: which original event it replays (`target`,
None for a detour or a form step) and which events the store should log for it (`expect`),
so a test can hold the store's own log against the original session. An event the teacher
cannot reach after its detours is skipped and counted.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from simpersona.agent.checkout_form import fill_checkout
from simpersona.agent.observation import Observation
from simpersona.agent.policy import Goal, Memory, Persona
from simpersona.store.app import dom_id
from simpersona.traces.outline import SessionEvent, SessionOutline

MAX_DETOURS = 2  # detour steps spent on one event before it is skipped
MAX_QUANTITY = 99  # the storefront's per-line limit


@dataclass
class PlannedStep:
    """One teacher step: the original event it replays (None: detour or form step), the
    events the store should log for it, and a note."""

    target: int | None
    expect: list[str]
    note: str


@dataclass
class ReplayLog:
    """What the teacher did in one session."""

    outline: SessionOutline
    steps: list[PlannedStep] = field(default_factory=list)
    skipped: list[int] = field(default_factory=list)  # original events it could not reach

    @property
    def detours(self) -> int:
        return sum(1 for s in self.steps if s.target is None and s.expect)

    @property
    def replayed(self) -> list[int]:
        return [s.target for s in self.steps if s.target is not None]

    def expected_events(self) -> list[str]:
        return [t for s in self.steps for t in s.expect]


def _title(e: SessionEvent) -> str:
    return e.product_title or e.product_id or "the product"


def _link_to(obs: Observation, product_id: str | None = None, collection_id: str | None = None):
    for el in obs.elements:
        if el.kind != "link":
            continue
        # Links inside a product's own page inherit its id (breadcrumbs, collection chips):
        # a product link is one to another page than the current product's.
        if (
            product_id is not None
            and el.product_id == product_id
            and not el.collection_id
            and obs.product_id != product_id
        ):
            return el
        if collection_id is not None and el.collection_id == collection_id:
            return el
    return None


class ReplayTeacher:
    """A `Policy` replaying each buyer's session (sessions are told apart by the runtime's
    buyer id, so one teacher serves a whole concurrent batch)."""

    def __init__(
        self,
        outlines: dict[str, SessionOutline],
        landings: dict[str, PlannedStep] | None = None,
    ) -> None:
        """`landings`: per buyer, the step its start URL replays (target 0 when the landing
        page is the session's first event); without one the teacher starts at event 0."""
        self.outlines = outlines
        self.logs: dict[str, ReplayLog] = {b: ReplayLog(o) for b, o in outlines.items()}
        self._start: dict[str, int] = {}
        for b, step in (landings or {}).items():
            self.logs[b].steps.append(step)
            self._start[b] = 1 if step.target == 0 else 0

    def act(
        self, observation: Observation, memory: Memory, persona: Persona, goal: Goal
    ) -> dict[str, Any]:
        buyer = str(memory.state["buyer_id"])
        log = self.logs[buyer]
        st = memory.state.setdefault(
            "teacher", {"i": self._start.get(buyer, 0), "detours": 0, "seen_invalid": 0}
        )
        invalid = sum(1 for line in memory.log if ". invalid action:" in line)
        if invalid > st["seen_invalid"]:
            # The last action failed: it logged nothing; give its event up.
            st["seen_invalid"] = invalid
            if log.steps:
                failed = log.steps.pop()
                if failed.target is not None:
                    log.skipped.append(failed.target)
                elif st["i"] < len(log.outline.events):
                    log.skipped.append(st["i"])
                    st["i"] += 1
                st["detours"] = 0
        events = log.outline.events
        while st["i"] < len(events):
            i = st["i"]
            step = self._step(events[i], i, observation, st, buyer)
            if step is None:  # unreachable: skip the event
                log.skipped.append(i)
                st["i"], st["detours"] = i + 1, 0
                continue
            planned, action = step
            log.steps.append(planned)
            if planned.target is not None:
                st["i"], st["detours"] = i + 1, 0
            elif planned.expect:
                st["detours"] += 1
            return action
        log.steps.append(PlannedStep(None, [], "end"))
        return {
            "action": "end_session",
            "reason": "done: everything the goal asks for is done",
            "reasoning": "Everything the goal asks for is done, so I leave the shop.",
        }

    # ---- one event ------------------------------------------------------------------------
    def _step(
        self, e: SessionEvent, i: int, obs: Observation, st: dict[str, Any], buyer: str
    ) -> tuple[PlannedStep, dict[str, Any]] | None:
        kind = e.event_type
        detour_ok = st["detours"] < MAX_DETOURS
        if kind == "search":
            q = (e.search_query or "").strip()
            if not q:
                return None
            return PlannedStep(i, ["search"], f"search {q!r}"), {
                "action": "search",
                "query": q,
                "reasoning": f"I search for “{q}”.",
            }
        if kind == "product_view":
            return self._to_product(e, i, obs, detour_ok, ["product_view"])
        if kind == "collection_view":
            name = e.collection_title or e.collection_id
            link = _link_to(obs, collection_id=e.collection_id)
            if link is not None:
                return PlannedStep(i, ["collection_view"], f"collection {e.collection_id}"), {
                    "action": "click",
                    "id": link.id,
                    "reasoning": f"I open the “{name}” collection.",
                }
            if detour_ok and not urlsplit(obs.url).path.endswith("/collections"):
                return PlannedStep(None, ["page_view"], "detour: all collections"), {
                    "action": "click",
                    "id": "nav-all-collections",
                    "reasoning": f"The “{name}” collection is not linked here; I open the "
                    "list of all collections.",
                }
            return None
        if kind == "page_view":
            return self._page_view(e, i, obs)
        if kind == "add_to_cart":
            if obs.kind == "product" and obs.product_id == e.product_id:
                qty = max(1, min(int(e.quantity or 1), MAX_QUANTITY))
                # The store shows the cart after an add: a page view follows.
                return PlannedStep(i, ["add_to_cart", "page_view"], f"add {e.product_id}"), {
                    "action": "add_to_cart",
                    "quantity": qty,
                    "reasoning": f"I add “{_title(e)}” to my cart"
                    + (f" ({qty} of them)." if qty > 1 else "."),
                }
            step = self._to_product(e, None, obs, detour_ok, ["product_view"])
            return step
        if kind == "remove_from_cart":
            rid = f"cart-remove-{dom_id(e.product_id or '')}"
            if obs.kind == "cart" and obs.element(rid) is not None:
                return PlannedStep(i, ["remove_from_cart", "page_view"], f"remove {rid}"), {
                    "action": "click",
                    "id": rid,
                    "reasoning": f"I take “{_title(e)}” out of my cart.",
                }
            if obs.kind != "cart" and detour_ok and obs.cart_count > 0:
                return PlannedStep(None, ["page_view"], "detour: cart"), {
                    "action": "click",
                    "id": "cart-link",
                    "reasoning": "I open my cart to change it.",
                }
            return None
        if kind == "checkout_started":
            if obs.kind == "cart" and obs.element("checkout-button") is not None:
                return PlannedStep(i, ["checkout_started"], "checkout"), {
                    "action": "click",
                    "id": "checkout-button",
                    "reasoning": "I go to checkout.",
                }
            if obs.kind == "checkout":  # already in a checkout (a repeated start)
                return None
            if obs.kind != "cart" and detour_ok and obs.cart_count > 0:
                return PlannedStep(None, ["page_view"], "detour: cart"), {
                    "action": "click",
                    "id": "cart-link",
                    "reasoning": "I open my cart to check out.",
                }
            return None
        if kind == "checkout_completed":
            if obs.kind == "checkout":
                action = fill_checkout(obs, buyer)
                if action.get("action") == "click" and action.get("id") == "place-order-button":
                    action["reasoning"] = "Everything is filled in; I place the order."
                    return PlannedStep(i, ["checkout_completed"], "place order"), action
                if action.get("action") == "end_session":
                    return None
                action["reasoning"] = "I fill in the checkout form."
                return PlannedStep(None, [], "checkout form"), action
            if obs.kind == "cart" and obs.element("checkout-button") is not None and detour_ok:
                return PlannedStep(None, ["checkout_started"], "detour: start checkout"), {
                    "action": "click",
                    "id": "checkout-button",
                    "reasoning": "I go to checkout to place the order.",
                }
            if obs.kind not in ("cart", "checkout") and detour_ok and obs.cart_count > 0:
                return PlannedStep(None, ["page_view"], "detour: cart"), {
                    "action": "click",
                    "id": "cart-link",
                    "reasoning": "I open my cart to check out.",
                }
            return None
        return None

    def _to_product(
        self,
        e: SessionEvent,
        i: int | None,
        obs: Observation,
        detour_ok: bool,
        expect: list[str],
    ) -> tuple[PlannedStep, dict[str, Any]] | None:
        """A click on the link to `e`'s product (replaying event `i`, or a detour when None);
        without a link, a search for its title."""
        link = _link_to(obs, product_id=e.product_id)
        if link is not None:
            note = f"product {e.product_id}" if i is not None else "detour: product page"
            return PlannedStep(i, list(expect) if i is not None else ["product_view"], note), {
                "action": "click",
                "id": link.id,
                "reasoning": f"I open “{_title(e)}”.",
            }
        if detour_ok and e.product_title:
            return PlannedStep(None, ["search"], "detour: search the title"), {
                "action": "search",
                "query": e.product_title,
                "reasoning": f"“{e.product_title}” is not on this page; I search for it.",
            }
        return None

    def _page_view(
        self, e: SessionEvent, i: int, obs: Observation
    ) -> tuple[PlannedStep, dict[str, Any]] | None:
        path = urlsplit(e.url or "").path.rstrip("/")
        if path.endswith("/cart"):
            target, why = "cart-link", "I look at my cart."
        elif path.endswith("/collections"):
            target, why = "nav-all-collections", "I look at the list of collections."
        elif "/pages/" in path or "/blogs/" in path:
            handle = path.rsplit("/", 1)[-1]
            footer = [el for el in obs.elements if el.id.startswith("footer-page-")]
            same = [el for el in footer if el.id == f"footer-page-{handle}"]
            target = (same or footer)[0].id if (same or footer) else "footer-page-about"
            why = "I read one of the shop's information pages."
        elif "/search" in path:
            return None  # an empty search: nothing an agent would do on purpose
        else:
            target, why = "home-link", "I go to the shop's home page."
        return PlannedStep(i, ["page_view"], f"page {path or '/'}"), {
            "action": "click",
            "id": target,
            "reasoning": why,
        }
