"""The persona Markov model: every session of the real events becomes a walk over states

    start → home | info | cart | collection | search | product | add_to_cart
          | remove_from_cart | checkout | purchase → … → end

(page views split by URL into home, cart and info pages). Transition counts are kept per
persona label (a persona token, a planted buyer type, a stratum: any label per buyer) and
smoothed toward the all-buyers chain, so a label with few sessions still behaves sensibly.
Each label also keeps its buyers' interests — the collections of the products they viewed,
carted and bought, and their search queries — and the quantities they added.

Fitting pooled over training shops with persona tokens: `markov_fit.py`; acting on pages:
`markov_policy.py` (`MarkovPolicy`).
"""

from __future__ import annotations

import json
import os
import random
import re
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import polars as pl

from simpersona.agent.policy import Persona
from simpersona.lake import atomic_write_text

STATES: tuple[str, ...] = (
    "start",
    "home",
    "info",
    "cart",
    "collection",
    "search",
    "product",
    "add_to_cart",
    "remove_from_cart",
    "checkout",
    "purchase",
    "end",
)
EVENT_STATE = {
    "collection_view": "collection",
    "search": "search",
    "product_view": "product",
    "add_to_cart": "add_to_cart",
    "remove_from_cart": "remove_from_cart",
    "checkout_started": "checkout",
    "checkout_completed": "purchase",
}
# Page kinds of the storefront (observation.kind) that show a state as reached.
KIND_STATE = {
    "home": "home",
    "info": "info",
    "cart": "cart",
    "collection": "collection",
    "search": "search",
    "product": "product",
    "checkout": "checkout",
    "confirmation": "purchase",
}
# Collections every shop has that say nothing about a buyer's taste.
SHOP_WIDE = frozenset({"all", "sale", "new-arrivals", "best-sellers", "featured", "frontpage"})
FORMAT_VERSION = 1
_WORD = re.compile(r"[a-z0-9]+")


@dataclass
class MarkovConfig:
    """Fitting options."""

    smoothing: float = 5.0  # pseudo-sessions of the all-buyers chain mixed into each label
    min_end_prob: float = 0.02  # every state may end the session (no endless walks)
    max_topics: int = 40  # interests kept per label
    max_queries: int = 60
    # Which sessions shape the chains: "all", or per buyer only the "deepest" (the furthest
    # funnel step: purchase > checkout > cart > browse; ties: the longest, then the first).
    # An agent plays one buyer in one session and is compared with buyers who *ever* carted
    # or bought, so the deepest session is the one that carries those rates
    # (docs/simulation.md).
    sessions: str = "all"

    def __post_init__(self) -> None:
        if self.sessions not in ("all", "deepest"):
            raise ValueError(f"sessions must be 'all' or 'deepest', got {self.sessions!r}")


# Funnel depth of an event, for MarkovConfig.sessions = "deepest".
_DEPTH = {
    "checkout_completed": 4,
    "checkout_started": 3,
    "add_to_cart": 2,
    "remove_from_cart": 2,
    "product_view": 1,
    "collection_view": 1,
    "search": 1,
}


def page_state(event_type: str, url: str | None) -> str:
    """The chain state of an event (page views split into home, cart and info by URL)."""
    if event_type in EVENT_STATE:
        return EVENT_STATE[event_type]
    path = urlsplit(url or "").path.rstrip("/")
    if path == "" or re.fullmatch(r"/s/[^/]+", path):
        return "home"
    if path.endswith("/cart"):
        return "cart"
    return "info"


def interest_words(text: str) -> set[str]:
    # Lower-cased words with a light plural stem, so "Sandals" matches "sandal".
    return {w[:-1] if len(w) > 3 and w.endswith("s") else w for w in _WORD.findall(text.lower())}


def _normalize(counts: Mapping[str, float]) -> dict[str, float]:
    total = sum(counts.values())
    return {k: v / total for k, v in counts.items()} if total else {}


