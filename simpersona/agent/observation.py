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

import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any
from urllib.parse import urlsplit

from simpersona.agent.page_reading import (
    EXTRACT_JS,
    PAGE_KINDS,
    cart_count_of,
    element_role,
    infer_kind,
    order_number_of,
    product_id_from_url,
    structured_product,
)
from simpersona.agent.site_profile import BUILTIN_PROFILES, SiteProfile

AGENT_ID_ATTR = "data-sp-agent-id"
# On a store read by the conventions, controls with a role get an id that says what they are
# (`product-link-12`, `add-to-cart-button`, `cart-link`), written into this attribute: the
# names an agent model learnt on our storefront, instead of opaque `sp-<n>`.
ALIAS_ATTR = "data-sp-alias"
_ROLE_IDS = {
    "cart_link": "cart-link",
    "home_link": "home-link",
    "add_to_cart": "add-to-cart-button",
    "checkout": "checkout-button",
    "place_order": "place-order-button",
    "continue": "continue-button",
    "search_box": "search-input",
    "quantity": "quantity-input",
}
ALIAS_JS = """(pairs) => {
  for (const el of document.querySelectorAll('[data-sp-alias]')) el.removeAttribute('data-sp-alias');
  for (const [id, alias] of pairs) {
    const v = JSON.stringify(id);
    const el = document.querySelector(`[id=${v}], [data-sp-agent-id=${v}]`);
    if (el) el.setAttribute('data-sp-alias', alias);
  }
}"""
CHARS_PER_TOKEN = 4  # rough size of a token in English page text; enough for a budget
DEFAULT_TOKEN_BUDGET = 1500
# The longest a read waits for stylesheets still loading (page_reading.js): pages read the
# same whether or not their CSS came before DOMContentLoaded.
STYLE_WAIT_MS = 3000
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
_UNSHOWN = frozenset({"product_id", "cart_count_source"})


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
    # What the control is for (page_reading.ROLES), when the page reading can tell.
    role: str | None = None
    name: str | None = None  # the form field's name
    group: str | None = None  # a radio's group (its name)
    href: str | None = None  # a link's target
    required: bool | None = None  # a form field the form requires
    aria_role: str | None = None  # an ARIA widget's role (combobox, option, radio, …)

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
    profile: str | None = None  # the site profile the page was read with, if any

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

    def by_role(self, role: str) -> list[Element]:
        """The elements the page reading gave `role` (page_reading.ROLES), in page order."""
        return [e for e in self.elements if e.role == role]

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
            {
                k: v
                for k, v in asdict(e).items()
                if v not in (None, "") and k not in ("in_view", "href")
            }
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
    """The storefront's `data-page`, else what the URL says (page_reading.infer_kind on the
    URL alone: product, collection, search, cart, checkout, confirmation, info pages)."""
    if raw_page in PAGE_KINDS:
        return raw_page
    return infer_kind({"url": url, "payment_fields": payment_fields}, None, 0)


def _priority(e: Element) -> tuple[int, float]:
    # What an agent needs most comes first: controls in view and forms, then what is below
    # the fold, then the header, then nav and footer (always one scroll or click away).
    region = {"form": 0, "main": 1, "header": 2, "nav": 3, "footer": 4}.get(e.region, 1)
    return (0 if e.in_view and region < 2 else 1 + region, 0.0)


def _facts(raw: dict[str, Any], guess: bool = True) -> tuple[dict[str, str], dict[str, str] | None]:
    """The page's facts: what a site profile read, else what the conventions say (the
    structured product, the header's cart count, the confirmation's order number)."""
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
    if not guess:
        return facts, None
    product = structured_product(raw)
    if product:
        if product.get("id"):
            facts.setdefault("product_id", product["id"])
        if product.get("price"):
            facts.setdefault("price", product["price"])
        if product.get("currency"):
            facts.setdefault("currency", product["currency"])
    count = cart_count_of(list(raw.get("cart_texts") or []))
    if count is not None:
        facts.setdefault("cart_count", count)
    return facts, product


