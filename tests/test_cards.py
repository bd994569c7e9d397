"""Persona cards on a tiny hand-computed fixture: figures, description, exports, escaping."""

from __future__ import annotations

import json
from html.parser import HTMLParser
from pathlib import Path

import polars as pl
import pytest

from simpersona.features.scalars import CHANNELS, SCALAR_NAMES
from simpersona.personas import card_pages as pages
from simpersona.personas import cards as pc

# (shop, buyer, token, stratum, engagement, exploration, purchase bins,
#  sessions, search_sessions, product_view_sessions, intent_strength, viewed, carted, purchased)
BUYERS = [
    ("s1", "b1", 7, "A", 2, 1, 2, 1, 1, 1, 0.6, ["p1", "p2"], [], ["p1"]),
    ("s1", "b2", 7, "A", 1, 1, 2, 2, 2, 2, 0.6, ["p2"], [], []),
    ("s1", "b3", 7, "D", 0, 0, 0, 3, 0, 1, 0.0, [], [], []),
    ("s1", "b4", 3, "E", 0, 0, 0, 1, 0, 0, 0.0, [], [], []),
    ("s2", "b1", 7, "B", 1, 1, 1, 4, 2, 3, 0.4, [], ["p1"], []),
]


def _frames() -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    cols = list(zip(*BUYERS, strict=True))
    assignments = pl.DataFrame(
        {
            "shop_id": cols[0],
            "buyer_id": cols[1],
            "token": pl.Series(cols[2], dtype=pl.Int32),
            "kmeans_cluster": pl.Series([0] * len(BUYERS), dtype=pl.Int32),
            "stratum": cols[3],
            "engagement_bin": pl.Series(cols[4], dtype=pl.Int8),
            "exploration_bin": pl.Series(cols[5], dtype=pl.Int8),
            "purchase_bin": pl.Series(cols[6], dtype=pl.Int8),
        }
    )
    scalars = {n: [0.0] * len(BUYERS) for n in SCALAR_NAMES}
    scalars["sessions"] = [float(v) for v in cols[7]]
    scalars["search_sessions"] = [float(v) for v in cols[8]]
    scalars["product_view_sessions"] = [float(v) for v in cols[9]]
    scalars["intent_strength"] = list(cols[10])
    scalars["avg_order_value"] = [120.0, 0.0, 0.0, 0.0, 0.0]
    features = pl.DataFrame(
        {
            "shop_id": cols[0],
            "buyer_id": cols[1],
            **scalars,
            **{
                f"{c}_products": pl.Series(cols[11 + i], dtype=pl.List(pl.String))
                for i, c in enumerate(CHANNELS)
            },
        }
    )
    products = pl.DataFrame(
        {
            "shop_id": ["s1", "s1", "s2"],
            "product_id": ["p1", "p2", "p1"],
            "title": ["Red <Mug>", "Blue Mug", "Red <Mug>"],
            "collection_ids": [["c1"], ["c1", "c2"], ["c9"]],
        }
    )
    collections = pl.DataFrame(
        {
            "shop_id": ["s1", "s1", "s2"],
            "collection_id": ["c1", "c2", "c9"],
            "title": ["Mugs & Cups", "<script>alert(1)</script>", "Mugs & Cups"],
        }
    )
    return assignments, features, products, collections


def _cards(top_n: int = 5) -> list[pc.PersonaCard]:
    a, f, p, c = _frames()
    parts = [
        pc.token_aggregates(
            a.filter(pl.col("shop_id") == s),
            f.filter(pl.col("shop_id") == s),
            p.filter(pl.col("shop_id") == s),
            c.filter(pl.col("shop_id") == s),
        )
        for s in ("s1", "s2")
    ]
    return pc.build_cards(pc.combine_aggregates(parts), top_n=top_n)


