"""Replaying sessions on a storefront in the real browser, and judging the trajectories.

    trajectories = replay_sessions(base_url, [(outline, goals), …], ReplayConfig())

Each session lands where the original did (a product, collection, search or page URL: the
landing replays the first event), then the `ReplayTeacher` re-enacts the rest. The runtime's
goal is the stage-2 goal text with a `browse` target: the teacher ends the session itself when
the plan is done, and the judge decides whether the trajectory counts.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from simpersona.agent.browser import BrowserConfig, BrowserPool
from simpersona.agent.observation import DEFAULT_TOKEN_BUDGET
from simpersona.agent.policy import Goal, Persona
from simpersona.agent.recorder import SessionRecorder
from simpersona.agent.runtime import run_sessions
from simpersona.agent.session import RuntimeConfig, SessionResult, SessionSpec
from simpersona.store.app import INFO_PAGES, Links
from simpersona.traces.goals import GoalPair
from simpersona.traces.judge import Required, Verdict, judge_rules
from simpersona.traces.outline import SessionOutline
from simpersona.traces.teacher import PlannedStep, ReplayLog, ReplayTeacher


@dataclass
class ReplayConfig:
    """How replays run."""

    concurrency: int = 4
    max_steps: int = 60  # original sessions run longer than the agents' default 30
    session_timeout_s: float = 300.0
    token_budget: int = DEFAULT_TOKEN_BUDGET
    max_invalid_actions: int = 3
    browser: BrowserConfig = field(default_factory=BrowserConfig)


@dataclass
class Trajectory:
    """One replayed session: the original, its goals, what happened, and the verdict."""

    outline: SessionOutline
    goals: GoalPair
    result: SessionResult
    log: ReplayLog
    verdict: Verdict

    @property
    def steps(self) -> list[dict[str, Any]]:
        return [r.to_dict() for r in self.result.records]

    def summary(self) -> dict[str, Any]:
        return {
            "shop_id": self.outline.shop_id,
            "buyer_id": self.outline.buyer_id,
            "session_id": self.outline.session_id,
            "token": self.outline.token,
            "stratum": self.outline.stratum,
            "replay_buyer_id": self.result.buyer_id,
            "events": len(self.outline.events),
            "steps": self.result.steps,
            "outcome": self.result.outcome,
            "keep": self.verdict.keep,
            "missing": list(self.verdict.missing),
            "detours": self.log.detours,
            "skipped": len(self.log.skipped),
            "seconds": self.result.duration_s,
            "goal_stage1": self.goals.stage1,
            "goal_stage2": self.goals.stage2,
            "goal_stage2_intent": self.goals.stage2_intent,
            "intent": self.goals.intent,
            "category": self.goals.category,
            "writer": self.goals.writer,
        }


def replay_buyer_id(o: SessionOutline) -> str:
    """A stable buyer id for the replay of one session (its own cookie and cart)."""
    h = hashlib.sha256(f"{o.shop_id}\x1f{o.buyer_id}\x1f{o.session_id}".encode()).hexdigest()
    return f"replay-{h[:16]}"


def landing(o: SessionOutline, base_url: str) -> tuple[str, PlannedStep]:
    """Where the session starts, and the step the landing replays: the first event when it
    is a page a buyer can arrive on from outside, else the home page (a detour)."""
    links = Links(base_url.rstrip("/"))
    first = o.events[0] if o.events else None
    if first is not None:
        if first.event_type == "product_view" and first.product_id:
            return links.product(first.product_id), PlannedStep(0, ["product_view"], "landing")
        if first.event_type == "collection_view" and first.collection_id:
            return links.collection(first.collection_id), PlannedStep(
                0, ["collection_view"], "landing"
            )
        query = (first.search_query or "").strip()
        if first.event_type == "search" and query:
            return links.search(query), PlannedStep(0, ["search"], "landing")
        if first.event_type == "page_view":
            # Any page view lands as one: the cart, a page the store has, else the home page.
            path = urlsplit(first.url or "").path.rstrip("/")
            handle = path.rsplit("/", 1)[-1]
            if path.endswith("/cart"):
                url = links.cart()
            elif "/pages/" in path and handle in INFO_PAGES:
                url = links.page(handle)
            else:
                url = links.home()
            return url, PlannedStep(0, ["page_view"], "landing")
    return links.home(), PlannedStep(None, ["page_view"], "landing on the home page")


def replay_sessions(
    base_url: str,
    items: Sequence[tuple[SessionOutline, GoalPair]],
    config: ReplayConfig | None = None,
    recorder: SessionRecorder | None = None,
    on_done: Callable[[Trajectory], None] | None = None,
) -> list[Trajectory]:
    """Replay `items` on the store at `base_url` (concurrently) and judge each trajectory."""
    cfg = config or ReplayConfig()
    by_buyer: dict[str, tuple[SessionOutline, GoalPair]] = {}
    specs: list[SessionSpec] = []
    starts: dict[str, PlannedStep] = {}
    for outline, goals in items:
        buyer = replay_buyer_id(outline)
        by_buyer[buyer] = (outline, goals)
        url, step = landing(outline, base_url)
        starts[buyer] = step
        specs.append(
            SessionSpec(
                start_url=url,
                buyer_id=buyer,
                persona=Persona(label=str(outline.token) if outline.token is not None else ""),
                goal=Goal(goals.stage2, target="browse"),
                key=buyer,
            )
        )
    teacher = ReplayTeacher({b: o for b, (o, _) in by_buyer.items()}, starts)
    runtime = RuntimeConfig(
        max_steps=cfg.max_steps,
        session_timeout_s=cfg.session_timeout_s,
        token_budget=cfg.token_budget,
        max_invalid_actions=cfg.max_invalid_actions,
    ).own_store(base_url)  # replays complete the buyers' real orders on our storefront
    out: list[Trajectory] = []

    def done(res: SessionResult) -> None:
        outline, goals = by_buyer[res.buyer_id]
        verdict = judge_rules(Required.of(outline), [r.to_dict() for r in res.records], res.outcome)
        traj = Trajectory(outline, goals, res, teacher.logs[res.buyer_id], verdict)
        if recorder is not None:
            recorder.write(res, {"original": outline.to_dict(), **traj.summary()})
        out.append(traj)
        if on_done is not None:
            on_done(traj)

    async def main() -> None:
        async with BrowserPool(cfg.browser, size=cfg.concurrency) as pool:
            await run_sessions(pool, specs, teacher, runtime, on_done=done)

    asyncio.run(main())
    order = {b: i for i, b in enumerate(by_buyer)}
    return sorted(out, key=lambda t: order[t.result.buyer_id])
