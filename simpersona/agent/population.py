"""Population simulation (paper §3.2): agents sampled from a store's persona mix, run on its
storefront, one results row per agent.

    plans = plan_agents(shop, distribution, counterparts, n=100, policy="llm", seed=0)
    table = run_population(catalog, plans, policy, PopulationConfig(), out_dir)

Each agent draws a persona token from p̂_s(k), then a real buyer of that token on the same
store (its counterpart): the counterpart's stratum gives the stage-2 intent (A–C buy, D–E
browse), one of its sessions gives the category, the navigation structure (the intent-only
stage-2 goal: no carting or checkout instructions) and the landing page. What the agent
then does — carting, checkout, purchase — is the persona's (and the policy's) to decide,
and is read from the storefront's own event log, not from the agent's claims.

Runs are resumable: every finished agent is appended to `agents.jsonl` as it ends, and a
rerun with the same plans skips the agents already there (a crash loses only the agents in
flight). The final table is written atomically.
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import polars as pl

from simpersona.agent.actions import EndSession
from simpersona.agent.browser import BrowserConfig, BrowserPool
from simpersona.agent.plans import AgentPlan, default_persona
from simpersona.agent.policy import Goal, Persona, Policy
from simpersona.agent.runtime import run_session
from simpersona.agent.session import RuntimeConfig, SessionResult, SessionSpec
from simpersona.lake import atomic_write_parquet
from simpersona.polars_scalars import as_float
from simpersona.progress import progress_bar
from simpersona.store.events import EventSink

RESULT_SCHEMA: dict[str, pl.DataType] = {
    "agent_id": pl.String(),
    "shop_id": pl.String(),
    "policy": pl.String(),
    "token": pl.Int32(),
    "stratum": pl.String(),
    "intent": pl.String(),
    "goal": pl.String(),
    "goal_target": pl.String(),
    "task_id": pl.String(),
    "task_kind": pl.String(),
    "counterpart_buyer_id": pl.String(),
    "n_actions": pl.Int32(),
    "n_events": pl.Int32(),
    "n_product_views": pl.Int32(),
    "n_collection_views": pl.Int32(),
    "n_searches": pl.Int32(),
    "n_categories": pl.Int32(),
    "add_to_cart": pl.Boolean(),
    "n_add_to_cart": pl.Int32(),
    "carted_product_ids": pl.List(pl.String()),
    "checkout_reached": pl.Boolean(),
    "purchase": pl.Boolean(),
    "outcome": pl.String(),
    "error": pl.String(),
    "steps": pl.Int32(),
    "invalid_actions": pl.Int32(),
    "malformed_replies": pl.Int32(),
    "self_reported_done": pl.Boolean(),
    "seconds": pl.Float64(),
    # The store's events for the agent, in the order it logged them: what the instruction
    # checker verifies a task's path on (docs/evaluation.md). Null in rows written before
    # it was kept.
    "event_trace": pl.List(
        pl.Struct(
            {
                "event_type": pl.String(),
                "product_id": pl.String(),
                "collection_id": pl.String(),
                "search_query": pl.String(),
                "quantity": pl.Int64(),
            }
        )
    ),
}


@dataclass
class PopulationConfig:
    """How many agents run at once, and their limits (the paper: 30 steps and a wall clock)."""

    concurrency: int = 4
    runtime: RuntimeConfig = field(
        default_factory=lambda: RuntimeConfig(max_steps=30, session_timeout_s=300.0)
    )
    browser: BrowserConfig = field(default_factory=BrowserConfig)
    # A store the project does not run (a staging copy of the user's): agents start at this
    # URL instead of a storefront served here, their events are recorded in the browser, and
    # orders follow runtime.allow_orders / order_hosts (docs/agents.md, "Your store").
    store_url: str | None = None
    progress: bool = True


# ---- what the store saw --------------------------------------------------------------------


class BuyerEventSink(EventSink):
    """Keeps the storefront's events per buyer id (and forwards them to `inner`, e.g. a
    LakeEventSink, when given), so each agent's outcome is read from the store's log."""

    def __init__(self, inner: EventSink | None = None) -> None:
        self._lock = threading.Lock()
        self._by_buyer: dict[str, list[dict[str, Any]]] = defaultdict(list)
        self.inner = inner

    def emit(self, event: dict[str, Any]) -> None:
        with self._lock:
            self._by_buyer[str(event.get("buyer_id"))].append(dict(event))
        if self.inner is not None:
            self.inner.emit(event)

    def pop(self, buyer_id: str) -> list[dict[str, Any]]:
        with self._lock:
            return self._by_buyer.pop(buyer_id, [])

    def flush(self) -> list[Path]:
        return self.inner.flush() if self.inner is not None else []

    def close(self) -> None:
        if self.inner is not None:
            self.inner.close()


def agent_row(
    plan: AgentPlan, result: SessionResult, events: Sequence[Mapping[str, Any]]
) -> dict[str, Any]:
    """One results row: the plan, the session's outcome and what the store logged."""
    kinds = [e.get("event_type") for e in events]
    cats = {e.get("collection_id") for e in events if e.get("event_type") == "collection_view"}
    cats |= {
        f"q:{(e.get('search_query') or '').strip().lower()}"
        for e in events
        if e.get("event_type") == "search"
    }
    invalid = sum(1 for r in result.records if r.error)
    # Replies that were not a schema-valid JSON action at all (the rest of the invalid ones
    # parsed but could not run on the page: an unknown id, add-to-cart off a product page).
    malformed = sum(1 for r in result.records if r.error and r.action is None)
    last = result.records[-1] if result.records else None
    ended_itself = bool(last and last.action and last.action.get("action") == EndSession().action)
    return {
        "agent_id": plan.agent_id,
        "shop_id": plan.shop_id,
        "policy": plan.policy,
        "token": plan.token,
        "stratum": plan.stratum,
        "intent": plan.intent,
        "goal": plan.goal,
        "goal_target": plan.goal_target,
        "task_id": plan.task_id,
        "task_kind": plan.task_kind,
        "counterpart_buyer_id": plan.counterpart_buyer_id,
        "n_actions": sum(1 for r in result.records if r.action is not None and not r.error),
        "n_events": len(events),
        "n_product_views": kinds.count("product_view"),
        "n_collection_views": kinds.count("collection_view"),
        "n_searches": kinds.count("search"),
        "n_categories": len(cats),
        "add_to_cart": "add_to_cart" in kinds,
        "n_add_to_cart": kinds.count("add_to_cart"),
        "carted_product_ids": [
            str(e["product_id"])
            for e in events
            if e.get("event_type") == "add_to_cart" and e.get("product_id")
        ],
        "checkout_reached": "checkout_started" in kinds or "checkout_completed" in kinds,
        "purchase": "checkout_completed" in kinds,
        "outcome": result.outcome,
        "error": None if result.outcome == "goal_reached" else result.message,
        "steps": result.steps,
        "invalid_actions": invalid,
        "malformed_replies": malformed,
        "self_reported_done": ended_itself,
        "seconds": float(result.duration_s),
        "event_trace": [
            {
                "event_type": e.get("event_type"),
                "product_id": None if e.get("product_id") is None else str(e["product_id"]),
                "collection_id": (
                    None if e.get("collection_id") is None else str(e["collection_id"])
                ),
                "search_query": e.get("search_query"),
                "quantity": int(e["quantity"]) if e.get("quantity") is not None else None,
            }
            for e in events
        ],
    }


