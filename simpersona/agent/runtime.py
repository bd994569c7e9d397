"""The session loop: observe, ask the policy, validate, act, record, until an outcome.

Outcomes (exactly one per session, with a message):

| outcome | when |
|---|---|
| `goal_reached` | the goal's condition holds (see `Goal`), or the agent ends a `browse` session |
| `steps_limit` | `max_steps` actions ran without an end |
| `time_limit` | the session's wall-clock budget ran out (policy time included) |
| `other` | a malformed or impossible action, a blocked domain, ending before the goal, or a safety guard's stop (below) |
| `crash` | the store answered 5xx, the page or browser closed, or the browser failed |

Orders are placed only where the run allows them (`RuntimeConfig.allow_orders` and the
store's host in `order_hosts`; a simulation declares the storefront it serves). Anywhere
else the session stops before the final order submission, or as soon as a page asks for
card details; a purchase goal that got that far counts as reached, and the session's `guard`
says which guard stopped it (`simpersona.agent.safety`). The same goes for robots.txt and
the allowlist.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from simpersona.agent.actions import ActionError, EndSession, _Action, parse_action
from simpersona.agent.browser import (
    BrowserPool,
    RequestStats,
    host_allowed,
    host_of,
    is_blocked_failure,
)
from simpersona.agent.capture import SessionCapture
from simpersona.agent.execute import blocked_navigation, execute
from simpersona.agent.observation import Observation, observe
from simpersona.agent.policy import Goal, Memory, Policy
from simpersona.agent.safety import RobotsGuard, order_submission, orders_allowed
from simpersona.agent.session import (
    RuntimeConfig,
    SessionResult,
    SessionSpec,
    StepRecord,
)


class _Ended(Exception):
    def __init__(self, outcome: str, message: str, guard: str | None = None) -> None:
        super().__init__(message)
        self.outcome, self.message, self.guard = outcome, message, guard


def goal_met(goal: Goal, obs: Observation, start_cart: int) -> bool:
    """Whether the page shows the goal reached (see `Goal`)."""
    if goal.target == "purchase":
        return obs.kind == "confirmation"
    if goal.target == "add_to_cart":
        return obs.cart_count > start_cart
    if goal.target == "view_product":
        return obs.kind == "product" and goal.product_id in (None, obs.product_id)
    return False


def _summarize(note: str, obs: Observation) -> str:
    bits = [note, f"-> {obs.kind} page"]
    if obs.title:
        bits.append(f"“{obs.title[:60]}”")
    if obs.form_error:
        bits.append(f"(error: {obs.form_error[:120]})")
    return " ".join(bits)


def _is_closed_error(exc: BaseException, page: Any) -> bool:
    text = str(exc)
    return page.is_closed() or "has been closed" in text or "Target closed" in text


class _PageWatch:
    """Follows a page's main-frame responses: the last status, 5xx bodies' error text, the
    store's session id, and navigations the allowlist blocked."""

    def __init__(self, page: Any, allow: Sequence[str] = ()) -> None:
        self.page = page
        self.allow = tuple(allow)
        self.status: int | None = None
        self.status_url = ""
        self.session_id: str | None = None
        self.blocked: str | None = None
        self.writes_ok = 0  # write requests to the store answered below 400
        self.off_allowlist_completed = 0
        page.on("response", self._on_response)
        page.on("requestfailed", self._on_failed)
        page.on("requestfinished", self._on_finished)

    def _on_finished(self, request: Any) -> None:
        off = self.allow and not host_allowed(host_of(request.url), self.allow)
        if off and request.url.startswith(("http://", "https://")):
            self.off_allowlist_completed += 1

    def _on_response(self, response: Any) -> None:
        req = response.request
        if req.method not in ("GET", "HEAD", "OPTIONS") and response.status < 400:
            self.writes_ok += 1
        if req.resource_type != "document" or req.frame != self.page.main_frame:
            return
        self.status, self.status_url = response.status, response.url
        sid = response.headers.get("x-session-id")
        if sid:
            self.session_id = sid

    def detach(self) -> None:
        # A reused tab serves other sessions next: stop listening.
        self.page.remove_listener("response", self._on_response)
        self.page.remove_listener("requestfailed", self._on_failed)
        self.page.remove_listener("requestfinished", self._on_finished)

    async def settle(self, timeout_s: float = 1.0) -> None:
        """Wait briefly for a blocked request's report (it may trail the navigation error)."""
        end = time.monotonic() + timeout_s
        while not self.blocked and time.monotonic() < end:
            await asyncio.sleep(0.02)

    def _on_failed(self, request: Any) -> None:
        main = request.resource_type == "document" and request.frame == self.page.main_frame
        # A redirect the route aborted fails with another code: any failure of a page on a
        # host outside the allowlist is the pool's doing.
        off = bool(self.allow) and not host_allowed(host_of(request.url), self.allow)
        if main and (off or is_blocked_failure(request.failure or "")):
            self.blocked = request.url

    def check(self) -> None:
        if self.blocked:
            url, self.blocked = self.blocked, None
            raise ActionError(blocked_navigation(url))
        if self.status is not None and self.status >= 500:
            raise _Ended("crash", f"the store answered HTTP {self.status} at {self.status_url}")


