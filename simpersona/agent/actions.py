"""The agent's action schema: one JSON object per step, validated before it runs.

    {"action": "search", "query": "trail sandals"}
    {"action": "click", "id": "product-link-p00012"}
    {"action": "type", "id": "email", "text": "ann@example.com"}
    {"action": "select", "id": "country", "value": "US"}
    {"action": "add_to_cart", "quantity": 2}
    {"action": "go_back"}
    {"action": "scroll", "direction": "down"}
    {"action": "end_session", "reason": "found nothing I like"}

Every action may carry a free-text `reasoning` (kept by the recorder, never executed).
`parse_action` accepts a dict, a JSON string, or an action model, and raises `ActionError`
with a message an agent (or a person) can act on.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

MAX_QUANTITY = 99  # the storefront's per-line limit
MAX_TEXT = 500


class ActionError(ValueError):
    """A malformed action (bad JSON, unknown kind, bad field) or one impossible on the page."""


class _Action(BaseModel):
    # Unknown fields are errors: a typo such as {"action": "click", "target": ...} must not
    # silently run as something else.
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)

    reasoning: str | None = Field(default=None, max_length=4000)

    def to_dict(self) -> dict[str, Any]:
        """The action as JSON-ready dict, without the reasoning."""
        return self.model_dump(exclude={"reasoning"}, exclude_none=True)


class Search(_Action):
    action: Literal["search"] = "search"
    query: str = Field(min_length=1, max_length=200)


class Click(_Action):
    action: Literal["click"] = "click"
    id: str = Field(min_length=1, max_length=200)


class Type(_Action):
    action: Literal["type"] = "type"
    id: str = Field(min_length=1, max_length=200)
    text: str = Field(max_length=MAX_TEXT)


class Select(_Action):
    action: Literal["select"] = "select"
    id: str = Field(min_length=1, max_length=200)
    value: str = Field(min_length=1, max_length=200)


class AddToCart(_Action):
    action: Literal["add_to_cart"] = "add_to_cart"
    quantity: int = Field(default=1, ge=1, le=MAX_QUANTITY, strict=True)


class GoBack(_Action):
    action: Literal["go_back"] = "go_back"


class Scroll(_Action):
    action: Literal["scroll"] = "scroll"
    direction: Literal["down", "up"] = "down"


class EndSession(_Action):
    action: Literal["end_session"] = "end_session"
    reason: str = Field(default="", max_length=500)


Action = Annotated[
    Search | Click | Type | Select | AddToCart | GoBack | Scroll | EndSession,
    Field(discriminator="action"),
]
ACTION_KINDS: tuple[str, ...] = (
    "search",
    "click",
    "type",
    "select",
    "add_to_cart",
    "go_back",
    "scroll",
    "end_session",
)
_ADAPTER: TypeAdapter[Any] = TypeAdapter(Action)


def _explain(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        loc = ".".join(str(x) for x in err["loc"] if x not in ACTION_KINDS)
        parts.append(f"{loc or 'action'}: {err['msg']}")
    return "; ".join(parts)


def parse_action(raw: object) -> _Action:
    """Validate `raw` (an action model, a dict, or a JSON string) into an action model.

    Raises ActionError naming what is wrong, e.g. "unknown action 'fly'; expected one of …".
    """
    if isinstance(raw, _Action):
        return raw
    if isinstance(raw, str | bytes):
        try:
            raw = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ActionError(f"action is not valid JSON: {exc}") from None
    if not isinstance(raw, dict):
        raise ActionError(f"action must be a JSON object, got {type(raw).__name__}")
    kind = raw.get("action")
    if kind not in ACTION_KINDS:
        raise ActionError(
            f"unknown action {kind!r}; expected one of: {', '.join(ACTION_KINDS)}"
            if kind is not None
            else f"action has no 'action' field; expected one of: {', '.join(ACTION_KINDS)}"
        )
    try:
        return _ADAPTER.validate_python(raw)
    except ValidationError as exc:
        raise ActionError(f"invalid {kind} action: {_explain(exc)}") from None


def schema_text() -> str:
    """One line per action kind, for prompts and docs."""
    return "\n".join(
        [
            '{"action": "search", "query": "..."}',
            '{"action": "click", "id": "<element id>"}',
            '{"action": "type", "id": "<input id>", "text": "..."}',
            '{"action": "select", "id": "<select id>", "value": "<option>"}',
            f'{{"action": "add_to_cart", "quantity": <1-{MAX_QUANTITY}>}}',
            '{"action": "go_back"}',
            '{"action": "scroll", "direction": "down|up"}',
            '{"action": "end_session", "reason": "..."}',
        ]
    )
