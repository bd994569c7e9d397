"""Training sample (paper §3.1): training and evaluation shops disjoint; per training shop up to
1,500 buyer–shop pairs, at most 300 per stratum, stratum E dropped; 85/15 train/validation."""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import polars as pl


@dataclass
class SampleConfig:
    per_shop: int = 1_500
    per_stratum: int = 300
    drop_strata: tuple[str, ...] = ("E",)
    val_fraction: float = 0.15
    train_shops: list[str] | None = None  # explicit lists win over the seeded split
    eval_shops: list[str] | None = None
    eval_fraction: float = 0.5  # share of shops held out for evaluation in the seeded split
    seed: int = 0


@dataclass
class ShopSplit:
    train: list[str]
    eval: list[str] = field(default_factory=list)

    @property
    def splits_buyers(self) -> bool:
        """One shop and nothing held out: its buyers are split instead (`holdout_buyers`),
        and cross-store recovery is undefined."""
        return len(self.train) == 1 and not self.eval


def _rng(seed: int, *keys: str) -> np.random.Generator:
    return np.random.default_rng([seed, *(zlib.crc32(k.encode()) for k in keys)])


def split_shops(shops: Sequence[str], cfg: SampleConfig) -> ShopSplit:
    """Disjoint training and evaluation shops: the configured lists (a list given, even
    empty, is kept; a missing one is the other shops), else a seeded split (at least one shop
    on each side when there are two or more)."""
    shops = sorted(set(shops))
    if cfg.train_shops is not None or cfg.eval_shops is not None:
        # a list given (even empty) is kept; a missing one is the other shops
        if cfg.train_shops is not None:
            train = sorted(cfg.train_shops)
        else:
            train = sorted(s for s in shops if s not in (cfg.eval_shops or []))
        if cfg.eval_shops is not None:
            evals = sorted(cfg.eval_shops)
        else:
            evals = sorted(s for s in shops if s not in train)
        overlap = set(train) & set(evals)
        if overlap:
            raise ValueError(f"training and evaluation shops overlap: {sorted(overlap)}")
        unknown = (set(train) | set(evals)) - set(shops)
        if unknown:
            raise ValueError(f"configured shops not in the data: {sorted(unknown)}")
        return ShopSplit(train, evals)
    if len(shops) < 2:
        return ShopSplit(list(shops), [])
    order = _rng(cfg.seed, "shops").permutation(len(shops))
    # rounded down: three shops train on two and hold one out, not the other way round
    n_eval = min(max(1, int(len(shops) * cfg.eval_fraction)), len(shops) - 1)
    evals = sorted(shops[i] for i in order[:n_eval])
    return ShopSplit(sorted(s for s in shops if s not in evals), evals)


def holdout_buyers(buyers: pl.DataFrame, fraction: float, seed: int) -> pl.Series:
    """True for a seeded `fraction` of each shop's buyers: held out of training when a single
    shop is both trained and evaluated on (`ShopSplit.splits_buyers`), so that figures on
    them are out of sample. Depends only on the buyer ids and the seed, not on row order."""
    held = np.zeros(buyers.height, dtype=bool)
    for (shop,), part in buyers.with_row_index("_row").group_by(["shop_id"]):
        part = part.sort("buyer_id")
        n_hold = int(round(part.height * fraction))
        pick = _rng(seed, str(shop), "holdout").permutation(part.height)[:n_hold]
        held[part["_row"].to_numpy()[pick]] = True
    return pl.Series("holdout", held)


def sample_training_pairs(
    buyers: pl.DataFrame, train_shops: Sequence[str], cfg: SampleConfig
) -> pl.DataFrame:
    """Sample buyer–shop pairs of the training shops.

    `buyers`: shop_id, buyer_id, stratum (other columns are carried). Returns the sampled
    rows with a `split` column ('train' | 'val'), deterministic for a seed whatever the input
    row order.
    """
    out = []
    for shop in sorted(train_shops):
        rows = buyers.filter(
            (pl.col("shop_id") == shop) & ~pl.col("stratum").is_in(list(cfg.drop_strata))
        ).sort("buyer_id")
        picked = []
        for (stratum,), part in rows.group_by(["stratum"], maintain_order=True):
            rng = _rng(cfg.seed, shop, str(stratum))
            idx = rng.permutation(part.height)[: cfg.per_stratum]
            picked.append(part[np.sort(idx)])
        if not picked:
            continue
        shop_rows = pl.concat(picked).sort("buyer_id")
        if shop_rows.height > cfg.per_shop:
            idx = _rng(cfg.seed, shop, "cap").permutation(shop_rows.height)[: cfg.per_shop]
            shop_rows = shop_rows[np.sort(idx)]
        # validation: a seeded share within each stratum
        split = np.full(shop_rows.height, "train", dtype=object)
        strata = shop_rows["stratum"].to_numpy()
        for s in np.unique(strata):
            where = np.flatnonzero(strata == s)
            n_val = int(round(where.size * cfg.val_fraction))
            val = _rng(cfg.seed, shop, str(s), "val").permutation(where.size)[:n_val]
            split[where[val]] = "val"
        out.append(shop_rows.with_columns(pl.Series("split", split.tolist(), pl.String)))
    if not out:
        return buyers.head(0).with_columns(pl.lit(None, pl.String).alias("split"))
    return pl.concat(out)


@dataclass
class TrainingSample:
    """The sample's rows (split: train | val | holdout) and the record of the shop split."""

    rows: pl.DataFrame
    split: ShopSplit
    holdout_buyers: int | None = None  # buyers of the single shop held out of training
    seed: int = 0

    def split_record(self, eval_fraction: float) -> dict:
        """What shop_split.json records: training and evaluation shops, the seed and, with a
        single shop, the share of its buyers held out."""
        record: dict = {"train": self.split.train, "eval": self.split.eval, "seed": self.seed}
        if self.holdout_buyers is not None:
            record["holdout_buyers"] = {
                "shop": self.split.train[0], "fraction": eval_fraction, "buyers": self.holdout_buyers
            }  # fmt: skip
        return record


def build_training_sample(
    split: ShopSplit, buyers: pl.DataFrame, cfg: SampleConfig
) -> TrainingSample:
    """The training sample of the training shops' `buyers` (shop_id, buyer_id, stratum).

    With a single shop and nothing held out, a seeded share (`cfg.eval_fraction`) of its
    buyers is held out of training instead of a shop and kept as split 'holdout' (strata the
    sample keeps), so figures on them are out of sample."""
    held_out = None
    if split.splits_buyers:
        mask = holdout_buyers(buyers, cfg.eval_fraction, cfg.seed)
        held_out, buyers = buyers.filter(mask), buyers.filter(~mask)
    sample = sample_training_pairs(buyers, split.train, cfg)
    if held_out is not None and not sample.is_empty():
        held_rows = held_out.filter(~pl.col("stratum").is_in(list(cfg.drop_strata)))
        sample = pl.concat(
            [sample, held_rows.with_columns(pl.lit("holdout").alias("split"))],
            how="diagonal_relaxed",
        )
    return TrainingSample(
        sample, split, None if held_out is None else held_out.height, seed=cfg.seed
    )