async def _back_from_error_page(page: Any) -> None:
    """After a blocked navigation Chromium commits its error page; return to the last page."""
    with contextlib.suppress(Exception):
        await page.wait_for_url(lambda u: u.startswith("chrome-error:"), timeout=2000)
    if page.url.startswith("chrome-error:"):
        await page.go_back(wait_until="domcontentloaded")


async def _maybe_await(value: Any) -> Any:
    return await value if inspect.isawaitable(value) else value


@functools.lru_cache(maxsize=4)
def _robots_guard(mode: str) -> RobotsGuard:
    # One per mode and process: each host's robots.txt is fetched once.
    return RobotsGuard(mode)


StepHook = Callable[[Any, int, Observation], Awaitable[None]]


async def run_session(
    pool: BrowserPool,
    spec: SessionSpec,
    policy: Policy,
    config: RuntimeConfig | None = None,
    step_hook: StepHook | None = None,
) -> SessionResult:
    """Run one session in a fresh browser context of `pool`; never raises for anything the
    store, the browser or the policy does (those become outcomes)."""
    cfg = config or RuntimeConfig()
    allow = cfg.allowed_domains or (host_of(spec.start_url),)
    key = spec.key or spec.buyer_id
    memory = Memory(seed=spec.seed)
    memory.state["buyer_id"] = spec.buyer_id
    records: list[StepRecord] = []
    action_ms: list[float] = []
    # The clock starts once the pool hands out a page: waiting for a free slot is not the
    # session's time (run_sessions queues every session at once).
    t0 = time.monotonic()
    deadline = t0 + cfg.session_timeout_s
    final_url = spec.start_url
    watch: _PageWatch | None = None
    outcome, message = "other", ""

    def remaining() -> float:
        left = deadline - time.monotonic()
        if left <= 0:
            raise _Ended("time_limit", f"the session's {cfg.session_timeout_s:g} s budget ran out")
        return left

    def finish_record(out: str) -> None:
        if records:
            records[-1].outcome = out

    may_order = orders_allowed(spec.start_url, cfg.allow_orders, cfg.order_hosts)
    robots = _robots_guard(cfg.robots) if cfg.robots != "never" else None
    stats = RequestStats()
    pages: list[str] = []
    guard: str | None = None
    capture: SessionCapture | None = None
    if cfg.capture_sink is not None:
        capture = SessionCapture(
            cfg.capture_sink,
            cfg.capture_shop_id or host_of(spec.start_url),
            spec.buyer_id,
            f"{spec.buyer_id}-s{spec.seed}",
        )
    refusal = None
    if not host_allowed(host_of(spec.start_url), allow):
        refusal = (
            "allowlist",
            f"the start URL's host {host_of(spec.start_url)!r} is not in the allowlist",
        )
    elif robots is not None and not await robots.allowed_async(spec.start_url):
        refusal = ("robots", f"robots.txt of {host_of(spec.start_url)} disallows {spec.start_url}")
    if refusal is not None:
        return SessionResult(
            key=key,
            buyer_id=spec.buyer_id,
            outcome="other",
            message=refusal[1],
            steps=0,
            duration_s=0.0,
            final_url=spec.start_url,
            persona=spec.persona.label,
            goal=spec.goal.text,
            guard=refusal[0],
        )

    async def look(page: Any) -> Observation:
        o = await observe(
            page, cfg.token_budget, cfg.profiles, status=watch.status if watch else None
        )
        pages.append(o.kind)
        return o

    try:
        async with pool.page(
            spec.buyer_id,
            headers_for=spec.start_url,
            allowlist=allow,
            guard_orders=not may_order,
            stats=stats,
        ) as page:
            t0 = time.monotonic()
            deadline = t0 + cfg.session_timeout_s
            watch = _PageWatch(page, allow)
            try:
                await asyncio.wait_for(
                    page.goto(spec.start_url, wait_until="domcontentloaded"), remaining()
                )
                await pool.forget_history(page)
                watch.check()
                obs = await look(page)
                if capture is not None:
                    capture.page(obs)
                    capture.fill_cart_count(obs)
                start_cart = obs.cart_count
                invalid = 0
                step = 0
                while True:
                    final_url = obs.url
                    if goal_met(spec.goal, obs, start_cart):
                        raise _Ended("goal_reached", f"{spec.goal.target} reached at {obs.url}")
                    if obs.is_payment_step and not may_order:
                        raise _Ended(
                            "goal_reached" if spec.goal.target == "purchase" else "other",
                            "order guard: stopped at the payment step; this store is not "
                            "declared a test store (--allow-orders --order-host)",
                            "order_guard",
                        )
                    if step >= cfg.max_steps:
                        raise _Ended("steps_limit", f"{cfg.max_steps} steps without an end")
                    step += 1
                    raw = await asyncio.wait_for(
                        _maybe_await(policy.act(obs, memory, spec.persona, spec.goal)),
                        remaining(),
                    )
                    rec = StepRecord(
                        step=step,
                        observation=obs.to_dict(),
                        memory=list(memory.log),
                        action=None,
                        raw_action=raw if isinstance(raw, str | dict) else None,
                        reasoning=None,
                        result="",
                        error=None,
                        ms=0.0,
                    )
                    records.append(rec)
                    t_act = time.monotonic()
                    try:
                        action: _Action = parse_action(raw)
                        rec.action, rec.reasoning = action.to_dict(), action.reasoning
                        rec.raw_action = None
                        if isinstance(action, EndSession):
                            rec.result = f"ended: {action.reason}"
                            if spec.goal.target == "browse" or goal_met(spec.goal, obs, start_cart):
                                raise _Ended("goal_reached", f"agent ended: {action.reason}")
                            raise _Ended(
                                "other",
                                f"agent ended the session before the {spec.goal.target} goal: "
                                f"{action.reason}",
                            )
                        why = order_submission(action, obs)
                        if why and not may_order:
                            rec.result = "stopped by the order guard"
                            raise _Ended(
                                "goal_reached" if spec.goal.target == "purchase" else "other",
                                f"order guard: stopped before the order submission ({why}); "
                                "this store is not declared a test store "
                                "(--allow-orders --order-host)",
                                "order_guard",
                            )
                        el = obs.element(getattr(action, "id", "") or "")
                        if (
                            robots is not None
                            and el is not None
                            and el.href
                            and not await robots.allowed_async(el.href)
                        ):
                            raise ActionError(
                                f"robots.txt of {host_of(el.href)} disallows {el.href}"
                            )
                        writes_before = watch.writes_ok
                        note = await asyncio.wait_for(
                            execute(page, action, obs, pool.config.navigation_timeout_ms, allow),
                            remaining(),
                        )
                        watch.check()
                        if not host_allowed(host_of(page.url), allow):
                            # Landed off the allowlist (a redirect whose request the route
                            # aborted can commit an empty page there): back to the last page.
                            away = page.url
                            with contextlib.suppress(Exception):
                                await page.go_back(wait_until="domcontentloaded")
                            raise ActionError(blocked_navigation(away))
                        before = obs
                        obs = await look(page)
                        if capture is not None:
                            capture.action(action, before, obs, watch.writes_ok - writes_before)
                            capture.fill_cart_count(obs)
                    except ActionError as exc:
                        invalid += 1
                        rec.error = str(exc)
                        rec.result = "invalid action"
                        memory.note(f"{step}. invalid action: {exc}")
                        if invalid > cfg.max_invalid_actions:
                            raise _Ended("other", str(exc)) from None
                        continue
                    except TimeoutError:
                        raise  # asyncio's: the session's budget (checked below)
                    except _Ended:
                        raise
                    except Exception as exc:  # Playwright errors on a page that still lives
                        if _is_closed_error(exc, page):
                            raise
                        if "net::ERR_" in str(exc) and not is_blocked_failure(str(exc)):
                            # A redirect the route aborted fails the navigation with another
                            # code; its failed request is reported just after.
                            await watch.settle()
                        if watch.blocked or is_blocked_failure(str(exc)):
                            # The allowlist aborted the navigation; Chromium shows its error
                            # page (and reports the failed request) a moment later.
                            await _back_from_error_page(page)
                            where = watch.blocked or "another host"
                            error = blocked_navigation(where)
                            watch.blocked = None
                        elif type(exc).__name__ == "TimeoutError":
                            # Playwright's own timeout: the element never became actionable.
                            error = f"action timed out: {str(exc).splitlines()[0]}"
                        else:
                            raise
                        invalid += 1
                        rec.error, rec.result = error, "invalid action"
                        memory.note(f"{step}. invalid action: {error}")
                        if invalid > cfg.max_invalid_actions:
                            raise _Ended("other", error) from None
                        obs = await look(page)
                        continue
                    rec.ms = (time.monotonic() - t_act) * 1000
                    action_ms.append(rec.ms)
                    rec.result = note
                    memory.note(f"{step}. {_summarize(note, obs)}")
                    if step_hook is not None:
                        await step_hook(page, step, obs)
            except _Ended as end:
                outcome, message, guard = end.outcome, end.message, end.guard
            except TimeoutError:
                outcome = "time_limit"
                message = f"the session's {cfg.session_timeout_s:g} s budget ran out"
            except Exception as exc:
                outcome = "crash"
                first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
                message = f"{type(exc).__name__}: {first}"[:500]
            watch.detach()
            if not page.is_closed():
                final_url = page.url
    except Exception as exc:  # the context itself failed (browser gone)
        outcome, message = "crash", f"{type(exc).__name__}: {str(exc)[:400]}"
    finish_record(outcome)
    return SessionResult(
        key=key,
        buyer_id=spec.buyer_id,
        outcome=outcome,
        message=message,
        steps=len(records),
        duration_s=round(time.monotonic() - t0, 3),
        final_url=final_url,
        session_id=watch.session_id if watch else None,
        persona=spec.persona.label,
        goal=spec.goal.text,
        records=records,
        action_ms=action_ms,
        guard=guard,
        pages=pages,
        requests=stats,
        off_allowlist_completed=watch.off_allowlist_completed if watch else 0,
        events=capture.events if capture is not None else 0,
    )


async def run_sessions(
    pool: BrowserPool,
    specs: Sequence[SessionSpec],
    policy: Policy,
    config: RuntimeConfig | None = None,
    on_done: Callable[[SessionResult], None] | None = None,
) -> list[SessionResult]:
    """Run `specs` concurrently (at most `pool.size` at a time); results in input order.
    `on_done` is called as each session ends (progress bars, recorders)."""

    async def one(spec: SessionSpec) -> SessionResult:
        res = await run_session(pool, spec, policy, config)
        if on_done is not None:
            on_done(res)
        return res

    return list(await asyncio.gather(*(one(s) for s in specs)))
