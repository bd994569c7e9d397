"""What each storefront page shows: the shop's fixed content (info pages, sort orders) and
the context dicts its templates render — catalogue, collection and search pages, product,
cart and checkout pages, error pages.

Functions of the catalogue and the request's parameters only: the handlers in `app.py`
resolve the visit, log events and pass what these return to `StorefrontBase.render`, which
adds the shop chrome (header, menus, cart count; `render.Renderer.chrome`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

from simpersona.store.catalog import Collection, Product, StoreCatalog
from simpersona.store.checkout import FORM_ERROR
from simpersona.store.links import Links
from simpersona.store.state import (
    COUNTRIES,
    MAX_QUANTITY,
    SHIPPING_METHODS,
    Checkout,
    Line,
    subtotal,
)

PAGE_SIZE = 24
MAX_QUERY_LEN = 200

SHOP_WIDE_COLLECTIONS = frozenset(
    {"all", "sale", "new-arrivals", "best-sellers", "featured", "frontpage"}
)

SORTS: dict[str, str] = {
    "featured": "Featured",
    "price-asc": "Price, low to high",
    "price-desc": "Price, high to low",
    "title-asc": "Alphabetically, A–Z",
}

INFO_PAGES: dict[str, tuple[str, list[str]]] = {
    "about": (
        "About us",
        [
            "We are a small, independent shop that cares about well-made things.",
            "Every product is chosen by our team and shipped from our own warehouse.",
        ],
    ),
    "shipping": (
        "Shipping",
        [
            "Standard shipping is free on every order and arrives in 5–8 business days.",
            "Express shipping arrives in 1–2 business days.",
        ],
    ),
    "returns": (
        "Returns",
        [
            "Not quite right? Return unworn items within 30 days for a full refund.",
            "Sale items can be exchanged but not refunded.",
        ],
    ),
    "faq": (
        "FAQ",
        [
            "Can I change my order? Yes, within an hour of placing it.",
            "Do you ship internationally? We ship to most countries in Europe, "
            "North America and Australia.",
        ],
    ),
    "contact": (
        "Contact",
        ["Write to us any time at hello@example.com; we answer within one business day."],
    ),
}

ERROR_TITLES = {404: "Page not found", 500: "Something went wrong"}


# ---- request parameters --------------------------------------------------------------------
def page_number(raw: str | None) -> int:
    """The `page` query parameter: a page number from 1 (1 for anything else)."""
    if not raw or not raw.isascii() or not raw.strip().isdigit() or len(raw) > 6:
        return 1
    return max(1, int(raw))


def sort_order(raw: str | None) -> str:
    """The `sort` query parameter: one of `SORTS` ('featured' for anything else)."""
    return raw if raw in SORTS else "featured"


def search_query(raw: str) -> str:
    """The `q` query parameter, its whitespace collapsed, at most `MAX_QUERY_LEN` long."""
    return " ".join(raw.split())[:MAX_QUERY_LEN]


def paginate(items: list[Any], page: int, size: int = PAGE_SIZE) -> tuple[list[Any], int, int]:
    """(items on the page, the page number within range, the number of pages)."""
    pages = max(1, math.ceil(len(items) / size))
    page = min(page, pages)
    return items[(page - 1) * size : page * size], page, pages


def sort_products(products: list[Product], sort: str) -> list[Product]:
    if sort == "price-asc":
        return sorted(products, key=lambda p: (p.price is None, p.price or 0.0, p.position))
    if sort == "price-desc":
        return sorted(products, key=lambda p: (p.price is None, -(p.price or 0.0), p.position))
    if sort == "title-asc":
        return sorted(products, key=lambda p: (p.title.lower(), p.position))
    return products


def added_notice(p: Product) -> str:
    """The notice on the page a buyer lands on after adding `p` to the cart."""
    return f"Added “{p.title}” to your cart."


# ---- catalogue pages -----------------------------------------------------------------------
def home_context(cat: StoreCatalog) -> dict[str, Any]:
    featured = cat.featured_products(8)
    seen = {p.product_id for p in featured}
    new = []
    if "new-arrivals" in cat.collections:
        new = cat.products_of(
            [p for p in cat.collections["new-arrivals"].product_ids if p not in seen][:4]
        )
    return {"featured": featured, "new_arrivals": new, "collections": cat.nav_collections(8)}


def collections_context(cat: StoreCatalog) -> dict[str, Any]:
    """Every collection of the shop (Shopify's /collections page): any collection is two
    clicks from any page, as on real stores whose menus list only a few."""
    return {"collections": [c for c in cat.collections.values() if c.product_ids]}


def _listing_context(
    products: list[Product], page: int, page_url: Callable[[int], str]
) -> dict[str, Any]:
    """One page of a product listing (a collection, search results) and what the
    `pagination` macro of `_macros.html` needs: the page number within range, the number of
    pages and the URL of page n."""
    items, page_no, pages = paginate(products, page)
    return {
        "products": items,
        "total": len(products),
        "page_no": page_no,
        "pages": pages,
        "page_url": page_url,
    }


def collection_context(
    cat: StoreCatalog, coll: Collection, sort: str, page: int, links: Links
) -> dict[str, Any]:
    products = sort_products(cat.products_of(coll.product_ids), sort)
    listing = _listing_context(
        products, page, lambda n: links.collection(coll.collection_id, n, sort)
    )
    return {"collection": coll, "sort": sort, **listing}


def search_context(cat: StoreCatalog, q: str, page: int, links: Links) -> dict[str, Any]:
    results = cat.search(q) if q else []
    return {"q": q, **_listing_context(results, page, lambda n: links.search(q, n))}


def product_context(
    cat: StoreCatalog,
    p: Product,
    *,
    error: str | None = None,
    quantity: str = "1",
    notice: str | None = None,
) -> dict[str, Any]:
    colls = [cat.collections[c] for c in p.collection_ids if c in cat.collections]
    # Related: the smallest collection of the product that is not shop-wide (sale, new
    # arrivals...), i.e. the most specific one, e.g. "Sandals" rather than "Footwear".
    pools = [c for c in colls if c.collection_id not in SHOP_WIDE_COLLECTIONS] or colls
    pools = sorted((c for c in pools if len(c.product_ids) > 1), key=lambda c: len(c.product_ids))
    related_ids = [pid for pid in pools[0].product_ids if pid != p.product_id] if pools else []
    return {
        "product": p,
        "notice": notice,
        "product_collections": colls,
        "related": cat.products_of(related_ids[:4]),
        "error": error,
        "quantity": quantity,
        "max_quantity": MAX_QUANTITY,
    }


def info_context(handle: str) -> dict[str, Any] | None:
    """An info page (`INFO_PAGES`), or None when there is none by that handle."""
    if handle not in INFO_PAGES:
        return None
    title, paragraphs = INFO_PAGES[handle]
    return {"handle": handle, "title": title, "paragraphs": paragraphs}


# ---- cart and checkout ---------------------------------------------------------------------
def cart_context(
    lines: list[Line], error: str | None = None, notice: str | None = None
) -> dict[str, Any]:
    return {
        "lines": lines,
        "subtotal": subtotal(lines),
        "error": error,
        "notice": notice,
        "max_quantity": MAX_QUANTITY,
    }


def checkout_context(
    co: Checkout,
    lines: list[Line],
    *,
    payment: bool,
    errors: dict[str, str] | None = None,
    values: Mapping[str, str] | None = None,
    shipping: str | None = None,
) -> dict[str, Any]:
    """A checkout step: the information step, or the `payment` step (where the shipping
    method is final). `values` are the form's (default: the checkout's saved details) and
    `shipping` the method shown (default: the checkout's)."""
    amount = subtotal(lines)
    method = SHIPPING_METHODS[shipping or co.shipping]
    return {
        "checkout": co,
        "lines": lines,
        "subtotal": amount,
        "method": method,
        "total": round(amount + method.price, 2),
        "methods": list(SHIPPING_METHODS.values()),
        "countries": COUNTRIES,
        "errors": errors or {},
        "values": dict(values if values is not None else co.info),
        "error": FORM_ERROR if errors else None,
        "shipping_final": payment,
    }


def thank_you_context(co: Checkout) -> dict[str, Any]:
    return {"checkout": co, "order": co.order}


def error_context(status: int, message: str) -> dict[str, Any]:
    return {"status": status, "title": ERROR_TITLES.get(status, message), "message": message}