def test_card_figures_match_hand_computation() -> None:
    cards = _cards()
    assert [c.token for c in cards] == [7, 3]  # largest first
    big, small = cards
    assert big.buyers == 4 and small.buyers == 1
    assert big.share == pytest.approx(0.8) and small.share == pytest.approx(0.2)
    assert big.strata == {"A": 0.5, "B": 0.25, "C": 0.0, "D": 0.25, "E": 0.0}
    assert big.dominant_stratum == "A" and small.dominant_stratum == "E"
    assert big.bins["purchase"] == {"low": 0.25, "medium": 0.25, "high": 0.5}
    assert big.bins["exploration"] == {"low": 0.25, "medium": 0.75, "high": 0.0}
    assert big.bins["engagement"] == {"low": 0.25, "medium": 0.5, "high": 0.25}
    assert big.centroid["sessions"] == pytest.approx((1 + 2 + 3 + 4) / 4)
    assert big.centroid["search_sessions"] == pytest.approx((1 + 2 + 0 + 2) / 4)
    assert big.centroid["intent_strength"] == pytest.approx((0.6 + 0.6 + 0 + 0.4) / 4)
    assert big.centroid["avg_order_value"] == pytest.approx(30.0)
    assert set(big.centroid) == set(SCALAR_NAMES)
    # categories: s1/b1 (p1, p2 → c1), s1/b2 (p2 → c1), s2/b1 (p1 → c9) touch "Mugs & Cups";
    # the second collection of p2 is touched by s1/b1 and s1/b2
    assert big.top_categories == [
        {"name": "Mugs & Cups", "buyers": 3, "share": 0.75},
        {"name": "<script>alert(1)</script>", "buyers": 2, "share": 0.5},
    ]
    # titles: "Red <Mug>" by s1/b1 (viewed + purchased: once) and s2/b1 (carted); "Blue Mug"
    # by s1/b1 and s1/b2; a tie, broken alphabetically
    assert big.top_titles == [
        {"name": "Blue Mug", "buyers": 2, "share": 0.5},
        {"name": "Red <Mug>", "buyers": 2, "share": 0.5},
    ]
    assert small.top_categories == [] and small.top_titles == []
    assert _cards(top_n=1)[0].top_titles == [{"name": "Blue Mug", "buyers": 2, "share": 0.5}]


def test_descriptions_follow_the_figures() -> None:
    big, small = _cards()
    # purchase High leads, exploration not High → Decisive; A holds 50 % < 60 %, B second
    assert big.name == "Decisive buyers and checkout abandoners"
    # sessions 2.5 → few; search in 1.25 / 2.5 = 50 % of sessions, A leads → search then buy;
    # intent 0.4 → moderate; 75 % touched "Mugs & Cups"
    assert big.description == (
        "Decisive buyers and checkout abandoners: few sessions (2.5), search then buy, "
        "moderate purchase intensity, mostly Mugs & Cups"
    )
    assert small.description == (
        "Brief bouncers: a single visit, little browsing, no purchase intent"
    )
    assert _cards()[0].description == big.description  # deterministic


def test_per_shop_aggregates_add_up_to_the_whole() -> None:
    a, f, p, c = _frames()
    whole = pc.build_cards(pc.token_aggregates(a, f, p, c))
    assert [x.to_dict() for x in whole] == [x.to_dict() for x in _cards()]


def test_missing_features_are_an_error() -> None:
    a, f, p, c = _frames()
    with pytest.raises(ValueError, match="no raw features"):
        pc.token_aggregates(a, f.filter(pl.col("buyer_id") != "b3"), p, c)


class _Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: set[str] = set()
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs) -> None:
        self.tags.add(tag)

    def handle_data(self, data) -> None:
        self.text.append(data)


def test_exports_escape_text_and_round_trip(tmp_path: Path) -> None:
    cards = _cards()
    paths = pages.write_cards(cards, tmp_path, meta={"codebook_version": "v1"})
    doc = json.loads(paths["json"].read_text())
    assert doc["meta"] == {"codebook_version": "v1"} and len(doc["cards"]) == 2
    back = pages.cards_from_json(paths["json"].read_text())
    assert [c.to_dict() for c in back] == [c.to_dict() for c in cards]

    page = paths["html"].read_text()
    assert "<script>" not in page and "Red <Mug>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page and "Red &lt;Mug&gt;" in page
    assert "Mugs &amp; Cups" in page
    parser = _Tags()
    parser.feed(page)
    assert "script" not in parser.tags and "mug" not in parser.tags
    text = "".join(parser.text)  # the parsed page shows the original text
    assert "Red <Mug>" in text and "<script>alert(1)</script>" in text
    assert 'href="http' not in page and "src=" not in page  # self-contained
    assert page.count('class="card"') == 2
    assert 'id="warnings"' not in page  # nothing to warn about: no box

    # warnings head the page, escaped like everything else
    warned = pages.cards_to_html(cards, warnings=["shop <b>: no checkout_started events"])
    assert warned.index('id="warnings"') < warned.index('class="card"')
    assert "shop &lt;b&gt;: no checkout_started events" in warned

    md = paths["md"].read_text()
    assert "<script>" not in md and "&lt;script&gt;" in md and "Red &lt;Mug&gt;" in md
    assert "## Token 7: Decisive buyers and checkout abandoners" in md
    assert "| [7](#token-7) | 4 | 80.0 % | A (50.0 %) |" in md
