"""One shop's traces, end to end: pick sessions, write goals, serve the shop's storefront on
loopback, replay in the browser, judge. The Dagster asset `replayed_traces` wraps this."""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from simpersona.lake import atomic_write_text
from simpersona.traces.dataset import round_robin
from simpersona.traces.goals import GoalPair, LLMGoalWriter, TemplateGoalWriter
from simpersona.traces.judge import KeepRates
from simpersona.traces.outline import CategoryIndex, SessionOutline, outline_from_row
from simpersona.traces.replay import ReplayConfig, Trajectory, replay_sessions


@dataclass
class TraceSelection:
    """Which sessions of a shop become traces."""

    per_shop: int = 90  # the paper: 3,600 sessions from ~40 shops
    min_events: int = 2
    max_events: int = 25  # replays of longer sessions outgrow the agents' context
    strata: tuple[str, ...] = ("A", "B", "C", "D")  # E (bounces) carries no behaviour
    seed: int = 0


def select_outlines(
    sessions: pl.DataFrame,
    assignments: pl.DataFrame | None,
    categories: CategoryIndex,
    sel: TraceSelection | None = None,
) -> list[SessionOutline]:
    """Outlines of up to `per_shop` sessions, round-robin over persona tokens (so rare
    personas are in), each session of a buyer with a known stratum in `sel.strata`.

    `sessions`: the enriched session table of one shop; `assignments`: buyer_id → token,
    stratum (persona_assignments); without them every buyer is token None, stratum from
    the session's own funnel depth."""
    sel = sel or TraceSelection()
    df = sessions.filter(pl.col("n_events").is_between(sel.min_events, sel.max_events))
    if assignments is not None:
        df = df.join(assignments.select("buyer_id", "token", "stratum"), on="buyer_id", how="inner")
    else:
        depth = (
            pl.when(pl.col("n_checkout_completed") > 0)
            .then(pl.lit("A"))
            .when(pl.col("n_checkout_started") > 0)
            .then(pl.lit("B"))
            .when(pl.col("n_add_to_cart") > 0)
            .then(pl.lit("C"))
            .otherwise(pl.lit("D"))
        )
        df = df.with_columns(pl.lit(None, pl.Int64).alias("token"), depth.alias("stratum"))
    df = df.filter(pl.col("stratum").is_in(list(sel.strata)))
    groups: dict[Any, list[dict[str, Any]]] = defaultdict(list)
    for row in df.sort(["buyer_id", "session_id"]).iter_rows(named=True):
        groups[row["token"]].append(row)
    picked = round_robin(
        groups, sel.per_shop, sel.seed, order=lambda t: (t is None, t if t is not None else -1)
    )
    by_buyer = defaultdict(list)
    for row in sessions.filter(pl.col("buyer_id").is_in([r["buyer_id"] for r in picked])).iter_rows(
        named=True
    ):
        by_buyer[row["buyer_id"]].append(row)
    return [
        outline_from_row(
            r,
            category=categories.buyer_category(by_buyer[r["buyer_id"]]),
            stratum=r["stratum"],
            token=int(r["token"]) if r["token"] is not None else None,
        )
        for r in picked
    ]


def write_goals(
    outlines: Sequence[SessionOutline], writer: TemplateGoalWriter | LLMGoalWriter
) -> list[GoalPair]:
    if isinstance(writer, LLMGoalWriter):
        return asyncio.run(writer.awrite_many(outlines))
    return [writer.write(o) for o in outlines]


def trajectory_record(t: Trajectory) -> dict[str, Any]:
    """A trajectory as one JSON-ready record (summary, steps, the teacher's plan)."""
    return {
        **t.summary(),
        "steps": t.steps,
        "plan": [s.__dict__ for s in t.log.steps],
        "original_events": [e.event_type for e in t.outline.events],
    }


def replay_shop(
    catalog: Any,
    items: Sequence[tuple[SessionOutline, GoalPair]],
    cfg: ReplayConfig | None = None,
    on_done: Callable[[Trajectory], None] | None = None,
    sink: Any = None,
) -> list[Trajectory]:
    """Serve `catalog` (a StoreCatalog) on loopback and replay `items` on it. The store's
    events go to `sink` (default: kept in memory and dropped: replays are not buyers)."""
    from simpersona.store import MemoryEventSink, create_app, run_in_thread

    base_url, stop = run_in_thread(create_app(catalog, sink or MemoryEventSink()))
    try:
        return replay_sessions(base_url, items, cfg, on_done=on_done)
    finally:
        stop()


def write_records(records: Sequence[dict[str, Any]], path: str | os.PathLike[str]) -> Path:
    text = "".join(json.dumps(r, ensure_ascii=False, default=str) + "\n" for r in records)
    return atomic_write_text(text, Path(path))


def read_records(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    with open(path, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def keep_rates(trajectories: Sequence[Trajectory]) -> KeepRates:
    rates = KeepRates()
    for t in trajectories:
        rates.add(t.outline.stratum, t.outline.token, t.verdict)
    return rates


@dataclass
class ShopTraces:
    """A shop's replayed sessions, judged, with their timings."""

    trajectories: list[Trajectory]
    goal_seconds: float
    replay_seconds: float

    @property
    def rates(self) -> KeepRates:
        return keep_rates(self.trajectories)

    def figures(self) -> dict[str, float | int]:
        trajs, rates, replay_s = self.trajectories, self.rates, self.replay_seconds
        return {
            "sessions": len(trajs),
            "kept": rates.kept,
            "keep_rate": round(rates.rate, 4),
            "steps": sum(t.result.steps for t in trajs),
            "detours": sum(t.log.detours for t in trajs),
            "skipped_events": sum(len(t.log.skipped) for t in trajs),
            "goal_seconds": round(self.goal_seconds, 2),
            "replay_seconds": round(replay_s, 2),
            "sessions_per_min": round(len(trajs) / replay_s * 60, 1) if replay_s else 0,
        }

    def preview(self, rows: int = 8) -> list[dict[str, Any]]:
        return [
            {
                "stratum": t.outline.stratum,
                "token": t.outline.token,
                "keep": t.verdict.keep,
                "stage2_goal": t.goals.stage2[:160],
            }
            for t in self.trajectories[:rows]
        ]


def trace_shop(
    catalog: Any,
    outlines: Sequence[SessionOutline],
    writer: TemplateGoalWriter | LLMGoalWriter,
    cfg: ReplayConfig,
    judge: Any = None,
    on_done: Callable[[Trajectory], None] | None = None,
) -> ShopTraces:
    """Goals for each outline, their replay on the shop's storefront and, with an LLM
    `judge`, its verdict on each (the rule-based verdict of the replay otherwise)."""
    from simpersona.traces.judge import Required

    t0 = time.perf_counter()
    goals = write_goals(outlines, writer)
    goal_seconds = time.perf_counter() - t0
    t0 = time.perf_counter()
    trajs = replay_shop(catalog, list(zip(outlines, goals, strict=True)), cfg, on_done=on_done)
    replay_seconds = time.perf_counter() - t0
    if judge is not None:
        for t in trajs:
            t.verdict = judge.judge(
                t.goals.stage2, Required.of(t.outline), t.steps, t.result.outcome
            )
    return ShopTraces(trajs, goal_seconds, replay_seconds)
