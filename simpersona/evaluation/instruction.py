"""Instruction following on deterministic tasks derived from real sessions (SPEC §11,
paper §3.4, Table 4, App. J Table 10).

A session becomes one task of the kind its deepest funnel step gives:

| kind | from a session with | the instruction ends with | success |
|---|---|---|---|
| `cart` | an add-to-cart, no checkout | adding product X (its last carted product) | an add-to-cart (of X when the result lists carted products) |
| `checkout` | a checkout start, no purchase | going to checkout (no payment) | checkout reached |
| `purchase` | a completed checkout | completing the purchase | purchase (Table 4 also reports checkout reached) |

The instruction lists the session's navigation steps in order, up to and including the
final one: each search ("Search for …"), collection view, product view, add/remove, checkout
step (plain page views and consecutive repeats are dropped). Sessions whose instruction has
fewer than `min_actions` (3) or more than `max_actions` (27) steps give no task. Selection
is deterministic: candidates are ordered by a SHA-256 of (seed, task id) and taken
round-robin over the three kinds until `n_tasks` (70); the same sessions and seed always give
the same tasks.

Each task carries a `Goal` for the agent runtime. By default (`stop_at_target=False`) it is
a `browse` goal: the agent follows the steps and ends the session itself, which is its
self-reported completion (Table 4's calibration needs one). `stop_at_target=True` gives the
runtime target instead (`add_to_cart` with the product id, `purchase`); checkout tasks have
no runtime target and stay `browse`.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import polars as pl

from simpersona.agent.observation import page_kind
from simpersona.agent.policy import Goal
from simpersona.evaluation.tables import require_columns
from simpersona.traces.outline import SessionEvent, SessionOutline, outline_from_row

TaskKind = Literal["cart", "checkout", "purchase"]
TASK_KINDS: tuple[str, ...] = ("cart", "checkout", "purchase")
_STEP_TYPES = frozenset(
    {
        "search",
        "collection_view",
        "product_view",
        "add_to_cart",
        "remove_from_cart",
        "checkout_started",
        "checkout_completed",
    }
)


@dataclass(frozen=True)
class InstructionConfig:
    n_tasks: int = 70
    repetitions: int = 10
    min_actions: int = 3
    max_actions: int = 27
    seed: int = 0


@dataclass(frozen=True)
class InstructionTask:
    """One deterministic task: the steps, the goal text and what counts as success."""

    task_id: str
    kind: TaskKind
    shop_id: str
    buyer_id: str
    session_id: str
    steps: tuple[str, ...]
    text: str
    target: Literal["add_to_cart", "checkout", "purchase"]
    product_id: str | None
    product_title: str = ""
    token: int | None = None
    stratum: str = ""
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
            "text": self.text,
            "target": self.target,
            "product_id": self.product_id,
            "product_title": self.product_title,
            "token": self.token,
            "stratum": self.stratum,
        }


def _name(e: SessionEvent) -> str:
    return e.product_title or e.product_id or "the product"


def _step(e: SessionEvent) -> str | None:
    t = e.event_type
    if t == "search" and e.search_query:
        return f'Search for "{e.search_query}"'
    if t == "collection_view" and (e.collection_title or e.collection_id):
        return f'Open the collection "{e.collection_title or e.collection_id}"'
    if t == "product_view":
        return f'View the product "{_name(e)}"'
    if t == "add_to_cart":
        return f'Add "{_name(e)}" to the cart'
    if t == "remove_from_cart":
        return f'Remove "{_name(e)}" from the cart'
    if t == "checkout_started":
        return "Go to the checkout"
    if t == "checkout_completed":
        return "Complete the purchase (the store takes test card 4242 4242 4242 4242)"
    return None


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
    """The session's task, or None (no add-to-cart, no product id for the target, or a step
    count outside [min_actions, max_actions])."""
    ke = _kind_and_end(outline)
    if ke is None:
        return None
    kind, end = ke
    events = outline.events[: end + 1]
    carted = [e for e in events if e.event_type == "add_to_cart" and e.product_id]
    if not carted:
        return None
    target_event = carted[-1]
    steps: list[str] = []
    for e in events:
        if e.event_type not in _STEP_TYPES:
            continue
        s = _step(e)
        if s and (not steps or steps[-1] != s):
            steps.append(s)
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
    target = {"cart": "add_to_cart", "checkout": "checkout", "purchase": "purchase"}[kind]
    return InstructionTask(
        task_id=f"{outline.shop_id}:{outline.session_id}:{kind}",
        kind=kind,
        shop_id=outline.shop_id,
        buyer_id=outline.buyer_id,
        session_id=outline.session_id,
        steps=tuple(steps),
        text=text,
        target=target,  # type: ignore[arg-type]
        product_id=target_event.product_id,
        product_title=_name(target_event),
        token=outline.token,
        stratum=outline.stratum,
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
    schema = {
        "task_id": pl.Utf8,
        "task_kind": pl.Utf8,
        "shop_id": pl.Utf8,
        "buyer_id": pl.Utf8,
        "session_id": pl.Utf8,
        "n_actions": pl.Int64,
        "steps": pl.List(pl.Utf8),
        "text": pl.Utf8,
        "target": pl.Utf8,
        "product_id": pl.Utf8,
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


def session_flags(result: Any) -> dict[str, Any]:
    """Agent-result flags from a runtime `SessionResult` (its step records and final URL):
    `add_to_cart` (an add-to-cart action that ran, or the cart count rising),
    `carted_product_ids`, `checkout_reached`, `purchase`, `self_reported_done` (the agent's
    last action was end_session), `steps`, `n_actions`, `outcome`."""
    carted: list[str] = []
    checkout = purchase = rose = False
    prev_cart: int | None = None
    for rec in result.records:
        obs = rec.observation or {}
        facts = obs.get("facts") or {}
        kind = obs.get("kind")
        try:
            cart = int(facts.get("cart_count", "0"))
        except ValueError:
            cart = 0
        if prev_cart is not None and cart > prev_cart:
            rose = True
        prev_cart = cart
        checkout |= kind in ("checkout", "confirmation")
        purchase |= kind == "confirmation"
        act = rec.action or {}
        if act.get("action") == "add_to_cart" and rec.error is None:
            if facts.get("product_id"):
                carted.append(str(facts["product_id"]))
            rose = True
    final = page_kind(None, result.final_url or "")
    checkout |= final in ("checkout", "confirmation")
    purchase |= final == "confirmation" or (
        result.outcome == "goal_reached" and "purchase reached" in (result.message or "")
    )
    last = result.records[-1].action if result.records else None
    return {
        "add_to_cart": rose or bool(carted),
        "carted_product_ids": carted,
        "checkout_reached": checkout or purchase,
        "purchase": purchase,
        "self_reported_done": bool(last and last.get("action") == "end_session"),
        "steps": result.steps,
        "n_actions": result.steps,
        "outcome": result.outcome,
    }


def check_result(task: InstructionTask, row: Mapping[str, Any]) -> dict[str, bool]:
    """Did one run do what the task asked? `row`: an agent-result row (add_to_cart,
    checkout_reached, purchase; `carted_product_ids` when known). Returns `success`,
    `added_to_cart`, `reached_checkout`, `purchased`, `product_ok`."""
    carted = row.get("carted_product_ids")
    added = bool(row.get("add_to_cart"))
    product_ok = added and (not carted or task.product_id in carted)
    reached = bool(row.get("checkout_reached")) or bool(row.get("purchase"))
    purchased = bool(row.get("purchase"))
    success = {
        "cart": added and product_ok,
        "checkout": reached and (not carted or product_ok),
        "purchase": purchased and (not carted or product_ok),
    }[task.kind]
    return {
        "success": success,
        "added_to_cart": added,
        "reached_checkout": reached,
        "purchased": purchased,
        "product_ok": product_ok,
    }


def score_runs(tasks: Sequence[InstructionTask], runs: pl.DataFrame) -> pl.DataFrame:
    """The runs (agent-result rows with `task_id`) with the checker's columns added."""
    require_columns(runs, ("task_id", "add_to_cart", "checkout_reached", "purchase"), "runs")
    by_id = {t.task_id: t for t in tasks}
    unknown = sorted(set(runs["task_id"].to_list()) - set(by_id))
    if unknown:
        raise ValueError(f"runs: task_id(s) not among the tasks: {', '.join(unknown[:5])}")
    checks = [check_result(by_id[r["task_id"]], r) for r in runs.iter_rows(named=True)]
    extra = pl.DataFrame(checks, schema={k: pl.Boolean for k in (
        "success", "added_to_cart", "reached_checkout", "purchased", "product_ok")})  # fmt: skip
    kinds = pl.Series("task_kind", [by_id[t].kind for t in runs["task_id"].to_list()], pl.Utf8)
    base = runs.drop([c for c in ("task_kind", *extra.columns) if c in runs.columns])
    return base.with_columns(*extra.get_columns(), kinds)


