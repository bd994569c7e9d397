"""How real does a clickstream look? Per-buyer summaries, population figures, and a
side-by-side comparison of two canonical event frames (e.g. generated vs the Puffy store).

The unit is the buyer–shop pair. Sessions come from `session_id`, filled by the 30-minute
sessionizer where it is null. Funnel strata follow the spec's priority cascade:
A purchaser (≥1 checkout_completed) → B checkout abandoner (checkout_started) → C cart
builder (add_to_cart) → D window shopper (product/collection view or search) → E bouncer.
"""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl

from simpersona.ingest.sessionize import sessionize
from simpersona.polars_scalars import as_float
from simpersona.schema import EVENT_TYPES

STRATA: tuple[str, ...] = ("A", "B", "C", "D", "E")
BROWSE_TYPES: tuple[str, ...] = ("product_view", "collection_view", "search")

# The figures the generator's default profile is calibrated on (see docs/generator.md).
CALIBRATION_KEYS: tuple[str, ...] = (
    "single_event_share",
    "events_per_buyer_median",
    "events_per_buyer_p90",
    "sessions_per_buyer_mean",
    "atc_rate",
    "checkout_rate",
    "purchase_rate",
    "stratum_A_share",
    "stratum_B_share",
    "stratum_C_share",
    "stratum_D_share",
    "stratum_E_share",
)
TOLERANCE = 1.5


def stratum_expr(purchase: pl.Expr, checkout: pl.Expr, atc: pl.Expr, browse: pl.Expr) -> pl.Expr:
    """The A–E cascade over per-buyer booleans."""
    return (
        pl.when(purchase)
        .then(pl.lit("A"))
        .when(checkout)
        .then(pl.lit("B"))
        .when(atc)
        .then(pl.lit("C"))
        .when(browse)
        .then(pl.lit("D"))
        .otherwise(pl.lit("E"))
    )


def _with_buyer(events: pl.DataFrame) -> pl.DataFrame:
    return events.filter(pl.col("buyer_id").is_not_null() & pl.col("shop_id").is_not_null())


def buyer_summary(events: pl.DataFrame) -> pl.DataFrame:
    """One row per (shop_id, buyer_id): n_events, n_sessions, has_atc, has_checkout
    (checkout_started), has_purchase (checkout_completed), has_browse (product/collection
    view or search), stratum (A–E). Rows without a buyer or shop are no buyer's and are
    left out (an importer may keep them for ingestion to quarantine)."""
    cols = ["shop_id", "buyer_id", "session_id", "ts", "event_type"]
    ev = _with_buyer(events).select(cols)
    if ev["session_id"].null_count():
        ev = sessionize(ev)
    et = pl.col("event_type")
    out = ev.group_by(["shop_id", "buyer_id"]).agg(
        pl.len().alias("n_events"),
        pl.col("session_id").n_unique().alias("n_sessions"),
        (et == "add_to_cart").any().alias("has_atc"),
        (et == "checkout_started").any().alias("has_checkout"),
        (et == "checkout_completed").any().alias("has_purchase"),
        et.is_in(BROWSE_TYPES).any().alias("has_browse"),
    )
    out = out.with_columns(
        stratum_expr(
            pl.col("has_purchase"), pl.col("has_checkout"), pl.col("has_atc"), pl.col("has_browse")
        ).alias("stratum"),
        pl.col("n_events").cast(pl.Int64),
        pl.col("n_sessions").cast(pl.Int64),
    )
    return out.sort(["shop_id", "buyer_id"])


def realism_stats(events: pl.DataFrame) -> dict[str, float]:
    """Population figures of a canonical event frame (flat keys; CALIBRATION_KEYS among
    them, plus n_buyers, n_events, events_per_buyer_mean and event-type shares)."""
    events = _with_buyer(events)
    b = buyer_summary(events)
    n = b.height
    out: dict[str, float] = {"n_buyers": float(n), "n_events": float(events.height)}
    if n == 0:
        return out
    ne = b["n_events"]
    out["single_event_share"] = as_float((ne == 1).mean())
    out["events_per_buyer_median"] = as_float(ne.quantile(0.5, "nearest"))
    out["events_per_buyer_p90"] = as_float(ne.quantile(0.9, "nearest"))
    out["events_per_buyer_mean"] = as_float(ne.mean())
    out["sessions_per_buyer_mean"] = as_float(b["n_sessions"].mean())
    out["atc_rate"] = as_float(b["has_atc"].mean())
    out["checkout_rate"] = as_float(b["has_checkout"].mean())
    out["purchase_rate"] = as_float(b["has_purchase"].mean())
    counts = dict(b["stratum"].value_counts().iter_rows())
    for s in STRATA:
        out[f"stratum_{s}_share"] = counts.get(s, 0) / n
    types = dict(events["event_type"].value_counts().iter_rows())
    for k, v in sorted(types.items(), key=lambda kv: str(kv[0])):
        out[f"{k}_event_share"] = v / events.height
    return out


@dataclass(frozen=True)
class RealismRow:
    metric: str
    generated: float
    real: float
    ratio: float  # generated / real (inf when real is 0 and generated is not)
    within: bool  # 1/tolerance <= ratio <= tolerance

    @property
    def within_1_5(self) -> bool:
        return self.within


def compare_realism(
    generated: dict[str, float],
    real: dict[str, float],
    keys: tuple[str, ...] = CALIBRATION_KEYS,
    tolerance: float = TOLERANCE,
) -> list[RealismRow]:
    """Side-by-side rows for `keys` present in both dicts, with ratio and tolerance flag."""
    rows = []
    for k in keys:
        if k not in generated or k not in real:
            continue
        g, r = float(generated[k]), float(real[k])
        ratio = (1.0 if g == 0 else float("inf")) if r == 0 else g / r
        rows.append(RealismRow(k, g, r, ratio, 1 / tolerance <= ratio <= tolerance))
    return rows


