"""Ingest one lake partition into the warehouse: read, validate, sessionize, de-identify,
quarantine, write atomically."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import os
import secrets
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import polars as pl

from simpersona.ingest.sessionize import SESSION_GAP_MINUTES, sessionize
from simpersona.ingest.validate import FILE_COL, Validated, validate_catalog, validate_events
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
    kept in `key_file` (created with mode 600 on first use) so ids stay stable across runs."""
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
    return path.read_text().strip().encode()


def deidentify(buyer_ids: pl.Series, key: bytes) -> pl.Series:
    """Keyed hash (HMAC-SHA256, 16 hex chars) of each buyer id. Hashes distinct ids once."""
    uniq = buyer_ids.drop_nulls().unique()
    mapping = {
        b: hmac.new(key, b.encode(), hashlib.sha256).hexdigest()[:16] for b in uniq.to_list()
    }
    return buyer_ids.replace_strict(mapping, default=None, return_dtype=pl.String)


def deidentify_frame(df: pl.DataFrame, key: bytes, column: str = "buyer_id") -> pl.DataFrame:
    """`df` with `column` replaced by the same keyed hash ingestion applies — e.g. to join the
    generator's planted ground truth (raw ids) to warehouse tables (hashed ids)."""
    return df.with_columns(deidentify(df[column].cast(pl.String), key).alias(column))


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


def _check_threshold(v: Validated, where: str, max_share: float) -> None:
    if v.rows_read and v.reject_share > max_share:
        by = v.rejects.group_by(["source_file", "reason"]).len().sort("len", descending=True)
        top = "; ".join(
            f"{r['source_file']}: {r['reason']} x{r['len']}"
            for r in by.head(5).iter_rows(named=True)
        )
        raise IngestError(
            f"{where}: {v.reject_share:.1%} of {v.rows_read} rows rejected, above the "
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
            v = validate_catalog(raw, table, shop_id)
            _check_threshold(v, f"{table} of shop={shop_id}", max_reject_share)
            valid, rejects = v.valid, v.rejects
            reasons.update(v.reject_counts)
            rows_read += v.rows_read
        warehouse.write_quarantine(table, rejects, shop_id)
        warehouse.write_partition(table, valid, shop_id)
        counts[table] = valid.height
    return CatalogResult(
        shop_id, counts["products"], counts["collections"], dict(reasons), rows_read
    )


# ---- events ----------------------------------------------------------------------------
def ingest_events(
    lake: Lake,
    warehouse: Warehouse,
    shop_id: str,
    date: str,
    hash_key: bytes,
    max_reject_share: float = DEFAULT_MAX_REJECT_SHARE,
    session_gap_minutes: int = SESSION_GAP_MINUTES,
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
    v = validate_events(raw, shop_id, date, products["product_id"])
    qpath = warehouse.write_quarantine("events", v.rejects, shop_id, date)
    _check_threshold(v, f"events of shop={shop_id} date={date}", max_reject_share)

    events = v.valid.with_columns(buyer_id=deidentify(v.valid["buyer_id"], hash_key))
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
    prev = (dt.date.fromisoformat(date) - dt.timedelta(days=1)).isoformat()
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
