"""The persona Markov policy: the fast, no-LLM baseline agent.

Fitting (`MarkovModel.fit`): every session of the real events becomes a walk over states

    start → home | info | cart | collection | search | product | add_to_cart
          | remove_from_cart | checkout | purchase → … → end

(page views split by URL into home, cart and info pages). Transition counts are kept per
persona label (a persona token, a planted buyer type, a stratum: any label per buyer) and
smoothed toward the all-buyers chain, so a label with few sessions still behaves sensibly.
Each label also keeps its buyers' interests — the collections of the products they viewed,
carted and bought, and their search queries — and the quantities they added.

Acting (`MarkovPolicy.act`): the policy samples the next state from the current one and
takes the actions that get there on the page in front of it: a search drawn from the
persona's interests, a click on the product or collection link that best matches them (drawn,
not argmax), add to cart with a sampled quantity, the cart link, the checkout button, the
checkout forms filled with test details, or end_session. A state the page already shows (the
cart page after add-to-cart redirects there) counts as reached. Everything random comes from
one generator seeded by (policy seed, session seed), so a session replays exactly.
"""

from __future__ import annotations

import json
import math
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

from simpersona.agent.actions import _Action
from simpersona.agent.observation import Element, Observation
from simpersona.agent.policy import Goal, Memory, Persona
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

# Test details for the checkout forms (the storefront accepts only test cards).
CHECKOUT_FIELDS: dict[str, str] = {
    "email": "{buyer}@example.com",
    "first-name": "Sam",
    "last-name": "Buyer",
    "address1": "1 Test Street",
    "city": "Springfield",
    "postal-code": "12345",
    "phone": "",
    "address2": "",
    "card-number": "4242 4242 4242 4242",
    "card-expiry": "12 / 34",
    "card-cvc": "123",
    "card-name": "Sam Buyer",
}
CONTINUE_BUTTONS = ("continue-to-payment", "place-order-button")


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


def _tokens(text: str) -> set[str]:
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
                        weight = {"product_view": 1.0, "add_to_cart": 2.0}.get(et, 3.0)
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


def token_strata(labels: pl.DataFrame) -> dict[str, str]:
    """token → the modal funnel stratum of its buyers (ties: the deeper stratum, i.e. the
    earlier letter): the parent a token's Markov chain backs off to."""
    modal = (
        labels.with_columns(pl.col("token").cast(pl.String))
        .group_by("token", "stratum")
        .len()
        .sort(["token", "len", "stratum"], descending=[False, True, False])
        .group_by("token", maintain_order=True)
        .first()
    )
    return dict(zip(modal["token"].to_list(), modal["stratum"].to_list(), strict=True))


@dataclass(frozen=True)
class ShopData:
    """What a shop contributes to a pooled fit: its canonical events (with session ids), its
    buyers' labels (`buyer_id`, `token`, `stratum`) and optionally its catalogue."""

    shop_id: str
    events: pl.DataFrame
    labels: pl.DataFrame
    products: pl.DataFrame | None = None
    collections: pl.DataFrame | None = None


