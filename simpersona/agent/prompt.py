"""The agent's prompt: one format for the SFT traces and for the LLM policy, so the model
sees at run time exactly what it was trained on (paper §2.1.2).

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

SYSTEM_PROMPT = f"""You are a shopper in an online store. Reply with one JSON action, "reasoning" first:
{schema_text()}
Use only ids shown on the page. Shop as your buyer profile shops. End the session when done."""

NO_PROGRESS = "(nothing yet: you just arrived)"
RECENT_STEPS = 5  # progress-log entries a prompt shows (the rest are counted)
NO_PROFILE = "(none)"  # the buyer-profile field of an agent without a persona token


def observation_from_dict(d: Mapping[str, Any]) -> Observation:
    """An observation back from its recorded `to_dict()` form."""
    # to_dict leaves out empty fields: an element without a label (an unlabelled input on a
    # store we did not build) comes back with an empty one.
    elements = tuple(
        Element(**{"label": "", **e, "options": tuple(e["options"]) if e.get("options") else None})
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
    show: Sequence[str] = (),
) -> str:
    """The user message of one step. `profile` is the persona token (e.g. `<|persona_17|>`);
    it appears in the profile field and nowhere else. `show`: element ids the page must
    list (a taught action's target)."""
    obs = (
        observation if isinstance(observation, Observation) else observation_from_dict(observation)
    )
    recent = list(progress)[-RECENT_STEPS:]
    earlier = len(progress) - len(recent)
    lines = [
        f"Goal: {goal}",
        f"Buyer profile: {profile or NO_PROFILE}",
        "Last steps:" + (f" ({earlier} earlier)" if earlier else ""),
        *(recent or [NO_PROGRESS]),
        obs.render(show),
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
    target = [str(action["id"])] if action is not None and action.get("id") else []
    msgs = [
        {"role": "system", "content": SYSTEM_PROMPT},
        {"role": "user", "content": user_turn(goal, profile, progress, observation, target)},
    ]
    if action is not None:
        msgs.append({"role": "assistant", "content": assistant_turn(action)})
    return msgs


def persona_token(k: int) -> str:
    """The special token of persona `k` (paper §2.3): `<|persona_k|>`."""
    return f"<|persona_{int(k)}|>"
