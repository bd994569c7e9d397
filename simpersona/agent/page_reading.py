"""Reading any store's page: page kind, product facts, cart count and the roles of controls.

Stores do not share markup, but they share conventions, and this module reads those:

- **structured data**: JSON-LD and microdata `Product`/`Offer` (name, sku, price, currency),
  Open Graph (`og:type=product`, `product:price:amount`), `<meta name="generator">`;
- **URL patterns**: `/products/…`, `/product/…`, `/catalogue/<slug>_<id>/`, `/collections/…`,
  `/category/…`, `/cart`, `/basket`, `/checkout…`, `…/thank-you`, `?q=` and the like;
- **forms and labels**: add-to-cart forms (Shopify `/cart/add`, WooCommerce `add-to-cart`,
  Oscar and other basket forms), "Add to basket" buttons, "Proceed to checkout", "Place
  order", quantity fields, search boxes;
- **nearby text**: a control whose label says nothing on its own ("Select option") gets the
  text of the row or card it sits in, so two shipping options read as two different things.

One in-page script (`EXTRACT_JS`) collects the raw facts in a single DOM round trip; the
functions below turn them into a page kind, facts and element roles. A site profile
(`simpersona.agent.site_profile`) adds selectors and URL patterns where the conventions are
not enough; its values win over the guesses.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from importlib.resources import files
from typing import Any
from urllib.parse import parse_qs, urlsplit

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
# Facts an observation may carry (and a profile may point at).
FACT_KEYS: tuple[str, ...] = (
    "checkout_step",
    "product_id",
    "order_number",
    "status",
    "price",
    "currency",
    "cart_count",
    "subtotal",
    "notice",
)
# What a control is for, when the reading can tell. Policies look controls up by role.
ROLES: tuple[str, ...] = (
    "product_link",
    "collection_link",
    "home_link",
    "cart_link",
    "search_box",
    "add_to_cart",
    "quantity",
    "remove_from_cart",
    "checkout",
    "continue",
    "place_order",
)

# Runs in the page (page_reading.js, packaged beside this module): every visible
# interactive element, the structured data, the header's cart texts, the site profile's facts.
EXTRACT_JS = files("simpersona.agent").joinpath("page_reading.js").read_text(encoding="utf-8")

# ---- URL conventions ---------------------------------------------------------------------
_PRODUCT_PATH = re.compile(
    r"/(products?|item|items|p|dp)/[^/]+/?$|/catalogue/(?!category/)[^/]+_\d+/?$"
    r"|/product-page/[^/]+/?$|-p-\d+(\.html?)?$",
    re.I,
)
_COLLECTION_PATH = re.compile(
    r"/(collections?|categor(y|ies)|c|catalogue/category|product-category|department|shop/category"
    r"|catalog/category|browse)(/|$)|^/(catalogue|catalog|shop|store|products|all-products)/?$",
    re.I,
)
_CART_PATH = re.compile(r"/(cart|basket|bag|shopping-cart|shopping-bag)/?$", re.I)
_CHECKOUT_PATH = re.compile(r"/(checkouts?|onepage|order-pay)(/|$)", re.I)
_CONFIRM_PATH = re.compile(
    r"thank[-_]?you|thankyou|order[-_]?(received|confirmation|complete|success)"
    r"|/checkout/(success|complete|done)|/orders?/[^/]+/?$",
    re.I,
)
_INFO_PATH = re.compile(
    r"/(pages?|blogs?|about|contact|faq|help|shipping|returns|policies|policy|terms|privacy"
    r"|info|legal)(/|$|[-_.])",
    re.I,
)
_SEARCH_PARAMS = ("q", "s", "query", "search", "keyword", "keywords", "term", "search_query", "k")
_HOME_PATHS = re.compile(r"^/?(index\.\w+|home)?/?$", re.I)

# ---- labels ------------------------------------------------------------------------------
_ADD_LABEL = re.compile(
    r"\badd (it )?to (the )?(cart|basket|bag|trolley)\b|\bin den warenkorb\b|^add$|^buy$",
    re.I,
)
_ADD_FORM = re.compile(r"cart/add|add[-_]?to[-_]?(cart|basket)|basket/add|/cart/?$", re.I)
_CHECKOUT_LABEL = re.compile(r"\b(proceed to |go to |continue to )?check ?out\b", re.I)
_PLACE_ORDER_LABEL = re.compile(
    r"\bplace (my |your )?order\b|\bcomplete (my |your )?(order|purchase)\b"
    r"|\bconfirm (and pay|order|purchase|payment)\b|\bpay now\b|\bsubmit (my )?order\b"
    r"|\border now\b|\bfinish (order|checkout)\b|\bbuy now\b|\bpay (\$|€|£)?\d",
    re.I,
)
_CONTINUE_LABEL = re.compile(
    r"\b(continue|next|proceed|save|use this|ship to this|deliver to this|select|choose"
    r"|go to payment|review|confirm)\b",
    re.I,
)
_REMOVE_LABEL = re.compile(r"\b(remove|delete)\b|^×$|^x$", re.I)
_CART_LABEL = re.compile(r"\b(cart|basket|bag|trolley)\b", re.I)
_HOME_LABEL = re.compile(r"^(home|start|shop|store)$", re.I)
_VIEW_CART_LABEL = re.compile(r"\b(view|go to|open|see) (my |your |the )?(cart|basket|bag)\b", re.I)
_MENU_PATH = re.compile(r"/[^/]+/?")
_NOT_A_CATEGORY = re.compile(
    r"account|login|log-in|sign[-_ ]?in|sign[-_ ]?up|register|logout|wishlist|compare|contact"
    r"|about|blog|help|faq|search|cart|basket|checkout|offers|pages?\b|policy|terms|privacy",
    re.I,
)
_CONFIRM_TEXT = re.compile(
    r"thank you for your (order|purchase)|your order (has been|was) (placed|received|confirmed)"
    r"|order (is )?confirmed|order (number|no\.?|#)\s*[:#]?\s*[A-Z0-9-]{3,}"
    r"|we('ve| have) received your order",
    re.I,
)
_ORDER_NUMBER = re.compile(
    r"order\s*(?:number|no\.?|#|id|reference)?(?:\s+(?:is|was))?\s*[:#]?\s*#?"
    r"([A-Z0-9][A-Z0-9-]{2,})",
    re.I,
)
_NOT_FOUND = re.compile(
    r"\b(404|not found|page (does not|doesn't) exist|no longer available)\b", re.I
)
_COUNT_TEXT = re.compile(
    r"^\(?(\d{1,3})\)?$|(\d{1,3})\s*(items?|products?|articles?)\b|\((\d{1,3})\)"
)
_PRICE = re.compile(r"(?:[$€£¥]|USD|EUR|GBP)\s?\d[\d,.]*|\d[\d,.]*\s?(?:[$€£¥]|USD|EUR|GBP)")


def _path(url: str) -> str:
    return urlsplit(url).path or "/"


def search_query(url: str) -> str | None:
    """The search phrase in a URL's query string (`?q=`, `?s=`, `?query=` …), if any."""
    params = parse_qs(urlsplit(url).query)
    for key in _SEARCH_PARAMS:
        if params.get(key) and params[key][0].strip():
            return params[key][0].strip()
    return None