def results_frame(rows: Sequence[Mapping[str, Any]]) -> pl.DataFrame:
    """Rows as a typed table (RESULT_SCHEMA), in agent order."""
    frame = pl.DataFrame(list(rows), schema=RESULT_SCHEMA, strict=False)
    return frame.sort("agent_id")


# ---- running -------------------------------------------------------------------------------


def _read_done(path: Path) -> dict[str, dict[str, Any]]:
    done: dict[str, dict[str, Any]] = {}
    if not path.exists():
        return done
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            # A line cut by a crash mid-write: that agent simply runs again.
            continue
        if "agent_id" not in row:
            raise ValueError(f"{path}, line {n}: a results row without agent_id")
        done[row["agent_id"]] = row
    return done


@dataclass
class PopulationRun:
    """The results table and how the run went."""

    table: pl.DataFrame
    path: Path
    wall_s: float
    resumed: int  # agents taken from an earlier, interrupted run
    ran: int

    def summary(self) -> dict[str, Any]:
        t = self.table
        n = t.height
        return {
            "agents": n,
            "ran": self.ran,
            "resumed": self.resumed,
            "wall_s": round(self.wall_s, 2),
            "agents_per_min": round(self.ran / self.wall_s * 60, 1) if self.wall_s else 0.0,
            "outcomes": dict(t.group_by("outcome").len().sort("outcome").iter_rows()),
            "atc_rate": round(as_float(t["add_to_cart"].mean()), 4) if n else 0.0,
            "purchase_rate": round(as_float(t["purchase"].mean()), 4) if n else 0.0,
            "mean_steps": round(as_float(t["steps"].mean()), 2) if n else 0.0,
        }


