"""Writing an ImportResult into the lake: the catalog merged with what an earlier import of
the same format wrote, then events and importer quarantine per source file (its part).

Re-writing the same source replaces its files; every write is atomic.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import polars as pl

from simpersona.ingest.result import ImportResult, ProgressFn, collections_frame, products_frame
from simpersona.ingest.sources import lake_part, source_stem
from simpersona.lake import Lake, atomic_write_parquet
from simpersona.schema import conform, sanitize_shop_id

# `is_real_title(id, title)`: False for a title the importer made up from the id (the
# format's registry entry says how to tell); a made-up title never replaces a real one.
TitleCheck = Callable[[str, str], bool]


def any_title(_id: str, _title: str) -> bool:
    return True


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
    is_real_title: TitleCheck = any_title,
) -> list[Path]:
    """Write a catalog table per shop as part `part`, merged with what that part holds."""
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
    result: ImportResult,
    lake_root: str | os.PathLike[str],
    progress: ProgressFn | None = None,
    is_real_title: TitleCheck = any_title,
) -> list[Path]:
    """Write an ImportResult into the lake: the catalog merged into part = format name,
    then events per source file (part = `lake_part`) and importer quarantine per file.
    `is_real_title` tells the format's real product titles from made-up ones (the merge
    keeps a real one).

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
    for table, df in (("products", result.products), ("collections", result.collections)):
        if df.height:
            written += write_catalog_merged(lake, table, df, result.format, is_real_title)
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
