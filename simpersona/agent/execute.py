"""Running one validated action on a Playwright page.

Element ids are looked up in the live DOM (the element's `id`, else the `data-sp-agent-id`
the observation gave it). Anything the page cannot do — an unknown id, typing into a button,
an option the select does not have, add-to-cart off a product page, going back from the
first page — raises `ActionError` with a message; browser failures propagate.
"""

from __future__ import annotations

import json
from typing import Any

from simpersona.agent.actions import (
    ActionError,
    AddToCart,
    Click,
    EndSession,
    GoBack,
    Scroll,
    Search,
    Select,
    Type,
    _Action,
)
from simpersona.agent.observation import AGENT_ID_ATTR, Observation

SEARCH_INPUTS = "#search-input, input[type=search], input[name=q]"
QUANTITY_INPUTS = "#quantity-input, form[action*='/cart/add'] input[name=quantity]"
ADD_BUTTONS = (
    "#add-to-cart-button, form[action*='/cart/add'] button[type=submit], "
    "form[action*='/cart/add'] input[type=submit], form[action*='/cart/add'] button:not([type])"
)
TEXT_TYPES = frozenset(
    {"", "text", "search", "email", "tel", "url", "number", "password", "textarea"}
)


def element_selector(element_id: str) -> str:
    """CSS for the element an observation named `element_id`."""
    v = json.dumps(element_id)  # a double-quoted CSS string for ordinary ids
    return f"[id={v}], [{AGENT_ID_ATTR}={v}]"


async def _find(page: Any, element_id: str) -> Any:
    loc = page.locator(element_selector(element_id)).first
    if await loc.count() == 0:
        raise ActionError(f"no element with id {element_id!r} on this page")
    return loc


async def _describe(loc: Any) -> dict[str, Any]:
    return await loc.evaluate(
        """el => ({tag: el.tagName.toLowerCase(), type: (el.getAttribute('type') || '').toLowerCase(),
                   href: el.getAttribute('href'), form: !!el.form, disabled: !!el.disabled,
                   target: el.getAttribute('target')})"""
    )


async def _navigating(page: Any, timeout_ms: float, action: Any) -> None:
    """Run `action()` (a coroutine factory) expecting a navigation, and wait for the new
    document to be parsed."""
    async with page.expect_navigation(wait_until="domcontentloaded", timeout=timeout_ms):
        await action()


async def execute(page: Any, action: _Action, obs: Observation, nav_timeout_ms: float) -> str:
    """Run `action` on `page`; returns a short note of what happened (for the progress log).
    `end_session` is the runtime's business and is not handled here."""
    if isinstance(action, Search):
        loc = page.locator(SEARCH_INPUTS).first
        if await loc.count() == 0:
            raise ActionError("this page has no search box")
        await loc.fill(action.query)
        await _navigating(page, nav_timeout_ms, lambda: loc.press("Enter"))
        return f"searched {action.query!r}"
    if isinstance(action, Click):
        loc = await _find(page, action.id)
        info = await _describe(loc)
        if info["disabled"]:
            raise ActionError(f"element {action.id!r} is disabled")
        if info["target"] and info["target"] != "_self":
            # Keep the session in one tab, as a buyer following a link in place would.
            await loc.evaluate("el => el.removeAttribute('target')")
        navigates = (
            info["tag"] == "a"
            and info["href"]
            and not info["href"].startswith(("#", "javascript:"))
        ) or (
            info["form"]
            and (
                (info["tag"] == "button" and info["type"] in ("", "submit"))
                or (info["tag"] == "input" and info["type"] in ("submit", "image"))
            )
        )
        if navigates:
            await _navigating(page, nav_timeout_ms, loc.click)
        else:
            await loc.click()
        return f"clicked {action.id}"
    if isinstance(action, Type):
        loc = await _find(page, action.id)
        info = await _describe(loc)
        if info["tag"] not in ("input", "textarea") or (
            info["tag"] == "input" and info["type"] not in TEXT_TYPES
        ):
            raise ActionError(f"element {action.id!r} is a {info['tag']}, not a text field")
        await loc.fill(action.text)
        return f"typed into {action.id}"
    if isinstance(action, Select):
        loc = await _find(page, action.id)
        info = await _describe(loc)
        if info["tag"] != "select":
            raise ActionError(
                f"element {action.id!r} is a {info['tag']}, not a select; click radio buttons"
            )
        options = await loc.evaluate(
            "el => Array.from(el.options).map(o => [o.value, o.text.trim()])"
        )
        for value, text in options:
            if action.value in (value, text) or action.value.lower() == text.lower():
                await loc.select_option(value=value)
                return f"selected {value!r} in {action.id}"
        shown = ", ".join(v for v, _ in options[:20])
        raise ActionError(f"select {action.id!r} has no option {action.value!r} (options: {shown})")
    if isinstance(action, AddToCart):
        button = page.locator(ADD_BUTTONS).first
        if await button.count() == 0:
            raise ActionError(f"no add-to-cart button on this page (a {obs.kind} page)")
        qty = page.locator(QUANTITY_INPUTS).first
        if await qty.count():
            await qty.fill(str(action.quantity))
        elif action.quantity != 1:
            raise ActionError("this page has no quantity field; add one at a time")
        await _navigating(page, nav_timeout_ms, button.click)
        return f"added {action.quantity} to cart"
    if isinstance(action, GoBack):
        if not await page.evaluate("() => history.length > 1"):
            raise ActionError("there is no previous page to go back to")
        await page.go_back(wait_until="domcontentloaded")
        if not page.url.startswith(("http://", "https://")):
            # Back past the session's first page (the blank tab it opened in): undo it.
            await page.go_forward(wait_until="domcontentloaded")
            raise ActionError("there is no previous page to go back to")
        return "went back"
    if isinstance(action, Scroll):
        sign = 1 if action.direction == "down" else -1
        await page.evaluate(f"() => window.scrollBy(0, {sign} * window.innerHeight * 0.8)")
        return f"scrolled {action.direction}"
    if isinstance(action, EndSession):
        return "ended the session"
    raise ActionError(f"unsupported action {action!r}")  # pragma: no cover - schema is closed
