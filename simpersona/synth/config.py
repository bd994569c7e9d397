"""Configuration of the synthetic clickstream generator."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import date
from typing import Any

from simpersona.synth.types import DEFAULT_TYPES, PROFILES, BuyerType, Profile
from simpersona.synth.vocab import CATEGORIES


@dataclass(frozen=True)
class GeneratorConfig:
    """Every knob of `generate_lake`. The defaults reproduce the real Puffy store's sparsity
    (see docs/generator.md for the measured calibration); `profile="dense"` gives ~20 events
    per buyer for scale tests. Fields left at None take the profile's value."""

    n_shops: int = 4
    """Number of shops; ids are `shop-000`, `shop-001`, ..."""
    n_buyers: int = 40_000
    """Buyers in total across all shops (each buyer belongs to exactly one shop)."""
    seed: int = 0
    """Random seed: the same seed and config give byte-identical lake files."""
    start_date: date = date(2025, 2, 23)
    """First UTC day of the window (Puffy's sample starts on 2025-02-23)."""
    n_days: int = 14
    """Length of the window in days; every timestamp lies in [start_date, start_date + n_days)."""
    profile: str = "puffy"
    """Preset population: "puffy" (sparse, calibrated to the real store) or "dense"."""
    types: tuple[BuyerType, ...] = DEFAULT_TYPES
    """Planted buyer types (see simpersona.synth.types)."""
    type_shares: dict[str, float] | None = None
    """Base type mixture {type name: weight}; None = the profile's mixture."""
    mixture_concentration: float = 300.0
    """Dirichlet concentration of each shop's type mixture around the base mixture: each
    shop's mixture ~ Dirichlet(concentration × base). Lower = shops differ more."""
    sessions_scale: float | None = None
    """Multiplies every type's mean number of extra sessions; None = the profile's value."""
    events_scale: float | None = None
    """Multiplies every type's mean browsing events per session; None = the profile's value."""
    shop_size_sigma: float = 0.5
    """Lognormal sigma of shop sizes: buyers are split across shops ∝ exp(N(0, sigma))."""
    products_per_shop: tuple[int, int] = (60, 400)
    """Catalogue size range; each shop draws its size log-uniformly in [min, max]."""
    categories_per_shop: tuple[int, int] = (2, 4)
    """Number of product categories per shop, drawn uniformly in [min, max]."""
    sale_share: float = 0.15
    """Share of products on sale (discounted, in the "sale" collection)."""
    currencies: tuple[str, ...] = ("USD", "USD", "USD", "EUR", "GBP", "CAD")
    """Each shop draws its currency uniformly from this tuple."""
    domain: str = "example.com"
    """Storefront URLs are https://<shop_id>.<domain>/..."""
    null_session_share: float = 0.2
    """Share of buyers whose events carry no session_id (so ~this share of rows), to
    exercise the pipeline's 30-minute sessionizer. Whole buyers, so sessions stay exact."""
    null_session_shops: int = 0
    """Number of shops (the last ones) whose events carry no session_id at all."""
    max_sessions: int = 150
    """Cap on sessions per buyer in the window."""
    max_browse_per_session: int = 250
    """Cap on browsing events per session."""
    chunk_events: int = 2_000_000
    """Target events per simulated chunk: bounds memory (~0.5 GB per million events).
    The chunk size in buyers follows from the profile's expected events per buyer."""
    chunk_buyers: int | None = None
    """Buyers simulated at once; None = from chunk_events. Results depend on the chunking
    (random streams are per chunk), which is a pure function of the config."""
    buyer_id_prefix: str = "b"
    """Buyer ids are `<buyer_id_prefix><zero-padded number>` (tests pick a prefix no hash can
    contain, to grep a run's outputs for raw ids)."""
    part_prefix: str = "synth"
    """Lake files are named `<part_prefix>-<chunk>.parquet` (catalog: `<prefix>-catalog`)."""

    # ---- resolved values ----------------------------------------------------------------
    def resolved_profile(self) -> Profile:
        if self.profile not in PROFILES:
            raise ValueError(f"unknown profile {self.profile!r}; choose from {sorted(PROFILES)}")
        return PROFILES[self.profile]

    def resolved_shares(self) -> dict[str, float]:
        shares = self.type_shares or self.resolved_profile().shares
        names = [t.name for t in self.types]
        unknown = set(shares) - set(names)
        if unknown:
            raise ValueError(f"type_shares names unknown types: {sorted(unknown)}")
        out = {n: float(shares.get(n, 0.0)) for n in names}
        total = sum(out.values())
        if total <= 0 or any(v < 0 for v in out.values()):
            raise ValueError("type_shares must be non-negative with a positive sum")
        return {n: v / total for n, v in out.items()}

    def resolved_sessions_scale(self) -> float:
        if self.sessions_scale is not None:
            return self.sessions_scale
        return self.resolved_profile().sessions_scale

    def resolved_events_scale(self) -> float:
        if self.events_scale is not None:
            return self.events_scale
        return self.resolved_profile().events_scale

    def validate(self) -> None:
        if self.n_shops < 1 or self.n_shops > 1000:
            raise ValueError("n_shops must be in [1, 1000]")
        if self.n_buyers < 0:
            raise ValueError("n_buyers must be >= 0")
        if self.n_days < 1:
            raise ValueError("n_days must be >= 1")
        if not self.types or len({t.name for t in self.types}) != len(self.types):
            raise ValueError("types must be non-empty with unique names")
        lo, hi = self.products_per_shop
        if not 1 <= lo <= hi:
            raise ValueError("products_per_shop must be (min, max) with 1 <= min <= max")
        lo, hi = self.categories_per_shop
        if not 1 <= lo <= hi <= len(CATEGORIES):
            raise ValueError(
                f"categories_per_shop must be (min, max) with 1 <= min <= max <= {len(CATEGORIES)}"
            )
        if not 0.0 <= self.null_session_share <= 1.0:
            raise ValueError("null_session_share must be in [0, 1]")
        if self.chunk_buyers is not None and self.chunk_buyers < 1:
            raise ValueError("chunk_buyers must be >= 1")
        if self.chunk_events < 1:
            raise ValueError("chunk_events must be >= 1")
        self.resolved_shares()

    def replace(self, **changes: Any) -> GeneratorConfig:
        # Any, as dataclasses.replace takes it: each field has its own type
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, object]:
        """A JSON-friendly summary (types by name)."""
        d = dataclasses.asdict(self)
        d["types"] = [t.name for t in self.types]
        d["start_date"] = self.start_date.isoformat()
        d["type_shares"] = self.resolved_shares()
        d["sessions_scale"] = self.resolved_sessions_scale()
        d["events_scale"] = self.resolved_events_scale()
        return d