def realism_report(
    generated_events: pl.DataFrame,
    real_events: pl.DataFrame,
    keys: tuple[str, ...] = CALIBRATION_KEYS,
    tolerance: float = TOLERANCE,
) -> list[RealismRow]:
    """Compare two canonical event frames on the calibration figures."""
    return compare_realism(
        realism_stats(generated_events), realism_stats(real_events), keys, tolerance
    )


def realism_table(
    rows: list[RealismRow], title: str = "generated vs real", real_label: str = "real"
):  # -> rich.table.Table
    """A rich table of comparison rows."""
    from rich.table import Table

    tab = Table(title=title)
    tab.add_column("metric")
    tab.add_column("generated", justify="right")
    tab.add_column(real_label, justify="right")
    tab.add_column("ratio", justify="right")
    tab.add_column("within ×1.5", justify="center")
    for r in rows:
        tab.add_row(
            r.metric,
            _fmt(r.generated),
            _fmt(r.real),
            f"{r.ratio:.2f}",
            "[green]yes[/]" if r.within else "[red]no[/]",
        )
    return tab


def _fmt(x: float) -> str:
    if x == int(x) and abs(x) >= 1:
        return f"{int(x):,}"
    return f"{x:.4f}" if abs(x) < 1 else f"{x:.3f}"


# ---- separability of planted types --------------------------------------------------------
# One count per canonical event type (docs/data-model.md).
FEATURE_EVENT_TYPES: tuple[str, ...] = EVENT_TYPES


def buyer_features(events: pl.DataFrame) -> pl.DataFrame:
    """Simple per buyer–shop features: volume (events, sessions, active days, events per
    session), counts of each event type, distinct products, session time, viewed price,
    order value, and the product-view / page-view shares."""
    ev = _with_buyer(events)
    if ev["session_id"].null_count():
        ev = sessionize(ev)
    et = pl.col("event_type")
    per_sess = ev.group_by(["shop_id", "buyer_id", "session_id"]).agg(
        (pl.col("ts").max() - pl.col("ts").min()).dt.total_seconds().alias("dur")
    )
    dur = per_sess.group_by(["shop_id", "buyer_id"]).agg(
        pl.col("dur").sum().cast(pl.Float64).alias("total_duration_s")
    )
    feats = ev.group_by(["shop_id", "buyer_id"]).agg(
        pl.len().alias("n_events"),
        pl.col("session_id").n_unique().alias("n_sessions"),
        pl.col("ts").dt.date().n_unique().alias("n_active_days"),
        *[(et == k).sum().alias(f"n_{k}") for k in FEATURE_EVENT_TYPES],
        pl.col("product_id").drop_nulls().n_unique().alias("n_distinct_products"),
        pl.col("price")
        .filter(et == "product_view")
        .mean()
        .fill_null(0.0)
        .alias("mean_viewed_price"),
        pl.col("order_value")
        .filter(et == "checkout_completed")
        .max()
        .fill_null(0.0)
        .alias("max_order_value"),
        (et == "product_view").mean().alias("product_view_share"),
        (et == "page_view").mean().alias("page_view_share"),
    )
    feats = feats.with_columns(
        (pl.col("n_events") / pl.col("n_sessions")).alias("events_per_session")
    ).join(dur, on=["shop_id", "buyer_id"], how="left")
    return feats.sort(["shop_id", "buyer_id"])


def best_threshold_f1(x, y) -> tuple[float, float, str]:
    """Best F1 of a one-feature threshold rule (x >= t or x <= t) for boolean labels y.
    Returns (f1, threshold, direction)."""
    import numpy as np

    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=bool)
    n_pos = int(y.sum())
    if n_pos == 0 or len(x) == 0:
        return 0.0, float("nan"), ">="
    vals, inv = np.unique(x, return_inverse=True)
    tot = np.bincount(inv, minlength=len(vals)).astype(np.float64)
    pos = np.bincount(inv, weights=y.astype(np.float64), minlength=len(vals))
    best = (0.0, float("nan"), ">=")
    # x >= vals[i]: suffix sums; x <= vals[i]: prefix sums.
    for direction, tp, pp in (
        (">=", np.cumsum(pos[::-1])[::-1], np.cumsum(tot[::-1])[::-1]),
        ("<=", np.cumsum(pos), np.cumsum(tot)),
    ):
        f1 = 2 * tp / (pp + n_pos)
        i = int(np.argmax(f1))
        if f1[i] > best[0]:
            best = (float(f1[i]), float(vals[i]), direction)
    return best


def separability(features: pl.DataFrame, labels: pl.Series, min_count: int = 30) -> pl.DataFrame:
    """For each label with at least `min_count` members and each numeric feature column,
    the best F1 of a single threshold isolating that label (one-vs-rest). Rows sorted by
    best_f1, highest first."""
    numeric = [
        c
        for c, dt in features.schema.items()
        if dt.is_numeric() and c not in ("shop_id", "buyer_id")
    ]
    lab = labels.to_numpy()
    rows = []
    for k, cnt in labels.value_counts().iter_rows():
        if cnt < min_count:
            continue
        y = lab == k
        for c in numeric:
            f1, thr, d = best_threshold_f1(features[c].fill_null(0).to_numpy(), y)
            rows.append(
                {"label": k, "n": cnt, "feature": c, "best_f1": f1, "threshold": thr, "rule": d}
            )
    return pl.DataFrame(rows).sort("best_f1", descending=True)
