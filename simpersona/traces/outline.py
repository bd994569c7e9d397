"""What a real session did, in order: the input of the goal writers, the replay teacher and
the judge. Built from one row of the enriched session table (its `events` list)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from simpersona.schema import EVENT_TYPES

# Collections every product of a shop can be in; they say nothing about what a buyer likes.
GENERIC_COLLECTIONS = frozenset({"all", "sale", "new-arrivals", "best-sellers", "frontpage"})
REPLAYED_TYPES = frozenset(EVENT_TYPES)  # every canonical event type has a replay action


@dataclass(frozen=True)
class SessionEvent:
    """One event of a session, with the names a goal can mention."""

    event_type: str
    product_id: str | None = None
    product_title: str | None = None
    collection_id: str | None = None
    collection_title: str | None = None
    search_query: str | None = None
    quantity: int | None = None
    url: str | None = None

    @classmethod
    def from_mapping(cls, row: Mapping[str, Any]) -> SessionEvent:
        qty = row.get("quantity")
        return cls(
            event_type=str(row["event_type"]),
            product_id=row.get("product_id"),
            product_title=row.get("product_title"),
            collection_id=row.get("collection_id"),
            collection_title=row.get("collection_title"),
            search_query=row.get("search_query"),
            quantity=int(qty) if qty is not None else None,
            url=row.get("url"),
        )


def _unique(xs: Iterable[str | None]) -> list[str]:
    return list(dict.fromkeys(x for x in xs if x))


@dataclass(frozen=True)
class SessionOutline:
    """A session's structure: the ordered events and what they add up to."""

    shop_id: str
    buyer_id: str
    session_id: str
    events: tuple[SessionEvent, ...]
    category: str = ""  # the buyer's main interest (from all their sessions)
    stratum: str = ""
    token: int | None = None

    def of(self, kind: str) -> list[SessionEvent]:
        return [e for e in self.events if e.event_type == kind]

    @property
    def searches(self) -> list[str]:
        return _unique(e.search_query for e in self.of("search"))

    @property
    def collections(self) -> list[str]:
        return _unique(e.collection_title or e.collection_id for e in self.of("collection_view"))

    @property
    def viewed(self) -> list[str]:
        return _unique(e.product_title or e.product_id for e in self.of("product_view"))

    @property
    def carted(self) -> list[str]:
        return _unique(e.product_title or e.product_id for e in self.of("add_to_cart"))

    @property
    def removed(self) -> list[str]:
        return _unique(e.product_title or e.product_id for e in self.of("remove_from_cart"))

    @property
    def checkout_started(self) -> bool:
        return bool(self.of("checkout_started")) or self.purchased

    @property
    def purchased(self) -> bool:
        return bool(self.of("checkout_completed"))

    @property
    def compared(self) -> bool:
        """Two or more distinct products viewed: the buyer compared options."""
        return len(self.viewed) >= 2

    def to_dict(self) -> dict[str, Any]:
        return {
            "shop_id": self.shop_id,
            "buyer_id": self.buyer_id,
            "session_id": self.session_id,
            "category": self.category,
            "stratum": self.stratum,
            "token": self.token,
            "events": [e.__dict__ for e in self.events],
        }


def outline_from_row(
    row: Mapping[str, Any],
    category: str = "",
    stratum: str = "",
    token: int | None = None,
) -> SessionOutline:
    """A session outline from an enriched-session row (`shop_id`, `buyer_id`, `session_id`,
    `events`: the ordered event structs)."""
    events = tuple(
        SessionEvent.from_mapping(e) for e in row["events"] if e["event_type"] in REPLAYED_TYPES
    )
    return SessionOutline(
        shop_id=str(row["shop_id"]),
        buyer_id=str(row["buyer_id"]),
        session_id=str(row["session_id"]),
        events=events,
        category=category,
        stratum=stratum,
        token=token,
    )


@dataclass
class CategoryIndex:
    """product id → its most specific collection title, for naming a buyer's interest."""

    product_category: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_frames(cls, products: Any, collections: Any) -> CategoryIndex:
        """From canonical product and collection frames (polars): a product's category is its
        smallest non-generic collection (e.g. "Sandals" rather than "Footwear")."""
        titles = dict(
            zip(collections["collection_id"].to_list(), collections["title"].to_list(), strict=True)
        )
        sizes: Counter[str] = Counter()
        pids, members = products["product_id"].to_list(), products["collection_ids"].to_list()
        for ids in members:
            sizes.update(ids or [])
        out: dict[str, str] = {}
        for pid, ids in zip(pids, members, strict=True):
            specific = [c for c in (ids or []) if c not in GENERIC_COLLECTIONS and c in titles]
            if specific:
                out[pid] = titles[min(specific, key=lambda c: (sizes[c], c))]
        return cls(out)

    def buyer_category(self, sessions: Sequence[Mapping[str, Any]]) -> str:
        """The category a buyer looked at most over all their sessions (views, carts and
        collection pages count); '' when none is known."""
        counts: Counter[str] = Counter()
        for s in sessions:
            for e in s["events"]:
                pid = e.get("product_id")
                if pid and pid in self.product_category:
                    counts[self.product_category[pid]] += 1
                elif (
                    e["event_type"] == "collection_view"
                    and e.get("collection_title")
                    and e.get("collection_id") not in GENERIC_COLLECTIONS
                ):
                    counts[e["collection_title"]] += 1
        return min(counts.items(), key=lambda kv: (-kv[1], kv[0]))[0] if counts else ""
