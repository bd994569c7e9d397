"""Running one validated action on a Playwright page.

Element ids are looked up in the live DOM (the element's `id`, else the `data-sp-agent-id`
the observation gave it). Anything the page cannot do — an unknown id, typing into a button,
an option the select does not have, add-to-cart off a product page, going back from the
first page — raises `ActionError` with a message; browser failures propagate. A click or
search whose target (the link's URL, the form's action) is on a host outside the allowlist
is refused before it runs, so the browser never asks that host for anything.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Iterable
from typing import Any
from urllib.parse import urlsplit

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
from simpersona.agent.browser import host_allowed
from simpersona.agent.observation import AGENT_ID_ATTR, ALIAS_ATTR, Observation

SEARCH_INPUTS = (
    "#search-input, input[type=search], input[name=q], input[name=s], input[name=query], "
    "input[name=search], input[name=keyword], input[name=keywords], [role=search] input[type=text]"
)
QUANTITY_INPUTS = "#quantity-input, form[action*='/cart/add'] input[name=quantity]"
ADD_BUTTONS = (
    "#add-to-cart-button, form[action*='/cart/add'] button[type=submit], "
    "form[action*='/cart/add'] input[type=submit], form[action*='/cart/add'] button:not([type])"
)
# Before an add-to-cart click on a store read by the conventions: the quantity goes into the
# button's form, and a variant the form requires (a size select, a colour radio) gets its
# first available option, as a buyer who does not mind would pick.
PREPARE_ADD_JS = """([sel, qty]) => {
  const b = document.querySelector(sel);
  const f = b && b.form;
  if (!f) return {quantity: false};
  let q = null;
  for (const el of f.querySelectorAll('input, select')) {
    const n = ((el.name || '') + ' ' + (el.id || '')).toLowerCase();
    if (/quantity|qty/.test(n) && el.type !== 'hidden') { q = el; break; }
  }
  if (q) { q.value = String(qty); q.dispatchEvent(new Event('input', {bubbles: true}));
           q.dispatchEvent(new Event('change', {bubbles: true})); }
  for (const s of f.querySelectorAll('select')) {
    if (s === q || s.value) continue;
    const o = Array.from(s.options).find(o => o.value && !o.disabled);
    if (o) { s.value = o.value; s.dispatchEvent(new Event('change', {bubbles: true})); }
  }
  const groups = new Set(Array.from(f.querySelectorAll('input[type=radio][required]')).map(r => r.name));
  for (const g of groups) {
    const rs = Array.from(f.querySelectorAll(`input[type=radio][name="${CSS.escape(g)}"]`));
    if (!rs.some(r => r.checked)) { const r = rs.find(r => !r.disabled); if (r) r.click(); }
  }
  return {quantity: !!q};
}"""
POINTER_ROLES = frozenset({"option", "combobox", "menuitem", "listbox"})
SETTLE_MS = 1500  # how long a click may take to start a navigation before it counts as a script's
TEXT_TYPES = frozenset(
    {"", "text", "search", "email", "tel", "url", "number", "password", "textarea"}
)


def element_selector(element_id: str) -> str:
    """CSS for the element an observation named `element_id`."""
    v = json.dumps(element_id)  # a double-quoted CSS string for ordinary ids
    return f"[id={v}], [{AGENT_ID_ATTR}={v}], [{ALIAS_ATTR}={v}]"


# One round trip: the element's facts, or null when no element has the id. `target` is the
# absolute URL a click would load: a link's href, or the action of the form it submits.
DESCRIBE_JS = """sel => {
  const el = document.querySelector(sel);
  if (!el) return null;
  // The form's action attribute: a field named "action" shadows form.action.
  const formTarget = (f) => new URL(f.getAttribute('action') || location.href, location.href).href;
  const target = el.tagName === 'A' ? el.href
    : el.getAttribute && el.getAttribute('formaction') ? el.formAction
    : el.form ? formTarget(el.form) : null;
  return {tag: el.tagName.toLowerCase(), type: (el.getAttribute('type') || '').toLowerCase(),
          role: (el.getAttribute('role') || '').toLowerCase(),
          href: el.getAttribute('href'), form: !!el.form, disabled: !!el.disabled, target};
}"""
# A DOM click: the same click event a mouse gives the page's handlers and forms, without
# Playwright's pointer choreography (scroll, hit test, two animation frames), which costs
# about twice the CPU of the navigation it triggers. Links stay in this tab.
CLICK_JS = """sel => {
  const el = document.querySelector(sel);
  if (el.tagName === 'A') el.removeAttribute('target');
  el.click();
}"""
SUBMIT_SEARCH_JS = """([sel, q]) => {
  const el = document.querySelector(sel);
  el.value = q;
  el.dispatchEvent(new Event('input', {bubbles: true}));
  if (el.form) el.form.requestSubmit(); else el.dispatchEvent(new KeyboardEvent('keydown', {key: 'Enter', bubbles: true}));
}"""


async def _describe(page: Any, element_id: str) -> tuple[str, dict[str, Any]]:
    sel = element_selector(element_id)
    info = await page.evaluate(DESCRIBE_JS, sel)
    if info is None:
        raise ActionError(f"no element with id {element_id!r} on this page")
    return sel, info


def blocked_navigation(url: str) -> str:
    """The message of a navigation the allowlist stopped (refused, aborted or undone)."""
    return f"navigation to {url} was blocked: its host is not allowed"


def _check_target(url: str | None, allowed: Iterable[str] | None) -> None:
    if not url or allowed is None:
        return
    parts = urlsplit(url)
    if parts.scheme in ("http", "https") and not host_allowed(parts.hostname or "", allowed):
        raise ActionError(blocked_navigation(url))


async def _click_and_settle(page: Any, sel: str, nav_timeout_ms: float) -> bool:
    return await _settle_after(page, lambda: page.evaluate(CLICK_JS, sel), nav_timeout_ms)


async def _settle_after(page: Any, trigger: Any, nav_timeout_ms: float) -> bool:
    """Click `sel` where it is unknown whether the click loads a page (a form a script may
    handle, a button a script may listen to): wait for a main-frame navigation to start and
    its document to be parsed, or, when none starts within `SETTLE_MS`, for the page's own
    requests to settle (a cart updated with fetch). True when a new document loaded."""
    loop = asyncio.get_running_loop()
    started: asyncio.Future[Any] = loop.create_future()
    committed: asyncio.Future[Any] = loop.create_future()

    def on_request(req: Any) -> None:
        if not started.done() and req.is_navigation_request() and req.frame == page.main_frame:
            started.set_result(req)

    def on_navigated(frame: Any) -> None:
        if not committed.done() and frame == page.main_frame:
            committed.set_result(frame)

    def on_failed(req: Any) -> None:
        if started.done() and req is started.result() and not committed.done():
            committed.set_exception(
                RuntimeError(f"net::{req.failure or 'ERR_FAILED'} at {req.url}")
            )

    page.on("request", on_request)
    page.on("framenavigated", on_navigated)
    page.on("requestfailed", on_failed)
    try:
        await trigger()
        try:
            await asyncio.wait_for(asyncio.shield(started), SETTLE_MS / 1000)
        except TimeoutError:
            with contextlib.suppress(Exception):
                await page.wait_for_load_state("networkidle", timeout=SETTLE_MS * 2)
            return False
        await asyncio.wait_for(committed, nav_timeout_ms / 1000)
        await page.wait_for_load_state("domcontentloaded", timeout=nav_timeout_ms)
        return True
    finally:
        page.remove_listener("request", on_request)
        page.remove_listener("framenavigated", on_navigated)
        page.remove_listener("requestfailed", on_failed)


# A visible search field of any store, and the control that opens a hidden one.
FIND_SEARCH_JS = """(inputs) => {
  const shown = (el) => { const r = el.getBoundingClientRect(); const st = getComputedStyle(el);
    return r.width > 0 && r.height > 0 && st.visibility !== 'hidden' && st.display !== 'none'; };
  const box = Array.from(document.querySelectorAll(inputs)).find(shown);
  if (box) { box.setAttribute('data-sp-search', '1');
    const a = box.form && box.form.getAttribute('action');
    return {box: true, action: box.form ? new URL(a || location.href, location.href).href : null}; }
  const toggle = Array.from(document.querySelectorAll('a, button, [role=button]')).find(el =>
    shown(el) && /search/i.test([el.getAttribute('aria-label'), el.innerText, el.className,
                                 el.getAttribute('title')].join(' ')));
  if (toggle) { toggle.setAttribute('data-sp-search-toggle', '1'); return {box: false, toggle: true}; }
  return {box: false, toggle: false};
}"""


async def _search_generic(
    page: Any, query: str, nav_timeout_ms: float, allowed: Iterable[str] | None
) -> str:
    """Search on a store read by the conventions: the visible search field (opening it first
    when a header icon hides it), typed and submitted with Enter, as a buyer does."""
    found = await page.evaluate(FIND_SEARCH_JS, SEARCH_INPUTS + ", input[placeholder*=search i]")
    if not found["box"] and found.get("toggle"):
        await page.evaluate("() => document.querySelector('[data-sp-search-toggle]').click()")
        await page.wait_for_timeout(300)
        found = await page.evaluate(
            FIND_SEARCH_JS, SEARCH_INPUTS + ", input[placeholder*=search i]"
        )
    if not found["box"]:
        raise ActionError("this page has no search box")
    _check_target(found.get("action"), allowed)
    box = page.locator("[data-sp-search]").first
    await box.fill(query)
    await _settle_after(page, lambda: box.press("Enter"), nav_timeout_ms)
    return f"searched {query!r}"


async def _navigating(page: Any, timeout_ms: float, action: Any) -> None:
    """Run `action()` (a coroutine factory) expecting a navigation, and wait for the new
    document to be parsed."""
    async with page.expect_navigation(wait_until="domcontentloaded", timeout=timeout_ms):
        await action()


async def execute(
    page: Any,
    action: _Action,
    obs: Observation,
    nav_timeout_ms: float,
    allowed: Iterable[str] | None = None,
) -> str:
    """Run `action` on `page`; returns a short note of what happened (for the progress log).
    `end_session` is the runtime's business and is not handled here. With `allowed`, clicks
    and searches that would load a page of another host raise `ActionError`."""
    if isinstance(action, Search) and not obs.profile:
        return await _search_generic(page, action.query, nav_timeout_ms, allowed)
    if isinstance(action, Search):
        box = await page.evaluate(
            "sel => { const el = document.querySelector(sel); if (!el) return null;"
            " const a = el.form && el.form.getAttribute('action');"
            " return {action: el.form ? new URL(a || location.href, location.href).href : null}; }",
            SEARCH_INPUTS,
        )
        if not box:
            raise ActionError("this page has no search box")
        _check_target(box["action"], allowed)
        submit = lambda: page.evaluate(SUBMIT_SEARCH_JS, [SEARCH_INPUTS, action.query])  # noqa: E731
        if obs.profile:
            await _navigating(page, nav_timeout_ms, submit)
        else:
            await _settle_after(page, submit, nav_timeout_ms)
        return f"searched {action.query!r}"
    if isinstance(action, Click):
        sel, info = await _describe(page, action.id)
        if info["disabled"]:
            raise ActionError(f"element {action.id!r} is disabled")
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
            _check_target(info["target"], allowed)
        if navigates and (obs.profile or info["tag"] == "a"):
            await _navigating(page, nav_timeout_ms, lambda: page.evaluate(CLICK_JS, sel))
        elif obs.profile:
            await page.evaluate(CLICK_JS, sel)
        elif info["role"] in POINTER_ROLES:
            # Scripted widgets (a drop-down's options) listen to the pointer, not to a
            # bare click event: a real mouse click, then let the page settle.
            loc = page.locator(sel).first
            await _settle_after(page, lambda: loc.click(), nav_timeout_ms)
        else:
            # A store read by the conventions: its scripts may handle the form or the
            # button; wait for whichever happens.
            await _click_and_settle(page, sel, nav_timeout_ms)
        return f"clicked {action.id}"
    if isinstance(action, Type):
        sel, info = await _describe(page, action.id)
        if info["tag"] not in ("input", "textarea") or (
            info["tag"] == "input" and info["type"] not in TEXT_TYPES
        ):
            raise ActionError(f"element {action.id!r} is a {info['tag']}, not a text field")
        await page.locator(sel).first.fill(action.text)
        return f"typed into {action.id}"
    if isinstance(action, Select):
        sel, info = await _describe(page, action.id)
        if info["tag"] != "select":
            raise ActionError(
                f"element {action.id!r} is a {info['tag']}, not a select; click radio buttons"
            )
        loc = page.locator(sel).first
        options = await loc.evaluate(
            "el => Array.from(el.options).map(o => [o.value, o.text.trim()])"
        )
        for value, text in options:
            if action.value in (value, text) or action.value.lower() == text.lower():
                await loc.select_option(value=value)
                return f"selected {value!r} in {action.id}"
        shown = ", ".join(v for v, _ in options[:20])
        raise ActionError(f"select {action.id!r} has no option {action.value!r} (options: {shown})")
    if isinstance(action, AddToCart) and not obs.profile:
        buttons = [e for e in obs.by_role("add_to_cart") if e.region != "header"]
        if not buttons:
            raise ActionError(f"no add-to-cart button on this page (a {obs.kind} page)")
        sel = element_selector(buttons[0].id)
        _, info = await _describe(page, buttons[0].id)
        _check_target(info["target"], allowed)
        prepared = await page.evaluate(PREPARE_ADD_JS, [sel, action.quantity])
        if not prepared["quantity"] and action.quantity != 1:
            raise ActionError("this page has no quantity field; add one at a time")
        await _click_and_settle(page, sel, nav_timeout_ms)
        return f"added {action.quantity} to cart"
    if isinstance(action, AddToCart):
        found = await page.evaluate(
            """([b, q]) => [!!document.querySelector(b), !!document.querySelector(q)]""",
            [ADD_BUTTONS, QUANTITY_INPUTS],
        )
        if not found[0]:
            raise ActionError(f"no add-to-cart button on this page (a {obs.kind} page)")
        if found[1]:
            await page.locator(QUANTITY_INPUTS).first.fill(str(action.quantity))
        elif action.quantity != 1:
            raise ActionError("this page has no quantity field; add one at a time")
        await _navigating(page, nav_timeout_ms, lambda: page.evaluate(CLICK_JS, ADD_BUTTONS))
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
