"""The agent's prompt: one format for the SFT traces and for the LLM policy, so the model
sees at run time exactly what it was trained on (SPEC §9).

    system    role, the JSON action schema, the rules
    user      goal, buyer profile (the persona token, and nothing else), progress log, page
    assistant {"reasoning": "…", "action": "click", "id": "…"}
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from simpersona.agent.actions import schema_text
from simpersona.agent.observation import Element, Observation

SYSTEM_PROMPT = f"""You are a shopper using an online store through a browser.
Each turn you see your goal, your buyer profile, what you have done so far and the current page.
Reply with exactly one JSON object: the next action, with a short "reasoning" first.

Actions:
{schema_text()}

Rules:
- Use only element ids shown on the current page.
- One action per reply; no text outside the JSON object.
- Act the way your buyer profile shops: it decides how much you look, compare and commit.
- When you have done what you came for, or want to leave, use end_session."""

NO_PROGRESS = "(nothing yet: you just arrived)"
NO_PROFILE = "(none)"  # the buyer-profile field of an agent without a persona token


def observation_from_dict(d: Mapping[str, Any]) -> Observation:
    """An observation back from its recorded `to_dict()` form."""
    elements = tuple(
        Element(**{**e, "options": tuple(e["options"]) if e.get("options") else None})
        for e in d.get("elements", [])
    )
    return Observation(
        url=d["url"],
        kind=d["kind"],
        title=d.get("title", ""),
        text=d.get("text", ""),
        elements=elements,
        facts=dict(d.get("facts") or {}),
        form_error=d.get("form_error"),
        truncated=int(d.get("truncated") or 0),
    )


def user_turn(
    goal: str,
    profile: str | None,
    progress: Sequence[str],
    observation: Observation | Mapping[str, Any],
) -> str:
    """The user message of one step. `profile` is the persona token (e.g. `<|persona_17|>`);
    it appears in the profile field and nowhere else."""
    obs = (
        observation if isinstance(observation, Observation) else observation_from_dict(observation)
    )
    lines = [
        f"Goal: {goal}",
        f"Buyer profile: {profile or NO_PROFILE}",
        "Progress so far:",
        *([f"  {p}" for p in progress] or [f"  {NO_PROGRESS}"]),
        "Current page:",
        obs.render(),
    ]
    return "\n".join(lines)


def assistant_turn(action: Mapping[str, Any], reasoning: str | None = None) -> str:
    """The assistant message: reasoning first (think, then act), then the action's fields."""
    body = {k: v for k, v in action.items() if k != "reasoning" and v is not None}
    why = reasoning if reasoning is not None else action.get("reasoning")
    out = {"reasoning": why or ""}
    out.update(body)
    return json.dumps(out, ensure_ascii=False)


def messages_for_step(
    goal: str,
    profile: str | None,
    progress: Sequence[str],
    observation: Observation | Mapping[str, Any],
    action: Mapping[str, Any] | None = None,
) -> list[dict[str, str]]:
    """The chat messages of one step (with the assistant turn when `action` is given)."""
    msgs = [
        {"role": "system", "content": SYSTEM_PROMPT},
        {"role": "user", "content": user_turn(goal, profile, progress, observation)},
    ]
    if action is not None:
        msgs.append({"role": "assistant", "content": assistant_turn(action)})
    return msgs


def persona_token(k: int) -> str:
    """The special token of persona `k` (SPEC §10): `<|persona_k|>`."""
    return f"<|persona_{int(k)}|>"
