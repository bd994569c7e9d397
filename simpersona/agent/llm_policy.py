"""The LLM agent policy: the fine-tuned model plays the persona (paper §2.3, §3.2).

    policy = LLMPolicy(LLMClient(LLMConfig(base_url=url, model="persona-model")))
    results = await run_sessions(pool, specs, policy)

Each step it builds the prompt exactly as the SFT examples were built (`agent.prompt`:
system prompt, goal, the persona token in the buyer-profile field, the runtime's progress
log, the page), asks the model for one completion and hands the raw text back to the
runtime. The runtime validates it: text that is not one valid JSON action ends the session
with outcome `other` (the paper's malformed-output error), so nothing is repaired here.

Sampling is seeded per (session seed, step), so a simulation replays identically against a
deterministic server, yet two agents of one persona still make different choices.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from typing import Any

from simpersona.agent.observation import Observation
from simpersona.agent.policy import Goal, Memory, Persona
from simpersona.agent.prompt import messages_for_step, persona_token
from simpersona.llm.client import LLMClient

_TOKEN_LABEL = re.compile(r"^\s*(?:<\|persona_)?(\d+)(?:\|>)?\s*$")


def profile_of(persona: Persona) -> str | None:
    """The buyer-profile field: the persona token of `persona` (its `token` attribute, or a
    label that is a token number such as "17" or "<|persona_17|>"); None for an agent
    without a persona (the no-persona ablation)."""
    token = persona.attributes.get("token")
    if token is None and (m := _TOKEN_LABEL.match(persona.label or "")):
        token = m.group(1)
    return persona_token(int(token)) if token is not None else None


CLICKABLE = ("link", "button", "radio", "checkbox")
MAX_REASONING = 300  # characters; bounds a constrained reply


def _obj(action: str, **fields: dict[str, Any]) -> dict[str, Any]:
    props = {"reasoning": {"type": "string", "maxLength": MAX_REASONING}}
    props["action"] = {"const": action}
    props.update(fields)
    return {
        "type": "object",
        "properties": props,
        "required": list(props),
        "additionalProperties": False,
    }


def action_schema(observation: Observation) -> dict[str, Any]:
    """The JSON schema of the actions possible on this page: `click` names a clickable
    element shown, `type` an input, `select` a select (and one of its options); the fields
    in the order the SFT examples write them (reasoning first). Used as a per-step
    `response_format` (guided decoding, as vLLM offers), every reply parses as an action
    that names a real element; what the agent does is still the model's choice."""
    els = observation.elements
    ids = lambda kinds: sorted({e.id for e in els if e.kind in kinds})  # noqa: E731
    options: list[dict[str, Any]] = [
        _obj("search", query={"type": "string", "minLength": 1, "maxLength": 80}),
        _obj("go_back"),
        _obj("scroll", direction={"enum": ["down", "up"]}),
        _obj("end_session", reason={"type": "string", "maxLength": 120}),
    ]
    # add_to_cart where the page has a control that does it: a parent product whose variant
    # must be opened first (a variant list of links) offers none, so none is offered.
    if observation.kind == "product" and any(
        e.role == "add_to_cart" or e.id.startswith("add-to-cart") for e in els
    ):
        options.append(_obj("add_to_cart", quantity={"type": "integer", "minimum": 1,
                                                      "maximum": 5}))  # fmt: skip
    if clicks := ids(CLICKABLE):
        options.append(_obj("click", id={"enum": clicks}))
    if inputs := ids(("input",)):
        options.append(_obj("type", id={"enum": inputs}, text={"type": "string", "maxLength": 80}))
    for e in els:
        if e.kind == "select" and e.options:
            options.append(_obj("select", id={"const": e.id}, value={"enum": list(e.options)}))
    return {"anyOf": options}


@dataclass
class PolicyStats:
    """What the policy asked: requests, tokens, and replies that did not parse as an action
    (the runtime turns those into outcome `other`)."""

    requests: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    truncated: int = 0  # replies cut by max_tokens
    seconds: float = 0.0
    replies: list[str] = field(default_factory=list)  # the last few raw replies, for errors


class LLMPolicy:
    """Asks an OpenAI-compatible endpoint (`simpersona serve-llm`, vLLM, …) for each action.

    `temperature` > 0 samples (agents of one persona differ); 0 is greedy. `max_tokens`
    bounds one reply: a reasoning sentence and the action fit in ~60 tokens of the tiny
    model's vocabulary. `constrained` sends `action_schema(page)` as the response format
    (guided decoding): replies are then always well-formed actions on real elements."""

    def __init__(
        self,
        client: LLMClient,
        temperature: float = 0.7,
        max_tokens: int = 160,
        keep_replies: int = 20,
        constrained: bool = False,
    ) -> None:
        self.client = client
        self.constrained = constrained
        self.temperature = temperature
        self.max_tokens = max_tokens
        self.keep_replies = keep_replies
        self.stats = PolicyStats()

    async def aclose(self) -> None:
        """Release the client's connections of the running event loop."""
        await self.client.aclose()

    def messages(
        self, observation: Observation, memory: Memory, persona: Persona, goal: Goal
    ) -> list[dict[str, str]]:
        """The chat messages of this step (the training format, without the answer)."""
        return messages_for_step(goal.text, profile_of(persona), memory.log, observation)

    async def act(
        self, observation: Observation, memory: Memory, persona: Persona, goal: Goal
    ) -> str:
        step = int(memory.state.get("llm_step", 0))
        memory.state["llm_step"] = step + 1
        t0 = time.monotonic()
        reply = await self.client.chat(
            self.messages(observation, memory, persona, goal),
            temperature=self.temperature,
            max_tokens=self.max_tokens,
            seed=(memory.seed * 1_000_003 + step) % (2**31),
            response_format=(
                {
                    "type": "json_schema",
                    "json_schema": {"name": "action", "schema": action_schema(observation)},
                }
                if self.constrained
                else None
            ),
        )
        s = self.stats
        s.requests += 1
        s.prompt_tokens += reply.prompt_tokens
        s.completion_tokens += reply.completion_tokens
        s.truncated += reply.finish_reason == "length"
        s.seconds += time.monotonic() - t0
        s.replies = [*s.replies, reply.content][-self.keep_replies :]
        return reply.content


def served_llm_policy(
    base_url: str,
    model: str,
    concurrency: int,
    *,
    temperature: float = 0.7,
    max_tokens: int = 160,
    client_max_tokens: int | None = None,
    constrained: bool = True,
) -> LLMPolicy:
    """The LLM policy on an OpenAI-compatible server at `base_url` (without /v1): the
    persona model served on loopback (serve-llm names it after its folder) or vLLM; two
    retries per request, `concurrency` requests at once, guided decoding by default."""
    from simpersona.llm.client import LLMClient, LLMConfig

    settings: dict = {"max_tokens": client_max_tokens} if client_max_tokens else {}
    config = LLMConfig(
        base_url=base_url + "/v1", model=model, max_retries=2, concurrency=concurrency, **settings
    )
    return LLMPolicy(
        LLMClient(config), temperature=temperature, max_tokens=max_tokens, constrained=constrained
    )