def fit_token_policy(shops: Sequence[ShopData], config: MarkovConfig | None = None) -> MarkovModel:
    """Per-token chains pooled over `shops` (the training shops): each token's chain backs
    off to its funnel stratum's (the token's modal stratum over these shops' buyers), the
    stratum's to all buyers'. Buyer, session, product and collection ids are prefixed with
    their shop, so two shops' ids never merge. Nothing but `shops` is read: a store scored
    with this model must not be among them (docs/evaluation.md, "Out of sample")."""
    if not shops:
        raise ValueError("no shops to fit the Markov policy on")
    events, labels, products, collections = [], [], [], []
    for sd in shops:
        pre = f"{sd.shop_id}/"
        ev = sd.events.with_columns(
            (pl.lit(pre) + pl.col("buyer_id").cast(pl.String)).alias("buyer_id"),
            (pl.lit(pre) + pl.col("session_id").cast(pl.String)).alias("session_id"),
            *([(pl.lit(pre) + pl.col("product_id")).alias("product_id")]
              if "product_id" in sd.events.columns else []),
        )  # fmt: skip
        events.append(ev)
        labels.append(
            sd.labels.select(
                (pl.lit(pre) + pl.col("buyer_id").cast(pl.String)).alias("buyer_id"),
                pl.col("token").cast(pl.String),
                pl.col("stratum").cast(pl.String),
            )
        )
        if sd.products is not None and "collection_ids" in sd.products.columns:
            products.append(
                sd.products.select(
                    (pl.lit(pre) + pl.col("product_id")).alias("product_id"),
                    pl.col("collection_ids").list.eval(pl.lit(pre) + pl.element()),
                )
            )
        if sd.collections is not None:
            collections.append(
                sd.collections.select(
                    (pl.lit(pre) + pl.col("collection_id")).alias("collection_id"), "title"
                )
            )
    pooled = pl.concat(labels)
    return MarkovModel.fit(
        pl.concat(events, how="diagonal_relaxed"),
        pooled,
        products=pl.concat(products) if products else None,
        collections=pl.concat(collections) if collections else None,
        config=config,
        label_column="token",
        parents=token_strata(pooled),
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


# ---- the policy ----------------------------------------------------------------------------
class MarkovPolicy:
    """Acts out a `MarkovModel` chain on any storefront page (see the module docstring)."""

    max_tries = 6  # actions spent on one target state before giving it up

    def __init__(self, model: MarkovModel, seed: int = 0, follow_goal: bool = False) -> None:
        self.model = model
        self.seed = seed
        # With a goal to buy or cart, the chain is walked as the persona walks it, but the
        # session does not end before the goal: an `end` drawn early becomes the next step
        # of the funnel toward it (product, add to cart, checkout, purchase).
        self.follow_goal = follow_goal

    # Session state lives in `memory.state`, so one policy object serves many sessions.
    def _rng(self, memory: Memory) -> random.Random:
        rng = memory.state.get("markov_rng")
        if rng is None:
            rng = memory.state["markov_rng"] = random.Random(f"{self.seed}:{memory.seed}")
        return rng

    def act(
        self, observation: Observation, memory: Memory, persona: Persona, goal: Goal
    ) -> dict[str, Any] | _Action:
        rng = self._rng(memory)
        st = memory.state
        chain = self.model.label_model(persona.label).transitions
        here = KIND_STATE.get(observation.kind)
        current = st.setdefault("state", "start")
        target = st.get("target")
        if target is not None and self._reached(target, observation, st):
            current = st["state"] = target
            target = st["target"] = None
        if target is None:
            for _ in range(4):  # states the page already shows are reached for free
                target = _sample(rng, chain.get(current, {"end": 1.0}))
                if target != here or target in ("product", "search", "collection"):
                    break
                current = st["state"] = target
            if target == "end" and self.follow_goal:
                target = _toward_goal(goal, current, observation, st)
            st["target"], st["tries"], st["last_role"] = target, 0, None
            st["start_cart"] = observation.cart_count
        st["tries"] = st.get("tries", 0) + 1
        # Checking out takes a dozen form steps; anything else should take a few.
        limit = self.max_tries * (3 if target in ("checkout", "purchase") else 1)
        if st["tries"] > limit:  # cannot get there from here: end like a real buyer
            return {"action": "end_session", "reason": f"could not reach {target}"}
        action = self._toward(target, observation, memory, persona, rng)
        for _ in range(3):
            if action is not None:
                break
            # A state this store has no page for (no information pages, no visible home
            # link): pass through it, as a buyer who would have looked there moves on.
            current = st["state"] = target
            target = _sample(rng, chain.get(current, {"end": 1.0}))
            if target == "end" and self.follow_goal:
                target = _toward_goal(goal, current, observation, st)
            st["target"], st["last_role"] = target, None
            st["tries"], st["start_cart"] = 1, observation.cart_count
            action = self._toward(target, observation, memory, persona, rng)
        if action is None:
            action = {"action": "end_session", "reason": f"no way to {target} on this store"}
        action.setdefault("reasoning", f"{persona.label}: {current} -> {target}")
        return action

    def _reached(self, target: str, obs: Observation, st: dict[str, Any]) -> bool:
        if target == "home" and obs.profile is None and st.get("tries", 0) > 0:
            # A store whose home page is a listing: following its home link gets there.
            return st.get("last_role") == "home_link" or KIND_STATE.get(obs.kind) == "home"
        if target == "add_to_cart":
            return obs.cart_count > st.get("start_cart", 0)
        if target == "remove_from_cart":
            return obs.cart_count < st.get("start_cart", 0)
        return KIND_STATE.get(obs.kind) == target and st.get("tries", 0) > 0

    # ---- one step toward a target state --------------------------------------------------
    def _toward(
        self, target: str, obs: Observation, memory: Memory, persona: Persona, rng: random.Random
    ) -> dict[str, Any] | None:
        cart = obs.cart_count
        if target == "end":
            return {"action": "end_session", "reason": "done browsing"}
        if target == "search":
            if not _can_search(obs):
                # No search box here (a checkout page): back to where there is one.
                return _click_or(obs, [], "go_back", "home_link")
            return {"action": "search", "query": self._query(persona, rng)}
        if target == "home":
            if obs.profile is None and not obs.by_role("home_link"):
                return None
            memory.state["last_role"] = "home_link"
            return _click_or(
                obs, ["home-link", "breadcrumb-home", "error-home-link"], "go_back", "home_link"
            )
        if target == "info":
            links = [e for e in obs.links() if e.region == "footer"]
            if links:
                return _click(rng.choice(links))
            if obs.profile is None:
                return None
            return _click_or(obs, ["home-link"], "go_back", "home_link")
        tries = memory.state.get("tries", 0)
        if target == "cart":
            if obs.profile is None and obs.cart_count == 0 and tries > 2:
                return None  # an empty mini-cart leads nowhere on this store: move on
            return _click_or(obs, ["cart-link"], "end_session", "cart_link")
        if target == "collection":
            links = [e for e in obs.links("collection")]
            if not links:
                return {"action": "search", "query": self._query(persona, rng)}
            return _click(_pick(rng, links, persona))
        if target == "product":
            return self._to_product(obs, persona, rng)
        if target == "add_to_cart":
            if obs.profile is None and obs.kind == "product" and tries > 3:
                # The store keeps refusing this one (a variant to pick): another product.
                return self._to_product(obs, persona, rng)
            if obs.kind == "product" and (obs.profile or obs.by_role("add_to_cart")):
                qty = int(_sample(rng, self.model.label_model(persona.label).quantities) or 1)
                return {"action": "add_to_cart", "quantity": max(1, min(qty, 99))}
            return self._to_product(obs, persona, rng)
        if target == "remove_from_cart":
            removes = [
                e
                for e in obs.elements
                if e.id.startswith("cart-remove-")
                or (obs.profile is None and e.role == "remove_from_cart")
            ]
            if obs.kind == "cart" and removes:
                return _click(rng.choice(removes))
            if obs.profile is None and obs.kind == "cart":
                return None  # nothing this store lets a buyer remove here
            if cart == 0:
                return {"action": "end_session", "reason": "nothing in the cart to remove"}
            return _click_or(obs, ["cart-link"], "end_session", "cart_link")
        if target in ("checkout", "purchase"):
            if obs.kind == "checkout":
                return self._fill_checkout(obs, memory)
            if cart == 0 and obs.kind != "cart":
                # A checkout needs something in the cart: pick something first.
                if obs.kind == "product":
                    return {"action": "add_to_cart", "quantity": 1}
                return self._to_product(obs, persona, rng)
            if obs.kind == "cart" and obs.element("checkout-button"):
                return {"action": "click", "id": "checkout-button"}
            if obs.kind == "cart" and obs.profile is None and obs.by_role("checkout"):
                return _click(obs.by_role("checkout")[0])
            if obs.kind == "cart" and self.follow_goal:
                return self._to_product(obs, persona, rng)  # emptied: find something again
            if obs.kind == "cart":
                return {"action": "end_session", "reason": "cart is empty"}
            return _click_or(obs, ["cart-link"], "end_session", "cart_link")
        return {"action": "end_session", "reason": f"no way to {target}"}

    def _query(self, persona: Persona, rng: random.Random) -> str:
        queries = list(persona.attributes.get("queries") or [])
        topics = list(persona.attributes.get("topics") or persona.interests)
        if queries and (not topics or rng.random() < 0.6):
            return rng.choice(queries)
        if topics:
            return rng.choice(topics).lower()
        return rng.choice(["gift", "new", "sale", "best seller"])

    def _to_product(self, obs: Observation, persona: Persona, rng: random.Random) -> dict[str, Any]:
        links = obs.links("product")
        if links:
            return _click(_pick(rng, links, persona))
        colls = obs.links("collection")
        if colls and (rng.random() < 0.5 or not _can_search(obs)):
            return _click(_pick(rng, colls, persona))
        if not _can_search(obs):
            return _click_or(obs, [], "go_back", "home_link")
        return {"action": "search", "query": self._query(persona, rng)}

    def _fill_checkout(self, obs: Observation, memory: Memory) -> dict[str, Any]:
        return fill_checkout(obs, str(memory.state.get("buyer_id", "buyer")))


def fill_checkout(obs: Observation, buyer_id: str = "buyer") -> dict[str, Any]:
    """The next checkout field to fill (test details, a test card), else the continue /
    place-order button."""
    for e in obs.elements:
        if e.kind == "input" and e.id in CHECKOUT_FIELDS and not e.value:
            text = CHECKOUT_FIELDS[e.id].format(buyer=re.sub(r"[^a-z0-9]", "", buyer_id.lower()))
            if text:
                return {"action": "type", "id": e.id, "text": text}
        if e.kind == "select" and e.id == "country" and not e.value:
            return {"action": "select", "id": "country", "value": "US"}
    if obs.profile is None:
        generic = _fill_generic(obs, buyer_id)
        if generic is not None:
            return generic
    for bid in CONTINUE_BUTTONS:
        if obs.element(bid):
            return {"action": "click", "id": bid}
    for role in ("place_order", "continue") if obs.profile is None else ():
        found = [e for e in obs.by_role(role) if e.region != "header"]
        if found:
            return _click(found[0])
    buttons = [e for e in obs.elements if e.kind == "button" and e.region == "form"]
    if buttons:
        return _click(buttons[-1])
    return {"action": "end_session", "reason": "could not find the checkout button"}


# Checkout fields of any store, by what their id, name, autocomplete or label says: the first
# rule that matches gives the test value. Fields that match SKIP_FIELD are left alone.
FIELD_RULES: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(p, re.I), v)
    for p, v in (
        (r"e-?mail", "{buyer}@example.com"),
        (r"first[-_ ]?name|given[-_ ]?name|\bfname|forename", "Sam"),
        (r"last[-_ ]?name|family[-_ ]?name|surname|\blname", "Buyer"),
        (r"card[-_ ]?number|cc-number", "4242 4242 4242 4242"),
        (r"expir|cc-exp", "12 / 34"),
        (r"cvc|cvv|security code|cc-csc", "123"),
        (r"name on card|card[-_ ]?name|cc-name", "Sam Buyer"),
        (r"full[-_ ]?name|^name$|\bname\b", "Sam Buyer"),
        (r"line[-_ ]?1|address[-_ ]?1|street|address-line1|^address$|\baddress\b", "1 Test Street"),
        (r"city|town|locality|address-level2", "Springfield"),
        (r"post[-_ ]?code|postal|zip", "12345"),
        (r"phone|\btel\b|mobile", "+1 202 555 0100"),
        (r"state|province|region|county|address-level1", "CA"),
    )
)
SKIP_FIELD = re.compile(
    r"search|quantity|qty|coupon|voucher|discount|promo|gift|password|company|note|comment"
    r"|line[-_ ]?2|address[-_ ]?2|apartment|suite|line[-_ ]?3",
    re.I,
)
_COUNTRY = re.compile(r"country", re.I)
_PLACEHOLDER = re.compile(r"^\W*$|\b(select|choose|please|pick)\b|^-+", re.I)
_AGREE = re.compile(r"terms|agree|accept|conditions|privacy", re.I)


