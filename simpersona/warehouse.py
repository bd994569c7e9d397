"""The warehouse: validated tables as one Parquet file per partition, queried through DuckDB.

    <root>/raw_events/shop=<S>/date=<D>/data.parquet
    <root>/products/shop=<S>/data.parquet
    <root>/collections/shop=<S>/data.parquet
    <root>/quarantine/<table>/shop=<S>/[date=<D>/]data.parquet

One file per partition, replaced with `os.replace`, makes every re-materialization atomic
and idempotent, and lets many processes write different partitions at once (a single
DuckDB database file admits one writer process). `duckdb_path` holds views over these
files, so analysts can open one DuckDB file and query everything.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import duckdb
import polars as pl

from simpersona.lake import atomic_write_parquet
from simpersona.schema import QUARANTINE_SCHEMA, SCHEMAS

TABLES = ("raw_events", "products", "collections")
QUARANTINE_TABLES = ("events", "products", "collections")
# The training/evaluation shop split, written beside the tables by the training sample.
SHOP_SPLIT_FILE = "shop_split.json"


@dataclass(frozen=True)
class Warehouse:
    root: Path
    duckdb_path: Path

    @classmethod
    def at(
        cls, root: str | os.PathLike[str], duckdb_path: str | os.PathLike[str] | None = None
    ) -> Warehouse:
        root = Path(root)
        return cls(root, Path(duckdb_path) if duckdb_path else root.parent / "warehouse.duckdb")

    # ---- paths -------------------------------------------------------------------------
    def partition_path(self, table: str, shop_id: str, date: str | None = None) -> Path:
        base = self.root / table / f"shop={shop_id}"
        if date is not None:
            base = base / f"date={date}"
        return base / "data.parquet"

    def quarantine_path(self, table: str, shop_id: str, date: str | None = None) -> Path:
        base = self.root / "quarantine" / table / f"shop={shop_id}"
        if date is not None:
            base = base / f"date={date}"
        return base / "data.parquet"

    # ---- writes ------------------------------------------------------------------------
    def write_partition(
        self, table: str, df: pl.DataFrame, shop_id: str, date: str | None = None
    ) -> Path:
        return atomic_write_parquet(df, self.partition_path(table, shop_id, date))

    def write_quarantine(
        self, table: str, df: pl.DataFrame, shop_id: str, date: str | None = None
    ) -> Path:
        return atomic_write_parquet(
            # a pl.Schema: polars types cast()'s mapping with selector keys, which a plain
            # dict[str, DataType] does not match (the cast itself is the same)
            df.cast(pl.Schema(QUARANTINE_SCHEMA)),
            self.quarantine_path(table, shop_id, date),
        )

    # ---- reads -------------------------------------------------------------------------
    def read_partition(self, table: str, shop_id: str, date: str | None = None) -> pl.DataFrame:
        path = self.partition_path(table, shop_id, date)
        if not path.exists():
            raise FileNotFoundError(
                f"{table} partition shop={shop_id}"
                + (f" date={date}" if date else "")
                + f" has not been materialized ({path})"
            )
        return pl.read_parquet(path)

    def has_partition(self, table: str, shop_id: str, date: str | None = None) -> bool:
        return self.partition_path(table, shop_id, date).exists()

    def dates(self, table: str, shop_id: str) -> list[str]:
        """Days (YYYY-MM-DD) of a day-partitioned table that hold data for `shop_id`."""
        base = self.root / table / f"shop={shop_id}"
        if not base.is_dir():
            return []
        return sorted(
            p.name.removeprefix("date=")
            for p in base.iterdir()
            if p.name.startswith("date=") and (p / "data.parquet").exists()
        )

    def drop_day(self, shop_id: str, date: str) -> None:
        """Remove a shop-day's events and its events quarantine (both, or whichever exist)."""
        for path in (
            self.partition_path("raw_events", shop_id, date),
            self.quarantine_path("events", shop_id, date),
        ):
            path.unlink(missing_ok=True)
            with contextlib.suppress(OSError):  # only when empty
                path.parent.rmdir()

    def shops_with(self, table: str) -> list[str]:
        """Shops that have at least one materialized partition of `table`."""
        base = self.root / table
        if not base.is_dir():
            return []
        return sorted(
            p.name.removeprefix("shop=")
            for p in base.iterdir()
            if p.is_dir() and p.name.startswith("shop=") and any(p.rglob("data.parquet"))
        )

    def table_path(self, table: str) -> Path:
        """An unpartitioned table's file."""
        return self.root / table / "data.parquet"

    def read_shops(
        self, table: str, shops: list[str], columns: list[str] | None = None
    ) -> pl.DataFrame:
        """The partitions of `table` of the given shops that exist, stacked (an empty frame
        when none does)."""
        paths = [self.partition_path(table, s) for s in shops]
        frames = [pl.read_parquet(p, columns=columns) for p in paths if p.exists()]
        return pl.concat(frames, how="diagonal_relaxed") if frames else pl.DataFrame()

    def missing_partition(self, shop_id: str, tables: tuple[str, ...]) -> str | None:
        """The first of `tables` whose partition of `shop_id` is not materialized, if any."""
        return next((t for t in tables if not self.partition_path(t, shop_id).exists()), None)

    def shop_split(self) -> dict[str, list[str]]:
        """The training/evaluation shop split the training sample recorded (empty lists
        before it has run)."""
        path = self.root / SHOP_SPLIT_FILE
        return json.loads(path.read_text()) if path.exists() else {"train": [], "eval": []}

    def read_events(self, shop_id: str) -> pl.DataFrame:
        """All validated events of one shop, every day, ordered by time."""
        files = sorted((self.root / "raw_events" / f"shop={shop_id}").glob("date=*/data.parquet"))
        if not files:
            return pl.DataFrame(schema=SCHEMAS["events"])
        return pl.concat([pl.read_parquet(f) for f in files], how="vertical_relaxed").sort(
            ["ts", "event_id"]
        )

    def read_quarantine(self, table: str | None = None) -> pl.DataFrame:
        tables = [table] if table else list(QUARANTINE_TABLES)
        files = [
            f for t in tables for f in sorted((self.root / "quarantine" / t).rglob("data.parquet"))
        ]
        if not files:
            return pl.DataFrame(schema=QUARANTINE_SCHEMA)
        return pl.concat([pl.read_parquet(f) for f in files])

    # ---- DuckDB ------------------------------------------------------------------------
    def refresh_views(self, retries: int = 20) -> list[str]:
        """(Re)create one DuckDB view per table over its Parquet files. Retries while another
        process holds the database file."""
        self.duckdb_path.parent.mkdir(parents=True, exist_ok=True)
        statements: list[tuple[str, str]] = []
        for table in TABLES:
            glob = self.root / table / "**" / "data.parquet"
            if any((self.root / table).rglob("data.parquet")):
                statements.append(
                    (
                        table,
                        f"CREATE OR REPLACE VIEW {table} AS SELECT * FROM read_parquet("
                        f"'{glob.as_posix()}', hive_partitioning = true, union_by_name = true)",
                    )
                )
        qglob = self.root / "quarantine" / "**" / "data.parquet"
        if any((self.root / "quarantine").rglob("data.parquet")):
            statements.append(
                (
                    "quarantine",
                    'CREATE OR REPLACE VIEW quarantine AS SELECT "table", shop_id, date, '
                    "source_file, source_row, field, reason, raw FROM read_parquet("
                    f"'{qglob.as_posix()}', union_by_name = true)",
                )
            )
        delay = 0.1
        for attempt in range(retries):
            try:
                with duckdb.connect(str(self.duckdb_path)) as con:
                    for _, sql in statements:
                        con.execute(sql)
                return [name for name, _ in statements]
            except duckdb.IOException as exc:  # lock held by another process
                if attempt == retries - 1:
                    raise RuntimeError(f"could not open {self.duckdb_path}: {exc}") from exc
                time.sleep(delay)
                delay = min(delay * 2, 2.0)
        return []

    def query(self, sql: str) -> pl.DataFrame:
        """Run read-only SQL against the views."""
        with duckdb.connect(str(self.duckdb_path), read_only=True) as con:
            return con.sql(sql).pl()