@dataclass
class LabelModel:
    """One label's chain and interests."""

    transitions: dict[str, dict[str, float]]
    topics: dict[str, float] = field(default_factory=dict)  # collection title -> weight
    queries: dict[str, float] = field(default_factory=dict)  # search query -> weight
    quantities: dict[str, float] = field(default_factory=dict)  # added quantity -> weight
    buyers: int = 0
    sessions: int = 0


@dataclass
class MarkovModel:
    """Per-label transition probabilities and interests, plus the all-buyers chain."""

    labels: dict[str, LabelModel]
    overall: LabelModel
    label_shares: dict[str, float]
    config: MarkovConfig = field(default_factory=MarkovConfig)

    # ---- fitting -------------------------------------------------------------------------
    @classmethod
    def fit(
        cls,
        events: pl.DataFrame | pl.LazyFrame,
        labels: Mapping[str, str] | pl.DataFrame,
        products: pl.DataFrame | None = None,
        collections: pl.DataFrame | None = None,
        config: MarkovConfig | None = None,
        label_column: str = "label",
        parents: Mapping[str, str] | None = None,
    ) -> MarkovModel:
        """Fit from canonical events (with session ids) and a buyer → label mapping (a dict,
        or a frame with `buyer_id` and `label_column`). Buyers without a label still shape
        the all-buyers chain. `products` (+ `collections` for titles) give the interests.

        `parents` (label → parent label, e.g. persona token → its funnel stratum) makes the
        smoothing hierarchical: a label's chain backs off to its parent's chain (fitted on
        every session of the parent's labels), and the parent's to the all-buyers chain. A
        token seen in two sessions of purchasers then still behaves like a purchaser,
        instead of like the average (mostly browsing) buyer."""
        cfg = config or MarkovConfig()
        parent_of = {str(k): f"^{v}" for k, v in (parents or {}).items()}
        if isinstance(labels, pl.DataFrame):
            if "buyer_id" not in labels.columns or label_column not in labels.columns:
                raise ValueError(f"labels frame needs columns buyer_id and {label_column!r}")
            label_of = dict(
                zip(
                    labels["buyer_id"].cast(pl.String).to_list(),
                    labels[label_column].cast(pl.String).to_list(),
                    strict=True,
                )
            )
        else:
            label_of = {str(k): str(v) for k, v in labels.items()}
        ev = events.lazy().collect() if isinstance(events, pl.LazyFrame) else events
        missing = {"buyer_id", "session_id", "ts", "event_type"} - set(ev.columns)
        if missing:
            raise ValueError(f"events lack columns {sorted(missing)}")
        if ev["session_id"].null_count():
            raise ValueError("events need session ids (ingest or sessionize them first)")
        cols = ["buyer_id", "session_id", "ts", "event_type", "url", "product_id"]
        cols += [c for c in ("search_query", "quantity", "event_id") if c in ev.columns]
        ev = ev.select([c for c in cols if c in ev.columns]).sort(
            ["buyer_id", "session_id", "ts", *(["event_id"] if "event_id" in ev.columns else [])]
        )
        topics_of_product = _product_topics(products, collections)

        counts: dict[str, dict[str, Counter[str]]] = defaultdict(lambda: defaultdict(Counter))
        topics: dict[str, Counter[str]] = defaultdict(Counter)
        queries: dict[str, Counter[str]] = defaultdict(Counter)
        quantities: dict[str, Counter[str]] = defaultdict(Counter)
        buyers: dict[str, set[str]] = defaultdict(set)
        sessions: Counter[str] = Counter()
        urls = ev["url"] if "url" in ev.columns else pl.Series([None] * ev.height)
        grouped = (
            ev.with_columns(urls.alias("url"))
            .group_by(["buyer_id", "session_id"], maintain_order=True)
            .agg(pl.all())
        )
        if cfg.sessions == "deepest":
            depth = (
                pl.col("event_type")
                .list.eval(pl.element().replace_strict(_DEPTH, default=0, return_dtype=pl.Int8))
                .list.max()
            )
            grouped = (
                grouped.with_row_index("__order")
                .with_columns(depth.alias("__depth"), pl.col("event_type").list.len().alias("__n"))
                .sort(
                    ["buyer_id", "__depth", "__n", "__order"], descending=[False, True, True, False]
                )
                .unique("buyer_id", keep="first", maintain_order=True)
                .sort("__order")
                .drop("__order", "__depth", "__n")
            )
        for row in grouped.iter_rows(named=True):
            label = label_of.get(row["buyer_id"])
            keys = ["*"] if label is None else ["*", label]
            if label is not None and label in parent_of:
                keys.append(parent_of[label])
            walk = ["start"]
            for et, url in zip(row["event_type"], row["url"], strict=True):
                walk.append(page_state(et, url))
            walk.append("end")
            for k in keys:
                sessions[k] += 1
                buyers[k].add(row["buyer_id"])
                for a, b in zip(walk, walk[1:], strict=False):
                    counts[k][a][b] += 1
            for k in keys:
                for i, et in enumerate(row["event_type"]):
                    pid = row["product_id"][i]
                    if et in ("product_view", "add_to_cart", "checkout_completed") and pid:
                        # whole weights: a Counter counts ints, and _top's shares of these
                        # small integer sums are the same floats as of the float sums
                        weight = {"product_view": 1, "add_to_cart": 2}.get(et, 3)
                        for t in topics_of_product.get(pid, ()):
                            topics[k][t] += weight
                    if et == "search" and row.get("search_query"):
                        q = row["search_query"][i]
                        if q:
                            queries[k][" ".join(q.lower().split())] += 1
                    if et == "add_to_cart" and row.get("quantity"):
                        qty = row["quantity"][i]
                        if qty and 0 < qty < 100:
                            quantities[k][str(int(qty))] += 1

        def label_model(k: str, base: dict[str, dict[str, float]] | None) -> LabelModel:
            trans: dict[str, dict[str, float]] = {}
            for s in STATES[:-1]:
                row = counts[k].get(s, Counter())
                n = sum(row.values())
                prior = base.get(s, {}) if base else {}
                beta = cfg.smoothing if prior else 0.0
                mix = {t: row.get(t, 0) + beta * prior.get(t, 0.0) for t in STATES[1:]}
                probs = _normalize({t: v for t, v in mix.items() if v > 0})
                if not probs or n + beta == 0:
                    probs = {"end": 1.0}
                if probs.get("end", 0.0) < cfg.min_end_prob and s != "start":
                    probs = {t: p * (1 - cfg.min_end_prob) for t, p in probs.items()}
                    probs["end"] = probs.get("end", 0.0) + cfg.min_end_prob
                trans[s] = {t: round(p, 6) for t, p in probs.items()}
            return LabelModel(
                transitions=trans,
                topics=_top(topics[k], cfg.max_topics),
                queries=_top(queries[k], cfg.max_queries),
                quantities=_normalize(quantities[k]) or {"1": 1.0},
                buyers=len(buyers[k]),
                sessions=sessions[k],
            )

        if not sessions["*"]:
            raise ValueError("no sessions to fit a Markov policy on")
        overall = label_model("*", None)
        parent_models = {
            k: label_model(k, overall.transitions) for k in sessions if k.startswith("^")
        }
        labelled = sorted(k for k in sessions if k != "*" and not k.startswith("^"))
        models = {}
        for k in labelled:
            base = parent_models.get(parent_of.get(k, ""), overall)
            m = label_model(k, base.transitions)
            # Labels with no interests of their own borrow everyone's.
            m.topics = m.topics or overall.topics
            m.queries = m.queries or overall.queries
            models[k] = m
        n_lab = sum(len(buyers[k]) for k in labelled)
        shares = {k: len(buyers[k]) / n_lab for k in labelled} if n_lab else {}
        return cls(models, overall, shares, cfg)

    # ---- persistence ---------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "format": "simpersona.markov",
            "version": FORMAT_VERSION,
            "states": list(STATES),
            "config": asdict(self.config),
            "label_shares": self.label_shares,
            "overall": asdict(self.overall),
            "labels": {k: asdict(v) for k, v in self.labels.items()},
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> MarkovModel:
        if d.get("format") != "simpersona.markov":
            raise ValueError("not a SimPersona Markov policy file")
        if d.get("version") != FORMAT_VERSION:
            raise ValueError(f"unsupported Markov policy version {d.get('version')}")
        return cls(
            labels={k: LabelModel(**v) for k, v in d["labels"].items()},
            overall=LabelModel(**d["overall"]),
            label_shares=dict(d["label_shares"]),
            config=MarkovConfig(**d.get("config", {})),
        )

    def save(self, path: str | os.PathLike[str]) -> Path:
        return atomic_write_text(json.dumps(self.to_dict(), indent=1, sort_keys=True), path)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> MarkovModel:
        return cls.from_dict(json.loads(Path(path).read_text(encoding="utf-8")))

    # ---- sampling ------------------------------------------------------------------------
    def label_model(self, label: str) -> LabelModel:
        """The label's model; the all-buyers model for a label never seen in fitting."""
        return self.labels.get(label, self.overall)

    def sample_labels(self, n: int, seed: int = 0) -> list[str]:
        """`n` labels in the fitted population's proportions."""
        rng = random.Random(seed)
        if not self.label_shares:
            return ["*"] * n
        keys = sorted(self.label_shares)
        return rng.choices(keys, weights=[self.label_shares[k] for k in keys], k=n)

    def persona(
        self,
        label: str,
        seed: int = 0,
        description: str = "",
        topics: Sequence[str] = (),
        queries: Sequence[str] = (),
    ) -> Persona:
        """A buyer of `label`: a few topics and queries drawn from the label's interests.
        `topics` / `queries` (the category, collections and searches the agent's goal names)
        replace the drawn ones when given: on a store the model was not fitted on, another
        store's collection names and queries would find nothing. The chain stays the
        label's."""
        rng = random.Random(f"persona:{label}:{seed}")
        m = self.label_model(label)
        drawn_topics = _draw(rng, m.topics, rng.randint(1, 3))
        drawn_queries = _draw(rng, m.queries, 3)
        tops = list(dict.fromkeys(topics)) or drawn_topics
        qs = list(dict.fromkeys(queries)) or (
            [t.lower() for t in tops] if topics else drawn_queries
        )
        return Persona(
            label=label,
            description=description,
            interests=tuple(tops + [q for q in qs if q not in tops]),
            attributes={"topics": tops, "queries": qs},
        )