def run_population(
    catalog: Any,
    plans: Sequence[AgentPlan],
    policy: Policy,
    cfg: PopulationConfig | None = None,
    out_dir: str | os.PathLike[str] = ".",
    name: str = "agents",
    events_sink: EventSink | None = None,
    on_done: Callable[[dict[str, Any]], None] | None = None,
    persona_for: Callable[[AgentPlan], Persona] | None = None,
) -> PopulationRun:
    """Serve `catalog` on loopback and run every plan not yet in `<out_dir>/<name>.jsonl`
    with `policy`, `cfg.concurrency` at a time; returns the full table (also written to
    `<out_dir>/<name>.parquet`). Store events also go to `events_sink` when given.
    `persona_for` builds each agent's Persona (default: its token as label; the Markov
    policy passes `MarkovModel.persona` for the token's interests)."""
    from simpersona.store import create_app, run_in_thread

    cfg = cfg or PopulationConfig()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    log_path = out / f"{name}.jsonl"
    ids = [p.agent_id for p in plans]
    if len(set(ids)) != len(ids):
        raise ValueError("agent ids of the plans are not unique")
    done = {k: v for k, v in _read_done(log_path).items() if k in set(ids)}
    todo = [p for p in plans if p.agent_id not in done]
    sink = BuyerEventSink(events_sink)
    lock = threading.Lock()
    t0 = time.monotonic()
    if todo:
        if cfg.store_url:
            base_url, stop = cfg.store_url.rstrip("/"), (lambda: None)
        else:
            base_url, stop = run_in_thread(create_app(catalog, sink))
        try:
            with (
                progress_bar(
                    len(plans),
                    f"agents {catalog.shop_id}",
                    unit="agents",
                    completed=len(done),
                    enabled=cfg.progress,
                    transient=True,
                ) as bar,
                log_path.open("a", encoding="utf-8") as log,
            ):

                def finish(plan: AgentPlan, res: SessionResult) -> None:
                    row = agent_row(plan, res, sink.pop(plan.buyer_id))
                    with lock:
                        log.write(json.dumps(row, ensure_ascii=False) + "\n")
                        log.flush()
                        done[plan.agent_id] = row
                    bar.advance()
                    if on_done is not None:
                        on_done(row)

                asyncio.run(
                    _run_all(
                        base_url, todo, policy, cfg, finish, persona_for, sink, catalog.shop_id
                    )
                )
        finally:
            stop()
            sink.close()
    wall = time.monotonic() - t0
    table = results_frame([done[i] for i in ids])
    path = atomic_write_parquet(table, out / f"{name}.parquet")
    return PopulationRun(table, path, wall, resumed=len(plans) - len(todo), ran=len(todo))


def spec_for(
    plan: AgentPlan,
    base_url: str,
    persona_for: Callable[[AgentPlan], Persona] | None = None,
    landing: bool = True,
) -> SessionSpec:
    """The plan's session; `landing`: start at its counterpart's landing page (paths of the
    storefront served here), else at the store's URL."""
    path = plan.start_path if landing and plan.start_path else "/"
    return SessionSpec(
        start_url=base_url.rstrip("/") + path,
        buyer_id=plan.buyer_id,
        persona=(persona_for or default_persona)(plan),
        goal=Goal(plan.goal, target=plan.goal_target, product_id=plan.product_id),
        seed=plan.seed,
        key=plan.agent_id,
    )


async def _run_all(
    base_url: str,
    plans: Sequence[AgentPlan],
    policy: Policy,
    cfg: PopulationConfig,
    finish: Callable[[AgentPlan, SessionResult], None],
    persona_for: Callable[[AgentPlan], Persona] | None = None,
    sink: EventSink | None = None,
    shop_id: str = "",
) -> None:
    if cfg.store_url:
        # Another store: it logs nothing for us, so the browser records the clickstream.
        runtime = replace(cfg.runtime, capture_sink=sink, capture_shop_id=shop_id)
    else:
        runtime = cfg.runtime.own_store(base_url)  # the storefront served here: a test store
    async with BrowserPool(cfg.browser, size=cfg.concurrency) as pool:

        async def one(plan: AgentPlan) -> None:
            spec = spec_for(plan, base_url, persona_for, landing=not cfg.store_url)
            res = await run_session(pool, spec, policy, runtime)
            finish(plan, res)

        try:
            await asyncio.gather(*(one(p) for p in plans))
        finally:
            if hasattr(policy, "aclose"):  # an LLM policy's HTTP client, on this loop
                await policy.aclose()
