"""Storefront URL parsing for the importers: product / collection / search pages, handle
cleaning, and readable titles from slugs.

Shopify storefront paths look like `/products/<handle>`, `/collections/<handle>`,
`/collections/<collection>/products/<handle>` and `/search?q=<query>`, optionally behind a
locale prefix (`/en-us/products/...`). Real logs carry junk glued onto handles, e.g.
`/products/puffy-lux-mattress&_kx=...` (a query string written with `&` instead of `?`) or
`/products/puffy-monarch-mattress%22` (an encoded quote); `clean_handle` cuts it off.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from urllib.parse import parse_qs, unquote, urlsplit

# A Shopify handle: letters, digits, '-' and '_' (unicode letters allowed). Anything after the
# first other character is junk.
_HANDLE_RE = re.compile(r"^[\w-]+")
_LOCALE_RE = re.compile(r"^[a-z]{2}(-[a-z0-9]{2,4})?$")
_WORD_SPLIT_RE = re.compile(r"[\s._/\-]+")
_SLUG_RE = re.compile(r"[^0-9a-z]+")


@dataclass(frozen=True)
class PageInfo:
    """What a page URL shows: `kind` is product_view, collection_view, search or page_view."""

    kind: str
    product_id: str | None = None
    collection_id: str | None = None
    search_query: str | None = None


def clean_handle(segment: str) -> str | None:
    """The handle at the start of a path segment, lower-cased, junk removed; None if empty.

    >>> clean_handle("puffy-lux-mattress&_kx=4BQHo.Kn3hWR&kind=back-pain")
    'puffy-lux-mattress'
    >>> clean_handle("puffy-monarch-mattress%22")
    'puffy-monarch-mattress'
    """
    m = _HANDLE_RE.match(unquote(segment).strip().lower())
    if not m:
        return None
    handle = m.group(0).strip("-_")
    return handle or None


def classify_page(url: str | None) -> PageInfo:
    """Classify a storefront page URL (full URL or bare path)."""
    if not url:
        return PageInfo("page_view")
    # Only a search page needs the query string: classify the rest by the part before it,
    # so tracking parameters do not defeat the cache.
    base = url.split("#", 1)[0].split("?", 1)[0]
    if base.rstrip("/").lower().endswith("/search"):
        return _classify(url)
    return _classify(base)


@lru_cache(maxsize=100_000)
def _classify(url: str) -> PageInfo:
    try:
        parts = urlsplit(url.strip())
    except ValueError:  # e.g. an unbalanced '[' in the host
        return PageInfo("page_view")
    segments = [s for s in parts.path.split("/") if s]
    if segments and _LOCALE_RE.match(segments[0].lower()) and len(segments) > 1:
        segments = segments[1:]
    lowered = [s.lower() for s in segments]

    collection = None
    if "collections" in lowered:
        i = lowered.index("collections")
        if i + 1 < len(segments):
            collection = clean_handle(segments[i + 1])
    if "products" in lowered:
        i = lowered.index("products")
        if i + 1 < len(segments):
            product = clean_handle(segments[i + 1])
            if product:
                return PageInfo("product_view", product_id=product, collection_id=collection)
    if collection:
        return PageInfo("collection_view", collection_id=collection)
    if lowered == ["search"]:
        q = parse_qs(parts.query).get("q", [])
        query = q[0].strip() if q else ""
        if query:
            return PageInfo("search", search_query=query)
    return PageInfo("page_view")


def slugify(text: str) -> str:
    """`Puffy Deluxe Mattress Topper` -> `puffy-deluxe-mattress-topper`."""
    return _SLUG_RE.sub("-", text.lower()).strip("-")


def readable(text: str) -> str:
    """A slug, handle or dotted category as Title Case words.

    >>> readable("puffy-lux-mattress")
    'Puffy Lux Mattress'
    >>> readable("sewing_machine")
    'Sewing Machine'
    """
    words = [w for w in _WORD_SPLIT_RE.split(text.strip()) if w]
    return " ".join(w[:1].upper() + w[1:] for w in words)


def readable_path(code: str, sep: str = ".") -> str:
    """`appliances.kitchen.mixer` -> `Appliances > Kitchen > Mixer`."""
    return " > ".join(readable(level) for level in code.split(sep) if level.strip())


def path_prefixes(code: str, sep: str = ".") -> list[str]:
    """`electronics.audio.headphone` -> `electronics`, `electronics.audio`, ... (all levels)."""
    levels = [level.strip() for level in code.split(sep)]
    levels = [level for level in levels if level]
    return [sep.join(levels[: i + 1]) for i in range(len(levels))]
