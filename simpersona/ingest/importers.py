"""Importers: turn real logs into the canonical raw tables and write them into the lake.

    simpersona import --format shopify-pixels|rees46|generic PATHS... [--lake data/lake]
                      [--shop SHOP] [--mapping mapping.yaml]

Every source row ends up in exactly one place:

* as a canonical event in the lake (`<lake>/events/shop=<s>/date=<d>/<part>.parquet`, the part
  being the source stem and a hash of the source's absolute path, `lake_part`),
  carrying `source_file` and `source_row` so that ingestion can name the source row when it
  rejects it (null buyer, duplicate event id, ... are passed through for ingestion to catch);
* or in the importer quarantine `<lake>/_quarantine/import/<format>/<part>.parquet`
  (QUARANTINE_SCHEMA) with file, row and reason: `malformed_row`, `unparseable_timestamp`,
  `unknown_event_type`, `unmappable_event_type`, `unparseable_value`, `missing_shop_id`,
  `implausible_timestamp`.

The catalog the events reference is written as `<lake>/{products,collections}/shop=<s>/
<format>.parquet`, merged with what an earlier import of the same format wrote, so importing
files one at a time still leaves every referenced product in the catalog.

The format modules (`shopify_pixels`, `rees46`, `generic`) build on the helpers here.
docs/importers.md documents the field mappings, the fault handling and measured counts.
"""

from __future__ import annotations

import codecs
import csv
import datetime as dt
import glob
import gzip
import hashlib
import json
import os
import sys
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import polars as pl

from simpersona.datadir import DataDirOption, lake_or_default
from simpersona.ingest.validate import DEFAULT_BOUNDS, PlausibilityBounds
from simpersona.lake import Lake, atomic_write_parquet
from simpersona.schema import (
    COLLECTIONS_SCHEMA,
    EVENTS_SCHEMA,
    PRODUCTS_SCHEMA,
    PROVENANCE_SCHEMA,
    QUARANTINE_SCHEMA,
    conform,
    sanitize_shop_id,
)

FORMATS: tuple[str, ...] = ("shopify-pixels", "rees46", "generic")
SOURCE_SUFFIXES: tuple[str, ...] = (".csv", ".csv.gz", ".tsv", ".txt", ".parquet")
DEFAULT_LAKE = Path("data/lake")

# Reasons an importer quarantines a row for (ingestion has its own list for what it rejects).
MALFORMED_ROW = "malformed_row"
UNPARSEABLE_TIMESTAMP = "unparseable_timestamp"
UNKNOWN_EVENT_TYPE = "unknown_event_type"
UNMAPPABLE_EVENT_TYPE = "unmappable_event_type"
UNPARSEABLE_VALUE = "unparseable_value"
MISSING_SHOP_ID = "missing_shop_id"
IMPLAUSIBLE_TIMESTAMP = "implausible_timestamp"

# An event further than this from the import's median time is implausible: a 1970 or 2099
# clock in a log of 2025 would otherwise make a partition of its own (docs/importers.md).
DEFAULT_WINDOW_DAYS = 366

ProgressFn = Callable[[Path], None]
TitleCheck = Callable[[str, str], bool]

csv.field_size_limit(sys.maxsize)


# ---- errors and results --------------------------------------------------------------------
class ImporterError(Exception):
    """A source file or mapping the importer cannot use at all (not a bad row: those are
    quarantined). The message names the file, and the row and field where they are known."""

    def __init__(
        self,
        message: str,
        *,
        file: str | os.PathLike[str] | None = None,
        row: int | None = None,
        field: str | None = None,
    ) -> None:
        self.message = message
        self.file = str(file) if file is not None else None
        self.row = row
        self.field = field
        super().__init__(str(self))

    def __str__(self) -> str:
        where = []
        if self.file is not None:
            where.append(self.file)
        if self.row is not None:
            where.append(f"row {self.row}")
        if self.field is not None:
            where.append(f"field {self.field!r}")
        return f"{': '.join(where)}: {self.message}" if where else self.message


