"""Grep a data directory's outputs for raw buyer identifiers, reading inside the files.

Parquet and DuckDB compress their strings (a byte grep would miss them), so those are
decoded first; gzip is decompressed; everything else (JSON, Markdown, HTML, SQLite
databases of Dagster and MLflow, logs) is searched as bytes.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import duckdb
import polars as pl


def _parquet_text(path: Path) -> bytes:
    return pl.read_parquet(path).write_ndjson().encode()


def _duckdb_text(path: Path) -> bytes:
    chunks = []
    with duckdb.connect(str(path), read_only=True) as con:
        tables = con.sql(
            "SELECT table_schema, table_name FROM information_schema.tables "
            "WHERE table_type = 'BASE TABLE'"
        ).fetchall()
        for schema, table in tables:
            chunks.append(con.sql(f'SELECT * FROM "{schema}"."{table}"').pl().write_ndjson())
    return "".join(chunks).encode() + path.read_bytes()


def files_containing(root: Path, needle: str, skip: tuple[str, ...] = ("lake",)) -> list[str]:
    """Paths under `root` (relative; top-level folders in `skip` left out) whose content
    contains `needle`."""
    hits = []
    target = needle.encode()
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root)
        if not path.is_file() or rel.parts[0] in skip:
            continue
        if path.suffix == ".parquet":
            data = _parquet_text(path)
        elif path.suffix == ".duckdb":
            data = _duckdb_text(path)
        elif path.suffix == ".gz":
            data = gzip.decompress(path.read_bytes())
        else:
            data = path.read_bytes()
        if target in data:
            hits.append(str(rel))
    return hits
