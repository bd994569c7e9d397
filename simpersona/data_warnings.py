"""Warnings that teach: what in a team's own logs makes a figure of the pipeline misleading,
each said with what to do (docs/own-logs.md).

Every check reads the warehouse only (validated events, catalog, persona assignments) and
returns plain sentences; `simpersona run` prints them, writes them into the run summary and
the persona cards' metadata.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

import polars as pl

from simpersona.polars_scalars import as_float
from simpersona.warehouse import Warehouse

# A title with no letters ("4756105", "12-884") or equal to the product id names nothing a
# text embedding can read; above this share the product dimensions embed noise.
UNREADABLE_TITLE_SHARE = 0.5
_HAS_LETTERS = re.compile(r"[^\W\d_]", re.UNICODE)
# Days apart from the log's main run of days by more than this are "outside its window".
WINDOW_GAP_DAYS = 2
# Most buyers on tokens that only one shop uses: the tokens tell shops apart, not people.
SHOP_SPECIFIC_SHARE = 0.5


@dataclass(frozen=True)
class DataWarning:
    kind: str  # unreadable_titles | missing_stratum | outside_window | shop_specific_tokens
    shop: str | None
    message: str

    def __str__(self) -> str:
        return f"{self.shop}: {self.message}" if self.shop else self.message


def unreadable_titles(products: pl.DataFrame) -> list[DataWarning]:
    """Shops whose product titles are mostly ids or numbers (no letters)."""
    out = []
    for (shop,), part in products.group_by(["shop_id"], maintain_order=True):
        titles = part["title"].fill_null("").cast(pl.String)
        ids = part["product_id"].cast(pl.String)
        bad_titles = [
            t
            for t, pid in zip(titles.to_list(), ids.to_list(), strict=True)
            if not _HAS_LETTERS.search(t) or t.strip() == pid
        ]
        bad = len(bad_titles)
        if part.height and bad / part.height > UNREADABLE_TITLE_SHARE:
            out.append(
                DataWarning(
                    "unreadable_titles",
                    shop,
                    f"{bad:,} of {part.height:,} product titles have no words (ids or "
                    "numbers, e.g. "
                    f"{bad_titles[0]!r}): the 384 product dimensions embed digit strings and the "
                    "cards name ids. Import the catalog's real titles (item_name in the "
                    "mapping), or read the cards' behaviour and ignore their product words",
                )
            )
    return out


def missing_strata(event_counts: pl.DataFrame) -> list[DataWarning]:
    """Shops whose log cannot produce a stratum: no checkout_started means no stratum B
    (carted and reached checkout), no add_to_cart means no C, no checkout_completed no A.
    `event_counts`: shop_id, event_type, n."""
    needs = {
        "checkout_completed": ("A", "buyers who purchased"),
        "checkout_started": ("B", "buyers who reached checkout without buying"),
        "add_to_cart": ("C", "buyers who carted without reaching checkout"),
    }
    out = []
    for shop in event_counts["shop_id"].unique().sort().to_list():
        have = set(event_counts.filter(pl.col("shop_id") == shop)["event_type"].to_list())
        for event, (stratum, who) in needs.items():
            if event not in have:
                out.append(
                    DataWarning(
                        "missing_stratum",
                        shop,
                        f"no {event} events: stratum {stratum} ({who}) cannot occur, so its "
                        "share reads 0 whatever the buyers did. Export that event if the "
                        "store records it; otherwise compare this shop's strata with care",
                    )
                )
    return out


def outside_window(daily: pl.DataFrame) -> list[DataWarning]:
    """Events on days apart from a shop's main run of days (the longest stretch, by events,
    with gaps of at most `WINDOW_GAP_DAYS`). `daily`: shop_id, date (pl.Date), n."""
    out = []
    for (shop,), part in daily.sort("date").group_by(["shop_id"], maintain_order=True):
        days = part["date"].to_list()
        counts = part["n"].to_list()
        runs: list[list[int]] = [[0]]
        for i in range(1, len(days)):
            if (days[i] - days[i - 1]).days > WINDOW_GAP_DAYS:
                runs.append([])
            runs[-1].append(i)
        main = max(runs, key=lambda r: sum(counts[i] for i in r))
        stray = [i for i in range(len(days)) if i not in set(main)]
        if stray:
            n = sum(counts[i] for i in stray)
            out.append(
                DataWarning(
                    "outside_window",
                    shop,
                    f"{n:,} events on {len(stray)} day(s) outside the log's main window "
                    f"{days[main[0]]}–{days[main[-1]]} (e.g. {days[stray[0]]}): a clock, time "
                    "zone or export filter problem? They count as ordinary activity; remove "
                    "them from the source or check the export",
                )
            )
    return out


def shop_specific_tokens(assignments: pl.DataFrame) -> list[DataWarning]:
    """Most buyers of the typical shop on persona tokens no other shop uses: with unrelated
    catalogues the tokens encode the shop, so 'each store's persona mix' (and its recovery)
    is self-fulfilling. The share is taken per shop and the median across shops, so a small
    shop beside a big one (whose buyers fill every token) does not trip it.
    `assignments`: shop_id, token."""
    if assignments["shop_id"].n_unique() < 2:
        return []
    shops_per_token = assignments.group_by("token").agg(pl.col("shop_id").n_unique().alias("s"))
    single = shops_per_token.filter(pl.col("s") == 1)["token"].implode()
    per_shop = (
        assignments.group_by("shop_id")
        .agg(pl.col("token").is_in(single).mean().alias("share"))
        .sort("share")
    )
    share = as_float(per_shop["share"].median() or 0.0)
    if share <= SHOP_SPECIFIC_SHARE:
        return []
    return [
        DataWarning(
            "shop_specific_tokens",
            None,
            f"in the median shop {share:.0%} of buyers are on persona tokens no other shop "
            "uses: the shops' catalogues barely overlap, so tokens tell the shops apart "
            "rather than kinds of buyers, and per-store recovery is self-fulfilling. Train on "
            "shops that sell alike, or one shop at a time",
        )
    ]


def warehouse_warnings(wh: Warehouse, shops: Iterable[str] | None = None) -> list[DataWarning]:
    """Every check above on the warehouse's tables (the shops given, else all)."""
    import duckdb

    wanted = sorted(shops) if shops is not None else wh.shops_with("raw_events")
    if not wanted:
        return []
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")  # days are UTC days, as the partitions are

    def query(sql: str, files: list[str]) -> pl.DataFrame:
        return con.sql(sql, params=[files]).pl()

    def existing(table: str) -> list[str]:
        return [str(p) for s in wanted if (p := wh.partition_path(table, s)).exists()]

    out: list[DataWarning] = []
    products = existing("products")
    if products:
        out += unreadable_titles(
            query("SELECT shop_id, product_id, title FROM read_parquet(?)", products)
        )
    events = [
        str(p) for s in wanted for p in (wh.root / "raw_events" / f"shop={s}").rglob("data.parquet")
    ]
    if events:
        out += missing_strata(
            query(
                "SELECT shop_id, event_type, count(*) AS n FROM read_parquet(?) GROUP BY ALL",
                events,
            )
        )
        out += outside_window(
            query(
                "SELECT shop_id, CAST(ts AS DATE) AS date, count(*) AS n "
                "FROM read_parquet(?) GROUP BY ALL",
                events,
            )
        )
    assigned = existing("persona_assignments")
    if assigned:
        out += shop_specific_tokens(query("SELECT shop_id, token FROM read_parquet(?)", assigned))
    return out