_VAGUE = frozenset(
    {"select", "select option", "choose", "choose this", "add", "remove", "buy", "view", "more",
     "details", "ok", "go", "use this", "ship here", "deliver here", "edit", "update"}
)  # fmt: skip


def _with_context(label: str, context: str, duplicated: bool) -> str:
    """A control's label with the row or card it belongs to, where the label alone does not
    say which thing it acts on (two "Select option" buttons: which shipping method?)."""
    if not context or not (duplicated or not label or label.lower() in _VAGUE):
        return label
    extra = context.replace(label, "", 1).strip(" -–·:|") if label else context
    return f"{label} ({extra})" if label and extra else (label or extra)


def build_observation(raw: dict[str, Any], token_budget: int = DEFAULT_TOKEN_BUDGET) -> Observation:
    """An Observation from the extraction script's output, capped to `token_budget` tokens
    (roughly `CHARS_PER_TOKEN` characters each): the text summary gets at most a third of
    the budget; elements are kept by priority (see `_priority`), in document order.

    A page read with a site profile takes its kind and facts from the profile; any other
    page is read by the conventions of `simpersona.agent.page_reading`."""
    if raw.get("empty"):
        return Observation(raw.get("url", ""), "other", raw.get("title", ""), "", ())
    url = raw.get("url", "")
    # Read through a site profile (ours sets the page kind); the conventions fill the rest.
    profiled = bool(raw.get("profile")) or bool(raw.get("page"))
    # Conventions fill in what a profile does not say, unless it says everything (ours; a
    # page that declares its kind without naming a profile is read the same way).
    guess = bool(raw.get("guess", True)) and not (raw.get("page") and not raw.get("profile"))
    facts, product = _facts(raw, guess)
    raw_elements = list(raw.get("elements", []))
    if raw.get("page") in PAGE_KINDS:
        kind = raw["page"]
    else:
        n_add = sum(element_role(e, "product", url) == "add_to_cart" for e in raw_elements)
        n_products = len(
            {
                e.get("href")
                for e in raw_elements
                if e.get("region") == "main"
                and element_role(e, "collection", url) == "product_link"
            }
        )
        kind = infer_kind(raw, product, n_add, raw.get("profile_urls"), n_products)
    if guess and kind == "product" and "product_id" not in facts:
        pid = product_id_from_url(url)
        if pid:
            facts["product_id"] = pid
    if guess and kind == "confirmation" and "order_number" not in facts:
        number = order_number_of(str(raw.get("text") or ""))
        if number:
            facts["order_number"] = number
    generic = not profiled
    labels: dict[str, int] = {}
    for e in raw_elements:
        labels[e.get("label", "")] = labels.get(e.get("label", ""), 0) + 1
    elements = []
    for e in raw_elements:
        role = element_role(e, kind, url)
        label = e.get("label", "")
        product_id, collection_id = e.get("product_id"), e.get("collection_id")
        if generic:
            if e.get("kind") in ("button", "radio", "checkbox") and e.get("context"):
                label = _with_context(label, e["context"], labels.get(label, 0) > 1)
            if role == "product_link" and not product_id:
                product_id = product_id_from_url(e.get("href") or "")
            if role == "add_to_cart" and not product_id and e.get("card_href"):
                product_id = product_id_from_url(e["card_href"])
            if role == "collection_link" and not collection_id:
                collection_id = product_id_from_url(e.get("href") or "")
        elements.append(
            Element(
                id=e["id"],
                kind=e["kind"],
                label=label[:MAX_LABEL],
                region=e.get("region", "main"),
                value=e.get("value") if e.get("aria_role") != "combobox" else e.get("text"),
                options=tuple(e["options"]) if e.get("options") else None,
                checked=e.get("checked"),
                product_id=product_id,
                collection_id=collection_id,
                in_view=bool(e.get("in_view", True)),
                role=role,
                name=e.get("name"),
                group=e.get("group"),
                href=e.get("href"),
                required=e.get("required"),
                aria_role=e.get("aria_role"),
            )
        )
    text = raw.get("text") or ""
    budget = max(200, token_budget) * CHARS_PER_TOKEN
    text_cap = budget // 3
    if len(text) > text_cap:
        text = text[: text_cap - 1].rsplit(" ", 1)[0] + "…"
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
    title = raw.get("heading") or (product or {}).get("name") or raw.get("title") or ""
    return Observation(
        url=url,
        kind=kind,
        title=title,
        text=text,
        elements=kept,
        facts=facts,
        form_error=raw.get("form_error") or None,
        truncated=len(elements) - len(kept),
        # A page that declares its kind (data-page) was read as its profile says.
        profile=raw.get("profile") or ("declared" if raw.get("page") in PAGE_KINDS else None),
    )


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:40] or "x"


