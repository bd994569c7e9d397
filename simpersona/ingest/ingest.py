"""Ingest one lake partition into the warehouse: read, validate, sessionize, de-identify,
quarantine, write atomically."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import os
import secrets
import stat
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import polars as pl

from simpersona.ingest.sessionize import SESSION_GAP_MINUTES, sessionize
from simpersona.ingest.validate import (
    DEFAULT_BOUNDS,
    FILE_COL,
    PlausibilityBounds,
    Validated,
    validate_catalog,
    validate_events,
)
from simpersona.lake import Lake
from simpersona.schema import empty_frame
from simpersona.warehouse import Warehouse

DEFAULT_MAX_REJECT_SHARE = 0.05
HASH_KEY_ENV = "SIMPERSONA_BUYER_HASH_KEY"


class IngestError(RuntimeError):
    """Ingestion cannot go on: an unreadable file or too many rejected rows."""


# ---- de-identification -----------------------------------------------------------------
def load_hash_key(key: str | None = None, key_file: str | os.PathLike[str] | None = None) -> bytes:
    """The buyer-id hashing key: `key`, else $SIMPERSONA_BUYER_HASH_KEY, else a random key
    kept in `key_file` (created with mode 600 on first use) so ids stay stable across runs.

    A key file that is empty, or readable by group or others, is refused: an empty key makes
    the hash a plain SHA-256 anyone can recompute from a list of e-mail addresses, and a
    readable key lets anyone on the machine do the same."""
    key = key or os.environ.get(HASH_KEY_ENV)
    if key:
        return key.encode()
    if key_file is None:
        raise IngestError(f"no buyer hash key: set ${HASH_KEY_ENV} or configure a key file")
    path = Path(key_file)
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(secrets.token_hex(32))
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        raise IngestError(
            f"buyer hash key file {path} is readable by others (mode {mode:o}); "
            f"run `chmod 600 {path}`"
        )
    value = path.read_text().strip()
    if not value:
        raise IngestError(
            f"buyer hash key file {path} is empty; delete it to have a new key generated "
            f"(buyer ids then hash differently from earlier runs) or set ${HASH_KEY_ENV}"
        )
    return value.encode()


# Session ids are hashed in their own namespace: a source whose session id equals a buyer
# id (or embeds it, as `<buyer>-<ms>` does) must not yield the buyer's hash.
SESSION_NAMESPACE = "session"


def _keyed_hash(value: str, key: bytes, namespace: str = "") -> str:
    msg = f"{namespace}\x1f{value}" if namespace else value
    return hmac.new(key, msg.encode(), hashlib.sha256).hexdigest()[:16]


def deidentify(ids: pl.Series, key: bytes, namespace: str = "") -> pl.Series:
    """Keyed hash (HMAC-SHA256, 16 hex chars) of each id, in `namespace` ("" for buyer ids,
    `SESSION_NAMESPACE` for session ids). Hashes distinct ids once; nulls stay null."""
    uniq = ids.drop_nulls().unique()
    mapping = {b: _keyed_hash(b, key, namespace) for b in uniq.to_list()}
    return ids.replace_strict(mapping, default=None, return_dtype=pl.String)


def deidentify_frame(df: pl.DataFrame, key: bytes, column: str = "buyer_id") -> pl.DataFrame:
    """`df` with `column` replaced by the same keyed hash ingestion applies — e.g. to join the
    generator's planted ground truth (raw ids) to warehouse tables (hashed ids)."""
    return df.with_columns(deidentify(df[column].cast(pl.String), key).alias(column))


# Identifier columns of a raw event row and their hash namespace: nothing else in a row
# names a buyer (docs/data-model.md, "Guarantees").
IDENTITY_COLUMNS = {"buyer_id": "", "session_id": SESSION_NAMESPACE}


def deidentify_quarantine(rejects: pl.DataFrame, key: bytes) -> pl.DataFrame:
    """Quarantine rows with the identifiers inside their `raw` JSON keyed-hashed like the
    warehouse's (so a rejected row can still be matched to its buyer's valid rows)."""
    if rejects.is_empty():
        return rejects

    def redact(raw: str) -> str:
        row = json.loads(raw)
        for col, namespace in IDENTITY_COLUMNS.items():
            value = row.get(col)
            if value not in (None, ""):
                row[col] = _keyed_hash(str(value), key, namespace)
        return json.dumps(row, ensure_ascii=False)

    return rejects.with_columns(
        pl.col("raw").map_elements(redact, return_dtype=pl.String, skip_nulls=True)
    )


