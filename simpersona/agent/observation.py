"""What an agent sees of a page: a compact, JSON-ready page state capped to a token budget.

An `Observation` has the URL, the page kind (`home`, `collection`, `search`, `product`,
`cart`, `checkout`, `confirmation`, `info`, `error`, or `other`), the title, a short summary
of the visible text, any form error, a few facts (price, cart count, checkout step) and the
interactive elements, each with a stable id the actions address. Ids are the elements' own
`id` attributes where they have one (the storefront gives every control one); other
elements get `sp-<n>` in document order, written into `data-sp-agent-id` so the next action
finds the same element.

One `page.evaluate` call reads everything (a DOM round trip costs ~70 ms; one per step keeps
the runtime fast). `render()` turns an observation into the text a language model reads; the
LLM policy reuses it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any
from urllib.parse import urlsplit

PAGE_KINDS: tuple[str, ...] = (
    "home",
    "collection",
    "search",
    "product",
    "cart",
    "checkout",
    "confirmation",
    "info",
    "error",
    "index",
    "other",
)
AGENT_ID_ATTR = "data-sp-agent-id"
CHARS_PER_TOKEN = 4  # rough size of a token in English page text; enough for a budget
DEFAULT_TOKEN_BUDGET = 1500
MAX_LABEL = 80
# What a prompt shows of a page (Observation.render): characters of the page text and of a
# label, options of a select. The observation keeps more; the prompt is the model's cost.
PROMPT_TEXT = 120
PROMPT_LABEL = 48
PROMPT_OPTIONS = 8
PROMPT_PRODUCTS = 10  # product links listed in a prompt; the rest are counted
PROMPT_MENU = 10  # menu links listed
# Links of these regions go on one line each (menu, footer), after the page's own controls.
_EDGES = {"header": "header", "nav": "header", "footer": "footer"}
_MENU_PAGES = frozenset({"home", "collection", "search", "info", "other", "error"})
_FOOTER_PAGES = frozenset({"home", "info", "other"})
# Facts the page text or an element already shows to the model.
_UNSHOWN = frozenset({"product_id"})

# Runs in the page. Collects the visible interactive elements in document order, gives the
# ones without an id a stable agent id, and reads the storefront's data attributes when present.
EXTRACT_JS = r"""
(maxText) => {
  const body = document.body;
  if (!body) return {empty: true, url: location.href, title: document.title};
  const vh = window.innerHeight, sy = window.scrollY;
  const visible = (el) => {
    if (el.type === 'hidden' || el.hidden || el.disabled && el.tagName !== 'OPTION') return false;
    const r = el.getBoundingClientRect();
    if (r.width === 0 && r.height === 0 && el.type !== 'radio' && el.type !== 'checkbox') return false;
    const s = getComputedStyle(el);
    return s.visibility !== 'hidden' && s.display !== 'none';
  };
  const clean = (t) => (t || '').replace(/\s+/g, ' ').trim();
  const labelOf = (el) => {
    let t = '';
    if (el.id) { const l = document.querySelector(`label[for="${CSS.escape(el.id)}"]`); if (l) t = l.innerText; }
    if (!t) t = el.getAttribute('aria-label') || '';
    if (!t && (el.tagName === 'A' || el.tagName === 'BUTTON')) t = el.innerText;
    if (!t) t = el.getAttribute('placeholder') || el.getAttribute('name') || el.getAttribute('title') || el.value || '';
    return clean(t);
  };
  const els = [];
  let n = 0;
  const seen = new Set();
  for (const el of document.querySelectorAll('a[href], button, input, select, textarea, [role=button]')) {
    if (!visible(el)) continue;
    let id = el.id;
    if (!id || seen.has(id)) {
      id = el.getAttribute('data-sp-agent-id');
      if (!id) { id = 'sp-' + (n++); el.setAttribute('data-sp-agent-id', id); }
    }
    seen.add(id);
    const tag = el.tagName.toLowerCase();
    const type = (el.getAttribute('type') || '').toLowerCase();
    let kind = tag === 'a' ? 'link' : tag === 'select' ? 'select' : tag === 'textarea' ? 'input'
      : tag === 'input' ? (['submit', 'button', 'image', 'reset'].includes(type) ? 'button'
        : ['radio', 'checkbox'].includes(type) ? type : 'input') : 'button';
    const r = el.getBoundingClientRect();
    const e = {id, kind, label: labelOf(el).slice(0, 120), top: r.top + sy,
               in_view: r.bottom > 0 && r.top < vh};
    if (kind === 'input') { e.value = (el.value || '').slice(0, 60); e.input_type = type || 'text'; }
    if (kind === 'radio' || kind === 'checkbox') e.checked = el.checked;
    if (kind === 'select') {
      e.value = el.value;
      e.options = Array.from(el.options).slice(0, 40).map(o => o.value === clean(o.text) ? o.value : `${o.value}=${clean(o.text)}`);
    }
    const pid = el.getAttribute('data-product-id') || (el.closest('[data-product-id]:not(body)') || {getAttribute: () => null}).getAttribute('data-product-id');
    if (pid && (kind === 'link' || kind === 'button')) e.product_id = pid;
    const cid = el.getAttribute('data-collection-id');
    if (cid) e.collection_id = cid;
    // The outermost landmark decides: footer links sit in a <nav> inside <footer>.
    e.region = el.closest('footer') ? 'footer' : el.closest('header') ? 'header'
      : el.closest('form') ? 'form' : el.closest('nav') ? 'nav' : 'main';
    els.push(e);
  }
  const main = document.querySelector('main') || body;
  const q = (sel) => document.querySelector(sel);
  const txt = (sel) => { const x = q(sel); return x ? clean(x.innerText) : null; };
  const price = q('#product-price');
  const payFields = !!q('input[autocomplete^="cc-"], input[name*="card" i], #card-number');
  return {
    url: location.href,
    title: document.title,
    page: body.getAttribute('data-page') || (q('meta[name="sp:page"]') || {content: null}).content,
    checkout_step: body.getAttribute('data-checkout-step'),
    product_id: body.getAttribute('data-product-id'),
    order_number: body.getAttribute('data-order-number'),
    error_status: (q('#error-page') || {getAttribute: () => null}).getAttribute('data-status'),
    heading: txt('h1'),
    form_error: txt('#form-error') || txt('[role=alert]'),
    notice: txt('#cart-notice'),
    cart_count: txt('#cart-count'),
    price: price ? clean(price.innerText) : null,
    subtotal: txt('#cart-subtotal'),
    payment_fields: payFields,
    text: clean(main.innerText).slice(0, maxText),
    scroll_y: sy, viewport_h: vh, page_h: document.documentElement.scrollHeight,
    elements: els,
  };
}
"""


@dataclass(frozen=True)
class Element:
    """One interactive element: its id (what actions name), kind, label and state."""

    id: str
    kind: str  # link | button | input | select | radio | checkbox
    label: str
    region: str = "main"  # header | nav | footer | main | form
    value: str | None = None
    options: tuple[str, ...] | None = None
    checked: bool | None = None
    product_id: str | None = None
    collection_id: str | None = None
    in_view: bool = True

    def render(self) -> str:
        """`[id] label` for a link; `[id] kind label` for a control, with its value, state or
        options: what the agent names in an action and what it needs to choose it."""
        bits = [f"[{self.id}]"]
        if self.kind != "link":
            bits.append(self.kind)
        if self.label:
            bits.append(_clip(self.label, PROMPT_LABEL))
        if self.value:
            bits.append(f"= {_clip(self.value, PROMPT_LABEL)}")
        if self.checked is not None:
            bits.append("(checked)" if self.checked else "(unchecked)")
        if self.options:
            bits.append("options: " + " | ".join(self.options[:PROMPT_OPTIONS]))
        return " ".join(bits)


@dataclass(frozen=True)
class Observation:
    """A compact page state (see the module docstring); `to_dict()` is what recordings keep."""

    url: str
    kind: str
    title: str
    text: str
    elements: tuple[Element, ...]
    facts: dict[str, str] = field(default_factory=dict)
    form_error: str | None = None
    truncated: int = 0  # elements left out by the token budget

    @property
    def host(self) -> str:
        return urlsplit(self.url).hostname or ""

    @property
    def is_payment_step(self) -> bool:
        """The page asks for card details (the storefront's step 2, or any card form)."""
        return self.facts.get("checkout_step") == "payment" or self.facts.get("payment") == "yes"

    @property
    def product_id(self) -> str | None:
        return self.facts.get("product_id")

    @property
    def cart_count(self) -> int:
        """Items in the cart as the page shows them (0 when it does not say)."""
        try:
            return int(self.facts.get("cart_count", "0"))
        except ValueError:
            return 0

    def element(self, element_id: str) -> Element | None:
        for e in self.elements:
            if e.id == element_id:
                return e
        return None

    def links(self, kind: str | None = None) -> list[Element]:
        """Product links (`kind="product"`), collection links, or all links."""
        out = [e for e in self.elements if e.kind == "link"]
        if kind == "product":
            return [e for e in out if e.product_id and e.label]
        if kind == "collection":
            return [e for e in out if e.collection_id]
        return out

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["elements"] = [
            {k: v for k, v in asdict(e).items() if v not in (None, "") and k != "in_view"}
            for e in self.elements
        ]
        return d

    def render(self, show: Sequence[str] = ()) -> str:
        """The observation as prompt text, compact (a small model's prompt is its cost; the
        measured lengths are in docs/agents.md): the page kind and title, the facts on one
        line, the start of the page text, the page's controls one per line (product links:
        the first `PROMPT_PRODUCTS`, the rest counted), and the menu and (where a visit
        starts) footer links on one line each. Ids in `show` are shown whatever the caps (a
        taught action's target is always on its page)."""
        lines = [f"Page: {self.kind} · {self.title}"]
        facts = [f"{k.replace('_', ' ')}: {v}" for k, v in self.facts.items() if k not in _UNSHOWN]
        if facts:
            lines.append(" · ".join(facts))
        if self.form_error:
            lines.append(f"Error on page: {self.form_error}")
        if self.text:
            lines.append(f"Text: {_clip(self.text, PROMPT_TEXT)}")
        lines.append("Elements:")
        products = hidden = 0
        for e in self.elements:
            if e.region in _EDGES and e.kind == "link":
                continue
            if e.product_id and e.kind == "link" and e.id not in show:
                products += 1
                if products > PROMPT_PRODUCTS:
                    hidden += 1
                    continue
            lines.append(e.render())
        if hidden:
            lines.append(f"(+{hidden} more products on this page)")
        for region, name in (("header", "Menu"), ("footer", "Footer")):
            # Menus where a visit browses; a product, the cart and checkout have their own
            # ways on (the product's collections, the cart and checkout buttons, go_back).
            # The footer's about, shipping, returns: where a visit starts, not mid-funnel.
            if self.kind not in (_MENU_PAGES if region == "header" else _FOOTER_PAGES):
                continue
            links = [e for e in self.elements
                     if e.kind == "link" and _EDGES.get(e.region) == region]  # fmt: skip
            links = [e for i, e in enumerate(links) if i < PROMPT_MENU or e.id in show]
            if links:
                lines.append(f"{name}: " + " · ".join(e.render() for e in links))
        if self.truncated:
            lines.append(f"(+{self.truncated} more elements; scroll to see others)")
        return "\n".join(lines)


def _clip(text: str, n: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= n else text[: n - 1].rstrip() + "…"


def page_kind(raw_page: str | None, url: str, payment_fields: bool = False) -> str:
    """The storefront's `data-page`, else a guess from the URL path (Shopify-like stores)."""
    if raw_page in PAGE_KINDS:
        return raw_page
    path = urlsplit(url).path.lower().rstrip("/")
    if "/thank-you" in path or "/orders/" in path:
        return "confirmation"
    if "/checkout" in path or payment_fields:
        return "checkout"
    for marker, kind in (
        ("/products/", "product"),
        ("/collections", "collection"),
        ("/search", "search"),
        ("/cart", "cart"),
        ("/pages/", "info"),
        ("/blogs/", "info"),
    ):
        if marker in path + "/":
            return kind
    return "home" if path in ("", "/") else "other"


def _priority(e: Element) -> tuple[int, float]:
    # What an agent needs most comes first: controls in view and forms, then what is below
    # the fold, then the header, then nav and footer (always one scroll or click away).
    region = {"form": 0, "main": 1, "header": 2, "nav": 3, "footer": 4}.get(e.region, 1)
    return (0 if e.in_view and region < 2 else 1 + region, 0.0)


def build_observation(raw: dict[str, Any], token_budget: int = DEFAULT_TOKEN_BUDGET) -> Observation:
    """An Observation from the extraction script's output, capped to `token_budget` tokens
    (roughly `CHARS_PER_TOKEN` characters each): the text summary gets at most a third of
    the budget; elements are kept by priority (see `_priority`), in document order."""
    if raw.get("empty"):
        return Observation(raw.get("url", ""), "other", raw.get("title", ""), "", ())
    url = raw.get("url", "")
    facts: dict[str, str] = {}
    for key in ("checkout_step", "product_id", "order_number", "price", "cart_count", "subtotal"):
        if raw.get(key):
            facts[key] = str(raw[key])
    if raw.get("notice"):
        facts["notice"] = str(raw["notice"])
    if raw.get("error_status"):
        facts["status"] = str(raw["error_status"])
    if raw.get("payment_fields"):
        facts["payment"] = "yes"
    kind = page_kind(raw.get("page"), url, bool(raw.get("payment_fields")))
    budget = max(200, token_budget) * CHARS_PER_TOKEN
    text = raw.get("text") or ""
    text_cap = budget // 3
    if len(text) > text_cap:
        text = text[: text_cap - 1].rsplit(" ", 1)[0] + "…"
    elements = [
        Element(
            id=e["id"],
            kind=e["kind"],
            label=e.get("label", "")[:MAX_LABEL],
            region=e.get("region", "main"),
            value=e.get("value"),
            options=tuple(e["options"]) if e.get("options") else None,
            checked=e.get("checked"),
            product_id=e.get("product_id"),
            collection_id=e.get("collection_id"),
            in_view=bool(e.get("in_view", True)),
        )
        for e in raw.get("elements", [])
    ]
    header = (
        len(url) + len(raw.get("title", "")) + sum(len(k) + len(v) + 4 for k, v in facts.items())
    )
    room = budget - header - len(text) - len(raw.get("form_error") or "")
    order = sorted(range(len(elements)), key=lambda i: (_priority(elements[i]), i))
    keep: set[int] = set()
    for i in order:
        cost = len(elements[i].render()) + 3
        if cost > room:
            continue
        room -= cost
        keep.add(i)
    kept = tuple(e for i, e in enumerate(elements) if i in keep)
    return Observation(
        url=url,
        kind=kind,
        title=raw.get("heading") or raw.get("title") or "",
        text=text,
        elements=kept,
        facts=facts,
        form_error=raw.get("form_error") or None,
        truncated=len(elements) - len(kept),
    )


def estimate_tokens(text: str) -> int:
    """Rough token count of `text` (what the budget is measured in)."""
    return (len(text) + CHARS_PER_TOKEN - 1) // CHARS_PER_TOKEN


async def observe(page: Any, token_budget: int = DEFAULT_TOKEN_BUDGET) -> Observation:
    """Read the Playwright `page` into an Observation (one evaluate call)."""
    for attempt in range(3):
        try:
            raw = await page.evaluate(EXTRACT_JS, token_budget * CHARS_PER_TOKEN)
            break
        except Exception as exc:
            # A navigation the page started on its own (a redirect, a script) replaced the
            # document mid-read: read the new one once it is parsed.
            if "context was destroyed" not in str(exc) or attempt == 2:
                raise
            await page.wait_for_load_state("domcontentloaded")
    return build_observation(raw, token_budget)
