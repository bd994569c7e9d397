"""`generate_lake`: write a synthetic multi-shop clickstream into the raw lake, shop by shop.

Per shop: a catalogue (products, collections) and the events of its buyers, simulated in
chunks of `config.chunk_buyers` buyers and written through `Lake`, so memory stays bounded
by one chunk. The planted type of every buyer goes to a separate ground-truth Parquet file
that the pipeline never reads.
"""

from __future__ import annotations

import dataclasses
import os
import re
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from datetime import time as dtime
from pathlib import Path

import numpy as np
import polars as pl

from simpersona.lake import Lake, atomic_write_parquet
from simpersona.progress import progress_bar
from simpersona.schema import EVENT_TYPES
from simpersona.synth.catalog import ShopCatalog, build_catalog
from simpersona.synth.config import GeneratorConfig
from simpersona.synth.simulate import US, TypeTable, expected_events_per_buyer, simulate_chunk

DEFAULT_GROUND_TRUTH = Path("data/ground_truth/planted_types.parquet")
GROUND_TRUTH_SCHEMA = {"shop_id": pl.String(), "buyer_id": pl.String(), "planted_type": pl.String()}


@dataclass
class ShopCounts:
    shop_id: str
    buyers: int
    sessions: int
    events: int
    events_by_type: dict[str, int]
    products: int
    collections: int
    currency: str
    categories: list[str]
    type_mix: dict[str, float]  # the shop's drawn mixture (expected shares)


@dataclass
class GenerateResult:
    lake_root: Path
    ground_truth_path: Path
    config: GeneratorConfig
    shops: list[ShopCounts] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def n_buyers(self) -> int:
        return sum(s.buyers for s in self.shops)

    @property
    def n_events(self) -> int:
        return sum(s.events for s in self.shops)

    @property
    def n_sessions(self) -> int:
        return sum(s.sessions for s in self.shops)

    @property
    def events_by_type(self) -> dict[str, int]:
        return {k: sum(s.events_by_type[k] for s in self.shops) for k in EVENT_TYPES}

    def table(self):  # -> rich.table.Table
        """A rich table of the per-shop counts."""
        from rich.table import Table

        tab = Table(title=f"generated {self.n_buyers:,} buyers in {self.seconds:.1f} s")
        cols = ("shop", "cur", "products", "collections", "buyers", "sessions", "events")
        for col in (*cols, "carts", "checkouts", "orders"):
            tab.add_column(col, justify="left" if col in ("shop", "cur") else "right")
        rows = [(s.shop_id, s) for s in self.shops]
        for name, s in rows:
            e = s.events_by_type
            tab.add_row(
                name,
                s.currency,
                f"{s.products:,}",
                f"{s.collections:,}",
                f"{s.buyers:,}",
                f"{s.sessions:,}",
                f"{s.events:,}",
                f"{e['add_to_cart']:,}",
                f"{e['checkout_started']:,}",
                f"{e['checkout_completed']:,}",
            )
        return tab

    def to_dict(self) -> dict[str, object]:
        """JSON-friendly counts (for Dagster metadata or MLflow)."""
        return {
            "lake_root": str(self.lake_root),
            "ground_truth_path": str(self.ground_truth_path),
            "seconds": self.seconds,
            "buyers": self.n_buyers,
            "sessions": self.n_sessions,
            "events": self.n_events,
            "events_by_type": self.events_by_type,
            "shops": [dataclasses.asdict(s) for s in self.shops],
            "config": self.config.to_dict(),
        }


@dataclass(frozen=True)
class ShopPlan:
    index: int
    shop_id: str
    n_buyers: int
    buyer_offset: int
    mixture: np.ndarray
    currency: str
    n_products: int
    n_categories: int
    null_sessions: bool


def shop_id_for(index: int) -> str:
    return f"shop-{index:03d}"