class MappingError(ImporterError):
    """A generic-importer mapping file that is missing, unreadable or invalid."""


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


# ---- paths ---------------------------------------------------------------------------------
def source_stem(path: Path) -> str:
    """The lake part name of a source file: its name without `.csv`, `.csv.gz`, `.parquet`."""
    name = path.name
    for suffix in sorted(SOURCE_SUFFIXES, key=len, reverse=True):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


def lake_part(path: Path) -> str:
    """The lake file name (without `.parquet`) of a source file's events and importer
    quarantine: its stem and a hash of its absolute path. Re-importing the same file
    replaces its part; `a/events.csv` and then `b/events.csv` get parts of their own."""
    where = hashlib.blake2b(str(path.resolve()).encode(), digest_size=4).hexdigest()
    return f"{source_stem(path)}-{where}"


def resolve_paths(items: Iterable[str | os.PathLike[str]]) -> list[Path]:
    """Expand folders (their CSV/Parquet files, not recursive) and globs into a sorted,
    de-duplicated file list. Raises ImporterError for a missing path or an empty result."""
    out: list[Path] = []
    for item in items:
        p = Path(item)
        if p.is_dir():
            found = sorted(
                f
                for f in p.iterdir()
                if f.is_file()
                and not f.name.startswith(".")
                and f.name.lower().endswith(SOURCE_SUFFIXES)
            )
            if not found:
                raise ImporterError(
                    f"folder has no source files ({', '.join(SOURCE_SUFFIXES)})", file=p
                )
            out.extend(found)
        elif p.exists():
            out.append(p)
        elif glob.has_magic(str(item)):
            found = sorted(Path(f) for f in glob.glob(str(item)) if Path(f).is_file())
            if not found:
                raise ImporterError("no file matches this pattern", file=str(item))
            out.extend(found)
        else:
            raise ImporterError("no such file or folder", file=p)
    seen: set[Path] = set()
    files = []
    for f in out:
        key = f.resolve()
        if key not in seen:
            seen.add(key)
            files.append(f)
    if not files:
        raise ImporterError("no source files given")
    stems: dict[str, Path] = {}
    for f in files:
        stem = source_stem(f)
        if stem in stems:
            raise ImporterError(
                f"two source files share the name {stem!r} ({stems[stem]} and {f}); the lake "
                "names its files after the source, so rename one",
                file=f,
            )
        stems[stem] = f
    return files


# ---- reading CSV ---------------------------------------------------------------------------
def normalize_column(name: str) -> str:
    """`clientId` -> `client_id`, ` Event Time ` -> `event_time`."""
    out = []
    prev = ""
    for ch in name.strip().lstrip("\ufeff"):
        if ch.isupper() and (prev.islower() or prev.isdigit()):
            out.append("_")
        out.append(ch.lower() if ch.isalnum() else "_")
        prev = ch
    return "_".join(s for s in "".join(out).split("_") if s)


def row_digest(values: Sequence[Any]) -> str:
    """A stable digest of one source row's content (exact duplicates share it).

    Fields are joined with the unit separator; a row whose text contains that character
    itself (or has non-string values) is encoded as JSON instead, so digests stay unique."""
    try:
        text = "\x1f".join(values)
        if text.count("\x1f") != len(values) - 1:
            raise ValueError
    except (TypeError, ValueError):
        text = "\x1e" + json.dumps(list(values), ensure_ascii=False, default=str)
    return hashlib.blake2b(text.encode("utf-8"), digest_size=16).hexdigest()


def event_ids(prefix: str, shops: Sequence[str | None], digests: Sequence[str]) -> list[str]:
    """`<prefix>-<hash(shop, row digest)>`: deterministic, so re-imports and exact duplicate
    rows keep (and share) their id."""
    return [
        f"{prefix}-" + hashlib.blake2b(f"{s or ''}\x1f{d}".encode(), digest_size=12).hexdigest()
        for s, d in zip(shops, digests, strict=True)
    ]