def _ld_items(ld: Any) -> list[dict[str, Any]]:
    """Every JSON-LD object in the page's blocks (lists and @graph flattened)."""
    out: list[dict[str, Any]] = []
    stack = [ld]
    while stack:
        x = stack.pop()
        if isinstance(x, list):
            stack.extend(x)
        elif isinstance(x, dict):
            out.append(x)
            if "@graph" in x:
                stack.append(x["@graph"])
    return out


def _is_type(item: Mapping[str, Any], name: str) -> bool:
    t = item.get("@type")
    types = t if isinstance(t, list) else [t]
    return any(isinstance(x, str) and x.lower() == name.lower() for x in types)


def structured_product(raw: Mapping[str, Any]) -> dict[str, str] | None:
    """The page's main product from JSON-LD, else microdata, else Open Graph: name, id
    (sku / productID / @id), price, currency. None when the page declares no single product."""
    products = [x for x in _ld_items(raw.get("ld") or []) if _is_type(x, "Product")]
    if len(products) == 1:
        p = products[0]
        offer = p.get("offers") or {}
        if isinstance(offer, list):
            offer = offer[0] if offer else {}
        if isinstance(offer, dict) and _is_type(offer, "AggregateOffer"):
            price = offer.get("lowPrice") or offer.get("price")
        else:
            price = offer.get("price") if isinstance(offer, dict) else None
        pid = p.get("sku") or p.get("productID") or p.get("mpn") or p.get("@id")
        return _strip(
            {
                "name": p.get("name"),
                "id": pid,
                "price": price,
                "currency": offer.get("priceCurrency") if isinstance(offer, dict) else None,
            }
        )
    main = [m for m in raw.get("micro") or [] if m.get("has_form") and not m.get("in_link")]
    if len(main) == 1:
        m = main[0]
        return _strip({"name": m.get("name"), "id": m.get("sku"), "price": m.get("price"),
                       "currency": m.get("currency")})  # fmt: skip
    og = raw.get("og") or {}
    if str(og.get("og:type", "")).lower() in ("product", "og:product", "product.item"):
        return _strip(
            {
                "name": og.get("og:title"),
                "id": og.get("product:retailer_item_id") or og.get("product:sku"),
                "price": og.get("product:price:amount") or og.get("og:price:amount"),
                "currency": og.get("product:price:currency") or og.get("og:price:currency"),
            }
        )
    return None