def plan_shops(config: GeneratorConfig) -> list[ShopPlan]:
    """Shop sizes, type mixtures, currencies and catalogue sizes, all from the seed."""
    rng = np.random.default_rng(np.random.SeedSequence(config.seed))
    n = config.n_shops
    size_w = rng.lognormal(0.0, config.shop_size_sigma, n)
    sizes = rng.multinomial(config.n_buyers, size_w / size_w.sum())
    shares = config.resolved_shares()
    base = np.array([shares[t.name] for t in config.types])
    plans = []
    offset = 0
    lo, hi = config.products_per_shop
    clo, chi = config.categories_per_shop
    for i in range(n):
        g = rng.gamma(np.where(base > 0, config.mixture_concentration * base, 1.0))
        g = np.where(base > 0, g, 0.0)
        mix = g / g.sum()
        currency = config.currencies[int(rng.integers(len(config.currencies)))]
        n_products = int(round(np.exp(rng.uniform(np.log(lo), np.log(hi)))))
        n_categories = int(rng.integers(clo, chi + 1))
        plans.append(
            ShopPlan(
                index=i,
                shop_id=shop_id_for(i),
                n_buyers=int(sizes[i]),
                buyer_offset=offset,
                mixture=mix,
                currency=currency,
                n_products=n_products,
                n_categories=n_categories,
                null_sessions=i >= n - config.null_session_shops,
            )
        )
        offset += int(sizes[i])
    return plans


def _rng(seed: int, *key: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=key))


def _clean_previous(lake: Lake, prefix: str) -> int:
    """Remove this generator's earlier files (`<prefix>-NNN.parquet`, `<prefix>-catalog`)
    from the lake, so a re-run with other settings leaves nothing stale. Other files stay;
    folders are removed only when this emptied them."""
    pat = re.compile(rf"^{re.escape(prefix)}-(\d+|catalog)\.parquet$")
    removed = 0
    for table in ("events", "products", "collections"):
        base = lake.root / table
        if not base.is_dir():
            continue
        emptied: set[Path] = set()
        for dirpath, _dirnames, filenames in os.walk(base, topdown=False):
            d = Path(dirpath)
            hits = [name for name in filenames if pat.match(name)]
            for name in hits:
                (d / name).unlink()
            removed += len(hits)
            if d != base and (hits or d in emptied) and not any(d.iterdir()):
                d.rmdir()
                emptied.add(d.parent)
    return removed


def _buyer_ids(offset: int, n: int, width: int, prefix: str = "b") -> pl.Series:
    return pl.select(
        prefix + pl.int_range(offset, offset + n, dtype=pl.Int64).cast(pl.String).str.zfill(width)
    ).to_series()


def chunk_size(config: GeneratorConfig, tt: TypeTable) -> int:
    """Buyers per simulated chunk: config.chunk_buyers, or about config.chunk_events events."""
    if config.chunk_buyers is not None:
        return config.chunk_buyers
    shares = config.resolved_shares()
    epb = expected_events_per_buyer(tt, np.array([shares[n] for n in tt.names]))
    return int(min(max(config.chunk_events / max(epb, 1.0), 10_000), 2_000_000))