def _can_search(obs: Observation) -> bool:
    """Whether the page has a search box, or (a store read by the conventions) a control
    that opens one."""
    if obs.profile is not None or obs.by_role("search_box"):
        return True
    return any(e.kind in ("link", "button") and re.match(r"\s*search\b", e.label, re.I)
               for e in obs.elements)  # fmt: skip


def _field_text(e: Element) -> str:
    return f"{e.id} {e.name or ''} {e.label}"


def _fill_generic(obs: Observation, buyer_id: str) -> dict[str, Any] | None:
    """The next field of a store's checkout form, read by what the field says it is: an
    empty text field gets its test value, a select without a choice its first option (the
    United States for a country), a radio group without a choice its first option, a terms
    checkbox its tick. None when every field is done."""
    buyer = re.sub(r"[^a-z0-9]", "", buyer_id.lower()) or "buyer"
    for e in obs.elements:
        text = _field_text(e)
        if e.kind == "input" and not e.value and not SKIP_FIELD.search(text):
            for pattern, value in FIELD_RULES:
                if pattern.search(text):
                    required = e.required or e.label.rstrip().endswith("*")
                    if value.startswith("+") and not required:
                        break  # an optional phone: stores check numbers; leave it empty
                    return {"action": "type", "id": e.id, "text": value.format(buyer=buyer)}
        if e.kind == "select" and e.options and not SKIP_FIELD.search(text):
            values = [o.split("=", 1)[0] for o in e.options]
            if e.value and e.value in values and e.value.strip():
                continue
            if _COUNTRY.search(text):
                for want in ("US", "us", "United States"):
                    for o in e.options:
                        v, _, shown = o.partition("=")
                        if want in (v, shown) or shown.startswith("United States"):
                            if v != e.value:
                                return {"action": "select", "id": e.id, "value": v}
                            break
            first = next((v for v in values if v.strip()), None)
            if first is not None and first != e.value:
                return {"action": "select", "id": e.id, "value": first}
    # Scripted drop-downs (ARIA comboboxes): an open list gets its choice, a closed one
    # without a choice is opened.
    options = [e for e in obs.elements if e.aria_role == "option" and e.label.strip()]
    if options:
        for e in options:
            if re.search(r"\bUnited States\b|^(US|USA)$", e.label.strip()):
                return _click(e)
        real = [e for e in options if not _PLACEHOLDER.search(e.label)]
        return _click((real or options)[0])
    for e in obs.elements:
        shown = (e.value or "").strip().lower()
        unset = (
            not shown or bool(_PLACEHOLDER.search(shown)) or shown == e.label.strip(" *").lower()
        )
        if e.aria_role == "combobox" and unset and not SKIP_FIELD.search(_field_text(e)):
            return _click(e)
    groups: dict[str, list[Element]] = {}
    for e in obs.elements:
        if e.kind == "radio":
            groups.setdefault(e.group or e.id, []).append(e)
    for radios in groups.values():
        if not any(r.checked for r in radios):
            return _click(radios[0])
    for e in obs.elements:
        if e.kind == "checkbox" and not e.checked and _AGREE.search(e.label):
            return _click(e)
    return None


