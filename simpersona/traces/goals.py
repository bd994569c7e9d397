"""Navigation goals from real sessions (paper §2.1.2): a stage-1 goal without intent ("You are
interested in skirts. …") and a stage-2 goal with the intent of the buyer's funnel stratum
(A–C: "You are here to buy skirts", D and E: "You are here to browse skirts"), both keeping the
session's structure — what was searched, looked at, compared, carted, and whether checkout
started.

`TemplateGoalWriter` is deterministic and offline (the default). `LLMGoalWriter` asks any
OpenAI-compatible endpoint with the prompt files in `prompts/`, validates the reply, and
falls back to the template for a goal that breaks the rules (counted in `fallbacks`).
"""

from __future__ import annotations

import asyncio
import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import resources
from typing import Literal

from pydantic import BaseModel, Field

from simpersona.llm.client import LLMClient
from simpersona.traces.outline import SessionEvent, SessionOutline

Intent = Literal["buy", "browse"]
BUY_STRATA = frozenset({"A", "B", "C"})
DEFAULT_CATEGORY = "what this shop sells"
_STAGE1_HEAD = re.compile(r"^\s*You are interested in [^.]*\.")
# Words that state a buy or browse intent; none may appear in a stage-1 goal.
INTENT_PATTERN = re.compile(
    r"\b(buy\w*|bought|purchas\w*|order\w*|check\s*out\w*|checkout\w*|cart\w*|pay\w*|"
    r"brows\w*|window[- ]shop\w*|spend\w*)\b",
    re.IGNORECASE,
)
MAX_NAMED = 3  # products named per sentence; the rest are "and N more"


def intent_of(stratum: str) -> Intent:
    """A–C (purchased, checked out, carted) buy; D and E browse."""
    return "buy" if stratum in BUY_STRATA else "browse"


def intent_words(text: str) -> list[str]:
    """The intent words in `text` (empty for an intent-neutral goal)."""
    return [m.group(0) for m in INTENT_PATTERN.finditer(text)]


def is_intent_neutral(text: str) -> bool:
    return not intent_words(text)


@dataclass(frozen=True)
class GoalPair:
    """The two goals of one session, and how they were written."""

    stage1: str
    stage2: str
    intent: Intent
    category: str
    writer: str  # "template" | "llm" | "llm+template" (a fallback)

    @property
    def stage2_intent(self) -> str:
        """The stage-2 goal without the funnel: the intent head and the stage-1 structure
        ("You are here to buy skirts. Search for …"). What a simulated agent is told, and a
        share of the stage-2 examples: carting and checkout are then the persona's to
        decide, not the goal's (the paper's agents get a token and an intent, nothing more)."""
        head = f"You are here to {self.intent} {(self.category or DEFAULT_CATEGORY).lower()}."
        body = _STAGE1_HEAD.sub("", self.stage1, count=1).strip()
        return f"{head} {body}".strip() if body != self.stage1.strip() else head


def _pick(options: Sequence[str], key: str, salt: str) -> str:
    h = hashlib.blake2b(f"{salt}:{key}".encode(), digest_size=4).digest()
    return options[int.from_bytes(h, "big") % len(options)]


def _quote(xs: Sequence[str]) -> str:
    return (
        " and ".join(f"“{x}”" for x in xs)
        if len(xs) <= 2
        else (", ".join(f"“{x}”" for x in xs[:-1]) + f" and “{xs[-1]}”")
    )


def _names(xs: Sequence[str]) -> str:
    shown = list(xs[:MAX_NAMED])
    rest = len(xs) - len(shown)
    text = _quote(shown)
    return text + (f" and {rest} more" if rest else "")


def _category(outline: SessionOutline) -> str:
    return outline.category or DEFAULT_CATEGORY


