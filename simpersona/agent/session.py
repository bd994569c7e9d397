"""What a session is made of: the rules it runs under (`RuntimeConfig`), what to run
(`SessionSpec`), each step (`StepRecord`) and how it ended (`SessionResult`, one of
`OUTCOMES`). The loop that runs sessions is `simpersona.agent.runtime`."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import urlsplit

from simpersona.agent.browser import RequestStats
from simpersona.agent.observation import DEFAULT_TOKEN_BUDGET
from simpersona.agent.policy import Goal, Persona
from simpersona.agent.site_profile import SiteProfile

OUTCOMES: tuple[str, ...] = ("goal_reached", "steps_limit", "time_limit", "other", "crash")


@dataclass
class RuntimeConfig:
    """Limits and rules of a session."""

    max_steps: int = 30
    session_timeout_s: float = 180.0
    token_budget: int = DEFAULT_TOKEN_BUDGET
    # Hosts a session may load (subdomains included); None: the start URL's host only.
    allowed_domains: tuple[str, ...] | None = None
    # Invalid actions tolerated (each reported back in the progress log) before the session
    # ends with `other`; 0 ends it at the first.
    max_invalid_actions: int = 0
    # Orders (and payments) only with allow_orders and the store's host (or host:port) in
    # order_hosts: declared test stores. Elsewhere a session stops before submitting one.
    allow_orders: bool = False
    order_hosts: tuple[str, ...] = ()
    # Site profiles tried before the built-in ones (simpersona.agent.site_profile).
    profiles: tuple[SiteProfile, ...] = ()
    # robots.txt: "auto" honours it on hosts that are not loopback; "always"; "never".
    robots: str = "auto"
    # Where the sessions' clickstream goes when the store logs nothing for us (any store
    # but ours): canonical events derived in the browser (simpersona.agent.capture).
    capture_sink: Any = None
    capture_shop_id: str = ""

    def own_store(self, base_url: str) -> RuntimeConfig:
        """This config for a storefront the run serves itself (a test store): orders allowed
        on its host and port."""
        netloc = urlsplit(base_url).netloc.lower()
        return replace(self, allow_orders=True, order_hosts=(*self.order_hosts, netloc))


@dataclass
class SessionSpec:
    """One session to run: where, as whom, for what."""

    start_url: str
    buyer_id: str
    persona: Persona
    goal: Goal
    seed: int = 0
    key: str | None = None  # recording name; default: the buyer id


@dataclass
class StepRecord:
    """One step: what the agent saw and knew, what it did and why, and what came of it."""

    step: int
    observation: dict[str, Any]
    memory: list[str]
    action: dict[str, Any] | None
    raw_action: Any
    reasoning: str | None
    result: str
    error: str | None
    ms: float  # executing the action and reading the next page
    outcome: str | None = None  # the session's outcome, on its last step

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class SessionResult:
    """How a session ended, with its steps."""

    key: str
    buyer_id: str
    outcome: str
    message: str
    steps: int
    duration_s: float
    final_url: str
    session_id: str | None = None  # the store's session id (X-Session-Id), when it sends one
    persona: str = ""
    goal: str = ""
    records: list[StepRecord] = field(default_factory=list)
    action_ms: list[float] = field(default_factory=list)
    guard: str | None = None  # the safety guard that ended the session (safety.GUARDS)
    pages: list[str] = field(default_factory=list)  # page kinds seen, in order
    requests: RequestStats = field(default_factory=RequestStats)
    off_allowlist_completed: int = 0  # requests to other hosts that got an answer (must be 0)
    events: int = 0  # events captured in the browser (stores the project does not run)

    def reached(self, kind: str) -> bool:
        """Whether the session saw a page of `kind` (product, cart, checkout, …)."""
        return kind in self.pages

    def summary(self) -> dict[str, Any]:
        return {
            k: getattr(self, k)
            for k in (
                "key",
                "buyer_id",
                "session_id",
                "persona",
                "goal",
                "outcome",
                "message",
                "steps",
                "duration_s",
                "final_url",
                "guard",
            )
        }
