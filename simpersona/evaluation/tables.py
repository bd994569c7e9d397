"""The input tables of the evaluation and the helpers that build them.

Real buyers of a shop (one row per buyer–shop pair): `shop_id`, `buyer_id`, `token`,
`stratum`, `atc`, `checkout`, `purchase` (bools: the buyer had such a session), and the
auxiliary bins `engagement_bin`, `exploration_bin`, `purchase_bin` (0 Low, 1 Medium, 2 High).
`real_buyer_outcomes` builds it from the warehouse partitions `persona_assignments` and
`buyer_features`.

Agent results (one row per simulated agent): see `AGENT_COLUMNS`. Agents of the no-persona
policy have no `token`; when the runner keeps the token of the buyer slot the agent filled in
`sampled_token`, pairing-based figures use it (`agent_token_expr`).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

import polars as pl

from simpersona.agent.session import OUTCOMES as OUTCOMES  # an agent session's outcomes
from simpersona.features.labels import BIN_NAMES as BIN_NAMES
from simpersona.features.scalars import STRATA as STRATA

BIN_COLUMNS: Final[tuple[str, ...]] = ("engagement_bin", "exploration_bin", "purchase_bin")

REAL_COLUMNS: Final[tuple[str, ...]] = (
    "shop_id",
    "buyer_id",
    "token",
    "stratum",
    "atc",
    "checkout",
    "purchase",
)
AGENT_COLUMNS: Final[tuple[str, ...]] = (
    "agent_id",
    "shop_id",
    "policy",
    "token",
    "stratum",
    "intent",
    "n_actions",
    "add_to_cart",
    "checkout_reached",
    "purchase",
    "outcome",
    "error",
    "steps",
    "seconds",
    "self_reported_done",
)
# Optional agent columns used where present: task_id, task_kind (instruction runs),
# sampled_token (no-persona runs), n_product_views, n_searches, n_collection_views
# (exploration), n_add_to_cart (add-to-cart events), carted_product_ids (list[str]).


def require_columns(df: pl.DataFrame, columns: Iterable[str], table: str) -> None:
    """Raise a ValueError naming the table and every missing column."""
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ValueError(
            f"{table}: missing column(s) {', '.join(missing)}; it has {', '.join(df.columns)}"
        )


def agent_token_expr(agents: pl.DataFrame) -> pl.Expr:
    """The token an agent stands for: `token`, else `sampled_token` when the table has it."""
    if "sampled_token" in agents.columns:
        return pl.coalesce(pl.col("token"), pl.col("sampled_token")).alias("token")
    return pl.col("token")


def real_buyer_outcomes(assignments: pl.DataFrame, features: pl.DataFrame) -> pl.DataFrame:
    """Real buyers with their token, stratum, bins and funnel outcomes.

    `assignments`: `persona_assignments` rows (shop_id, buyer_id, token, stratum and the bin
    columns where present). `features`: `buyer_features` rows (shop_id, buyer_id,
    atc_sessions, checkout_sessions, purchase_sessions). Buyers without features are an
    error (the two partitions come from the same buyers)."""
    require_columns(assignments, ("shop_id", "buyer_id", "token", "stratum"), "assignments")
    need = ("shop_id", "buyer_id", "atc_sessions", "checkout_sessions", "purchase_sessions")
    require_columns(features, need, "buyer features")
    keep = [c for c in ("shop_id", "buyer_id", "token", "stratum", *BIN_COLUMNS)]
    keep = [c for c in keep if c in assignments.columns]
    f = features.select(
        "shop_id",
        "buyer_id",
        (pl.col("atc_sessions") > 0).alias("atc"),
        (pl.col("checkout_sessions") > 0).alias("checkout"),
        (pl.col("purchase_sessions") > 0).alias("purchase"),
    )
    out = assignments.select(keep).join(f, on=["shop_id", "buyer_id"], how="left")
    lost = out.filter(pl.col("atc").is_null())
    if lost.height:
        first = lost.row(0, named=True)
        raise ValueError(
            f"{lost.height} assigned buyer(s) have no buyer features, e.g. shop "
            f"{first['shop_id']!r} buyer {first['buyer_id']!r}"
        )
    return out.with_columns(pl.col("token").cast(pl.Int64))


def token_bins(assignments: pl.DataFrame) -> pl.DataFrame:
    """token → modal engagement/exploration/purchase bin of its real buyers (ties: the lower
    bin), with `n_buyers`. Over every shop in `assignments`."""
    require_columns(assignments, ("token", *BIN_COLUMNS), "assignments")
    base = assignments.filter(pl.col("token").is_not_null()).with_columns(
        pl.col("token").cast(pl.Int64)
    )
    out = base.group_by("token").agg(pl.len().alias("n_buyers"))
    for col in BIN_COLUMNS:
        mode = (
            base.filter(pl.col(col).is_not_null())
            .group_by("token", col)
            .agg(pl.len().alias("n"))
            .sort(["token", "n", col], descending=[False, True, False])
            .group_by("token", maintain_order=True)
            .first()
            .select("token", pl.col(col).cast(pl.Int64))
        )
        out = out.join(mode, on="token", how="left")
    return out.sort("token")


def with_sampled_tokens(agents: pl.DataFrame, assignments: pl.DataFrame) -> pl.DataFrame:
    """Agents with `sampled_token`: the token of the real buyer whose slot each agent filled
    (`counterpart_buyer_id` looked up in `assignments`). No-persona agents have no `token`;
    this lets ARA and separation pair them with the buyers they stand for."""
    require_columns(agents, ("shop_id", "counterpart_buyer_id"), "agent results")
    require_columns(assignments, ("shop_id", "buyer_id", "token"), "assignments")
    lookup = assignments.select(
        "shop_id",
        pl.col("buyer_id").alias("counterpart_buyer_id"),
        pl.col("token").cast(pl.Int64).alias("sampled_token"),
    ).unique(["shop_id", "counterpart_buyer_id"])
    return agents.drop("sampled_token", strict=False).join(
        lookup, on=["shop_id", "counterpart_buyer_id"], how="left"
    )