class TemplateGoalWriter:
    """Deterministic goals: the same session always gets the same words (phrasing varies
    across sessions by a hash of the session id)."""

    name = "template"

    def structure(self, o: SessionOutline, neutral: bool = False) -> list[str]:
        """Sentences for the navigation structure (searches, collections, views). `neutral`
        leaves out names that themselves contain an intent word (a product called "Order
        Book" would otherwise put "order" into a stage-1 goal)."""
        key = o.session_id

        def ok(xs: list[str]) -> list[str]:
            return [x for x in xs if is_intent_neutral(x)] if neutral else xs

        searches, collections, viewed = ok(o.searches), ok(o.collections), ok(o.viewed)
        out: list[str] = []
        if searches:
            verb = _pick(["Start by searching for", "Search for", "Look up"], key, "s")
            out.append(f"{verb} {_quote(searches[:MAX_NAMED])}.")
        if collections:
            out.append(
                f"Have a look at the {_names(collections)} collection"
                f"{'s' if len(collections) > 1 else ''}."
            )
        if len(viewed) >= 2:
            verb = _pick(["Compare", "Look closely at and compare", "Weigh up"], key, "c")
            out.append(f"{verb} {_names(viewed)}.")
        elif viewed:
            verb = _pick(["Take a look at", "Open", "Check the details of"], key, "v")
            out.append(f"{verb} {_names(viewed)}.")
        if not out:
            out.append(_pick(["Look around the shop's pages.", "Have a look around."], key, "p"))
        return out

    def funnel(self, o: SessionOutline) -> list[str]:
        """Sentences for carting and checkout (stage 2 only)."""
        out: list[str] = []
        if o.carted:
            out.append(f"Add {_names(o.carted)} to your cart.")
        if o.removed:
            out.append(f"Then change your mind and remove {_names(o.removed)} from the cart.")
        if o.purchased:
            out.append("Go to checkout and place the order (test payment).")
        elif o.checkout_started:
            out.append("Start the checkout, but leave before paying.")
        return out

    def write(self, outline: SessionOutline) -> GoalPair:
        cat = _category(outline)
        intent = intent_of(outline.stratum)
        struct = self.structure(outline)
        neutral_cat = cat if is_intent_neutral(cat) else DEFAULT_CATEGORY
        stage1 = " ".join(
            [f"You are interested in {neutral_cat.lower()}.", *self.structure(outline, True)]
        )
        head = f"You are here to {intent} {cat.lower()}."
        stage2 = " ".join([head, *struct, *self.funnel(outline)])
        return GoalPair(stage1, stage2, intent, cat, self.name)


class GoalReply(BaseModel):
    """What the LLM goal writer must answer."""

    stage1_goal: str = Field(min_length=10, max_length=1200)
    stage2_goal: str = Field(min_length=10, max_length=1500)


def load_prompt(name: str) -> str:
    """The text of a prompt template file in simpersona/traces/prompts/."""
    return resources.files("simpersona.traces").joinpath("prompts", name).read_text("utf-8")


def event_line(i: int, e: SessionEvent) -> str:
    what = {
        "search": f"searched “{e.search_query}”",
        "product_view": f"viewed product “{e.product_title or e.product_id}”",
        "collection_view": f"opened collection “{e.collection_title or e.collection_id}”",
        "add_to_cart": f"added “{e.product_title or e.product_id}” to the cart"
        + (f" (quantity {e.quantity})" if e.quantity and e.quantity > 1 else ""),
        "remove_from_cart": f"removed “{e.product_title or e.product_id}” from the cart",
        "checkout_started": "started checkout",
        "checkout_completed": "placed the order",
        "page_view": f"viewed page {e.url or ''}".strip(),
    }.get(e.event_type, e.event_type)
    return f"{i}. {what}"


@dataclass
class LLMGoalWriter:
    """Goals written by an LLM from the prompt files; rule-breaking goals fall back to the
    template writer's (counted)."""

    client: LLMClient
    fallback: TemplateGoalWriter = field(default_factory=TemplateGoalWriter)
    max_events: int = 40
    fallbacks: int = 0
    name: str = "llm"

    def messages(self, o: SessionOutline) -> list[dict[str, str]]:
        cat = _category(o).lower()
        intent = intent_of(o.stratum)
        system = (
            load_prompt("goal_system.txt")
            .replace("{category}", cat)
            .replace("{intent_sentence}", f"You are here to {intent} {cat}.")
        )
        lines = [event_line(i + 1, e) for i, e in enumerate(o.events[: self.max_events])]
        if len(o.events) > self.max_events:
            lines.append(f"… and {len(o.events) - self.max_events} more events")
        user = load_prompt("goal_user.txt").format(
            shop_id=o.shop_id, category=cat, intent=intent, event_lines="\n".join(lines)
        )
        return [{"role": "system", "content": system}, {"role": "user", "content": user}]

    def _accept(self, o: SessionOutline, reply: GoalReply) -> GoalPair:
        tmpl = self.fallback.write(o)
        stage1, stage2, writer = reply.stage1_goal.strip(), reply.stage2_goal.strip(), "llm"
        if not is_intent_neutral(stage1):
            stage1, writer = tmpl.stage1, "llm+template"
        head = f"You are here to {tmpl.intent}"
        if not stage2.lower().startswith(head.lower()):
            stage2, writer = tmpl.stage2, "llm+template"
        if writer != "llm":
            self.fallbacks += 1
        return GoalPair(stage1, stage2, tmpl.intent, tmpl.category, writer)

    async def awrite(self, outline: SessionOutline) -> GoalPair:
        reply = await self.client.chat(self.messages(outline), schema=GoalReply)
        assert isinstance(reply.parsed, GoalReply)
        return self._accept(outline, reply.parsed)

    async def awrite_many(self, outlines: Sequence[SessionOutline]) -> list[GoalPair]:
        return list(await asyncio.gather(*(self.awrite(o) for o in outlines)))

    def write(self, outline: SessionOutline) -> GoalPair:
        return asyncio.run(self.awrite(outline))