def _strip(d: Mapping[str, Any]) -> dict[str, str]:
    return {k: str(v).strip() for k, v in d.items() if v not in (None, "") and str(v).strip()}


def product_id_from_url(url: str) -> str | None:
    """A product's identity from its URL: the last path segment (`…/trail-shoe_12/` → `12` for
    `<slug>_<number>` paths, else the slug)."""
    segs = [s for s in _path(url).split("/") if s]
    if not segs:
        return None
    last = segs[-1]
    if m := re.fullmatch(r".+_(\d+)", last):
        return m.group(1)
    return re.sub(r"\.html?$", "", last, flags=re.I) or None


def cart_count_of(texts: list[str]) -> str | None:
    """The item count among the header's cart texts ("Cart (2)", "3 items", "2"); prices
    and totals are not counts."""
    for t in texts:
        if _PRICE.search(t) or re.search(r"\d[.,]\d\d\b", t):
            continue
        m = _COUNT_TEXT.search(t.strip())
        if m:
            return next(g for g in m.groups() if g and g.isdigit())
    return None


def element_role(e: Mapping[str, Any], page_kind: str, page_url: str) -> str | None:
    """What an element is for (one of ROLES), from its kind, label, link target, form and
    hints (id, class, name); None when nothing says."""
    kind, label = e.get("kind"), str(e.get("label") or "")
    hint = f"{e.get('hint') or ''} {e.get('form_hint') or ''}"
    here = urlsplit(page_url)
    if kind == "link":
        href = str(e.get("href") or "")
        parts = urlsplit(href)
        if parts.scheme not in ("http", "https") or parts.netloc != here.netloc:
            return None
        if page_kind == "cart" and _REMOVE_LABEL.search(label):
            return "remove_from_cart"  # often a scripted link ("#") that edits the cart form
        if page_kind == "checkout" and _PLACE_ORDER_LABEL.search(label):
            return "place_order"
        if (
            page_kind == "checkout"
            and _CONTINUE_LABEL.search(label)
            and e.get("region") != "header"
        ):
            return "continue"
        if "#" in href and (parts.path, parts.query) == (here.path, here.query):
            return None  # a menu toggle or an anchor on this page
        path = parts.path or "/"
        if _HOME_LABEL.search(label):
            return "home_link"
        if _CART_PATH.search(path) or (
            _CART_LABEL.search(label)
            and "add" not in label.lower()
            and e.get("region") in ("header", "nav")
        ):
            return "cart_link"
        if _CHECKOUT_PATH.search(path) and page_kind == "cart":
            return "checkout"
        if e.get("product_id"):
            return "product_link"
        if e.get("collection_id") or _COLLECTION_PATH.search(path):
            return "collection_link"
        if (
            _HOME_PATHS.fullmatch(path)
            and not parts.query
            and (_HOME_LABEL.search(label) or "logo" in hint.lower() or e.get("region") == "header")
        ):
            return "home_link"
        if (
            _PRODUCT_PATH.search(path)
            and not _INFO_PATH.search(path)
            and not _CART_PATH.search(path)
        ):
            return "product_link"
        listing = page_kind in ("collection", "search", "home", "other")
        if e.get("in_card") and listing and e.get("region") == "main" and label:
            return "product_link"
        if (
            e.get("region") in ("header", "nav")
            and label
            and _MENU_PATH.fullmatch(path)
            and not (_NOT_A_CATEGORY.search(path) or _NOT_A_CATEGORY.search(label))
        ):
            return "collection_link"  # a menu's one-segment link: the store's categories
        return None
    if kind == "input":
        name = f"{e.get('name') or ''} {e.get('hint') or ''}".lower()
        if e.get("input_type") == "search" or str(e.get("name") or "").lower() in _SEARCH_PARAMS:
            return "search_box"
        if re.search(r"\b(quantity|qty)\b|quantity", name):
            return "quantity"
        return None
    if kind != "button":
        return None
    if _VIEW_CART_LABEL.search(label) or (
        e.get("region") in ("header", "nav")
        and _CART_LABEL.search(label)
        and not _ADD_LABEL.search(label)
    ):
        return "cart_link"  # "View cart", or a mini-cart toggle that shows the cart's link
    action = str(e.get("form_action") or "")
    if (
        _ADD_LABEL.search(label)
        or re.search(r"add[-_]?to[-_]?(cart|basket)", hint, re.I)
        or (_ADD_FORM.search(action) and e.get("form_method") == "post" and page_kind == "product")
    ):
        return "add_to_cart"
    if page_kind == "cart" and (
        _REMOVE_LABEL.search(label) or re.search(r"remove|delete", hint, re.I)
    ):
        return "remove_from_cart"
    if page_kind == "cart" and _CHECKOUT_LABEL.search(label):
        return "checkout"
    if page_kind == "checkout":
        if _PLACE_ORDER_LABEL.search(label) or re.search(r"place[-_]?order", hint, re.I):
            return "place_order"
        if _CONTINUE_LABEL.search(label):
            return "continue"
    return None