@dataclass
class SourceRows:
    """One source file as string columns plus provenance: `source_file`, `source_row`
    (1-based data row), `_digest` (row content hash). Rows whose field count does not match
    the header are not in `frame` but in `malformed` (reject dicts)."""

    path: Path
    columns: list[str]
    has_header: bool
    frame: pl.DataFrame
    malformed: list[dict[str, Any]]
    blank_lines: int = 0

    @property
    def n_rows(self) -> int:
        return self.frame.height + len(self.malformed)


def _open_text(path: Path):
    if path.name.lower().endswith(".gz"):
        return gzip.open(path, "rt", encoding="utf-8-sig", newline="")
    return open(path, encoding="utf-8-sig", newline="")  # noqa: SIM115


def check_text_file(path: Path) -> None:
    """Fail early, naming the file, when it cannot be read or is not text."""
    if not path.exists():
        raise ImporterError("no such file", file=path)
    if path.is_dir():
        raise ImporterError("is a folder, not a file", file=path)
    try:
        if path.name.lower().endswith(".gz"):
            with gzip.open(path, "rb") as fh:
                head = fh.read(8192)
        else:
            with open(path, "rb") as fh:
                head = fh.read(8192)
    except (OSError, EOFError) as e:
        raise ImporterError(f"cannot read file ({e.strerror or e})", file=path) from e
    if head.startswith(b"PAR1"):
        raise ImporterError("is a Parquet file; this importer reads CSV text", file=path)
    if b"\x00" in head:
        raise ImporterError("is not a text file (contains NUL bytes)", file=path)
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as e:
        if e.start < len(head) - 4:  # not just a multi-byte character cut at 8 KiB
            raise ImporterError(
                f"is not UTF-8 text (bad byte at offset {e.start})", file=path
            ) from e


def _first_bad_utf8(path: Path) -> tuple[int, int] | None:
    """(1-based line, byte offset) of the first byte that is not UTF-8, reading the bytes
    themselves (the text reader decodes ahead in blocks, so its line count is off)."""
    opener = gzip.open if path.name.lower().endswith(".gz") else open
    decoder = codecs.getincrementaldecoder("utf-8")()
    line, offset = 1, 0
    with opener(path, "rb") as fh:
        while block := fh.read(1 << 20):
            # up to 3 bytes of a character cut at the block's start are still in the decoder
            pending = len(decoder.getstate()[0])
            try:
                decoder.decode(block)
            except UnicodeDecodeError as e:
                bad = max(e.start - pending, 0)
                return line + block[:bad].count(b"\n"), offset + bad
            line += block.count(b"\n")
            offset += len(block)
    return None


def _records(path: Path, delimiter: str) -> Iterator[tuple[list[str] | None, str | None]]:
    """(record, None) per CSV record, or (None, error) for a record the csv module rejects
    or that holds a NUL byte. A file that cannot be read on (bad UTF-8, a truncated or
    corrupt gzip stream) raises ImporterError naming the file and the line."""
    try:
        fh = _open_text(path)
    except OSError as e:
        raise ImporterError(f"cannot open file ({e.strerror or e})", file=path) from e
    with fh:
        reader = csv.reader(fh, delimiter=delimiter)
        while True:
            try:
                rec = next(reader)
            except StopIteration:
                return
            except csv.Error as e:
                yield None, f"csv error near line {reader.line_num}: {e}"
                continue
            except UnicodeDecodeError as e:
                where = _first_bad_utf8(path)
                at = (
                    f"line {where[0]} (byte {where[1]})"
                    if where
                    else f"near line {reader.line_num}"
                )
                raise ImporterError(f"is not UTF-8 text ({e.reason}) at {at}", file=path) from e
            except (EOFError, zlib.error, gzip.BadGzipFile) as e:
                raise ImporterError(
                    f"the gzip stream is truncated or corrupt after line {reader.line_num} "
                    f"({e}); the file is incomplete: copy it again",
                    file=path,
                ) from e
            except OSError as e:
                raise ImporterError(f"cannot read file ({e.strerror or e})", file=path) from e
            if any("\x00" in value for value in rec):
                yield None, f"line {reader.line_num} contains a NUL byte"
                continue
            yield rec, None