def role_ids(obs: Observation) -> dict[str, str]:
    """element id → a readable id for the controls of a page read by the conventions
    (`product-link-<id>`, `collection-link-<slug>`, `cart-remove-<n>`, `add-to-cart-button`,
    …); unique on the page, never one of the page's own ids."""
    taken = {e.id for e in obs.elements}
    out: dict[str, str] = {}
    removes = 0
    # The plain name goes to the likeliest control: a link, then the page's own, then the
    # header's (a "View cart" button in a drawer before the header's mini-cart toggle).
    ranked = sorted(obs.elements, key=lambda e: (e.kind != "link", e.region in ("header", "nav")))
    for e in ranked:
        if e.role is None or not e.id.startswith("sp-"):
            continue  # the page's own ids stay
        if e.role == "product_link" and e.product_id:
            base = f"product-link-{_slug(e.product_id)}"
        elif e.role == "collection_link":
            base = f"collection-link-{_slug(e.collection_id or e.label)}"
        elif e.role == "remove_from_cart":
            removes += 1
            base = f"cart-remove-{removes}"
        elif e.role in _ROLE_IDS:
            base = _ROLE_IDS[e.role]
        else:
            continue
        alias, k = base, 1
        while alias in taken:
            k += 1
            alias = f"{base}-{k}"
        taken.add(alias)
        out[e.id] = alias
    return out


def estimate_tokens(text: str) -> int:
    """Rough token count of `text` (what the budget is measured in)."""
    return (len(text) + CHARS_PER_TOKEN - 1) // CHARS_PER_TOKEN


async def observe(
    page: Any,
    token_budget: int = DEFAULT_TOKEN_BUDGET,
    profiles: Sequence[SiteProfile] = (),
    status: int | None = None,
) -> Observation:
    """Read the Playwright `page` into an Observation (one evaluate call). `profiles` are
    tried before the built-in ones (the first that matches the page is used); `status` is
    the HTTP status of the page's document, when the caller knows it."""
    chosen = [*profiles, *BUILTIN_PROFILES]
    arg = {
        "maxText": token_budget * CHARS_PER_TOKEN,
        "profiles": [p.js for p in chosen],
        "styleWaitMs": STYLE_WAIT_MS,
    }
    for attempt in range(3):
        try:
            raw = await page.evaluate(EXTRACT_JS, arg)
            break
        except Exception as exc:
            # A navigation the page started on its own (a redirect, a script) replaced the
            # document mid-read: read the new one once it is parsed.
            if "context was destroyed" not in str(exc) or attempt == 2:
                raise
            await page.wait_for_load_state("domcontentloaded")
    if status is not None:
        raw["status"] = status
    used = next((p for p in chosen if p.name == raw.get("profile")), None)
    if used is not None and used.page_kind.urls and not raw.get("page"):
        raw["profile_urls"] = used.page_kind.urls
    obs = build_observation(raw, token_budget)
    if obs.profile is None:
        aliases = role_ids(obs)
        if aliases:
            await page.evaluate(ALIAS_JS, list(aliases.items()))
            obs = replace(
                obs,
                elements=tuple(
                    replace(e, id=aliases[e.id]) if e.id in aliases else e for e in obs.elements
                ),
            )
    return obs