def generate_shop(
    lake: Lake,
    plan: ShopPlan,
    config: GeneratorConfig,
    tt: TypeTable,
    on_chunk=None,
) -> tuple[ShopCounts, list[pl.DataFrame]]:
    """Catalogue and events of one shop, written to the lake; returns counts and the
    ground-truth frames of its buyers."""
    cat: ShopCatalog = build_catalog(
        plan.shop_id,
        _rng(config.seed, plan.index, 0),
        n_products=plan.n_products,
        n_categories=plan.n_categories,
        currency=plan.currency,
        domain=config.domain,
        sale_share=config.sale_share,
    )
    prefix = config.part_prefix
    lake.write_catalog("products", cat.products, part=f"{prefix}-catalog")
    lake.write_catalog("collections", cat.collections, part=f"{prefix}-catalog")
    width = max(6, len(str(max(config.n_buyers - 1, 0))))
    start = datetime.combine(config.start_date, dtime(0), tzinfo=UTC)
    window_start_us = int(start.timestamp()) * US
    window_us = config.n_days * 86_400 * US
    by_type = np.zeros(len(EVENT_TYPES), dtype=np.int64)
    n_events = n_sessions = 0
    truth = []
    names = np.array(tt.names)
    step = chunk_size(config, tt)
    for chunk, lo in enumerate(range(0, plan.n_buyers, step)):
        n = min(step, plan.n_buyers - lo)
        rng = _rng(config.seed, plan.index, chunk + 1)
        type_code = rng.choice(len(names), size=n, p=plan.mixture)
        null_session = (
            np.ones(n, dtype=bool)
            if plan.null_sessions
            else rng.random(n) < config.null_session_share
        )
        ids = _buyer_ids(plan.buyer_offset + lo, n, width, config.buyer_id_prefix)
        res = simulate_chunk(
            rng,
            cat,
            tt,
            type_code,
            ids,
            null_session,
            window_start_us=window_start_us,
            window_us=window_us,
            event_id_prefix=f"e{plan.index:03d}-{chunk:03d}-",
            max_sessions=config.max_sessions,
            max_browse=config.max_browse_per_session,
        )
        lake.write_events(res.events, part=f"{prefix}-{chunk:03d}")
        n_events += res.events.height
        n_sessions += res.n_sessions
        by_type += res.events_by_type
        truth.append(
            pl.DataFrame(
                {
                    "shop_id": pl.Series([plan.shop_id] * n, dtype=pl.String),
                    "buyer_id": ids,
                    "planted_type": pl.Series(names[type_code], dtype=pl.String),
                }
            )
        )
        del res
        if on_chunk is not None:
            on_chunk(n)
    counts = ShopCounts(
        shop_id=plan.shop_id,
        buyers=plan.n_buyers,
        sessions=n_sessions,
        events=n_events,
        events_by_type={k: int(v) for k, v in zip(EVENT_TYPES, by_type, strict=True)},
        products=cat.n_products,
        collections=cat.collections.height,
        currency=cat.currency,
        categories=[c.key for c in cat.categories],
        type_mix={k: float(v) for k, v in zip(tt.names, plan.mixture, strict=True)},
    )
    return counts, truth


def _inside(path: Path, root: Path) -> bool:
    try:
        path.resolve().relative_to(root.resolve())
        return True
    except ValueError:
        return False


def generate_lake(
    lake_root: str | os.PathLike[str],
    config: GeneratorConfig | None = None,
    ground_truth_path: str | os.PathLike[str] = DEFAULT_GROUND_TRUTH,
    progress: bool = True,
) -> GenerateResult:
    """Generate `config.n_buyers` buyers over `config.n_shops` shops into the lake at
    `lake_root` (events, products, collections), and their planted types into
    `ground_truth_path` (which must lie outside the lake). Earlier files of this generator
    (same `part_prefix`) are removed first. Same seed and config → byte-identical files."""
    t0 = time.perf_counter()
    config = config or GeneratorConfig()
    config.validate()
    lake = Lake.at(lake_root)
    gt_path = Path(ground_truth_path)
    if _inside(gt_path, lake.root):
        raise ValueError(
            f"ground truth {gt_path} must lie outside the lake {lake.root}: "
            "the pipeline must never see the planted types"
        )
    lake.root.mkdir(parents=True, exist_ok=True)
    _clean_previous(lake, config.part_prefix)
    tt = TypeTable.build(
        config.types, config.resolved_sessions_scale(), config.resolved_events_scale()
    )
    plans = plan_shops(config)
    result = GenerateResult(lake_root=lake.root, ground_truth_path=gt_path, config=config)
    truth: list[pl.DataFrame] = []
    with progress_bar(len(plans), "generating", unit="shops", enabled=progress) as bar:
        for plan in plans:

            def on_chunk(n: int, plan: ShopPlan = plan) -> None:
                if plan.n_buyers:
                    bar.advance(n / plan.n_buyers)

            bar.update(description=f"{plan.shop_id} ({plan.n_buyers:,} buyers)")
            counts, shop_truth = generate_shop(lake, plan, config, tt, on_chunk)
            result.shops.append(counts)
            truth.extend(shop_truth)
            if plan.n_buyers == 0:
                bar.advance(1)
    gt = pl.concat(truth) if truth else pl.DataFrame(schema=GROUND_TRUTH_SCHEMA)
    atomic_write_parquet(gt, gt_path)
    result.seconds = time.perf_counter() - t0
    return result