def read_csv_rows(
    path: Path,
    *,
    shop_id: str,
    default_columns: Sequence[str] | None = None,
    known_columns: Iterable[str] = (),
    header: bool | None = None,
    normalize: bool = True,
    delimiter: str = ",",
) -> SourceRows:
    """Read one CSV file as strings, never failing on a bad row.

    `header`: True / False, or None to detect it: the first record is a header when one of its
    (normalised) values is a known column name; otherwise the file has no header and
    `default_columns` name its columns. Header names are normalised (`clientId` ->
    `client_id`) when `normalize` is set. Blank lines are skipped and not numbered.
    """
    check_text_file(path)
    known = {normalize_column(c) if normalize else c for c in known_columns}
    known |= {normalize_column(c) if normalize else c for c in default_columns or ()}
    columns: list[str] | None = None
    has_header = False
    rows: list[list[str]] = []
    row_nums: list[int] = []
    digests: list[str] = []
    malformed: list[dict[str, Any]] = []
    blank = 0
    n = 0
    for rec, err in _records(path, delimiter):
        if rec is not None and (not rec or (len(rec) == 1 and not rec[0].strip())):
            blank += 1
            continue
        if columns is None and rec is not None:
            names = [normalize_column(c) if normalize else c.strip().lstrip("\ufeff") for c in rec]
            is_header = header if header is not None else bool(known & set(names))
            if is_header:
                has_header = True
                columns = [c or f"column_{i + 1}" for i, c in enumerate(names)]
                dupes = sorted({c for c in columns if columns.count(c) > 1})
                if dupes:
                    raise ImporterError("the header repeats a column", file=path, field=dupes[0])
                continue
            if not default_columns:
                raise ImporterError(
                    "the first line is not a header with known column names "
                    f"({', '.join(sorted(known)) or 'none given'}) and no column list is "
                    "configured for files without a header",
                    file=path,
                    row=1,
                )
            columns = list(default_columns)
        n += 1
        if rec is None:
            malformed.append(
                reject(shop_id, path.name, n, "", MALFORMED_ROW, json.dumps({"_error": err}))
            )
            continue
        assert columns is not None
        if len(rec) != len(columns):
            raw: dict[str, Any] = dict(zip(columns, rec, strict=False))
            if len(rec) > len(columns):
                raw["_extra_fields"] = rec[len(columns) :]
                fld = ""
            else:
                raw["_missing_fields"] = columns[len(rec) :]
                fld = columns[len(rec)]
            raw["_error"] = f"{len(rec)} fields, expected {len(columns)}"
            malformed.append(
                reject(
                    shop_id,
                    path.name,
                    n,
                    fld,
                    MALFORMED_ROW,
                    json.dumps(raw, ensure_ascii=False),
                )
            )
            continue
        rows.append(rec)
        row_nums.append(n)
        digests.append(row_digest(rec))
    if columns is None:
        columns = list(default_columns or [])
    frame = pl.DataFrame(rows, schema=dict.fromkeys(columns, pl.String), orient="row")
    frame = frame.with_columns(
        pl.lit(path.name, pl.String).alias("source_file"),
        pl.Series("source_row", row_nums, dtype=pl.Int64),
        pl.Series("_digest", digests, dtype=pl.String),
    )
    return SourceRows(path, columns, has_header, frame, malformed, blank)


# ---- parsing values ------------------------------------------------------------------------
def blank_to_null(expr: pl.Expr) -> pl.Expr:
    """Empty or whitespace-only strings as null."""
    s = expr.cast(pl.String)
    return pl.when(s.str.strip_chars().str.len_chars() > 0).then(s).otherwise(None)


# ---- rejects -------------------------------------------------------------------------------
def reject(
    shop_id: str | None,
    source_file: str,
    source_row: int | None,
    field_name: str,
    reason: str,
    raw: str,
    date: str = "",
) -> dict[str, Any]:
    return {
        "table": "events",
        "shop_id": shop_id or "",
        "date": date,
        "source_file": source_file,
        "source_row": source_row,
        "field": field_name,
        "reason": reason,
        "raw": raw,
    }


