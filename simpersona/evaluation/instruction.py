"""Instruction following on deterministic tasks derived from real sessions (paper §3.2,
paper §3.4, Table 4, App. J Table 10). docs/evaluation.md has the rules in prose.

A session becomes one task of the kind its deepest funnel step gives:

| kind | from a session with | the instruction ends with | end state |
|---|---|---|---|
| `cart` | an add-to-cart, no checkout | adding product X (its last carted product) | an add-to-cart |
| `checkout` | a checkout start, no purchase | going to checkout (no payment) | checkout reached |
| `purchase` | a completed checkout | completing the purchase | purchase (Table 4 also reports checkout reached) |

The instruction lists the session's navigation steps in order, up to and including the
final one: each search ("Search for …"), collection view, product view, add/remove, checkout
step (plain page views and consecutive repeats are dropped; consecutive adds of one product
are one step with their units summed, `Add 2 × "X" to the cart`). Each step is also kept as
data (`TaskStep`: kind, product id, collection id, search query, quantity), which is what the
checker looks for in the agent's storefront events. Steps an agent on a fresh storefront
could not do are left out: removing what the session's own steps did not put in the cart,
units beyond the store's per-line limit; a checkout with an empty cart gives no task.
Sessions whose instruction has fewer than `min_actions` (3) or more than `max_actions` (27)
steps give no task. Selection is deterministic: candidates are ordered by a SHA-256 of
(seed, task id) and taken round-robin over the three kinds until `n_tasks`; the same sessions
and seed always give the same tasks. The paper's 70 tasks are a total over the evaluation
shops: `task_quotas` splits them.

Each task carries a `Goal` for the agent runtime. By default (`stop_at_target=False`) it is
a `browse` goal: the agent follows the steps and ends the session itself, which is its
self-reported completion (Table 4's calibration needs one). `stop_at_target=True` gives the
runtime target instead (`add_to_cart` with the product id, `purchase`); checkout tasks have
no runtime target and stay `browse`.

`check_result` reads a run's `event_trace` (the store's own events for the agent's buyer id,
never the agent's claims): `path_ok` (the required steps as an ordered subsequence),
`product_ok`, `quantity_ok`, `end_ok`; `success` is all four.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import polars as pl

from simpersona.agent.actions import MAX_QUANTITY
from simpersona.agent.policy import Goal
from simpersona.evaluation.tables import require_columns
from simpersona.traces.outline import SessionEvent, SessionOutline, outline_from_row

TaskKind = Literal["cart", "checkout", "purchase"]
TaskTarget = Literal["add_to_cart", "checkout", "purchase"]
TASK_KINDS: tuple[str, ...] = ("cart", "checkout", "purchase")
STEP_KINDS: tuple[str, ...] = (
    "search",
    "collection_view",
    "product_view",
    "add_to_cart",
    "remove_from_cart",
    "checkout_started",
    "checkout_completed",
)
STEP_SCHEMA = pl.Struct(
    {
        "kind": pl.String(),
        "product_id": pl.String(),
        "collection_id": pl.String(),
        "search_query": pl.String(),
        "quantity": pl.Int64(),
    }
)


@dataclass(frozen=True)
class InstructionConfig:
    n_tasks: int = 70
    repetitions: int = 10
    min_actions: int = 3
    max_actions: int = 27
    seed: int = 0


def norm_query(query: str | None) -> str:
    """A search query as the checker compares it: case and runs of whitespace ignored."""
    return " ".join(str(query or "").split()).lower()


@dataclass(frozen=True)
class TaskStep:
    """One required step as data. A field the session's log left empty (an add without a
    product id) matches any event of that kind."""

    kind: str
    product_id: str | None = None
    collection_id: str | None = None
    search_query: str | None = None
    quantity: int | None = None  # units, for adds and removes

    def matches(self, event: Mapping[str, Any]) -> bool:
        """Does one storefront event (event_type, product_id, …) do this step? Ids are
        compared exactly, queries with `norm_query`; quantities are `quantity_ok`'s business
        (one add of 2 and two adds of 1 both do `Add 2 × "X"`)."""
        if event.get("event_type") != self.kind:
            return False
        if self.kind == "search":
            return norm_query(event.get("search_query")) == norm_query(self.search_query)
        if self.kind == "collection_view":
            return self.collection_id is None or event.get("collection_id") == self.collection_id
        if self.kind in ("product_view", "add_to_cart", "remove_from_cart"):
            return self.product_id is None or event.get("product_id") == self.product_id
        return True

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "product_id": self.product_id,
            "collection_id": self.collection_id,
            "search_query": self.search_query,
            "quantity": self.quantity,
        }


@dataclass(frozen=True)
class InstructionTask:
    """One deterministic task: the steps (as text and as data), the goal text and what counts
    as success. `quantity`: the units of the target product the steps leave in the cart."""

    task_id: str
    kind: TaskKind
    shop_id: str
    buyer_id: str
    session_id: str
    steps: tuple[str, ...]
    text: str
    target: TaskTarget
    product_id: str | None
    product_title: str = ""
    token: int | None = None
    stratum: str = ""
    required: tuple[TaskStep, ...] = ()
    quantity: int = 1
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def n_actions(self) -> int:
        return len(self.steps)

    def goal(self, stop_at_target: bool = False) -> Goal:
        """The runtime goal (see the module docstring)."""
        if stop_at_target and self.target in ("add_to_cart", "purchase"):
            return Goal(self.text, target=self.target, product_id=self.product_id)
        return Goal(self.text, target="browse")

    def to_dict(self) -> dict[str, Any]:
        return {
            "task_id": self.task_id,
            "task_kind": self.kind,
            "shop_id": self.shop_id,
            "buyer_id": self.buyer_id,
            "session_id": self.session_id,
            "n_actions": self.n_actions,
            "steps": list(self.steps),
            "required_steps": [s.to_dict() for s in self.required],
            "text": self.text,
            "target": self.target,
            "product_id": self.product_id,
            "quantity": self.quantity,
            "product_title": self.product_title,
            "token": self.token,
            "stratum": self.stratum,
        }


def _name(e: SessionEvent) -> str:
    return e.product_title or e.product_id or "the product"


def units(quantity: int | None) -> int:
    # Pixel-style logs often carry no quantity: one unit.
    return max(1, int(quantity)) if quantity is not None else 1


def _label(step: TaskStep, name: str, empties_line: bool) -> str:
    k, q = step.kind, step.quantity or 1
    if k == "search":
        return f'Search for "{step.search_query}"'
    if k == "collection_view":
        return f'Open the collection "{name}"'
    if k == "product_view":
        return f'View the product "{name}"'
    if k == "add_to_cart":
        return f'Add "{name}" to the cart' if q == 1 else f'Add {q} × "{name}" to the cart'
    if k == "remove_from_cart":
        # Taking the whole line out is one click; leaving some behind needs the count.
        return f'Remove "{name}" from the cart' if empties_line else (
            f'Remove {q} × "{name}" from the cart')  # fmt: skip
    if k == "checkout_started":
        return "Go to the checkout"
    return "Complete the purchase (the store takes test card 4242 4242 4242 4242)"


def _same(a: TaskStep, b: TaskStep) -> bool:
    return (a.kind, a.product_id, a.collection_id, norm_query(a.search_query)) == (
        b.kind, b.product_id, b.collection_id, norm_query(b.search_query))  # fmt: skip


def required_steps(
    events: Sequence[SessionEvent],
) -> tuple[list[TaskStep], list[str], dict[str | None, int]] | None:
    """(steps, their labels, the cart they leave: product id → units) for a session's events,
    or None when a checkout step would find the cart empty (the store refuses it). Feasible
    on a fresh storefront: a removal of something the steps did not put in the cart is left
    out (as is one naming no product), removals and adds are capped by the cart and the
    store's per-line limit; consecutive repeats are one step (adds and removes of one product
    sum their units)."""
    steps: list[TaskStep] = []
    names: list[str] = []
    empties: list[bool] = []
    cart: dict[str | None, int] = {}
    for e in events:
        t, pid = e.event_type, e.product_id
        name = _name(e)
        if t == "search":
            if not norm_query(e.search_query):
                continue
            step = TaskStep("search", search_query=e.search_query)
        elif t == "collection_view":
            if not (e.collection_title or e.collection_id):
                continue
            step = TaskStep("collection_view", collection_id=e.collection_id)
            name = e.collection_title or e.collection_id or ""
        elif t == "product_view":
            step = TaskStep("product_view", product_id=pid)
        elif t == "add_to_cart":
            q = min(units(e.quantity), MAX_QUANTITY - cart.get(pid, 0))
            if q <= 0:
                continue
            cart[pid] = cart.get(pid, 0) + q
            prev = steps[-1] if steps else None
            if prev is not None and prev.kind == t and prev.product_id == pid:
                steps[-1] = replace(prev, quantity=(prev.quantity or 0) + q)
                continue
            step = TaskStep(t, product_id=pid, quantity=q)
        elif t == "remove_from_cart":
            have = cart.get(pid, 0) if pid is not None else 0
            if have <= 0:
                continue
            q = min(units(e.quantity), have)
            cart[pid] = have - q
            prev = steps[-1] if steps else None
            if prev is not None and prev.kind == t and prev.product_id == pid:
                steps[-1] = replace(prev, quantity=(prev.quantity or 0) + q)
                empties[-1] = cart[pid] == 0
                continue
            step = TaskStep(t, product_id=pid, quantity=q)
            empties.append(cart[pid] == 0)
            steps.append(step)
            names.append(name)
            continue
        elif t in ("checkout_started", "checkout_completed"):
            if not any(v > 0 for v in cart.values()):
                return None
            step = TaskStep(t)
        else:
            continue
        if steps and _same(steps[-1], step):
            continue
        steps.append(step)
        names.append(name)
        empties.append(False)
    labels = [_label(s, n, x) for s, n, x in zip(steps, names, empties, strict=True)]
    return steps, labels, cart


def _kind_and_end(o: SessionOutline) -> tuple[TaskKind, int] | None:
    types = [e.event_type for e in o.events]
    if "checkout_completed" in types:
        return "purchase", types.index("checkout_completed")
    if "checkout_started" in types:
        return "checkout", types.index("checkout_started")
    if "add_to_cart" in types:
        return "cart", len(types) - 1 - types[::-1].index("add_to_cart")
    return None


def task_from_outline(
    outline: SessionOutline, min_actions: int = 3, max_actions: int = 27
) -> InstructionTask | None:
    """The session's task, or None (no add-to-cart, no product id for the target, a checkout
    with an empty cart, or a step count outside [min_actions, max_actions])."""
    ke = _kind_and_end(outline)
    if ke is None:
        return None
    kind, end = ke
    events = outline.events[: end + 1]
    carted = [e for e in events if e.event_type == "add_to_cart" and e.product_id]
    if not carted:
        return None
    target_event = carted[-1]
    built = required_steps(events)
    if built is None:
        return None
    required, steps, cart = built
    if not (min_actions <= len(steps) <= max_actions):
        return None
    closing = {
        "cart": "Then end the session.",
        "checkout": "Stop at the checkout without paying, then end the session.",
        "purchase": "End the session once the order is confirmed.",
    }[kind]
    text = (
        "Do these steps in order: "
        + " ".join(f"{i}. {s}." for i, s in enumerate(steps, 1))
        + f" {closing}"
    )
    targets: dict[TaskKind, TaskTarget] = {
        "cart": "add_to_cart",
        "checkout": "checkout",
        "purchase": "purchase",
    }
    target = targets[kind]
    return InstructionTask(
        task_id=f"{outline.shop_id}:{outline.session_id}:{kind}",
        kind=kind,
        shop_id=outline.shop_id,
        buyer_id=outline.buyer_id,
        session_id=outline.session_id,
        steps=tuple(steps),
        text=text,
        target=target,
        product_id=target_event.product_id,
        product_title=_name(target_event),
        token=outline.token,
        stratum=outline.stratum,
        required=tuple(required),
        quantity=cart.get(target_event.product_id, 0),
    )


def _order_key(seed: int, task_id: str) -> str:
    return hashlib.sha256(f"{seed}:{task_id}".encode()).hexdigest()


def derive_tasks(
    outlines: Iterable[SessionOutline], config: InstructionConfig | None = None
) -> list[InstructionTask]:
    """Up to `n_tasks` tasks, deterministic (see the module docstring), ordered by kind
    round-robin (cart, checkout, purchase, cart, …) while each kind lasts."""
    cfg = config or InstructionConfig()
    by_kind: dict[str, list[InstructionTask]] = {k: [] for k in TASK_KINDS}
    seen: set[str] = set()
    for o in outlines:
        t = task_from_outline(o, cfg.min_actions, cfg.max_actions)
        if t is not None and t.task_id not in seen:
            seen.add(t.task_id)
            by_kind[t.kind].append(t)
    for k in by_kind:
        by_kind[k].sort(key=lambda t: _order_key(cfg.seed, t.task_id))
    out: list[InstructionTask] = []
    i = 0
    while len(out) < cfg.n_tasks and any(i < len(v) for v in by_kind.values()):
        for k in TASK_KINDS:
            if i < len(by_kind[k]) and len(out) < cfg.n_tasks:
                out.append(by_kind[k][i])
        i += 1
    return out


def task_quotas(n_tasks: int, eval_shops: Iterable[str]) -> dict[str, int]:
    """The paper's task count is a total over the evaluation shops (§11: 70 tasks): shop i of
    the sorted evaluation shops gets n_tasks // m tasks, plus one for the first
    n_tasks % m shops (m shops). Depends on nothing but its arguments."""
    if n_tasks < 0:
        raise ValueError(f"n_tasks must be >= 0, got {n_tasks}")
    shops = sorted(set(eval_shops))
    if not shops:
        return {}
    base, extra = divmod(n_tasks, len(shops))
    return {s: base + (1 if i < extra else 0) for i, s in enumerate(shops)}


def shop_task_quota(
    n_tasks: int, shop: str, eval_shops: Iterable[str], eval_shops_only: bool = True
) -> int:
    """`shop`'s share of `n_tasks` (`task_quotas`). A shop outside the evaluation split is
    refused (ValueError) unless `eval_shops_only` is False; it then gets the largest share
    (all `n_tasks` when the split has no evaluation shop)."""
    quotas = task_quotas(n_tasks, eval_shops)
    if shop in quotas:
        return quotas[shop]
    if eval_shops_only:
        raise ValueError(
            f"shop {shop} is not an evaluation shop (shop_split.json: "
            f"{', '.join(sorted(quotas)) or 'none'}); the instruction tasks are split over "
            "the evaluation shops"
        )
    return max(quotas.values()) if quotas else n_tasks


def tasks_from_sessions(
    sessions: pl.DataFrame,
    config: InstructionConfig | None = None,
    assignments: pl.DataFrame | None = None,
) -> list[InstructionTask]:
    """Tasks from enriched-session rows (`shop_id`, `buyer_id`, `session_id`, `events`);
    `assignments` (shop_id, buyer_id, token, stratum) labels them when given."""
    require_columns(sessions, ("shop_id", "buyer_id", "session_id", "events"), "sessions")
    labels: dict[tuple[str, str], tuple[int | None, str]] = {}
    if assignments is not None:
        for r in assignments.select("shop_id", "buyer_id", "token", "stratum").iter_rows():
            labels[(str(r[0]), str(r[1]))] = (r[2], r[3] or "")
    outlines = []
    for row in sessions.iter_rows(named=True):
        tok, stratum = labels.get((str(row["shop_id"]), str(row["buyer_id"])), (None, ""))
        outlines.append(outline_from_row(row, stratum=stratum, token=tok))
    return derive_tasks(outlines, config)


def tasks_frame(tasks: Sequence[InstructionTask]) -> pl.DataFrame:
    """The tasks as a table (one row each)."""
    schema: dict[str, pl.DataType | type[pl.DataType]] = {
        "task_id": pl.Utf8,
        "task_kind": pl.Utf8,
        "shop_id": pl.Utf8,
        "buyer_id": pl.Utf8,
        "session_id": pl.Utf8,
        "n_actions": pl.Int64,
        "steps": pl.List(pl.Utf8),
        "required_steps": pl.List(STEP_SCHEMA),
        "text": pl.Utf8,
        "target": pl.Utf8,
        "product_id": pl.Utf8,
        "quantity": pl.Int64,
        "product_title": pl.Utf8,
        "token": pl.Int64,
        "stratum": pl.Utf8,
    }
    return pl.DataFrame([t.to_dict() for t in tasks], schema=schema)


def repeat_tasks(
    tasks: Sequence[InstructionTask], repetitions: int = 10, seed: int = 0
) -> list[tuple[InstructionTask, int, int]]:
    """`(task, repetition, run_seed)` for every repetition; the run seed is a stable hash of
    (seed, task id, repetition)."""
    out = []
    for t in tasks:
        for r in range(repetitions):
            h = hashlib.sha256(f"{seed}:{t.task_id}:{r}".encode()).digest()
            out.append((t, r, int.from_bytes(h[:4], "big")))
    return out
