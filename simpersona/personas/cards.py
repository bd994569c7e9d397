"""Persona cards: what the buyers on each token look like, in figures and in one sentence.

For every used token: its size, stratum profile (A–E shares), auxiliary-bin shares per head,
feature centroid (the means of the 16 raw behavioural scalars), the categories and product
titles its buyers touched most (viewed, carted or purchased), and a plain-English
description generated deterministically from those figures (`describe`).

Built shop by shop so memory stays bounded by one shop:

    parts = [token_aggregates(assign_s, features_s, products_s, collections_s) for s in shops]
    cards = build_cards(combine_aggregates(parts), k=256)
    write_cards(cards, out_dir)     # card_pages.py: cards.json, cards.md, cards.html

Counting rules (documented in docs/personas.md):
* a buyer is a buyer–shop pair (the unit of `buyer_vectors`);
* a category is a collection title of a product (`products.collection_ids` →
  `collections.title`); product titles and category titles are grouped by their text across
  shops, so the same item name in two shops adds up;
* `buyers` of a category / title counts the token's buyers who touched it in any channel at
  least once (a buyer who viewed and then bought the same product counts once);
* `share` is that count over the token's buyers.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

import polars as pl

from simpersona.features.labels import BIN_NAMES, HEADS
from simpersona.features.scalars import CHANNELS, SCALAR_NAMES, STRATA

KEYS = ["shop_id", "buyer_id"]
BIN_COLUMNS = tuple(f"{h}_bin" for h in HEADS)
TOP_N = 5
FORMAT_VERSION = 1

STRATUM_NOUNS = {
    "A": "buyers",
    "B": "checkout abandoners",
    "C": "cart builders",
    "D": "window shoppers",
    "E": "bouncers",
}
# A stratum leads a card's name only when it holds at least this share of the token.
DOMINANT_SHARE = 0.6
# Thresholds of the description (ours; see `describe`).
FEW_SESSIONS, MANY_SESSIONS = 1.5, 3.0
PATH_SHARE = 0.5  # share of sessions with a search / collection view to call the path "led"
INTENT_HIGH, INTENT_MEDIUM = 0.5, 0.2


# ---- aggregation ---------------------------------------------------------------------------
@dataclass
class TokenAggregates:
    """Additive per-token sums (one shop or many): `base` has one row per token with buyer,
    stratum and bin counts and the scalar sums; `categories` / `titles` have token, name,
    buyers."""

    base: pl.DataFrame
    categories: pl.DataFrame
    titles: pl.DataFrame


def _count_cols() -> list[str]:
    return [f"n_{s}" for s in STRATA] + [f"{c}_{b}" for c in BIN_COLUMNS for b in range(3)]


def _channel_products(features: pl.DataFrame) -> pl.DataFrame:
    """shop_id, buyer_id, product_id: every product a buyer touched, once per buyer."""
    cols = [f"{c}_products" for c in CHANNELS if f"{c}_products" in features.columns]
    if not cols:
        return pl.DataFrame(
            schema={"shop_id": pl.String, "buyer_id": pl.String, "product_id": pl.String}
        )
    parts = [
        features.select(*KEYS, pl.col(c).alias("product_id")).explode(
            "product_id", empty_as_null=True
        )
        for c in cols
    ]
    return pl.concat(parts).drop_nulls("product_id").unique()


def token_aggregates(
    assignments: pl.DataFrame,
    features: pl.DataFrame,
    products: pl.DataFrame | None = None,
    collections: pl.DataFrame | None = None,
) -> TokenAggregates:
    """Per-token sums of one batch of buyers (typically one shop).

    `assignments`: shop_id, buyer_id, token, stratum, engagement_bin, exploration_bin,
    purchase_bin. `features`: shop_id, buyer_id, the 16 raw scalars and the
    `<channel>_products` lists (`buyer_features`). `products`: shop_id, product_id, title,
    collection_ids; `collections`: shop_id, collection_id, title. Raises when a buyer of
    `assignments` has no features."""
    scalars = list(SCALAR_NAMES)
    joined = assignments.select(KEYS + ["token", "stratum", *BIN_COLUMNS]).join(
        features.select(KEYS + scalars), on=KEYS, how="left"
    )
    missing = joined[scalars[0]].null_count()
    if missing:
        raise ValueError(f"{missing} assigned buyers have no raw features")
    aggs: list[pl.Expr] = [pl.len().cast(pl.Int64).alias("buyers")]
    aggs += [(pl.col("stratum") == s).sum().cast(pl.Int64).alias(f"n_{s}") for s in STRATA]
    aggs += [
        (pl.col(c) == b).sum().cast(pl.Int64).alias(f"{c}_{b}")
        for c in BIN_COLUMNS
        for b in range(3)
    ]
    aggs += [pl.col(n).cast(pl.Float64).sum().alias(f"sum_{n}") for n in scalars]
    base = joined.group_by("token").agg(aggs)

    touched = _channel_products(features).join(
        assignments.select(KEYS + ["token"]), on=KEYS, how="inner"
    )
    empty_named = pl.DataFrame(schema={"token": pl.Int64, "name": pl.String, "buyers": pl.Int64})
    titles = categories = empty_named
    if products is not None and touched.height:
        prod = products.select("shop_id", "product_id", "title", "collection_ids")
        with_prod = touched.join(prod, on=["shop_id", "product_id"], how="inner")
        titles = _buyer_counts(with_prod.rename({"title": "name"}))
        if collections is not None:
            cats = (
                with_prod.select(*KEYS, "token", "collection_ids")
                .explode("collection_ids", empty_as_null=True)
                .drop_nulls("collection_ids")
                .join(
                    collections.select("shop_id", "collection_id", pl.col("title").alias("name")),
                    left_on=["shop_id", "collection_ids"],
                    right_on=["shop_id", "collection_id"],
                    how="inner",
                )
            )
            categories = _buyer_counts(cats)
    return TokenAggregates(
        base=base.with_columns(pl.col("token").cast(pl.Int64)),
        categories=categories.cast({"token": pl.Int64, "buyers": pl.Int64}),
        titles=titles.cast({"token": pl.Int64, "buyers": pl.Int64}),
    )


def _buyer_counts(df: pl.DataFrame) -> pl.DataFrame:
    """token, name, buyers: distinct buyer–shop pairs per (token, name)."""
    return (
        df.drop_nulls("name")
        .select(*KEYS, "token", "name")
        .unique()
        .group_by("token", "name")
        .agg(pl.len().cast(pl.Int64).alias("buyers"))
    )


def combine_aggregates(parts: Iterable[TokenAggregates]) -> TokenAggregates:
    """Sum per-shop aggregates into one."""
    parts = list(parts)
    if not parts:
        raise ValueError("no aggregates to combine")
    base = pl.concat([p.base for p in parts]).group_by("token").agg(pl.all().sum())
    named = {}
    for attr in ("categories", "titles"):
        frames = [getattr(p, attr) for p in parts]
        named[attr] = pl.concat(frames).group_by("token", "name").agg(pl.col("buyers").sum())
    return TokenAggregates(base=base.sort("token"), **named)


# ---- cards ---------------------------------------------------------------------------------
@dataclass
class PersonaCard:
    token: int
    buyers: int
    share: float  # of all buyers
    strata: dict[str, float]  # stratum → share of the token's buyers
    dominant_stratum: str
    bins: dict[str, dict[str, float]]  # head → {"low", "medium", "high"} shares
    centroid: dict[str, float]  # mean of each raw scalar
    top_categories: list[dict[str, Any]] = field(default_factory=list)  # name, buyers, share
    top_titles: list[dict[str, Any]] = field(default_factory=list)
    name: str = ""
    description: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _top(df: pl.DataFrame, token: int, n_buyers: int, top_n: int) -> list[dict[str, Any]]:
    rows = (
        df.filter(pl.col("token") == token)
        .sort(["buyers", "name"], descending=[True, False])  # ties: alphabetical, deterministic
        .head(top_n)
    )
    return [
        {"name": nm, "buyers": int(b), "share": round(b / n_buyers, 4)}
        for nm, b in rows.select("name", "buyers").iter_rows()
    ]


def build_cards(agg: TokenAggregates, top_n: int = TOP_N) -> list[PersonaCard]:
    """One card per used token (tokens with at least one buyer), largest first (ties by
    token)."""
    base = agg.base.filter(pl.col("buyers") > 0)
    total = int(base["buyers"].sum()) if base.height else 0
    cards = []
    for row in base.iter_rows(named=True):
        n = int(row["buyers"])
        strata = {s: round(row[f"n_{s}"] / n, 4) for s in STRATA}
        dominant = max(STRATA, key=lambda s: (row[f"n_{s}"], -STRATA.index(s)))
        bins = {
            h: {BIN_NAMES[b].lower(): round(row[f"{h}_bin_{b}"] / n, 4) for b in range(3)}
            for h in HEADS
        }
        centroid = {s: row[f"sum_{s}"] / n for s in SCALAR_NAMES}
        card = PersonaCard(
            token=int(row["token"]),
            buyers=n,
            share=round(n / total, 6) if total else 0.0,
            strata=strata,
            dominant_stratum=dominant,
            bins=bins,
            centroid=centroid,
            top_categories=_top(agg.categories, row["token"], n, top_n),
            top_titles=_top(agg.titles, row["token"], n, top_n),
        )
        card.name, card.description = describe(card)
        cards.append(card)
    cards.sort(key=lambda c: (-c.buyers, c.token))
    return cards


# ---- description ---------------------------------------------------------------------------
def _majority(shares: dict[str, float]) -> str:
    order = ["low", "medium", "high"]
    return max(order, key=lambda b: (shares[b], -order.index(b)))


def _adjective(card: PersonaCard) -> str:
    eng = _majority(card.bins["engagement"])
    exp = _majority(card.bins["exploration"])
    pur = _majority(card.bins["purchase"])
    if pur == "high" and exp != "high":
        return "Decisive"
    if exp == "high":
        return "Exploratory"
    if eng == "high":
        return "Engaged"
    if eng == "low" and exp == "low":
        return "Brief"
    return "Steady"


def _noun(card: PersonaCard) -> str:
    top = sorted(STRATA, key=lambda s: (-card.strata[s], STRATA.index(s)))
    if card.strata[top[0]] >= DOMINANT_SHARE or card.strata[top[1]] == 0:
        return STRATUM_NOUNS[top[0]]
    return f"{STRATUM_NOUNS[top[0]]} and {STRATUM_NOUNS[top[1]]}"


def _per_session(card: PersonaCard, name: str) -> float:
    sessions = card.centroid["sessions"]
    return card.centroid[name] / sessions if sessions > 0 else 0.0


def describe(card: PersonaCard) -> tuple[str, str]:
    """(name, one-line description) from the card's figures, deterministically.

    Name: an adjective from the majority bin of each head — Decisive (purchase High,
    exploration not High), Exploratory (exploration High), Engaged (engagement High), Brief
    (engagement and exploration Low), else Steady — and a noun from the stratum mix (the
    leading stratum, or the two leading ones when the first holds < 60 %). Clauses: visit
    count (mean sessions < 1.5 "a single visit", < 3 "few sessions", else "many sessions"),
    path (search, else collection view, else product view in ≥ 50 % of sessions, judged on
    the centroid's session counts; "… then buy" when purchasers lead; else "little
    browsing"),
    purchase intensity (mean intent ≥ 0.5 high, ≥ 0.2 moderate, > 0 low, else none), and the
    leading category when at least half the buyers touched it."""
    name = f"{_adjective(card)} {_noun(card)}"
    c = card.centroid
    sessions = c["sessions"]
    if sessions < FEW_SESSIONS:
        visits = "a single visit"
    elif sessions < MANY_SESSIONS:
        visits = f"few sessions ({sessions:.1f})"
    else:
        visits = f"many sessions ({sessions:.1f})"
    search = _per_session(card, "search_sessions")
    colls = _per_session(card, "collection_view_sessions")
    views = _per_session(card, "product_view_sessions")
    buying = card.dominant_stratum == "A"
    if search >= PATH_SHARE:
        path = "search then buy" if buying else "search-led browsing"
    elif colls >= PATH_SHARE:
        path = "browse collections then buy" if buying else "collection browsing"
    elif views >= PATH_SHARE:
        path = "straight to products then buy" if buying else "product-page browsing"
    else:
        path = "little browsing"
    intent = c["intent_strength"]
    if intent >= INTENT_HIGH:
        intensity = "high purchase intensity"
    elif intent >= INTENT_MEDIUM:
        intensity = "moderate purchase intensity"
    elif intent > 0:
        intensity = "low purchase intensity"
    else:
        intensity = "no purchase intent"
    clauses = [visits, path, intensity]
    if card.top_categories and card.top_categories[0]["share"] >= 0.5:
        clauses.append(f"mostly {card.top_categories[0]['name']}")
    return name, f"{name}: {', '.join(clauses)}"