def rejects_frame(rows: Sequence[dict[str, Any]]) -> pl.DataFrame:
    return pl.DataFrame(list(rows), schema=QUARANTINE_SCHEMA)


def reject_rows(
    df: pl.DataFrame,
    raw_columns: Sequence[str],
    reason: str,
    field_name: str | pl.Expr,
    shop: str | pl.Expr,
    ts: pl.Expr | None = None,
) -> pl.DataFrame:
    """QUARANTINE rows for every row of `df`; `raw` is the source row as a JSON object."""
    if df.is_empty():
        return pl.DataFrame(schema=QUARANTINE_SCHEMA)
    shop_e = pl.lit(shop, pl.String) if isinstance(shop, str) else shop.cast(pl.String)
    field_e = pl.lit(field_name, pl.String) if isinstance(field_name, str) else field_name
    date_e = ts.dt.strftime("%Y-%m-%d").fill_null("") if ts is not None else pl.lit("", pl.String)
    cols = [c for c in raw_columns if c in df.columns]
    raw = pl.struct([pl.col(c) for c in cols]).struct.json_encode() if cols else pl.lit("{}")
    return df.select(
        pl.lit("events", pl.String).alias("table"),
        shop_e.fill_null("").alias("shop_id"),
        date_e.alias("date"),
        pl.col("source_file").cast(pl.String),
        pl.col("source_row").cast(pl.Int64),
        field_e.cast(pl.String).alias("field"),
        pl.lit(reason, pl.String).alias("reason"),
        raw.alias("raw"),
    )


# ---- plausibility --------------------------------------------------------------------------
def catalog_price(expr: pl.Expr, bounds: PlausibilityBounds = DEFAULT_BOUNDS) -> pl.Expr:
    """`expr` where it can be a catalogue price (finite, not negative, within bounds), else
    null. Prices taken from event rows pass through this: one bad order line must not price
    a product, or ingestion rejects the product and with it every event that names it."""
    return pl.when(expr.is_finite() & (expr >= 0) & (expr <= bounds.max_amount)).then(expr)


def screen_timestamps(
    result: ImportResult,
    window_days: int = DEFAULT_WINDOW_DAYS,
    bounds: PlausibilityBounds = DEFAULT_BOUNDS,
) -> ImportResult:
    """Move events whose time is implausible into the importer quarantine
    (`implausible_timestamp`): before `bounds.earliest`, after now + `bounds.future_days`, or
    more than `window_days` from the import's median event time. Counts follow."""
    ev = result.events
    if ev.is_empty():
        return result
    median = ev["ts"].median()
    broken = bounds.timestamp_broken(pl.col("ts"))
    if median is not None and window_days > 0:
        span = dt.timedelta(days=window_days)
        broken = broken | ((pl.col("ts") - pl.lit(median)).abs() > pl.lit(span))
    bad = ev.filter(broken)
    if bad.is_empty():
        return result
    cols = [c for c in ev.columns if c not in ("source_file", "source_row")]
    moved = bad.with_columns(pl.col(c).cast(pl.String) for c in cols).pipe(
        reject_rows, cols, IMPLAUSIBLE_TIMESTAMP, "ts", pl.col("shop_id")
    )
    result.events = ev.filter(~broken)
    result.rejects = pl.concat([result.rejects, moved]).sort(
        ["source_file", "source_row"], maintain_order=True
    )
    fresh = base_counts(result.counts.get("source", {}), result.events, result.rejects)
    result.counts.update({k: fresh[k] for k in ("events", "rejected", "totals", "pass_through")})
    return result


# ---- frames and counts ---------------------------------------------------------------------
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