def _rate(s: pl.Series) -> float:
    return float(s.cast(pl.Float64).mean()) if s.len() else math.nan


def instruction_table(scored: pl.DataFrame) -> pl.DataFrame:
    """Table 4 by task kind: runs, tasks, success, add-to-cart / checkout / purchase rates,
    self-reported rate and mean steps; then an `all` row."""
    rows = []
    for kind in (*TASK_KINDS, "all"):
        sub = scored if kind == "all" else scored.filter(pl.col("task_kind") == kind)
        claimed = (
            sub["self_reported_done"].fill_null(False)
            if "self_reported_done" in sub.columns
            else pl.Series([None] * sub.height, dtype=pl.Boolean)
        )
        rows.append(
            {
                "task_kind": kind,
                "tasks": sub["task_id"].n_unique() if sub.height else 0,
                "runs": sub.height,
                "success": _rate(sub["success"]),
                "added_to_cart": _rate(sub["added_to_cart"]),
                "reached_checkout": _rate(sub["reached_checkout"]),
                "purchased": _rate(sub["purchased"]),
                "self_reported": _rate(claimed),
                "avg_steps": float(sub["steps"].mean())
                if "steps" in sub.columns and sub.height
                else math.nan,
            }  # fmt: skip
        )
    return pl.DataFrame(rows)


