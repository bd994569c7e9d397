"""Per-shop catalogues: composed product titles, prices, collections, search queries, URLs.

A catalogue is small (tens to hundreds of products), so it is built with plain Python; the
arrays it exposes (prices, categories, group samplers, URL and query tables) let the event
simulation address products, collections, queries and URLs by integer code.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import polars as pl

from simpersona.schema import conform
from simpersona.synth.types import PRICE_GAMMA
from simpersona.synth.vocab import (
    CATEGORIES,
    INFO_PAGES,
    PRODUCT_LINES,
    SHOP_COLLECTIONS,
    Category,
)

N_QUERY_VARIANTS = 4
_SLUG_RE = re.compile(r"[^0-9a-z]+")


def slugify(text: str) -> str:
    return _SLUG_RE.sub("-", text.lower().replace("'", "")).strip("-")


@dataclass(frozen=True)
class GroupSampler:
    """Weighted sampling of products within numbered groups, vectorised: group g's CDF is
    stored shifted by g, so one `searchsorted` serves every group at once."""

    members: np.ndarray  # product index of each (group, member) entry, groups concatenated
    cdf: np.ndarray  # g + cumulative normalised weight, ending exactly at g + 1

    @classmethod
    def build(cls, groups: list[tuple[np.ndarray, np.ndarray]]) -> GroupSampler:
        members, cdfs = [], []
        for g, (idx, w) in enumerate(groups):
            if len(idx) == 0:
                raise ValueError(f"sampler group {g} is empty")
            c = np.cumsum(w / w.sum())
            c[-1] = 1.0
            members.append(idx)
            cdfs.append(g + c)
        return cls(np.concatenate(members).astype(np.int32), np.concatenate(cdfs))

    def sample(self, group: np.ndarray, u: np.ndarray) -> np.ndarray:
        pos = np.searchsorted(self.cdf, group + u, side="right")
        return self.members[np.minimum(pos, len(self.members) - 1)]


@dataclass
class ShopCatalog:
    shop_id: str
    currency: str
    base_url: str
    categories: tuple[Category, ...]
    products: pl.DataFrame  # canonical products table
    collections: pl.DataFrame  # canonical collections table
    product_ids: pl.Series
    product_price: np.ndarray  # float64, current (sale) price
    product_cat: np.ndarray  # local category index
    product_line: np.ndarray  # index into vocab.PRODUCT_LINES
    collection_ids: pl.Series
    cat_coll_start: np.ndarray  # per category: first index into cat_coll_members
    cat_coll_count: np.ndarray
    cat_coll_members: np.ndarray  # collection indices of each category, concatenated
    sale_collection: int  # index of the "sale" collection
    # group = (level * (n_lines + 1) + line) * (n_cat + 1) + cat; cat == n_cat is the sale
    # group, line == n_lines is "any line"
    sampler: GroupSampler
    queries: pl.Series  # N_QUERY_VARIANTS per product: index product * N + variant
    urls: pl.Series  # every page URL of the shop, addressed by the offsets below
    url_home: int
    url_blog_start: int
    n_blogs: int
    url_info_start: int
    n_info: int
    url_cart: int
    url_product_start: int
    url_collection_start: int
    url_search_start: int

    @property
    def n_categories(self) -> int:
        return len(self.categories)

    @property
    def n_products(self) -> int:
        return len(self.product_price)

    @property
    def n_lines(self) -> int:
        return len(PRODUCT_LINES)

    def sampler_group(self, level: np.ndarray, line: np.ndarray, cat: np.ndarray) -> np.ndarray:
        """Group code for price level(s), product line (n_lines = any line) and local
        category (n_categories = sale group)."""
        return (level * (self.n_lines + 1) + line) * (self.n_categories + 1) + cat


def _charm_price(p: float) -> float:
    """Retail-style price: 24.99, 129.00, 899.00."""
    if p < 20:
        return round(max(p, 3.0)) - 0.01
    if p < 200:
        return round(p) - 0.01
    return float(round(p / 10) * 10)


def _typo(word: str, rng: np.random.Generator) -> str:
    if len(word) < 5:
        return word
    i = int(rng.integers(1, len(word) - 1))
    return word[:i] + word[i + 1 :]


_DESCRIPTIONS = (
    "{a} {feat} {noun} made for {purpose}.",
    "Our {feat} {noun}, built for {purpose} and made to last.",
    "The {feat} {noun} you will reach for every day: designed for {purpose}.",
    "{Feat} and easy to care for, this {noun} is made for {purpose}.",
)


_PURPOSE = {
    "Everyday": "everyday wear",
    "Alpine": "alpine trips",
    "Rain": "rainy days",
    "Lounge": "lounging at home",
    "Car Camping": "car camping trips",
}


def _describe(rng: np.random.Generator, feat: str, use: str, noun: str, variant: str) -> str:
    tpl = _DESCRIPTIONS[int(rng.integers(len(_DESCRIPTIONS)))]
    text = tpl.format(
        a="An" if feat[:1].lower() in "aeiou" else "A",
        feat=feat.lower(),
        Feat=feat,
        noun=noun.lower(),
        purpose=_PURPOSE.get(use, use.lower()) if use else "everyday use",
    )
    return f"{text} Available in {variant}." if variant else text


def build_catalog(
    shop_id: str,
    rng: np.random.Generator,
    *,
    n_products: int,
    n_categories: int,
    currency: str,
    domain: str,
    sale_share: float,
) -> ShopCatalog:
    """A shop's catalogue: `n_products` products over `n_categories` categories."""
    cat_idx = rng.choice(len(CATEGORIES), size=n_categories, replace=False)
    cats = tuple(CATEGORIES[i] for i in sorted(cat_idx))
    # Category sizes: a Dirichlet split, at least 3 products each.
    n_products = max(n_products, 3 * n_categories)
    split = rng.dirichlet(np.full(n_categories, 3.0))
    sizes = np.maximum(3, np.floor(split * n_products).astype(int))

    titles: list[str] = []
    descs: list[str] = []
    prices: list[float] = []
    pcat: list[int] = []
    plines: list[int] = []
    pnoun: list[tuple[int, int]] = []  # (category, noun index)
    queries: list[str] = []
    seen: set[str] = set()
    for ci, (cat, size) in enumerate(zip(cats, sizes, strict=True)):
        noun_w = rng.dirichlet(np.full(len(cat.nouns), 2.0))
        made = 0
        tries = 0
        while made < size and tries < size * 30:
            tries += 1
            ni = int(rng.choice(len(cat.nouns), p=noun_w))
            noun = cat.nouns[ni]
            feats = noun.features or cat.features
            feat = feats[int(rng.integers(len(feats)))]
            uses = cat.uses if noun.uses is None else noun.uses
            use = uses[int(rng.integers(len(uses)))] if uses else ""
            if use and rng.random() < 0.25:
                use = ""
            aud = cat.audiences[int(rng.integers(len(cat.audiences)))] if cat.audiences else ""
            var = cat.variants[int(rng.integers(len(cat.variants)))] if cat.variants else ""
            li = int(rng.integers(len(PRODUCT_LINES)))
            line_name, line_tag, line_price = PRODUCT_LINES[li]
            head = " ".join(w for w in (aud, feat, use, noun.singular) if w)
            head = f"{line_tag} {line_name} {head}"
            title = f"{head} – {var}" if var else head
            if title in seen:
                continue
            seen.add(title)
            made += 1
            titles.append(title)
            descs.append(_describe(rng, feat, use, noun.singular, var))
            price = noun.base_price * line_price * float(rng.lognormal(0.0, 0.3))
            prices.append(price)
            pcat.append(ci)
            plines.append(li)
            pnoun.append((ci, ni))
            aud_q = aud.replace("'s", "s").replace("'", "").lower()
            q = [
                f"{use} {noun.plural}".strip().lower(),
                f"{feat} {noun.singular}".lower(),
                (f"{aud_q} {noun.plural}" if aud_q else f"{var} {noun.singular}").lower(),
                " ".join(_typo(w, rng) if rng.random() < 0.3 else w for w in head.lower().split()),
            ]
            queries.extend(" ".join(x.split()) for x in q)

    n = len(titles)
    price_arr = np.array(prices)
    on_sale = rng.random(n) < sale_share
    if not on_sale.any():
        on_sale[int(np.argmin(price_arr))] = True
    price_arr = np.where(on_sale, price_arr * rng.uniform(0.6, 0.85, n), price_arr)
    price_arr = np.array([_charm_price(p) for p in price_arr])
    popularity = rng.lognormal(0.0, 1.0, n)
    new_arrival = rng.random(n) < 0.12
    best = popularity >= np.quantile(popularity, 0.9)
    cat_arr = np.array(pcat, dtype=np.int32)

    # Collections: one per category, one per noun present, and the shop-wide ones.
    coll_ids: list[str] = []
    coll_titles: list[str] = []
    coll_cat: list[int] = []  # -1 for shop-wide
    noun_coll: dict[tuple[int, int], int] = {}
    for ci, cat in enumerate(cats):
        coll_ids.append(cat.key)
        coll_titles.append(cat.title)
        coll_cat.append(ci)
        for ni, noun in enumerate(cat.nouns):
            if (ci, ni) in pnoun:
                noun_coll[(ci, ni)] = len(coll_ids)
                coll_ids.append(slugify(f"{cat.key} {noun.plural}"))
                coll_titles.append(noun.plural)
                coll_cat.append(ci)
    shop_coll = {}
    for handle, title in SHOP_COLLECTIONS:
        shop_coll[handle] = len(coll_ids)
        coll_ids.append(handle)
        coll_titles.append(title)
        coll_cat.append(-1)

    handles = [slugify(t) for t in titles]
    product_ids = [f"p{i:05d}" for i in range(n)]
    memberships = []
    for i in range(n):
        cols = [cats[pcat[i]].key, coll_ids[noun_coll[pnoun[i]]]]
        if on_sale[i]:
            cols.append("sale")
        if new_arrival[i]:
            cols.append("new-arrivals")
        if best[i]:
            cols.append("best-sellers")
        memberships.append(cols)
    products = conform(
        pl.DataFrame(
            {
                "shop_id": [shop_id] * n,
                "product_id": product_ids,
                "title": titles,
                "description": descs,
                "price": price_arr,
                "collection_ids": memberships,
            }
        ),
        "products",
    )
    collections = conform(
        pl.DataFrame(
            {"shop_id": [shop_id] * len(coll_ids), "collection_id": coll_ids, "title": coll_titles}
        ),
        "collections",
    )

    # Per-category collection lists (category collection + its noun collections).
    cc = np.array(coll_cat)
    members: list[np.ndarray] = []
    starts: list[int] = []
    counts: list[int] = []
    for ci in range(len(cats)):
        m = np.flatnonzero(cc == ci)
        starts.append(sum(len(x) for x in members))
        counts.append(len(m))
        members.append(m)

    # Samplers: per price level, per line (or any line), per category plus the sale group. A
    # line with no product in a category (small shops) falls back to the whole category.
    line_arr = np.array(plines, dtype=np.int32)
    med = np.array([np.median(price_arr[cat_arr == ci]) for ci in range(len(cats))])
    rel = price_arr / med[cat_arr]
    groups = []
    for gamma in PRICE_GAMMA:
        w = popularity * rel ** (-gamma)
        for li in range(len(PRODUCT_LINES) + 1):
            in_line = line_arr == li if li < len(PRODUCT_LINES) else np.ones(n, dtype=bool)
            for member in [cat_arr == ci for ci in range(len(cats))] + [on_sale]:
                idx = np.flatnonzero(member & in_line)
                if len(idx) == 0:
                    idx = np.flatnonzero(member)
                groups.append((idx, w[idx]))
    sampler = GroupSampler.build(groups)

    # URL table.
    base = f"https://{shop_id}.{domain}"
    blogs = [f"/blogs/journal/{topic}" for cat in cats for topic in cat.blog_topics]
    blogs += ["/blogs/journal/our-story", "/blogs/journal/gift-guide"]
    infos = [f"/pages/{p}" for p in INFO_PAGES]
    search_paths = ["/search?q=" + q.replace(" ", "+") for q in queries]
    paths = (
        ["/"]
        + blogs
        + infos
        + ["/cart"]
        + [f"/products/{h}" for h in handles]
        + [f"/collections/{c}" for c in coll_ids]
        + search_paths
    )
    url_blog_start = 1
    url_info_start = url_blog_start + len(blogs)
    url_cart = url_info_start + len(infos)
    url_product_start = url_cart + 1
    url_collection_start = url_product_start + n
    url_search_start = url_collection_start + len(coll_ids)
    return ShopCatalog(
        shop_id=shop_id,
        currency=currency,
        base_url=base,
        categories=cats,
        products=products,
        collections=collections,
        product_ids=pl.Series("product_id", product_ids),
        product_price=price_arr.astype(np.float64),
        product_cat=cat_arr,
        product_line=line_arr,
        collection_ids=pl.Series("collection_id", coll_ids),
        cat_coll_start=np.array(starts, dtype=np.int64),
        cat_coll_count=np.array(counts, dtype=np.int64),
        cat_coll_members=np.concatenate(members).astype(np.int64),
        sale_collection=shop_coll["sale"],
        sampler=sampler,
        queries=pl.Series("search_query", queries),
        urls=pl.Series("url", [base + p for p in paths]),
        url_home=0,
        url_blog_start=url_blog_start,
        n_blogs=len(blogs),
        url_info_start=url_info_start,
        n_info=len(infos),
        url_cart=url_cart,
        url_product_start=url_product_start,
        url_collection_start=url_collection_start,
        url_search_start=url_search_start,
    )