# ---- catalog merge -------------------------------------------------------------------------
def _merge_catalog(
    table: str, old: pl.DataFrame, new: pl.DataFrame, is_real_title: TitleCheck
) -> pl.DataFrame:
    """Union an earlier catalog part with a new one, keyed by id: new values win, except
    that nulls do not erase values and a real title is not replaced by one made up from the
    id (`is_real_title(id, title)` tells them apart); product collection lists are united."""
    key = "product_id" if table == "products" else "collection_id"
    merged: dict[tuple[str, str], dict[str, Any]] = {}
    for row in old.iter_rows(named=True):
        merged[(row["shop_id"], row[key])] = row
    for row in new.iter_rows(named=True):
        k = (row["shop_id"], row[key])
        prev = merged.get(k)
        if prev is None:
            merged[k] = row
            continue
        out = dict(row)
        for col, value in row.items():
            if value is None and prev.get(col) is not None:
                out[col] = prev[col]
        old_title, new_title = prev.get("title"), row.get("title")
        if (
            old_title
            and is_real_title(row[key], old_title)
            and not (new_title and is_real_title(row[key], new_title))
        ):
            out["title"] = old_title
        if table == "products":
            cols = list(prev.get("collection_ids") or [])
            cols += [c for c in row.get("collection_ids") or [] if c not in cols]
            out["collection_ids"] = cols
        merged[k] = out
    frame = products_frame if table == "products" else collections_frame
    return frame(list(merged.values()))


def write_catalog_merged(
    lake: Lake,
    table: str,
    df: pl.DataFrame,
    part: str,
    is_real_title: TitleCheck = lambda _id, _title: True,
) -> list[Path]:
    written = []
    for shop in df["shop_id"].unique().sort().to_list():
        new = df.filter(pl.col("shop_id") == shop)
        path = lake.catalog_dir(table, shop) / f"{part}.parquet"
        if path.exists():
            try:
                old = conform(pl.read_parquet(path), table)
            except Exception:  # an unreadable old part is replaced, not merged
                old = new.clear()
            new = _merge_catalog(table, old, new, is_real_title)
        written += lake.write_catalog(table, new, part)
    return written


# ---- running an import ---------------------------------------------------------------------
def _reader(fmt: str) -> Callable[..., ImportResult]:
    if fmt == "shopify-pixels":
        from simpersona.ingest.shopify_pixels import read_shopify_pixels

        return read_shopify_pixels
    if fmt == "rees46":
        from simpersona.ingest.rees46 import read_rees46

        return read_rees46
    if fmt == "generic":
        from simpersona.ingest.generic import read_generic

        return read_generic
    raise ImporterError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")


def read_import(
    fmt: str,
    paths: Sequence[str | os.PathLike[str]],
    shop_id: str | None = None,
    mapping: str | os.PathLike[str] | None = None,
    progress: ProgressFn | None = None,
) -> ImportResult:
    """Read sources of `fmt` without writing anything; events at implausible times go to
    the importer quarantine (`screen_timestamps`)."""
    reader = _reader(fmt)
    files = resolve_paths(paths)
    if fmt == "generic":
        if mapping is None:
            raise MappingError("the generic format needs --mapping <file.yaml>")
        return screen_timestamps(reader(files, Path(mapping), shop_id=shop_id, progress=progress))
    if mapping is not None:
        raise ImporterError(f"--mapping is only used with --format generic, not {fmt!r}")
    kwargs: dict[str, Any] = {"progress": progress}
    if shop_id is not None:
        kwargs["shop_id"] = shop_id
    return screen_timestamps(reader(files, **kwargs))


def _is_safe_shop(shop: str) -> bool:
    try:
        return sanitize_shop_id(shop) == shop
    except ValueError:
        return False


def _remove_stale(paths: Iterable[Path], keep: set[Path]) -> None:
    for p in paths:
        if p not in keep:
            p.unlink(missing_ok=True)