def infer_kind(raw: Mapping[str, Any], product: Mapping[str, str] | None, n_add: int,
               profile_urls: Mapping[str, list[str]] | None = None,
               n_products: int = 0) -> str:  # fmt: skip
    """The page kind from the URL, the structured data, the headings and the controls
    (`n_add`: add-to-cart buttons on the page, `n_products`: distinct product links in the
    page's main part; more than one button or three products make a listing)."""
    url = str(raw.get("url") or "")
    path = _path(url)
    for kind, patterns in (profile_urls or {}).items():
        if any(re.search(p, path) for p in patterns):
            return kind
    status = raw.get("status")
    heading = str(raw.get("heading") or "")
    title = str(raw.get("title") or "")
    if (
        (isinstance(status, int) and status >= 400)
        or _NOT_FOUND.search(heading)
        or (not heading and _NOT_FOUND.search(title))
    ):
        return "error"
    text = str(raw.get("text") or "")[:1500]
    if (
        _CONFIRM_PATH.search(path)
        or _CONFIRM_TEXT.search(heading)
        or (_CHECKOUT_PATH.search(path) and _CONFIRM_TEXT.search(text))
    ):
        return "confirmation"
    if _CHECKOUT_PATH.search(path) or raw.get("payment_fields"):
        return "checkout"
    if _CART_PATH.search(path) or re.match(
        r"^(your |my )?(shopping )?(cart|basket|bag)\b", heading, re.I
    ):
        return "cart"
    # Several add-to-cart buttons make a listing, unless the URL names one product (its
    # page may list related or recently viewed products with buttons of their own).
    listing = (n_add > 1 or n_products >= 3) and not _PRODUCT_PATH.search(path)
    if not listing and (product is not None or _PRODUCT_PATH.search(path)):
        return "product"
    if search_query(url) is not None or re.search(r"/search(/|$)", path, re.I):
        return "search"
    if _HOME_PATHS.fullmatch(path):
        return "home"  # a home page may list products too
    if _COLLECTION_PATH.search(path) or listing:
        return "collection"
    if _INFO_PATH.search(path):
        return "info"
    if n_add == 1:
        return "product"
    return "other"


def order_number_of(text: str) -> str | None:
    for m in _ORDER_NUMBER.finditer(text):
        if any(c.isdigit() for c in m.group(1)):
            return m.group(1)
    return None
