"""What an import produces: `ImportResult`, its canonical frames, event ids and counts."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from simpersona.schema import (
    COLLECTIONS_SCHEMA,
    EVENTS_SCHEMA,
    PRODUCTS_SCHEMA,
    PROVENANCE_SCHEMA,
    conform,
)

ProgressFn = Callable[[Path], None]


@dataclass
class ImportResult:
    """What one import produced.

    `events`: canonical events plus `source_file` / `source_row`. `products`, `collections`:
    the catalog the events reference. `rejects`: importer quarantine (QUARANTINE_SCHEMA).
    `counts`: `source` (source rows per source event type), `events` (events per canonical
    type), `rejected` (per reason), `totals`, and format-specific notes (see docs/importers.md).
    """

    format: str
    events: pl.DataFrame
    products: pl.DataFrame
    collections: pl.DataFrame
    rejects: pl.DataFrame
    counts: dict[str, dict[str, int]]
    files: list[Path] = field(default_factory=list)
    written: list[Path] = field(default_factory=list)

    def per_file(self) -> pl.DataFrame:
        """Rows, events and rejects per source file (in import order)."""
        names = [p.name for p in self.files]
        ev = self.events.group_by("source_file").agg(pl.len().alias("events"))
        rj = self.rejects.group_by("source_file").agg(pl.len().alias("rejected"))
        out = (
            pl.DataFrame({"source_file": names}, schema={"source_file": pl.String})
            .join(ev, on="source_file", how="left")
            .join(rj, on="source_file", how="left")
            .with_columns(pl.col("events", "rejected").fill_null(0).cast(pl.Int64))
        )
        return out.with_columns((pl.col("events") + pl.col("rejected")).alias("rows"))


def event_ids(prefix: str, shops: Sequence[str | None], digests: Sequence[str]) -> list[str]:
    """`<prefix>-<hash(shop, row digest)>`: deterministic, so re-imports and exact duplicate
    rows keep (and share) their id."""
    return [
        f"{prefix}-" + hashlib.blake2b(f"{s or ''}\x1f{d}".encode(), digest_size=12).hexdigest()
        for s, d in zip(shops, digests, strict=True)
    ]


def events_frame(df: pl.DataFrame) -> pl.DataFrame:
    """Canonical events + provenance, in source order."""
    schema = dict(EVENTS_SCHEMA) | dict(PROVENANCE_SCHEMA)
    if df.is_empty() and not set(schema) <= set(df.columns):
        return pl.DataFrame(schema=schema)
    return conform(df, "events").sort(["source_file", "source_row"], maintain_order=True)


def empty_events() -> pl.DataFrame:
    return pl.DataFrame(schema=dict(EVENTS_SCHEMA) | dict(PROVENANCE_SCHEMA))


def value_counts(series: pl.Series, label_null: str = "(empty)") -> dict[str, int]:
    out: dict[str, int] = {}
    for value, n in series.value_counts(sort=True).iter_rows():
        key = label_null if value is None or value == "" else str(value)
        out[key] = out.get(key, 0) + int(n)
    return out


def base_counts(
    source: dict[str, int], events: pl.DataFrame, rejects: pl.DataFrame
) -> dict[str, dict[str, int]]:
    counts: dict[str, dict[str, int]] = {
        "source": source,
        "events": value_counts(events["event_type"]) if events.height else {},
        "rejected": value_counts(rejects["reason"]) if rejects.height else {},
    }
    counts["totals"] = {
        "source_rows": sum(source.values()),
        "events": events.height,
        "rejected": rejects.height,
    }
    counts["pass_through"] = {
        "null_buyer_id": int(events["buyer_id"].null_count()) if events.height else 0,
        "duplicate_event_id": int(events.height - events["event_id"].n_unique())
        if events.height
        else 0,
    }
    return counts


def products_frame(rows: Sequence[dict[str, Any]]) -> pl.DataFrame:
    df = pl.DataFrame(list(rows), schema=PRODUCTS_SCHEMA)
    return df.sort(["shop_id", "product_id"])


def collections_frame(rows: Sequence[dict[str, Any]]) -> pl.DataFrame:
    df = pl.DataFrame(list(rows), schema=COLLECTIONS_SCHEMA)
    return df.sort(["shop_id", "collection_id"])
