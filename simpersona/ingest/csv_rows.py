"""Reading a CSV source: every record as strings, with provenance, never failing on a bad row.

A record whose field count does not match the header (or that the csv module rejects, or
that holds a NUL byte) becomes a `malformed_row` reject; a file that cannot be read at all
(missing, binary, Parquet, not UTF-8, a truncated gzip stream) raises ImporterError naming
the file and, where known, the line.
"""

from __future__ import annotations

import codecs
import csv
import gzip
import hashlib
import json
import sys
import zlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from simpersona.ingest.errors import ImporterError
from simpersona.ingest.rejects import MALFORMED_ROW, reject

csv.field_size_limit(sys.maxsize)


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
    except OSError as e:
        raise ImporterError(f"cannot read file ({e.strerror or e})", file=path) from e
    except EOFError as e:  # a gzip stream that ends inside its first 8 KiB; has no strerror
        raise ImporterError(f"cannot read file ({e})", file=path) from e
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


def blank_to_null(expr: pl.Expr) -> pl.Expr:
    """Empty or whitespace-only strings as null."""
    s = expr.cast(pl.String)
    return pl.when(s.str.strip_chars().str.len_chars() > 0).then(s).otherwise(None)