_FUNNEL_NEXT = {"product": "add_to_cart", "add_to_cart": "checkout", "cart": "checkout",
                "checkout": "purchase"}  # fmt: skip


def _toward_goal(goal: Goal, current: str, obs: Observation, st: dict[str, Any]) -> str:
    """The next funnel state toward a buy or cart goal not yet met, else `end`."""
    if goal.target not in ("purchase", "add_to_cart"):
        return "end"
    added = st.setdefault("added", False) or current == "add_to_cart"
    st["added"] = added
    if goal.target == "add_to_cart" and added:
        return "end"
    if obs.kind == "confirmation":
        return "end"
    if not added:
        return "add_to_cart" if obs.kind == "product" else "product"
    return _FUNNEL_NEXT.get(current, "checkout")


def _sample(rng: random.Random, probs: Mapping[str, float]) -> str:
    keys = sorted(probs)
    if not keys:
        return "end"
    return rng.choices(keys, weights=[probs[k] for k in keys])[0]


def _click(e: Element) -> dict[str, Any]:
    return {"action": "click", "id": e.id}


def _click_or(
    obs: Observation, ids: list[str], fallback: str, role: str | None = None
) -> dict[str, Any]:
    for i in ids:
        if obs.element(i):
            return {"action": "click", "id": i}
    if role is not None and obs.profile is None:  # a store read by the conventions
        found = obs.by_role(role)
        if found:  # a link, then a page's own button, before a header toggle
            return _click(
                sorted(found, key=lambda e: (e.kind != "link", e.region in ("header", "nav")))[0]
            )
    if fallback == "go_back":
        return {"action": "go_back"}
    return {"action": "end_session", "reason": "no way forward from this page"}


def _pick(rng: random.Random, links: list[Element], persona: Persona) -> Element:
    """A link drawn with weight growing with its overlap with the persona's interests."""
    wanted = set().union(*(_tokens(t) for t in persona.interests)) if persona.interests else set()
    weights = [1.0 + 4.0 * math.sqrt(len(_tokens(e.label) & wanted)) for e in links]
    return rng.choices(links, weights=weights)[0]
