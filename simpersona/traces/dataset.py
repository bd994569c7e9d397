"""Stage-1 and stage-2 SFT datasets from judged trajectories (paper §2.1.2).

One example per step: `{"messages": [system, user, assistant], …metadata}` in chat-messages
JSONL. The user turn holds the stage's goal (stage 1: intent-neutral; stage 2: with intent),
the buyer-profile field with the session's persona token, the progress log and the page.
Sessions are downsampled round-robin over persona tokens, so every token in use is
represented before any token gets a second session (the paper: 3,600 sessions, ~34 K steps).
"""

from __future__ import annotations

import hashlib
import json
import os
import random
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

from simpersona.agent.prompt import messages_for_step, persona_token
from simpersona.lake import atomic_write_text

Stage = Literal["stage1", "stage2"]
PAPER_SESSIONS = 3600
K = TypeVar("K")
T = TypeVar("T")


# Share of stage-2 sessions taught with the intent-only goal (no carting or checkout
# instructions): the token, not the goal, must then decide how far down the funnel to go —
# which is how simulated agents are prompted (`GoalPair.stage2_intent`).
INTENT_ONLY_SHARE = 0.5


def uses_intent_goal(record: dict[str, Any], share: float = INTENT_ONLY_SHARE) -> bool:
    """Whether this session's stage-2 examples get the intent-only goal: a stable hash of
    the session, so a dataset rebuilt from the same records is identical."""
    if share <= 0 or not record.get("goal_stage2_intent"):
        return False
    key = f"{record['shop_id']}\x1f{record['session_id']}".encode()
    return int(hashlib.sha256(key).hexdigest()[:8], 16) / 0xFFFFFFFF < share


def _goal(record: dict[str, Any], stage: Stage, intent_share: float) -> str:
    if stage == "stage1":
        return record["goal_stage1"]
    if uses_intent_goal(record, intent_share):
        return record["goal_stage2_intent"]
    return record["goal_stage2"]


def intent_reasoning(reasoning: str, intent: str | None) -> str:
    """Stage 2's taught reasoning, opened by the goal's intent ("I am here to buy. I add …").

    A small model fine-tuned on a few hundred steps learns which page got which action and
    ignores the goal's intent, a word far up the prompt (docs/llm.md, "Why the tiny model
    does not separate"). Stating it at the head of the reply makes the intent a copy from the
    goal (which a pretrained model does reliably) and the action a choice right after it."""
    if intent not in ("buy", "browse"):
        return reasoning
    return f"I am here to {intent}. {reasoning}".strip()


def counterfactual_action(
    intent: str, observation: Mapping[str, Any], goal: str, action: Mapping[str, Any]
) -> dict[str, Any] | None:
    """What the other intent does on the goal's own product page, or None where the step is
    not such a page. The data pairs each page with one intent, so a model can fit every
    reply from the page alone and ignore its goal; this counterpart (the same page, history
    and token under the flipped intent) makes the intent the only difference. Buy sessions
    add the goal's product to the cart there; browse sessions never do, and leave."""
    title = str(observation.get("title") or "")
    if observation.get("kind") != "product" or not title or f"“{title}”" not in goal:
        return None
    if intent == "buy" and action.get("action") == "add_to_cart":
        return {
            "action": "end_session",
            "reason": "done: I only came to look",
            "reasoning": intent_reasoning(
                f"I have looked at “{title}”, so I leave the shop.", "browse"
            ),
        }
    if intent == "browse" and action.get("action") != "add_to_cart":
        return {
            "action": "add_to_cart",
            "quantity": 1,
            "reasoning": intent_reasoning(f"I add “{title}” to my cart.", "buy"),
        }
    return None


