"""Checking an instruction task's run (docs/evaluation.md, "Instruction following"): the
store's own event trace against the task's required path, end point, product and quantity;
the per-kind success rates and their calibration. The tasks come from
`simpersona.evaluation.instruction`."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import polars as pl

from simpersona.agent.observation import page_kind
from simpersona.evaluation.instruction import (
    TASK_KINDS,
    InstructionTask,
    TaskStep,
    units,
)
from simpersona.evaluation.tables import require_columns
from simpersona.polars_scalars import as_float

# The checker's per-run columns (booleans are null where a run has no event trace).
CHECK_SCHEMA: dict[str, pl.DataType] = {
    "success": pl.Boolean(),
    "end_ok": pl.Boolean(),
    "path_ok": pl.Boolean(),
    "product_ok": pl.Boolean(),
    "quantity_ok": pl.Boolean(),
    "steps_matched": pl.Int32(),
    "added_to_cart": pl.Boolean(),
    "reached_checkout": pl.Boolean(),
    "purchased": pl.Boolean(),
    "trace_missing": pl.Boolean(),
}


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


def match_path(required: Sequence[TaskStep], trace: Sequence[Mapping[str, Any]]) -> int:
    """How many of the required steps the trace does, in order, as a subsequence (other
    events in between are allowed). Greedy earliest matching is exact for a subsequence."""
    i = 0
    for event in trace:
        if i < len(required) and required[i].matches(event):
            i += 1
    return i


# The event that marks each kind's end state; the cart is judged at its first occurrence.
_END_EVENTS: dict[str, tuple[str, ...]] = {
    "cart": ("add_to_cart",),
    "checkout": ("checkout_started", "checkout_completed"),
    "purchase": ("checkout_completed",),
}


def _end_point(kind: str, trace: Sequence[Mapping[str, Any]]) -> tuple[bool, int]:
    """(end state reached, how many events the cart is judged on): the whole trace for cart
    tasks (the cart the session ended with), the events before the first checkout start
    (checkout) or completed checkout (purchase): what went to checkout, what was bought."""
    ends = _END_EVENTS[kind]
    hits = [i for i, e in enumerate(trace) if e.get("event_type") in ends]
    if not hits:
        return False, len(trace)
    return True, len(trace) if kind == "cart" else hits[0]


def cartunits(trace: Sequence[Mapping[str, Any]], product_id: str | None) -> int:
    """Units of `product_id` in the cart after `trace`: its add-to-cart units minus its
    removed units (the storefront logs each cart change with the units it changed)."""
    n = 0
    for e in trace:
        if e.get("product_id") != product_id:
            continue
        if e.get("event_type") == "add_to_cart":
            n += units(e.get("quantity"))
        elif e.get("event_type") == "remove_from_cart":
            n = max(0, n - units(e.get("quantity")))
    return n


def check_result(task: InstructionTask, row: Mapping[str, Any]) -> dict[str, Any]:
    """Did one run do what the task asked? `row`: an agent-result row; its `event_trace` (the
    store's events for the agent, in order) is what is checked:

    - `path_ok`: `task.required` appears in the trace as an ordered subsequence;
    - `end_ok`: cart → an add-to-cart; checkout → a checkout start (or completion);
      purchase → a completed checkout;
    - `product_ok`: the target product was added (before the end state);
    - `quantity_ok`: the target's units in the cart when the end state is reached (see
      `_end_point`) equal `task.quantity`, the units the task's steps leave there;
    - `success`: all four.

    A row without a trace (written before traces were kept) has `trace_missing` set,
    `path_ok` / `quantity_ok` null, `product_ok` from `carted_product_ids` (null when that is
    absent too), and `success` = end state (and product when known) from the row's flags."""
    trace = row.get("event_trace")
    if trace is None:
        added = bool(row.get("add_to_cart"))
        purchased = bool(row.get("purchase"))
        reached = bool(row.get("checkout_reached")) or purchased
        end_ok = {"cart": added, "checkout": reached, "purchase": purchased}[task.kind]
        carted = row.get("carted_product_ids")
        product_ok = None if carted is None else task.product_id in list(carted)
        return {
            "success": end_ok and product_ok is not False,
            "end_ok": end_ok,
            "path_ok": None,
            "product_ok": product_ok,
            "quantity_ok": None,
            "steps_matched": None,
            "added_to_cart": added,
            "reached_checkout": reached,
            "purchased": purchased,
            "trace_missing": True,
        }
    trace = list(trace)
    kinds = {e.get("event_type") for e in trace}
    end_ok, upto = _end_point(task.kind, trace)
    before = trace[:upto]
    product_ok = any(
        e.get("event_type") == "add_to_cart" and e.get("product_id") == task.product_id
        for e in before
    )
    quantity_ok = cartunits(before, task.product_id) == task.quantity
    matched = match_path(task.required, trace)
    path_ok = matched == len(task.required)
    purchased = "checkout_completed" in kinds
    return {
        "success": end_ok and product_ok and quantity_ok and path_ok,
        "end_ok": end_ok,
        "path_ok": path_ok,
        "product_ok": product_ok,
        "quantity_ok": quantity_ok,
        "steps_matched": matched,
        "added_to_cart": "add_to_cart" in kinds,
        "reached_checkout": "checkout_started" in kinds or purchased,
        "purchased": purchased,
        "trace_missing": False,
    }