# ---- reading raw files -----------------------------------------------------------------
def read_raw_files(files: list[Path]) -> pl.DataFrame:
    """Read raw Parquet/CSV files with DuckDB (CSV as text, so nothing is coerced away),
    adding `__file` and a per-file 1-based `__filerow`. Fails naming the unreadable file."""
    frames = []
    with duckdb.connect() as con:
        for f in files:
            try:
                if f.suffix.lower() == ".parquet":
                    rel = con.sql("SELECT * FROM read_parquet(?)", params=[str(f)])
                else:
                    rel = con.sql(
                        "SELECT * FROM read_csv(?, all_varchar = true, header = true, "
                        "strict_mode = true)",
                        params=[str(f)],
                    )
                df = rel.pl()
            except (duckdb.Error, OSError) as exc:
                raise IngestError(f"cannot read {f}: {exc}") from exc
            frames.append(
                df.with_columns(
                    pl.lit(f.name).alias(FILE_COL),
                    (pl.int_range(pl.len()) + 1).cast(pl.Int64).alias("__filerow"),
                )
            )
    if not frames:
        return pl.DataFrame()
    return pl.concat(frames, how="diagonal_relaxed")


# ---- results ---------------------------------------------------------------------------
@dataclass
class IngestResult:
    shop_id: str
    date: str | None
    files: list[str]
    rows_read: int
    rows_valid: int
    rows_rejected: int
    rejects_by_reason: dict[str, int]
    rejects_by_file: dict[str, int] = field(default_factory=dict)
    sessions_filled: int = 0
    events_by_type: dict[str, int] = field(default_factory=dict)
    buyers: int = 0
    output_path: str = ""
    quarantine_path: str = ""

    @property
    def reject_share(self) -> float:
        return self.rows_rejected / self.rows_read if self.rows_read else 0.0


def _check_threshold(
    v: Validated, where: str, max_share: float, ignore: tuple[str, ...] = ()
) -> None:
    """Fail when more than `max_share` of the rows were rejected for reasons not in
    `ignore` (the rejected rows stay in the quarantine either way)."""
    counted = v.rejects.filter(~pl.col("reason").is_in(list(ignore))) if ignore else v.rejects
    share = counted.height / v.rows_read if v.rows_read else 0.0
    if v.rows_read and share > max_share:
        by = counted.group_by(["source_file", "reason"]).len().sort("len", descending=True)
        top = "; ".join(
            f"{r['source_file']}: {r['reason']} x{r['len']}"
            for r in by.head(5).iter_rows(named=True)
        )
        raise IngestError(
            f"{where}: {share:.1%} of {v.rows_read} rows rejected, above the "
            f"{max_share:.1%} threshold. Top file/reason: {top}. The rejected rows are in "
            "the quarantine table; raise max_reject_share to accept them."
        )


# ---- catalog ---------------------------------------------------------------------------
@dataclass
class CatalogResult:
    shop_id: str
    products: int
    collections: int
    rejects_by_reason: dict[str, int]
    rows_read: int

    @property
    def rows_rejected(self) -> int:
        return sum(self.rejects_by_reason.values())


def ingest_catalog(
    lake: Lake,
    warehouse: Warehouse,
    shop_id: str,
    max_reject_share: float = DEFAULT_MAX_REJECT_SHARE,
    bounds: PlausibilityBounds = DEFAULT_BOUNDS,
) -> CatalogResult:
    """Validate and write one shop's products and collections."""
    reasons: Counter[str] = Counter()
    counts = {}
    rows_read = 0
    for table in ("products", "collections"):
        files = Lake.raw_files(lake.catalog_dir(table, shop_id))
        if table == "products" and not files:
            raise IngestError(
                f"shop {shop_id!r} has no products in {lake.catalog_dir(table, shop_id)}"
            )
        raw = read_raw_files(files)
        if raw.height == 0:
            valid, rejects = empty_frame(table), empty_frame("quarantine")
        else:
            v = validate_catalog(raw, table, shop_id, bounds)
            # a product listed by two imports (two formats of one shop) is a merge, not bad
            # data: the first listing wins, the others are quarantined but not held against
            # the shop's catalog
            _check_threshold(
                v, f"{table} of shop={shop_id}", max_reject_share,
                ignore=("duplicate_product_id", "duplicate_collection_id"),
            )  # fmt: skip
            valid, rejects = v.valid, v.rejects
            reasons.update(v.reject_counts)
            rows_read += v.rows_read
        warehouse.write_quarantine(table, rejects, shop_id)
        warehouse.write_partition(table, valid, shop_id)
        counts[table] = valid.height
    return CatalogResult(
        shop_id, counts["products"], counts["collections"], dict(reasons), rows_read
    )


def prune_vanished_days(lake: Lake, warehouse: Warehouse, shop_id: str) -> list[str]:
    """Remove the warehouse events (and their quarantine) of the shop's days that no longer
    have a lake partition — a corrected re-import moved their rows to other days — so the
    warehouse holds exactly what the lake does. Returns the days removed."""
    in_lake = set(lake.dates(shop_id))
    in_warehouse = set(warehouse.dates("raw_events", shop_id))
    in_warehouse |= set(warehouse.dates("quarantine/events", shop_id))
    gone = sorted(in_warehouse - in_lake)
    for date in gone:
        warehouse.drop_day(shop_id, date)
    return gone