def _top(counts: Counter[str], n: int) -> dict[str, float]:
    return {k: round(v, 6) for k, v in _normalize(dict(counts.most_common(n))).items()}


def _draw(rng: random.Random, weights: Mapping[str, float], k: int) -> list[str]:
    """Up to `k` distinct keys drawn by weight."""
    pool = dict(weights)
    out: list[str] = []
    while pool and len(out) < k:
        keys = sorted(pool)
        pick = rng.choices(keys, weights=[pool[x] for x in keys])[0]
        out.append(pick)
        del pool[pick]
    return out


def _product_topics(
    products: pl.DataFrame | None, collections: pl.DataFrame | None
) -> dict[str, tuple[str, ...]]:
    """product id -> titles of its specific (not shop-wide) collections."""
    if products is None or "collection_ids" not in products.columns:
        return {}
    titles: dict[str, str] = {}
    if collections is not None:
        titles = dict(
            zip(collections["collection_id"].to_list(), collections["title"].to_list(), strict=True)
        )
    out = {}
    for pid, cids in zip(
        products["product_id"].to_list(), products["collection_ids"].to_list(), strict=True
    ):
        # Ids may carry a "<shop>/" prefix (fit_token_policy pools shops).
        bare = {c: c.rsplit("/", 1)[-1] for c in (cids or [])}
        names = [
            titles.get(c) or b.replace("-", " ").title()
            for c, b in bare.items()
            if b not in SHOP_WIDE
        ]
        out[pid] = tuple(names)
    return out