def calibration(scored: pl.DataFrame) -> dict[str, float]:
    """Self-reported completion vs actual success: `claimed` (rate), `success` (rate),
    `precision` P(success | claimed), `recall` P(claimed | success), `over_claim` (share of
    runs claiming done that failed) and `under_claim` (share of runs succeeding without a
    claim). Runs with an unknown claim (null) are left out."""
    if "self_reported_done" not in scored.columns:
        return {k: math.nan for k in ("claimed", "success", "precision", "recall",
                                      "over_claim", "under_claim", "runs")}  # fmt: skip
    s = scored.filter(pl.col("self_reported_done").is_not_null())
    c = s["self_reported_done"].to_numpy().astype(bool)
    ok = s["success"].to_numpy().astype(bool)
    n = len(c)
    div = lambda a, b: float(a / b) if b else math.nan  # noqa: E731
    return {
        "runs": float(n),
        "claimed": div(c.sum(), n),
        "success": div(ok.sum(), n),
        "precision": div((c & ok).sum(), c.sum()),
        "recall": div((c & ok).sum(), ok.sum()),
        "over_claim": div((c & ~ok).sum(), n),
        "under_claim": div((~c & ok).sum(), n),
    }


def instruction_figures(scored: pl.DataFrame) -> dict[str, float]:
    """`instruction_cart_success`, `instruction_checkout_success`,
    `instruction_purchase_success`, `instruction_purchase_checkout` (purchase tasks that
    reached checkout, Table 4's row), `instruction_self_reported`, `instruction_avg_steps`
    and the calibration figures (`instruction_precision`, `instruction_over_claim`, …)."""
    t = instruction_table(scored)
    get = lambda k, c: t.filter(pl.col("task_kind") == k)[c][0]  # noqa: E731
    out = {
        "instruction_cart_success": get("cart", "success"),
        "instruction_checkout_success": get("checkout", "success"),
        "instruction_purchase_success": get("purchase", "success"),
        "instruction_purchase_checkout": get("purchase", "reached_checkout"),
        "instruction_success": get("all", "success"),
        "instruction_self_reported": get("all", "self_reported"),
        "instruction_avg_steps": get("all", "avg_steps"),
        "instruction_runs": float(scored.height),
    }
    for k, v in calibration(scored).items():
        if k not in ("success", "claimed", "runs"):
            out[f"instruction_{k}"] = v
    return out