def score_runs(tasks: Sequence[InstructionTask], runs: pl.DataFrame) -> pl.DataFrame:
    """The runs (agent-result rows with `task_id`) with the checker's columns added
    (`CHECK_SCHEMA`) and `task_kind` set from the task: one row per run."""
    require_columns(runs, ("task_id", "add_to_cart", "checkout_reached", "purchase"), "runs")
    by_id = {t.task_id: t for t in tasks}
    unknown = sorted(set(runs["task_id"].to_list()) - set(by_id))
    if unknown:
        raise ValueError(f"runs: task_id(s) not among the tasks: {', '.join(unknown[:5])}")
    checks = [check_result(by_id[r["task_id"]], r) for r in runs.iter_rows(named=True)]
    extra = pl.DataFrame(checks, schema=CHECK_SCHEMA)
    kinds = pl.Series("task_kind", [by_id[t].kind for t in runs["task_id"].to_list()], pl.Utf8)
    base = runs.drop([c for c in ("task_kind", *extra.columns) if c in runs.columns])
    return base.with_columns(*extra.get_columns(), kinds)


def _rate(s: pl.Series) -> float:
    """Share of true values among the known (non-null) ones; NaN when none is known."""
    s = s.drop_nulls()
    return as_float(s.cast(pl.Float64).mean()) if s.len() else math.nan


def _col_rate(frame: pl.DataFrame, column: str) -> float:
    # Tables scored before a column existed (older materializations) give NaN, not an error.
    return _rate(frame[column]) if column in frame.columns else math.nan


_RATES = ("success", "end_ok", "path_ok", "product_ok", "quantity_ok", "added_to_cart",
          "reached_checkout", "purchased")  # fmt: skip


def instruction_table(scored: pl.DataFrame) -> pl.DataFrame:
    """Table 4 by task kind (cart, checkout, purchase, then `all`): tasks, runs, the success
    rate and its parts (end state, path, product, quantity), add-to-cart / checkout /
    purchase rates, self-reported rate, mean steps, and `trace_missing` (runs checked on
    their end state only: no event trace, or scored by an older checker)."""
    rows = []
    for kind in (*TASK_KINDS, "all"):
        sub = scored if kind == "all" else scored.filter(pl.col("task_kind") == kind)
        claimed = (
            sub["self_reported_done"].fill_null(False)
            if "self_reported_done" in sub.columns
            else pl.Series([None] * sub.height, dtype=pl.Boolean)
        )
        missing = (
            int(sub["trace_missing"].fill_null(True).sum())
            if "trace_missing" in sub.columns
            else sub.height
        )
        rows.append(
            {
                "task_kind": kind,
                "tasks": sub["task_id"].n_unique() if sub.height else 0,
                "runs": sub.height,
                **{c: _col_rate(sub, c) for c in _RATES},
                "self_reported": _rate(claimed),
                "avg_steps": as_float(sub["steps"].mean())
                if "steps" in sub.columns and sub.height
                else math.nan,
                "trace_missing": missing,
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
    reached checkout, Table 4's row), `instruction_self_reported`, `instruction_avg_steps`,
    the checker's parts over all runs (`instruction_end_ok`, `instruction_path_ok`,
    `instruction_product_ok`, `instruction_quantity_ok`), `instruction_trace_missing` (share
    of runs checked on their end state only) and the calibration figures
    (`instruction_precision`, `instruction_over_claim`, …)."""
    t = instruction_table(scored)
    get = lambda k, c: t.filter(pl.col("task_kind") == k)[c][0]  # noqa: E731
    runs = scored.height
    out = {
        "instruction_cart_success": get("cart", "success"),
        "instruction_checkout_success": get("checkout", "success"),
        "instruction_purchase_success": get("purchase", "success"),
        "instruction_purchase_checkout": get("purchase", "reached_checkout"),
        "instruction_success": get("all", "success"),
        "instruction_end_ok": get("all", "end_ok"),
        "instruction_path_ok": get("all", "path_ok"),
        "instruction_product_ok": get("all", "product_ok"),
        "instruction_quantity_ok": get("all", "quantity_ok"),
        "instruction_trace_missing": get("all", "trace_missing") / runs if runs else math.nan,
        "instruction_self_reported": get("all", "self_reported"),
        "instruction_avg_steps": get("all", "avg_steps"),
        "instruction_runs": float(runs),
    }
    for k, v in calibration(scored).items():
        if k not in ("success", "claimed", "runs"):
            out[f"instruction_{k}"] = v
    return out
