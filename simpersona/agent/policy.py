"""The policy interface, what a policy is told (persona, goal, memory), and a scripted policy.

A policy maps `(observation, memory, persona, goal)` to the next action: an action model, a
dict, or a JSON string (the runtime validates it, so a policy that emits bad JSON ends its
session with outcome `other` instead of crashing anything). `act` may be a coroutine
function (an LLM call) or a plain function (the Markov policy).
"""

from __future__ import annotations

from collections.abc import Awaitable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

from simpersona.agent.actions import _Action
from simpersona.agent.observation import Observation

GoalTarget = Literal["purchase", "add_to_cart", "view_product", "browse"]


# Every policy the simulation runs, in the order reports show them (summary keys end in
# _<policy>): the Markov chains fitted on the training shops, the same without the token,
# the in-sample oracle; the persona LLM, without its token, single-stage; Table 9's pair
# (docs/simulation.md).
POLICIES: tuple[str, ...] = (
    "markov",
    "markov_notoken",
    "markov_oracle",
    "llm",
    "nopersona",
    "llm_single",
    "llm_neutral",
    "nopersona_neutral",
)


@dataclass(frozen=True)
class Persona:
    """Who the agent plays: a persona label (token, buyer type or stratum), its
    plain-English description when there is one, and the buyer's interests (search phrases
    and topics such as collection names, most wanted first)."""

    label: str
    description: str = ""
    interests: tuple[str, ...] = ()
    attributes: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Goal:
    """What the session is for. `target` decides when the runtime calls the goal reached:
    `purchase` on an order confirmation, `add_to_cart` when the cart count rises,
    `view_product` on a product page (`product_id` set: that product), `browse` when the
    agent ends the session itself."""

    text: str
    target: GoalTarget = "browse"
    product_id: str | None = None


@dataclass
class Memory:
    """The session so far: a progress log (one line per step, recorded) and the policy's
    private state (not recorded; e.g. the Markov policy's random generator)."""

    seed: int = 0
    log: list[str] = field(default_factory=list)
    state: dict[str, Any] = field(default_factory=dict)

    def note(self, line: str) -> None:
        self.log.append(line)


ActResult = _Action | dict[str, Any] | str


@runtime_checkable
class Policy(Protocol):
    """Anything with `act(observation, memory, persona, goal) -> action`."""

    def act(
        self, observation: Observation, memory: Memory, persona: Persona, goal: Goal
    ) -> ActResult | Awaitable[ActResult]: ...


class ScriptedPolicy:
    """Plays a fixed list of actions (models, dicts or raw strings, malformed ones too), then
    ends the session. For tests and for replaying a recorded trace."""

    def __init__(self, actions: Sequence[ActResult], end_reason: str = "script finished") -> None:
        self.actions = list(actions)
        self.end_reason = end_reason

    def act(
        self, observation: Observation, memory: Memory, persona: Persona, goal: Goal
    ) -> ActResult:
        i = memory.state.get("script_pos", 0)
        memory.state["script_pos"] = i + 1
        if i < len(self.actions):
            return self.actions[i]
        return {"action": "end_session", "reason": self.end_reason}