def step_examples(
    record: dict[str, Any],
    stage: Stage,
    intent_share: float = INTENT_ONLY_SHARE,
    counterfactual: bool = True,
) -> list[dict[str, Any]]:
    """The training examples of one kept trajectory record (`Trajectory.summary()` plus its
    `steps`): every step whose action ran (invalid attempts are not taught). Stage 2 uses
    the intent-only goal for a stable `intent_share` of sessions; with `counterfactual`, such
    a session's step on its goal's product page also gets its flipped-intent twin
    (`counterfactual_action`, goal_kind "intent_counterfactual")."""
    token = record.get("token")
    profile = persona_token(token) if token is not None else None
    goal = _goal(record, stage, intent_share)
    intent = record.get("intent")
    kind = (
        "neutral"
        if stage == "stage1"
        else ("intent" if goal is record.get("goal_stage2_intent") else "full")
    )
    out = []

    def example(goal: str, s: dict, action: dict, kind: str) -> dict[str, Any]:
        return {
            "messages": messages_for_step(
                goal, profile, s.get("memory") or [], s["observation"], action
            ),
            "stage": stage,
            "goal_kind": kind,
            "shop_id": record["shop_id"],
            "session_id": record["session_id"],
            "token": token,
            "stratum": record.get("stratum", ""),
            "step": s["step"],
        }

    for s in record["steps"]:
        if s.get("action") is None or s.get("error"):
            continue
        reasoning = s.get("reasoning") or ""
        if stage == "stage2":
            reasoning = intent_reasoning(reasoning, intent)
        out.append(example(goal, s, {**s["action"], "reasoning": reasoning}, kind))
        if counterfactual and kind == "intent" and intent in ("buy", "browse"):
            twin = counterfactual_action(intent, s["observation"], goal, s["action"])
            if twin is not None:
                other = "browse" if intent == "buy" else "buy"
                flipped = goal.replace(f"You are here to {intent} ", f"You are here to {other} ", 1)
                out.append(example(flipped, s, twin, "intent_counterfactual"))
    return out


def round_robin(
    groups: Mapping[K, Sequence[T]], n: int, seed: int, order: Callable[[K], Any]
) -> list[T]:
    """At most `n` items, one from each group in turn (groups sorted by `order`, each
    group's items in a seeded random order), so every group is in before any gets a second."""
    rng = random.Random(seed)
    queues = []
    for key in sorted(groups, key=order):
        rows = list(groups[key])
        rng.shuffle(rows)
        queues.append(rows)
    chosen: list[T] = []
    depth = 0
    while len(chosen) < n and any(depth < len(q) for q in queues):
        for q in queues:
            if depth < len(q) and len(chosen) < n:
                chosen.append(q[depth])
        depth += 1
    return chosen


def select_sessions(
    records: Sequence[dict[str, Any]], max_sessions: int = PAPER_SESSIONS, seed: int = 0
) -> list[dict[str, Any]]:
    """Kept records, at most `max_sessions`, drawn round-robin over persona tokens (each
    token's sessions in a seeded random order), so every token in use is represented."""
    by_token: dict[Any, list[dict[str, Any]]] = defaultdict(list)
    for r in records:
        if r.get("keep"):
            by_token[r.get("token")].append(r)
    groups = {
        t: sorted(rows, key=lambda r: (r["shop_id"], r["session_id"]))
        for t, rows in by_token.items()
    }
    return round_robin(groups, max_sessions, seed, order=lambda t: (t is None, str(t)))


@dataclass
class DatasetStats:
    sessions: int = 0
    examples: int = 0
    by_token: Counter[str] = field(default_factory=Counter)
    by_stratum: Counter[str] = field(default_factory=Counter)
    sessions_by_token: Counter[str] = field(default_factory=Counter)

    def as_metadata(self) -> dict[str, Any]:
        return {
            "sessions": self.sessions,
            "examples": self.examples,
            "tokens_in_use": len(self.sessions_by_token),
            "steps_per_session": round(self.examples / self.sessions, 2) if self.sessions else 0,
            "examples_by_stratum": dict(sorted(self.by_stratum.items())),
            "sessions_by_token": dict(sorted(self.sessions_by_token.items())),
        }


def build_dataset(
    records: Iterable[dict[str, Any]],
    stage: Stage,
    path: str | os.PathLike[str],
    max_sessions: int = PAPER_SESSIONS,
    seed: int = 0,
    intent_share: float = INTENT_ONLY_SHARE,
    counterfactual: bool = True,
) -> DatasetStats:
    """Select sessions and write their examples to `path` (JSONL, atomically)."""
    chosen = select_sessions(list(records), max_sessions, seed)
    stats = DatasetStats(sessions=len(chosen))
    lines = []
    for r in chosen:
        stats.sessions_by_token[str(r.get("token"))] += 1
        for ex in step_examples(r, stage, intent_share, counterfactual):
            lines.append(json.dumps(ex, ensure_ascii=False))
            stats.examples += 1
            stats.by_token[str(ex["token"])] += 1
            stats.by_stratum[ex["stratum"]] += 1
    atomic_write_text("\n".join(lines) + ("\n" if lines else ""), Path(path))
    return stats


def read_dataset(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    with open(path, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]