def _remove_legacy_parts(base: Path, path: Path) -> None:
    """Lakes written before parts carried a path hash named them `<stem>.parquet`; the
    re-import of that source replaces them (when their rows name the same file)."""
    for old in base.glob(f"date=*/{source_stem(path)}.parquet"):
        try:
            names = pl.read_parquet(old, columns=["source_file"])["source_file"].unique()
        except (pl.exceptions.PolarsError, OSError):
            continue  # not an importer's file: leave it
        if names.to_list() == [path.name]:
            old.unlink(missing_ok=True)


def write_import(
    result: ImportResult, lake_root: str | os.PathLike[str], progress: ProgressFn | None = None
) -> list[Path]:
    """Write an ImportResult into the lake: the catalog merged into part = format name,
    then events per source file (part = `lake_part`) and importer quarantine per file.

    Re-writing the same source replaces its files; event files of that part left over in
    other date folders (from an earlier, different import of the same file) are removed.
    """
    lake = Lake.at(lake_root)
    written: list[Path] = []
    qdir = Path(lake_root) / "_quarantine" / "import" / result.format
    shops = (
        set(result.events["shop_id"].drop_nulls())
        | set(result.products["shop_id"].drop_nulls())
        | {s for s in result.rejects["shop_id"].drop_nulls() if s and _is_safe_shop(s)}
    )
    # the catalog first: a crash between the two then leaves products without events (which
    # ingestion accepts), never events naming products the lake does not have
    real_title = _title_check(result.format)
    for table, df in (("products", result.products), ("collections", result.collections)):
        if df.height:
            written += write_catalog_merged(lake, table, df, result.format, real_title)
    for path in result.files:
        part = lake_part(path)
        ev = result.events.filter(pl.col("source_file") == path.name)
        new = set(lake.write_events(ev, part)) if ev.height else set()
        written += sorted(new)
        for shop in sorted(shops):
            base = lake.events_dir(shop)
            if base.is_dir():
                _remove_stale(base.glob(f"date=*/{part}.parquet"), new)
                _remove_legacy_parts(base, path)
        rj = result.rejects.filter(pl.col("source_file") == path.name)
        qpath = qdir / f"{part}.parquet"
        if rj.height:
            written.append(atomic_write_parquet(rj, qpath))
        else:
            qpath.unlink(missing_ok=True)
        (qdir / f"{source_stem(path)}.parquet").unlink(missing_ok=True)  # legacy name
        if progress:
            progress(path)
    result.written = written
    return written


def _title_check(fmt: str) -> TitleCheck:
    if fmt == "shopify-pixels":
        from simpersona.ingest.shopify_pixels import is_real_title

        return is_real_title
    return lambda _id, _title: True


def run_import(
    format: str,
    paths: Sequence[str | os.PathLike[str]],
    lake_root: str | os.PathLike[str] = DEFAULT_LAKE,
    shop_id: str | None = None,
    mapping: str | os.PathLike[str] | None = None,
    *,
    progress: bool = False,
) -> ImportResult:
    """Read `paths` in `format` and write events, catalog and importer quarantine into the
    lake at `lake_root`. `progress` shows a progress bar over the files (on stderr)."""
    _reader(format)  # unknown format -> ImporterError before touching files
    files = resolve_paths(paths)
    if not progress:
        result = read_import(format, files, shop_id, mapping)
        write_import(result, lake_root)
        return result
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[file]}"),
        console=Console(stderr=True),
        transient=True,
    ) as bar:
        task = bar.add_task(f"reading {format}", total=len(files), file="")

        def step(path: Path) -> None:
            bar.update(task, advance=1, file=path.name)

        result = read_import(format, files, shop_id, mapping, progress=step)
        bar.update(task, description="writing lake", completed=0, file="")
        write_import(result, lake_root, progress=step)
    return result


# ---- CLI -----------------------------------------------------------------------------------
try:  # typer is a dependency of the CLI; the library works without it
    import typer
except ImportError:  # pragma: no cover
    typer = None  # type: ignore[assignment]

