"""Turning page contexts into HTML: the Jinja environment and the helpers templates call,
the shop chrome every page carries, and the caches that make rendering cheap.

Product cards, images and the shop's menus were most of a page's rendering time and
depend only on the shop, its link prefix and the product: each is rendered once and kept
(`Renderer.fragment`). Whole pages that depend only on what the handler names are
rendered once with holes for the buyer's CSRF token and cart count, and the holes filled
per request (`Renderer.page`): the same bytes as a full render, at a fraction of the CPU.
"""

from __future__ import annotations

import re
import secrets
from collections import OrderedDict
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape
from markupsafe import Markup

from simpersona.store.catalog import Product, StoreCatalog, stable_hue
from simpersona.store.identity import CSRF_FIELD
from simpersona.store.links import Links, url_quote
from simpersona.store.pages import INFO_PAGES, SORTS
from simpersona.store.state import COUNTRIES

TEMPLATES_DIR = Path(__file__).resolve().parent / "templates"
MAX_FRAGMENTS = 20_000  # cached product cards and images, ~2 KB each
MAX_PAGES = 2_000  # cached pages with per-buyer holes, ~20-40 KB each

CURRENCY_SYMBOLS = {"USD": "$", "EUR": "€", "GBP": "£", "CAD": "CA$", "AUD": "A$", "JPY": "¥"}

_DOM_ID_RE = re.compile(r"[^A-Za-z0-9_-]+")


# ---- helpers usable from templates ---------------------------------------------------------
def money(value: float | None, currency: str) -> str:
    if value is None:
        return "—"
    symbol = CURRENCY_SYMBOLS.get(currency)
    amount = f"{value:,.2f}"
    return f"{symbol}{amount}" if symbol else f"{amount} {currency}"


def dom_id(value: str) -> str:
    """An id-attribute-safe form of a product or collection id."""
    return _DOM_ID_RE.sub("-", str(value)).strip("-") or "x"


class Renderer:
    """The templates of one storefront server and its caches of rendered fragments and
    pages (kept while serving: the catalogue is fixed)."""

    def __init__(self, max_pages: int = MAX_PAGES) -> None:
        self.max_pages = max_pages
        self.env = Environment(
            loader=FileSystemLoader(str(TEMPLATES_DIR)),
            autoescape=select_autoescape(["html"]),
            trim_blocks=True,
            lstrip_blocks=True,
            undefined=StrictUndefined,
            auto_reload=False,  # templates ship with the package: no stat() per render
        )
        self.env.globals.update(
            dom_id=dom_id,
            hue=stable_hue,
            sorts=SORTS,
            country_name=lambda code: dict(COUNTRIES).get(code, code),
        )
        self.env.filters["urlq"] = url_quote
        self._fragment_template = self.env.from_string(
            '{% import "_macros.html" as m with context %}'
            '{% if kind == "card" %}{{ m.product_card(p, L, money) }}'
            '{% elif kind == "image" %}{{ m.product_image(p, arg) }}'
            '{% elif kind == "nav" %}{{ m.nav_links(nav, L, arg) }}'
            "{% else %}{{ m.footer_links(info_pages, L) }}{% endif %}"
        )
        self._fragments: dict[tuple[str, str, str, str, str], Markup] = {}
        # Rendered pages with holes for the per-buyer parts (see `page`). The holes' text
        # has a random part, so no catalogue text can be mistaken for one.
        self._pages: OrderedDict[tuple[Any, ...], str] = OrderedDict()
        nonce = secrets.token_hex(8)
        self._holes = (f"sp-hole-{nonce}-csrf", f"sp-hole-{nonce}-cart")

    def fragment(
        self, cat: StoreCatalog, links: Links, kind: str, p: Product | None = None, arg: str = ""
    ) -> Markup:
        """A piece of page that depends only on the shop, its link prefix and `p`/`arg`,
        rendered once and kept (at most `MAX_FRAGMENTS`): a product's `card`, its
        placeholder `image` (`arg`: CSS class), the header's `nav` (`arg`: the current
        collection) and the footer's `links`."""
        key = (kind, cat.shop_id, links.base, p.product_id if p else "", arg)
        html = self._fragments.get(key)
        if html is None:
            html = Markup(
                self._fragment_template.render(
                    kind=kind, p=p, arg=arg, L=links, shop=cat,
                    money=lambda v: money(v, cat.currency),
                    nav=cat.nav_collections(), info_pages=INFO_PAGES,
                )
            )  # fmt: skip
            if len(self._fragments) >= MAX_FRAGMENTS:
                self._fragments.pop(next(iter(self._fragments)))
            self._fragments[key] = html
        return html

    def chrome(
        self, cat: StoreCatalog, links: Links, cart_count: int, csrf_token: str
    ) -> dict[str, Any]:
        """Template variables of the shop chrome (header, nav, cart count, form token) for a
        buyer of shop `cat` reached under `links`."""
        return {
            "shop": cat,
            "L": links,
            "cart_count": cart_count,
            "money": lambda v: money(v, cat.currency),
            "q": "",
            "csrf_field": CSRF_FIELD,
            "csrf_token": csrf_token,
            "card": lambda p: self.fragment(cat, links, "card", p),
            "image": lambda p, cls="ph": self.fragment(cat, links, "image", p, cls),
            "nav_links": lambda current: self.fragment(cat, links, "nav", None, current or ""),
            "footer_links": lambda: self.fragment(cat, links, "links"),
        }

    def page(self, template: str, ctx: dict[str, Any], key: tuple[Any, ...] | None = None) -> str:
        """`template` rendered with `ctx`. With `key` (everything besides the buyer the page
        depends on: its shop, link prefix and content) the page is rendered once with holes
        for the chrome's `csrf_token` and `cart_count`, kept (at most `max_pages`, least
        recently used first out) and the holes filled from `ctx`."""
        if key is None or self.max_pages <= 0:
            return self.env.get_template(template).render(**ctx)
        key = (template, *key)
        shell = self._pages.get(key)
        if shell is None:
            holes = {"csrf_token": self._holes[0], "cart_count": self._holes[1]}
            shell = self.env.get_template(template).render(**{**ctx, **holes})
            if len(self._pages) >= self.max_pages:
                self._pages.popitem(last=False)
            self._pages[key] = shell
        else:
            self._pages.move_to_end(key)
        return shell.replace(self._holes[0], ctx["csrf_token"]).replace(
            self._holes[1], str(ctx["cart_count"])
        )
