"""The judge: keeps trajectories that reached the goal's required actions (paper §2.1.2).

Required actions come from the original session, not from the goal's wording: every search,
every product viewed, every product carted, checkout started, the order placed. The
rule-based judge checks them against the trajectory (the actions and the pages they led to);
`LLMJudge` asks an OpenAI-compatible endpoint instead (optional).
"""

from __future__ import annotations

import asyncio
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypedDict
from urllib.parse import parse_qs, urlsplit

from pydantic import BaseModel, Field

from simpersona.llm.client import LLMClient
from simpersona.traces.goals import load_prompt
from simpersona.traces.outline import SessionOutline


@dataclass(frozen=True)
class Required:
    """What a trajectory must show to count as the session replayed."""

    searches: tuple[str, ...] = ()
    products: tuple[str, ...] = ()
    carted: tuple[str, ...] = ()
    checkout: bool = False
    purchase: bool = False

    @classmethod
    def of(cls, o: SessionOutline) -> Required:
        def uniq(xs: Iterable[str | None]) -> tuple[str, ...]:
            return tuple(dict.fromkeys(x for x in xs if x))

        return cls(
            searches=uniq(" ".join((e.search_query or "").split()).lower() for e in o.of("search")),
            products=uniq(e.product_id for e in o.of("product_view")),
            carted=uniq(e.product_id for e in o.of("add_to_cart")),
            checkout=o.checkout_started,
            purchase=o.purchased,
        )

    def describe(self) -> list[str]:
        out = [f"search “{q}”" for q in self.searches]
        out += [f"view product {p}" for p in self.products]
        out += [f"add product {p} to the cart" for p in self.carted]
        out += ["start checkout"] * self.checkout + ["place the order"] * self.purchase
        return out


@dataclass(frozen=True)
class Verdict:
    keep: bool
    missing: tuple[str, ...] = ()
    reason: str = ""


class TrajectoryFacts(TypedDict):
    """`trajectory_facts`' answer."""

    searched: set[str]
    shown: set[str]
    carted: set[str]
    checkout: bool
    confirmed: bool


def trajectory_facts(steps: Sequence[dict[str, Any]]) -> TrajectoryFacts:
    """What a recorded trajectory did: queries searched, products whose page was shown,
    products added to the cart, whether a checkout or confirmation page was reached."""
    searched: set[str] = set()
    shown: set[str] = set()
    carted: set[str] = set()
    checkout = confirmed = False
    for s in steps:
        obs = s.get("observation") or {}
        pid = (obs.get("facts") or {}).get("product_id")
        if obs.get("kind") == "product" and pid:
            shown.add(pid)
        if obs.get("kind") == "search":  # a results page (the landing one too)
            q = parse_qs(urlsplit(obs.get("url", "")).query).get("q", [""])[0]
            searched.add(" ".join(q.split()).lower())
        checkout |= obs.get("kind") in ("checkout", "confirmation")
        confirmed |= obs.get("kind") == "confirmation"
        action = s.get("action") or {}
        if s.get("error"):
            continue
        if action.get("action") == "search":
            searched.add(" ".join(str(action.get("query", "")).split()).lower())
        if action.get("action") == "add_to_cart" and obs.get("kind") == "product" and pid:
            carted.add(pid)
    return {
        "searched": searched,
        "shown": shown,
        "carted": carted,
        "checkout": checkout,
        "confirmed": confirmed,
    }


def judge_rules(required: Required, steps: Sequence[dict[str, Any]], outcome: str) -> Verdict:
    """Keep when the session ended normally and every required action happened."""
    f = trajectory_facts(steps)
    missing = [f"search “{q}”" for q in required.searches if q not in f["searched"]]
    missing += [f"view {p}" for p in required.products if p not in f["shown"]]
    missing += [f"cart {p}" for p in required.carted if p not in f["carted"]]
    if required.checkout and not f["checkout"]:
        missing.append("start checkout")
    if required.purchase and not f["confirmed"]:
        missing.append("place the order")
    if outcome != "goal_reached":
        return Verdict(False, tuple(missing), f"session ended with {outcome}")
    if missing:
        return Verdict(False, tuple(missing), f"{len(missing)} required action(s) missing")
    return Verdict(True, (), "every required action happened")


class JudgeReply(BaseModel):
    success: bool
    reason: str = Field(default="", max_length=500)


@dataclass
class LLMJudge:
    """An LLM judge over the same inputs (optional; the rule-based judge is the default)."""

    client: LLMClient

    def messages(
        self, goal: str, required: Required, steps: Sequence[dict[str, Any]]
    ) -> list[dict[str, str]]:
        lines = []
        for s in steps:
            obs = s.get("observation") or {}
            lines.append(
                f"{s.get('step')}. on {obs.get('kind')} page: {s.get('action')}"
                + (f" (error: {s['error']})" if s.get("error") else "")
            )
        user = "\n".join(
            [
                f"Goal: {goal}",
                "Required:",
                *[f"- {r}" for r in required.describe()],
                "Trajectory:",
                *lines,
            ]
        )
        return [
            {"role": "system", "content": load_prompt("judge_system.txt")},
            {"role": "user", "content": user},
        ]

    async def ajudge(
        self, goal: str, required: Required, steps: Sequence[dict[str, Any]], outcome: str
    ) -> Verdict:
        reply = await self.client.chat(self.messages(goal, required, steps), schema=JudgeReply)
        r = reply.parsed
        assert isinstance(r, JudgeReply)
        return Verdict(bool(r.success) and outcome == "goal_reached", (), r.reason)

    def judge(
        self, goal: str, required: Required, steps: Sequence[dict[str, Any]], outcome: str
    ) -> Verdict:
        return asyncio.run(self.ajudge(goal, required, steps, outcome))


@dataclass
class KeepRates:
    """Kept / judged, overall and by stratum and by token."""

    kept: int = 0
    judged: int = 0
    by_stratum: dict[str, list[int]] = field(default_factory=lambda: defaultdict(lambda: [0, 0]))
    by_token: dict[str, list[int]] = field(default_factory=lambda: defaultdict(lambda: [0, 0]))
    missing: Counter[str] = field(default_factory=Counter)

    def add(self, stratum: str, token: int | None, verdict: Verdict) -> None:
        k = int(verdict.keep)
        self.kept += k
        self.judged += 1
        for table, key in ((self.by_stratum, stratum), (self.by_token, str(token))):
            table[key][0] += k
            table[key][1] += 1
        for m in verdict.missing:
            self.missing[m.split(" ", 1)[0]] += 1

    @property
    def rate(self) -> float:
        return self.kept / self.judged if self.judged else 0.0

    def table(self, which: str = "stratum") -> dict[str, float]:
        src = self.by_stratum if which == "stratum" else self.by_token
        return {k: round(v[0] / v[1], 4) for k, v in sorted(src.items()) if v[1]}