if typer is not None:
    _PathsArg = Annotated[
        list[str],
        typer.Argument(
            help="Source files, folders (their .csv/.csv.gz/.parquet files) or quoted globs.",
            show_default=False,
        ),
    ]
    _FormatOpt = Annotated[
        str,
        typer.Option(
            "--format",
            "-f",
            help="Source format: shopify-pixels (Shopify web-pixel CSV, e.g. Puffy), rees46 "
            "(REES46 / Open CDP CSV) or generic (any CSV/Parquet via --mapping).",
            show_default=False,
        ),
    ]
    _LakeOpt = Annotated[
        Path | None,
        typer.Option(
            "--lake", help="Raw lake folder to write into; default <data-dir>/lake.",
            file_okay=False,
        ),
    ]  # fmt: skip
    _ShopOpt = Annotated[
        str | None,
        typer.Option(
            "--shop",
            help="Shop id of the imported events (default: puffy for shopify-pixels, rees46 "
            "for rees46, the mapping's shop_id for generic). Made safe with sanitize_shop_id.",
        ),
    ]
    _MappingOpt = Annotated[
        Path | None,
        typer.Option(
            "--mapping",
            "-m",
            help="YAML mapping for --format generic (see examples/mappings/rees46.yaml).",
            dir_okay=False,
        ),
    ]
    _QuietOpt = Annotated[
        bool, typer.Option("--quiet", "-q", help="No progress bar and no summary table.")
    ]
else:  # pragma: no cover
    _PathsArg = list[str]  # type: ignore[misc]
    _FormatOpt = str  # type: ignore[misc]
    _LakeOpt = Path | None  # type: ignore[misc]
    _ShopOpt = str | None  # type: ignore[misc]
    _MappingOpt = Path | None  # type: ignore[misc]
    _QuietOpt = bool  # type: ignore[misc]


def import_command(
    paths: _PathsArg,
    fmt: _FormatOpt,
    lake: _LakeOpt = None,
    shop: _ShopOpt = None,
    mapping: _MappingOpt = None,
    quiet: _QuietOpt = False,
    data_dir: DataDirOption = Path("data"),
) -> None:
    """Import real event logs into the raw lake (events, catalog, importer quarantine)."""
    lake = lake_or_default(lake, data_dir)
    from rich.console import Console
    from rich.markup import escape

    err = Console(stderr=True)
    try:
        result = run_import(fmt, paths, lake, shop_id=shop, mapping=mapping, progress=not quiet)
    except ImporterError as e:
        err.print(f"[bold red]import failed:[/] {escape(str(e))}", highlight=False)
        if typer is None:  # pragma: no cover
            raise SystemExit(1) from e
        raise typer.Exit(code=1) from e
    except ValueError as e:  # e.g. a --shop with no usable characters
        err.print(f"[bold red]import failed:[/] {escape(str(e))}", highlight=False)
        if typer is None:  # pragma: no cover
            raise SystemExit(1) from e
        raise typer.Exit(code=1) from e
    if not quiet:
        print_summary(result, lake)


def print_summary(result: ImportResult, lake: str | os.PathLike[str]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    files = Table(title=f"import {result.format} -> {lake}")
    for col in ("file", "rows", "events", "importer rejects"):
        files.add_column(col, justify="left" if col == "file" else "right")
    for name, rows, events, rejected in (
        result.per_file().select("source_file", "rows", "events", "rejected").iter_rows()
    ):
        files.add_row(name, f"{rows:,}", f"{events:,}", f"{rejected:,}")
    t = result.counts["totals"]
    files.add_row("total", f"{t['source_rows']:,}", f"{t['events']:,}", f"{t['rejected']:,}")
    console.print(files)

    kinds = Table(title="counts")
    kinds.add_column("group")
    kinds.add_column("key")
    kinds.add_column("rows", justify="right")
    for group, values in result.counts.items():
        if group == "totals":
            continue
        for key, n in values.items():
            kinds.add_row(group, key, f"{n:,}")
    console.print(kinds)
    n_products = result.products.height
    n_coll = result.collections.height
    console.print(
        f"catalog: {n_products:,} products, {n_coll:,} collections; "
        f"quarantine: {Path(lake) / '_quarantine' / 'import' / result.format}"
    )
