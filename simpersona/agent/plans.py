"""Who the population's agents are (paper §3.2): each draws a persona token from the store's
mix p̂_s(k), then a real buyer of that token on the store (its counterpart), whose session
gives the intent, the goal and the landing page. Running them is
`simpersona.agent.population`.

    plans = plan_agents(shop, distribution, counterparts_by_token(outlines), n=100,
                        policy="llm", seed=0)
"""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

import polars as pl

from simpersona.agent.policy import GoalTarget, Persona
from simpersona.traces.goals import GoalPair, TemplateGoalWriter
from simpersona.traces.outline import GENERIC_COLLECTIONS, SessionOutline


@dataclass(frozen=True)
class AgentPlan:
    """One agent to run: who it plays, what it is told, where it starts."""

    agent_id: str
    shop_id: str
    policy: str
    token: int | None
    stratum: str
    intent: str
    goal: str
    start_path: str = "/"  # relative to the store's base URL
    goal_target: GoalTarget = "browse"
    product_id: str | None = None
    counterpart_buyer_id: str | None = None
    task_id: str | None = None
    task_kind: str | None = None
    seed: int = 0
    # What the goal names (the counterpart session's category, collections and searches): a
    # policy that reads no text (the Markov chains) looks for these.
    topics: tuple[str, ...] = ()
    queries: tuple[str, ...] = ()

    @property
    def buyer_id(self) -> str:
        return f"sim-{self.agent_id}"


def counterparts_by_token(outlines: Iterable[SessionOutline]) -> dict[int, list[SessionOutline]]:
    """token → the sessions of that token's real buyers (in a stable order)."""
    out: dict[int, list[SessionOutline]] = defaultdict(list)
    for o in outlines:
        if o.token is not None and o.events:
            out[int(o.token)].append(o)
    return {k: sorted(v, key=lambda o: (o.buyer_id, o.session_id)) for k, v in out.items()}


def _landing_path(o: SessionOutline) -> str:
    from simpersona.traces.replay import landing

    url, _ = landing(o, "")
    return url or "/"


def _token_strata(counterparts: Mapping[int, Sequence[SessionOutline]]) -> dict[int, str]:
    """token → the modal stratum of its counterpart buyers (ties: the earlier letter)."""
    out = {}
    for token, outlines in counterparts.items():
        per_buyer = {o.buyer_id: o.stratum for o in outlines}
        counts: dict[str, int] = defaultdict(int)
        for st in per_buyer.values():
            counts[st] += 1
        out[token] = min(counts, key=lambda st: (-counts[st], st))
    return out


def _goal_topics(category: str, o: SessionOutline) -> tuple[str, ...]:
    """The goal's category and the session's specific collections (not shop-wide ones)."""
    names = [category, *o.collections]
    return tuple(
        dict.fromkeys(
            n for n in names if n and n.strip().lower().replace(" ", "-") not in GENERIC_COLLECTIONS
        )
    )


def plan_agents(
    shop_id: str,
    distribution: pl.DataFrame,
    counterparts: Mapping[int, Sequence[SessionOutline]],
    n: int,
    policy: str,
    seed: int = 0,
    goal_writer: Any = None,
    *,
    with_token: bool | None = None,
    goal_kind: Literal["intent", "neutral"] = "intent",
    sampling: Literal["mix", "strata"] = "mix",
) -> list[AgentPlan]:
    """`n` agents of `shop_id`: tokens drawn from p̂_s(k) (`distribution`: token, share) among
    the tokens that have a counterpart session, each with a seeded counterpart. The same
    arguments always give the same plans (so a run can resume), whatever the policy label:
    agents of two policies with one seed are the same people, paired.

    `with_token` (default: unless the policy is `nopersona`) puts the token in the profile;
    `goal_kind` "intent" gives the intent-only stage-2 goal, "neutral" the stage-1 goal (the
    persona-token ablation under neutral intents, Table 9). `sampling` "mix" draws tokens
    from p̂_s (the store's population, as the paper); "strata" first draws the token's funnel
    stratum (its buyers' modal stratum on this shop) uniformly over the strata present, then
    the token from p̂_s within it: rare buyer types (purchasers are ~1 % of a sparse store)
    then get enough agents for the per-stratum alignment (Table 2 averages strata with equal
    weight) at a size a CPU can run. Per-cell figures are unbiased either way; population
    shares of the agents are not, under "strata"."""
    if not policy:
        raise ValueError("a policy label is required (markov, llm, nopersona, …)")
    if goal_kind not in ("intent", "neutral"):
        raise ValueError(f"goal_kind must be 'intent' or 'neutral', got {goal_kind!r}")
    if sampling not in ("mix", "strata"):
        raise ValueError(f"sampling must be 'mix' or 'strata', got {sampling!r}")
    if with_token is None:
        with_token = policy != "nopersona"
    writer = goal_writer or TemplateGoalWriter()
    dist = distribution.filter(pl.col("token").is_in(list(counterparts)))
    if dist.height == 0:
        raise ValueError(
            f"shop {shop_id}: no token of its distribution has a counterpart session "
            f"({distribution.height} tokens, {len(counterparts)} with sessions)"
        )
    tokens = [int(t) for t in dist["token"]]
    weights = [float(w) for w in dist["share"]]
    by_stratum: dict[str, tuple[list[int], list[float]]] = {}
    if sampling == "strata":
        strata = _token_strata(counterparts)
        for t, w in zip(tokens, weights, strict=True):
            ts, ws = by_stratum.setdefault(strata[t], ([], []))
            ts.append(t)
            ws.append(w)
    plans = []
    for i in range(n):
        # One generator per agent: agent i is the same person whatever n or the policy.
        rng = random.Random(f"population:{shop_id}:{seed}:{i}")
        if by_stratum:
            ts, ws = by_stratum[rng.choice(sorted(by_stratum))]
            token = rng.choices(ts, weights=ws)[0]
        else:
            token = rng.choices(tokens, weights=weights)[0]
        o = rng.choice(list(counterparts[token]))
        pair: GoalPair = writer.write(o)
        plans.append(
            AgentPlan(
                agent_id=f"{shop_id}-{policy}-{seed}-{i:05d}",
                shop_id=shop_id,
                policy=policy,
                token=token if with_token else None,
                stratum=o.stratum,
                intent=pair.intent if goal_kind == "intent" else "neutral",
                goal=pair.stage2_intent if goal_kind == "intent" else pair.stage1,
                start_path=_landing_path(o),
                counterpart_buyer_id=o.buyer_id,
                seed=seed * 1_000_003 + i,
                topics=_goal_topics(pair.category, o),
                queries=tuple(o.searches),
            )
        )
    return plans


def default_persona(plan: AgentPlan) -> Persona:
    """The agent's token as its label (the LLM policy puts it in the buyer-profile field)."""
    label = str(plan.token) if plan.token is not None else ""
    return Persona(label=label, attributes={"token": plan.token, "stratum": plan.stratum})


def plans_to_frame(plans: Sequence[AgentPlan]) -> pl.DataFrame:
    """The plans as a table (for previews and metadata)."""
    return pl.DataFrame([asdict(p) for p in plans])