# ---- events ----------------------------------------------------------------------------
def ingest_events(
    lake: Lake,
    warehouse: Warehouse,
    shop_id: str,
    date: str,
    hash_key: bytes,
    max_reject_share: float = DEFAULT_MAX_REJECT_SHARE,
    session_gap_minutes: int = SESSION_GAP_MINUTES,
    bounds: PlausibilityBounds = DEFAULT_BOUNDS,
) -> IngestResult:
    """Ingest the raw events of one (shop, day) partition.

    Replaces the partition's warehouse file and quarantine file atomically; raises
    IngestError (writing the quarantine for inspection, leaving the previous events file)
    when the reject share passes `max_reject_share`.
    """
    folder = lake.events_dir(shop_id, date)
    files = Lake.raw_files(folder)
    if not files:
        raise IngestError(f"no raw event files for shop={shop_id} date={date} in {folder}")
    if not warehouse.has_partition("products", shop_id):
        raise IngestError(
            f"catalog of shop={shop_id} has not been ingested; materialize `catalog` for "
            "that shop first"
        )
    products = warehouse.read_partition("products", shop_id)
    raw = read_raw_files(files)
    v = validate_events(raw, shop_id, date, products["product_id"], bounds)
    rejects = deidentify_quarantine(v.rejects, hash_key)
    qpath = warehouse.write_quarantine("events", rejects, shop_id, date)
    _check_threshold(v, f"events of shop={shop_id} date={date}", max_reject_share)

    events = v.valid.with_columns(
        buyer_id=deidentify(v.valid["buyer_id"], hash_key),
        session_id=deidentify(v.valid["session_id"], hash_key, SESSION_NAMESPACE),
    )
    # Sessionize; a session that began before midnight keeps the previous day's id.
    n_missing = events["session_id"].null_count()
    if n_missing:
        events = sessionize_across_days(
            events, _previous_day(warehouse, shop_id, date), session_gap_minutes
        )
    events = events.sort(["ts", "event_id"])
    out = warehouse.write_partition("raw_events", events, shop_id, date)
    by_type = events.group_by("event_type").len()
    rej_file = dict(v.rejects.group_by("source_file").len().iter_rows()) if v.rejects.height else {}
    return IngestResult(
        shop_id=shop_id,
        date=date,
        files=[f.name for f in files],
        rows_read=v.rows_read,
        rows_valid=events.height,
        rows_rejected=v.rejects.height,
        rejects_by_reason=v.reject_counts,
        rejects_by_file=rej_file,
        sessions_filled=n_missing,
        events_by_type=dict(by_type.iter_rows()),
        buyers=events["buyer_id"].n_unique(),
        output_path=str(out),
        quarantine_path=str(qpath),
    )


def _previous_day(warehouse: Warehouse, shop_id: str, date: str) -> pl.DataFrame | None:
    try:
        prev = (dt.date.fromisoformat(date) - dt.timedelta(days=1)).isoformat()
    except (OverflowError, ValueError):  # date=0001-01-01 has no day before it
        return None
    if not warehouse.has_partition("raw_events", shop_id, prev):
        return None
    return pl.read_parquet(
        warehouse.partition_path("raw_events", shop_id, prev),
        columns=["buyer_id", "ts", "session_id"],
    )


def sessionize_across_days(
    events: pl.DataFrame, previous: pl.DataFrame | None, gap_minutes: int = SESSION_GAP_MINUTES
) -> pl.DataFrame:
    """Fill missing session ids of one day's events; a buyer's first new session continues
    the previous day's last session when the gap between them is at most `gap_minutes`."""
    missing = events["session_id"].is_null()
    filled = sessionize(events, gap_minutes)
    if previous is None or previous.is_empty():
        return filled
    last = (
        previous.sort("ts")
        .group_by("buyer_id")
        .agg(pl.col("ts").last().alias("__prev_ts"), pl.col("session_id").last().alias("__prev"))
    )
    first = (
        filled.filter(missing)
        .group_by("buyer_id")
        .agg(
            pl.col("ts").min().alias("__first_ts"),
            pl.col("session_id").sort_by("ts").first().alias("__first"),
        )
        .join(last, on="buyer_id", how="inner")
        .filter(
            (pl.col("__first_ts") - pl.col("__prev_ts") <= pl.duration(minutes=gap_minutes))
            & pl.col("__prev").is_not_null()
        )
    )
    if first.is_empty():
        return filled
    remap = dict(zip(first["__first"].to_list(), first["__prev"].to_list(), strict=True))
    return filled.with_columns(
        pl.when(missing)
        .then(pl.col("session_id").replace(remap))
        .otherwise(pl.col("session_id"))
        .alias("session_id")
    )
