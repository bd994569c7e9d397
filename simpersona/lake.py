"""The raw lake: canonical tables as Parquet (CSV accepted), hive-partitioned by shop and date.

    <root>/events/shop=<shop_id>/date=<YYYY-MM-DD>/<part>.parquet
    <root>/products/shop=<shop_id>/<part>.parquet
    <root>/collections/shop=<shop_id>/<part>.parquet

Writers name their files by `part` (an importer uses the source file's stem), so importing
the same source twice replaces its files instead of duplicating rows. Every write is atomic:
a temporary file in the same folder, then `os.replace`.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from simpersona.schema import conform, sanitize_shop_id

RAW_SUFFIXES = (".parquet", ".csv")
_DATE_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def _process_umask() -> int:
    """The process umask, read without changing it (Linux: /proc), else by set-and-restore."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def shareable(path: str | os.PathLike[str]) -> None:
    """Give a file (0o666) or folder (0o777) made by `mkstemp`/`mkdtemp` (which make them
    private, 0o600/0o700) the mode a plain `open`/`mkdir` would: what the umask allows, so
    reports and cards can be shared as any other file. Secrets (the buyer-hash key) are made
    private on purpose elsewhere."""
    base = 0o777 if os.path.isdir(path) else 0o666
    os.chmod(path, base & ~_process_umask())


