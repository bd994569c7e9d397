"""Fitting the persona Markov model on training shops whose buyers carry persona tokens
(the out-of-sample baseline agent: chains pooled over the training shops only)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import polars as pl

from simpersona.agent.markov import MarkovConfig, MarkovModel


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