@contextmanager
def atomic_path(
    path: str | os.PathLike[str], *, suffix: str = ".tmp", fsync: bool = False
) -> Iterator[str]:
    """Yield a temporary path next to `path` to write into; on success it replaces `path`
    (`os.replace`, so readers see either the old file or the whole new one), on any error
    it is removed. `suffix` keeps writers that append extensions (np.savez) on the same
    name; `fsync` flushes the file to disk before the switch."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # ".<name>.<random>.tmp[<suffix>]": what `sweep_temp_files` recognises after a crash
    marked = suffix if suffix.startswith(".tmp") else f".tmp{suffix}"
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=marked, dir=path.parent)
    os.close(fd)
    shareable(tmp)  # writers that replace the file keep this mode; the others get it back
    try:
        yield tmp
        if Path(tmp).exists():
            shareable(tmp)
        if fsync:
            with open(tmp, "rb+") as fh:
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# atomic_path's files (".<name>.<random>.tmp[.ext]"), temporary folders made the same way
# (mkdtemp with suffix ".tmp"), and versioned folders being published (".tmp-<version>-<pid>")
_TEMP_RE = re.compile(r"^\.(.+\.tmp(\.[A-Za-z0-9]+)?|tmp-.+)$")


def sweep_temp_files(*roots: str | os.PathLike[str], min_age_s: float = 900.0) -> list[Path]:
    """Delete the temporary files and folders that writers left under `roots` when their
    process died mid-write (`kill -9`, power loss); returns them. Anything younger than
    `min_age_s` is left alone: a live writer may be filling it."""
    cutoff = time.time() - min_age_s
    gone = []
    for root in roots:
        for folder, dirs, names in os.walk(root):
            for name in [*names, *dirs]:
                if not _TEMP_RE.match(name):
                    continue
                path = Path(folder) / name
                with contextlib.suppress(OSError):
                    if path.stat().st_mtime >= cutoff:
                        continue
                    if path.is_dir():
                        shutil.rmtree(path)
                        dirs.remove(name)
                    else:
                        path.unlink()
                    gone.append(path)
    return gone


def atomic_write_parquet(df: pl.DataFrame, path: str | os.PathLike[str]) -> Path:
    """Write `df` to `path` so readers see either the old file or the whole new one."""
    with atomic_path(path) as tmp:
        df.write_parquet(tmp, compression="zstd", statistics=True)
    return Path(path)


def atomic_write_parquet_chunks(
    chunks: Iterable[pl.DataFrame], path: str | os.PathLike[str], **parquet_options: Any
) -> int:
    """Stream frames of one schema into one Parquet file, atomically; returns rows written.
    Memory stays at one chunk, however large the file. `parquet_options` go to
    `pyarrow.parquet.ParquetWriter` (default: zstd compression)."""
    import pyarrow.parquet as pq

    options = {"compression": "zstd"} | parquet_options
    rows = 0
    with atomic_path(path) as tmp:
        writer = None
        try:
            for chunk in chunks:
                table = chunk.to_arrow()
                if writer is None:
                    writer = pq.ParquetWriter(tmp, table.schema, **options)
                writer.write_table(table)
                rows += chunk.height
        finally:
            if writer is not None:
                writer.close()
        if writer is None:
            raise ValueError(f"no rows to write to {path}")
    return rows


def atomic_write_text(text: str, path: str | os.PathLike[str]) -> Path:
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as fh:
        fh.write(text)
    return Path(path)


def _partition_value(name: str, key: str) -> str | None:
    prefix = f"{key}="
    return name[len(prefix) :] if name.startswith(prefix) else None


@dataclass
class LakeChanges:
    shops: list[str] = field(default_factory=list)  # every shop in the lake
    days: set[str] = field(default_factory=set)  # every day with data
    catalogs: list[str] = field(default_factory=list)  # shops whose catalog changed
    partitions: list[tuple[str, str]] = field(default_factory=list)  # changed (shop, date)


@dataclass(frozen=True)
class Lake:
    """Paths and writers of one raw lake folder."""

    root: Path

    @classmethod
    def at(cls, root: str | os.PathLike[str]) -> Lake:
        return cls(Path(root))

    # ---- paths -------------------------------------------------------------------------
    def events_dir(self, shop_id: str, date: str | None = None) -> Path:
        d = self.root / "events" / f"shop={shop_id}"
        return d / f"date={date}" if date is not None else d

    def catalog_dir(self, table: str, shop_id: str) -> Path:
        if table not in ("products", "collections"):
            raise ValueError(f"unknown catalog table {table!r}")
        return self.root / table / f"shop={shop_id}"

    @staticmethod
    def raw_files(folder: Path) -> list[Path]:
        """Readable raw files in `folder` (Parquet or CSV), sorted; hidden/temp files skipped."""
        if not folder.is_dir():
            return []
        return sorted(
            p
            for p in folder.iterdir()
            if p.is_file() and p.suffix.lower() in RAW_SUFFIXES and not p.name.startswith(".")
        )

    # ---- discovery (used by the sensor) ------------------------------------------------
    def shops(self) -> list[str]:
        """Shops that have an events folder."""
        base = self.root / "events"
        if not base.is_dir():
            return []
        out = []
        for p in base.iterdir():
            shop = _partition_value(p.name, "shop")
            if p.is_dir() and shop:
                out.append(shop)
        return sorted(out)

    def dates(self, shop_id: str) -> list[str]:
        """Dates (YYYY-MM-DD) with at least one raw events file for `shop_id`."""
        base = self.events_dir(shop_id)
        if not base.is_dir():
            return []
        out = []
        for p in base.iterdir():
            date = _partition_value(p.name, "date")
            if p.is_dir() and date and _DATE_RE.match(date) and self.raw_files(p):
                out.append(date)
        return sorted(out)

    def partitions(self) -> Iterator[tuple[str, str]]:
        for shop in self.shops():
            for date in self.dates(shop):
                yield shop, date

    def changed_since(self, since_ns: int) -> LakeChanges:
        """Shops, catalogs and (shop, date) partitions with a raw file modified after
        `since_ns` (ns since the epoch). With since_ns=0 everything counts as changed."""
        changes = LakeChanges()
        for shop in self.shops():
            changes.shops.append(shop)
            for table in ("products", "collections"):
                files = self.raw_files(self.catalog_dir(table, shop))
                if any(f.stat().st_mtime_ns > since_ns for f in files):
                    changes.catalogs.append(shop)
                    break
            for date in self.dates(shop):
                changes.days.add(date)
                files = self.raw_files(self.events_dir(shop, date))
                if any(f.stat().st_mtime_ns > since_ns for f in files):
                    changes.partitions.append((shop, date))
        return changes

    # ---- writers -----------------------------------------------------------------------
    def write_events(self, events: pl.DataFrame, part: str) -> list[Path]:
        """Write canonical events, split by shop and UTC date, as `<part>.parquet` in each
        partition folder (replacing a previous file of the same part)."""
        events = conform(events, "events")
        if events.is_empty():
            return []
        for shop in events["shop_id"].unique().drop_nulls().to_list():
            if sanitize_shop_id(shop) != shop:
                raise ValueError(
                    f"shop id {shop!r} is not a safe partition key; "
                    f"use simpersona.schema.sanitize_shop_id -> {sanitize_shop_id(shop)!r}"
                )
        events = events.with_columns(pl.col("ts").dt.date().cast(pl.String).alias("_date"))
        written = []
        for (shop, date), chunk in events.group_by(["shop_id", "_date"], maintain_order=True):
            if shop is None or date is None:
                raise ValueError(
                    f"events of part {part!r} need shop_id and ts on every row to be placed "
                    "in the lake; send such rows through ingestion as CSV instead"
                )
            path = self.events_dir(shop, date) / f"{part}.parquet"
            written.append(atomic_write_parquet(chunk.drop("_date").sort("ts"), path))
        return written

    def write_catalog(self, table: str, df: pl.DataFrame, part: str = "catalog") -> list[Path]:
        """Write canonical products or collections, one file per shop."""
        df = conform(df, table)
        written = []
        for (shop,), chunk in df.group_by(["shop_id"], maintain_order=True):
            written.append(
                atomic_write_parquet(chunk, self.catalog_dir(table, shop) / f"{part}.parquet")
            )
        return written
